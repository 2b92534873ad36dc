package testenv

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// BIRD 2 as a ToR (ToRBIRD): one bird process per ToR namespace, started by hand
// with its own config, control socket and log in the ToR's directory, never the
// system service. Files: <Dir>/<tor>/bird.conf, bird.ctl (control socket),
// bird.log (BIRD's own log, microsecond timestamps), bird.out (its stdout and
// stderr).

const birdBin = "bird"

func (r *Router) birdConfPath() string { return filepath.Join(r.dir(), "bird.conf") }

// BirdSocket is a BIRD ToR's control socket, for `birdc -s`.
func (r *Router) BirdSocket() string { return filepath.Join(r.dir(), "bird.ctl") }

func (r *Router) birdLogPath() string { return filepath.Join(r.dir(), "bird.log") }
func (r *Router) birdOutPath() string { return filepath.Join(r.dir(), "bird.out") }

// birdConf is the BIRD 2.0.12 config of a BIRD ToR, as an operator writes it to
// play the seed's FRR ToR:
//   - protocol radv on the ports (RAs every 3-5 s, router lifetime 15 s, as the
//     FRR ToR's ra-interval 5 / ra-lifetime 15);
//   - per port a passive dynamic BGP protocol: `neighbor range fe80::/10
//     external` accepts any link-local peer in another AS. BIRD 2.0.12 binds a
//     link-local session to one interface (`interface` takes a name, not a
//     pattern), hence one protocol per port from a shared template; `dynamic
//     name "swpN_"` names the sessions it spawns swpN_1, swpN_2, ..., which is
//     how BGPPeers maps them to ports;
//   - IPv4 with extended next hop (RFC 8950) and IPv6, import and export all,
//     the ToR's loopback from protocol direct (the FRR ToR's `redistribute
//     connected`), and protocol kernel, so that learned routes reach the ToR's
//     kernel and it really forwards.
//
// Timers are BIRD's defaults (hold 240 s; the servers' 9 s wins in the OPEN
// negotiation).
func (r *Router) birdConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# BIRD ToR %s (AS %d), written by testenv.\n", r.name, r.asn)
	fmt.Fprintf(&b, "log %s all;\n", birdString(r.birdLogPath()))
	b.WriteString("timeformat log \"%F %T.%6f\";\n")
	b.WriteString("timeformat protocol \"%F %T.%6f\";\n")
	fmt.Fprintf(&b, "router id %s;\n\n", r.loopback.Addr())
	b.WriteString(`protocol device {
}

# The loopback, as FRR's redistribute connected announces it; never 127/8 or ::1.
protocol direct {
	ipv4 { import where net != 127.0.0.0/8; };
	ipv6 { import where net != ::1/128; };
	interface "lo";
}

protocol kernel {
	ipv4 { export where source = RTS_BGP; };
}

protocol kernel {
	ipv6 { export where source = RTS_BGP; };
}

protocol radv {
	interface "swp*" {
		min ra interval 3;
		max ra interval 5;
		default lifetime 15;
	};
}

`)
	fmt.Fprintf(&b, `template bgp COMPUTE {
	local as %d;
	neighbor range fe80::/10 external;
	debug { states, events };
	ipv4 { extended next hop on; import all; export all; };
	ipv6 { import all; export all; };
}

`, r.asn)
	for i := range r.lab.servers {
		port := r.port(i)
		fmt.Fprintf(&b, "protocol bgp %s from COMPUTE {\n\tinterface %s;\n\tdynamic name %s;\n}\n",
			port, birdString(port), birdString(port+"_"))
	}
	return b.String()
}

// birdString quotes s for a BIRD config. The strings are port names and paths
// in Dir, which makeDirs checks for white space and startBIRD for quotes and
// backslashes.
func birdString(s string) string {
	return `"` + s + `"`
}

// startBIRD writes the config, checks it with `bird -p` (BIRD refuses a bad
// config as a whole, so a typo fails here with BIRD's message), starts bird in
// the foreground and returns once its control socket answers. r.mu is held.
func (r *Router) startBIRD(ctx context.Context) error {
	if r.bird != nil && r.bird.running() {
		return fmt.Errorf("BIRD on %s is already running (pid %d)", r.name, r.bird.pid())
	}
	if strings.ContainsAny(r.dir(), `"\`) {
		return fmt.Errorf("BIRD on %s: directory %q holds a quote or backslash", r.name, r.dir())
	}
	if err := os.WriteFile(r.birdConfPath(), []byte(r.birdConf()), 0o644); err != nil {
		return fmt.Errorf("writing BIRD config of %s: %w", r.name, err)
	}
	if out, err := run(ctx, birdBin, "-p", "-c", r.birdConfPath()); err != nil {
		return fmt.Errorf("BIRD on %s rejects its config: %w %s", r.name, err, out)
	}
	// A socket left by the previous run would make the wait below pass early.
	if err := os.Remove(r.BirdSocket()); err != nil && !os.IsNotExist(err) {
		return err
	}
	argv := []string{"ip", "netns", "exec", r.Namespace(), birdBin, "-f",
		"-c", r.birdConfPath(), "-s", r.BirdSocket(), "-P", filepath.Join(r.dir(), "bird.pid")}
	d, err := startDaemon("bird", r.birdOutPath(), argv, nil)
	if err != nil {
		return fmt.Errorf("starting BIRD on %s: %w", r.name, err)
	}
	r.bird = d
	err = WaitFor(ctx, frrStartTimeout, "BIRD on "+r.name+" to answer birdc", func() error {
		if !d.running() {
			err := d.exitErr()
			if err == nil {
				err = fmt.Errorf("bird (pid %d) exited", d.pid())
			}
			return Permanent(err)
		}
		out, err := birdc(ctx, r.BirdSocket(), "show", "status")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Daemon is up and running") {
			return fmt.Errorf("birdc show status: %s", out)
		}
		return nil
	})
	if err != nil {
		if serr := d.stop(syscall.SIGTERM, stopGrace); serr != nil {
			err = fmt.Errorf("%w (stopping it: %v)", err, serr)
		}
		r.bird = nil
		return fmt.Errorf("starting BIRD on %s: %w\n--- bird.out ---\n%s", r.name, err, tail(readFrom(r.birdOutPath(), 0), 15))
	}
	return nil
}

// stopBIRD sends sig (SIGTERM: BIRD shuts its protocols down, which sends a
// Cease to each peer and removes its kernel routes, then exits) and waits.
// r.mu is held.
func (r *Router) stopBIRD(sig os.Signal) error {
	if r.bird == nil {
		return nil
	}
	d := r.bird
	err := d.stop(sig, stopGrace)
	if err != nil && d.running() {
		err = fmt.Errorf("%w: %w", errStuck, err)
	}
	r.bird = nil
	if err != nil {
		return fmt.Errorf("stopping BIRD on %s: %w", r.name, err)
	}
	return nil
}

// birdLog returns BIRD's log and any output of the daemon.
func (r *Router) birdLog() string {
	var b strings.Builder
	for _, p := range []string{r.birdLogPath(), r.birdOutPath()} {
		text := readFrom(p, 0)
		if p == r.birdOutPath() && strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Fprintf(&b, "==> %s <==\n%s", p, text)
		if !strings.HasSuffix(text, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// Birdc runs one birdc command on a BIRD ToR ("show", "protocols", "all") and
// returns its output.
func (r *Router) Birdc(ctx context.Context, args ...string) (string, error) {
	if r.flavor != ToRBIRD {
		return "", fmt.Errorf("%s runs %v, not BIRD", r.name, r.flavor)
	}
	return birdc(ctx, r.BirdSocket(), args...)
}

func birdc(ctx context.Context, sock string, args ...string) (string, error) {
	out, err := run(ctx, "birdc", append([]string{"-s", sock}, args...)...)
	if err != nil {
		return out, err
	}
	// birdc exits 0 even when BIRD answers with an error (codes 8xxx/9xxx).
	for line := range strings.SplitSeq(out, "\n") {
		if len(line) > 4 && (line[0] == '8' || line[0] == '9') && line[4] == ' ' || strings.HasPrefix(line, "syntax error") {
			return out, fmt.Errorf("birdc %s: %s", strings.Join(args, " "), strings.TrimSpace(line))
		}
	}
	return out, nil
}

// birdPeers returns a BIRD ToR's sessions keyed by port, from `show protocols
// all`. A port with no spawned session reports its listening protocol's state
// (BIRD says "Passive"). With several sessions on a port (an old one closing,
// a new one up), the Established one wins.
func (r *Router) birdPeers(ctx context.Context) (map[string]BGPPeer, error) {
	out, err := r.Birdc(ctx, "show", "protocols", "all")
	if err != nil {
		return nil, err
	}
	return parseBirdProtocols(out), nil
}

// birdSessionRE matches a spawned session's name (swp1_3) and a port's
// listening protocol (swp1).
var birdSessionRE = regexp.MustCompile(`^(swp\d+)(_\d+)?$`)

// birdRoutesRE matches a channel's route counts, "2 imported, 5 exported, 2 preferred"
// (BIRD 2.0.12 also prints "N filtered" between imported and exported when some are).
var birdRoutesRE = regexp.MustCompile(`^(\d+) imported,(?: (\d+) filtered,)? (\d+) exported`)

func parseBirdProtocols(out string) map[string]BGPPeer {
	type proto struct {
		port    string
		spawned bool
		peer    BGPPeer
	}
	var protos []*proto
	var cur *proto
	channel := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "BIRD ") || strings.HasPrefix(line, "Name ") {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			// "swp1_1     BGP        ---        up     21:40:12.123  Established"
			cur = nil
			f := strings.Fields(line)
			if len(f) < 2 || f[1] != "BGP" {
				continue
			}
			m := birdSessionRE.FindStringSubmatch(f[0])
			if m == nil {
				continue
			}
			cur = &proto{port: m[1], spawned: m[2] != ""}
			protos = append(protos, cur)
			channel = ""
			continue
		}
		if cur == nil {
			continue
		}
		trimmed := strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(trimmed, "Channel "); ok {
			channel = name
			continue
		}
		key, val, ok := strings.Cut(trimmed, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "BGP state":
			cur.peer.State = val
		case "Neighbor AS":
			if n, err := strconv.ParseUint(val, 10, 32); err == nil {
				cur.peer.RemoteAS = uint32(n)
			}
		case "Routes":
			if channel != "ipv4" {
				continue
			}
			if m := birdRoutesRE.FindStringSubmatch(val); m != nil {
				cur.peer.PfxRcd, _ = strconv.Atoi(m[1])
				cur.peer.PfxSnt, _ = strconv.Atoi(m[3])
			}
		}
	}
	peers := map[string]BGPPeer{}
	rank := func(p *proto) int {
		switch {
		case p.spawned && p.peer.State == "Established":
			return 2
		case p.spawned:
			return 1
		}
		return 0
	}
	best := map[string]*proto{}
	for _, p := range protos {
		if b, ok := best[p.port]; !ok || rank(p) > rank(b) {
			best[p.port] = p
		}
	}
	for port, p := range best {
		peers[port] = p.peer
	}
	return peers
}
