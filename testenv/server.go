package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Server is one server of the fabric: its namespace, uplinks and pods, and the daemon(s)
// playing its BGP speaker.
type Server struct {
	lab   *Lab
	index int
	spec  ServerSpec
	pods  []*Pod

	mu        sync.Mutex   // serialises Start, Stop and Signal
	fabricd   *daemon      // RoleFabricd
	frr       *frrInstance // RoleFRR
	runDirSet bool         // /var/run/frr/<ns> exists (RoleFRR)
}

// Name is the server's name, e.g. "c1".
func (s *Server) Name() string { return s.spec.Name }

// Spec returns a copy of the server's spec.
func (s *Server) Spec() ServerSpec {
	spec := s.spec
	spec.Pods = slices.Clone(s.spec.Pods)
	return spec
}

// Namespace is the server's network namespace.
func (s *Server) Namespace() string { return s.lab.prefix + "-" + s.spec.Name }

// Exec runs a program in the server's namespace and returns its standard output.
func (s *Server) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return execIn(ctx, s.Namespace(), name, args...)
}

// Uplinks returns the server's interfaces to the ToRs: "ens3", and "ens4" with two ToRs.
func (s *Server) Uplinks() []string {
	ups := make([]string, len(s.lab.tors))
	for i := range ups {
		ups[i] = fmt.Sprintf("ens%d", 3+i)
	}
	return ups
}

func (s *Server) dir() string { return filepath.Join(s.lab.dir, s.spec.Name) }

// ConfigPath is the fabricd config file, <Dir>/<name>/fabricd.toml. New writes
// DefaultConfig there (in both roles, so comparisons can read it).
func (s *Server) ConfigPath() string { return filepath.Join(s.dir(), "fabricd.toml") }

// SocketPath is the fabricd API socket the generated config asks for.
func (s *Server) SocketPath() string { return filepath.Join(s.dir(), "fabricd.sock") }

// LogPath is where Log reads from: fabricd.log, or frr.log with RoleFRR.
func (s *Server) LogPath() string {
	if s.lab.opts.Role == RoleFRR {
		return filepath.Join(s.dir(), "frr.log")
	}
	return filepath.Join(s.dir(), "fabricd.log")
}

// WriteConfig replaces the fabricd config. It writes a new file and renames it into
// place, so a daemon reloading at that moment never reads half a config.
func (s *Server) WriteConfig(text string) error {
	tmp, err := os.CreateTemp(s.dir(), ".fabricd.toml.")
	if err != nil {
		return fmt.Errorf("writing config of %s: %w", s.spec.Name, err)
	}
	_, werr := tmp.WriteString(text)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing config of %s: %w", s.spec.Name, err)
	}
	if err := os.Rename(tmp.Name(), s.ConfigPath()); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("writing config of %s: %w", s.spec.Name, err)
	}
	return nil
}

// DefaultConfig is the fabricd config equivalent to the seed's server config: one
// unnumbered eBGP neighbor per uplink, the loopback and the blackholed pod block
// announced, the API socket in Dir, debug logging.
func (s *Server) DefaultConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "asn = %d\nrouter-id = %s\n", s.spec.ASN, tomlString(s.spec.Loopback.Addr().String()))
	for _, up := range s.Uplinks() {
		fmt.Fprintf(&b, "\n[[neighbor]]\ninterface = %s\nremote-as = \"external\"\n", tomlString(up))
	}
	fmt.Fprintf(&b, "\n[[announce]]\nprefix = %s\n", tomlString(s.spec.Loopback.String()))
	fmt.Fprintf(&b, "\n[[announce]]\nprefix = %s\nblackhole = true\n", tomlString(s.spec.Block.String()))
	fmt.Fprintf(&b, "\n[api]\nsocket = %s\n", tomlString(s.SocketPath()))
	b.WriteString("\n[log]\nlevel = \"debug\"\n")
	return b.String()
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// Start starts the server's BGP speaker in its namespace. With RoleFabricd that is
// `ip netns exec <ns> <FabricdBinary> --config <ConfigPath> <extraArgs...>`, output
// appended to <Dir>/<name>/fabricd.log; Start returns as soon as the process runs
// (WaitConverged notices if it dies). With RoleFRR it is zebra, staticd and bgpd,
// logging to <Dir>/<name>/frr.log; Start returns once they have loaded their configs,
// and extraArgs must be empty.
func (s *Server) Start(ctx context.Context, extraArgs ...string) error {
	return s.StartEnv(ctx, nil, extraArgs...)
}

// StartEnv is Start with extra environment variables ("NAME=value") for
// fabricd, such as NOTIFY_SOCKET for a systemd notify test.
func (s *Server) StartEnv(ctx context.Context, env []string, extraArgs ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lab.mu.Lock()
	closed := s.lab.closed
	s.lab.mu.Unlock()
	if closed {
		return fmt.Errorf("starting %s: lab is closed", s.spec.Name)
	}

	if s.lab.opts.Role == RoleFRR {
		if len(extraArgs) > 0 {
			return fmt.Errorf("starting %s: RoleFRR takes no extra arguments, got %q", s.spec.Name, extraArgs)
		}
		if !s.runDirSet {
			if err := s.lab.makeRunDir(s.Namespace()); err != nil {
				return fmt.Errorf("starting FRR on %s: %w", s.spec.Name, err)
			}
			s.runDirSet = true
		}
		if err := s.writeFRRConfigs(); err != nil {
			return err
		}
		if s.frr == nil {
			s.frr = &frrInstance{ns: s.Namespace(), dir: s.dir(), daemons: []string{"zebra", "staticd", "bgpd"}}
		}
		if err := s.frr.start(ctx); err != nil {
			return fmt.Errorf("starting FRR on %s: %w", s.spec.Name, err)
		}
		return nil
	}

	if s.fabricd != nil && s.fabricd.running() {
		return fmt.Errorf("starting fabricd on %s: already running (pid %d)", s.spec.Name, s.fabricd.pid())
	}
	// Checked again here: the binary may have been rebuilt, or removed, since New.
	bin, err := checkFabricdBinary(s.lab.opts.FabricdBinary)
	if err != nil {
		return fmt.Errorf("starting fabricd on %s: %w", s.spec.Name, err)
	}
	argv := append([]string{"ip", "netns", "exec", s.Namespace(), bin, "--config", s.ConfigPath()}, extraArgs...)
	d, err := startDaemon("fabricd", s.LogPath(), argv, env)
	if err != nil {
		return fmt.Errorf("on %s: %w", s.spec.Name, err)
	}
	s.fabricd = d
	return nil
}

// Stop sends sig to the daemon(s) Start started and waits for them to exit, sending
// SIGKILL after 10 s. It returns how they exited: nil for exit status 0, otherwise an
// error wrapping *exec.ExitError (a daemon that dies of sig itself reports "signal: ...").
// Stopping a server that is not running returns nil.
func (s *Server) Stop(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	switch {
	case s.frr != nil:
		err = s.frr.stop(sig)
	case s.fabricd != nil:
		err = s.fabricd.stop(sig, stopGrace)
		if s.fabricd.running() {
			err = fmt.Errorf("%w: %w", errStuck, err)
		}
		s.fabricd = nil
	}
	if err != nil {
		return fmt.Errorf("stopping %s: %w", s.spec.Name, err)
	}
	return nil
}

// Signal sends sig to the running daemon without waiting (SIGHUP for a reload, say).
// With RoleFRR it goes to bgpd.
func (s *Server) Signal(sig os.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.fabricd
	if s.frr != nil {
		for _, p := range s.frr.procs {
			if p.name == "bgpd" {
				d = p
			}
		}
	}
	if d == nil || !d.running() {
		return fmt.Errorf("signalling %s: not running", s.spec.Name)
	}
	if err := d.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling %s on %s: %w", d.name, s.spec.Name, err)
	}
	return nil
}

// PID is the running fabricd's process ID (bgpd's with RoleFRR), or 0.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.frr != nil:
		return s.frr.pid("bgpd")
	case s.fabricd != nil && s.fabricd.running():
		return s.fabricd.pid()
	}
	return 0
}

// PIDs returns the process IDs of the server's running daemons by program name:
// "fabricd", or "zebra", "staticd" and "bgpd" with RoleFRR. Benchmarks read their
// memory use from /proc.
func (s *Server) PIDs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	pids := map[string]int{}
	switch {
	case s.frr != nil:
		for _, d := range s.frr.procs {
			if d.running() {
				pids[d.name] = d.pid()
			}
		}
	case s.fabricd != nil && s.fabricd.running():
		pids["fabricd"] = s.fabricd.pid()
	}
	return pids
}

// Log returns the daemon's log: fabricd.log, or with RoleFRR frr.log followed by any
// output of the FRR daemons themselves. Meant for test failure messages.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.frr != nil {
		return s.frr.log()
	}
	return readFrom(s.LogPath(), 0)
}

// checkAlive reports a server whose daemon is not running, with the end of its log.
func (s *Server) checkAlive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.frr != nil:
		if err := s.frr.checkAlive(); err != nil {
			return s.frr.withLogs(fmt.Errorf("%s: %w", s.spec.Name, err))
		}
		return nil
	case s.fabricd == nil:
		return fmt.Errorf("%s: not started", s.spec.Name)
	case !s.fabricd.running():
		err := s.fabricd.exitErr()
		if err == nil {
			err = errors.New("fabricd exited with status 0")
		}
		return fmt.Errorf("%s: %w\n--- %s ---\n%s", s.spec.Name, err, filepath.Base(s.LogPath()), tail(readFrom(s.LogPath(), 0), 20))
	}
	return nil
}

// Pod returns pod i (0-based), or nil.
func (s *Server) Pod(i int) *Pod {
	if i < 0 || i >= len(s.pods) {
		return nil
	}
	return s.pods[i]
}

// Pods returns all pods of the server.
func (s *Server) Pods() []*Pod { return slices.Clone(s.pods) }

func (s *Server) writeFRRConfigs() error {
	for _, f := range s.FRRConfig() {
		if err := os.WriteFile(filepath.Join(s.dir(), f.Name), []byte(f.Text), 0o644); err != nil {
			return fmt.Errorf("writing %s of %s: %w", f.Name, s.spec.Name, err)
		}
	}
	return nil
}

// zebraConf sends RAs on the uplinks: the ToR's FRR will not talk BGP to a link-local
// address it has not heard an RA from.
func (s *Server) zebraConf() string {
	var b strings.Builder
	frrHeader(&b, s.spec.Name, s.dir())
	for _, up := range s.Uplinks() {
		fmt.Fprintf(&b, "interface %s\n ipv6 nd ra-interval 5\n no ipv6 nd suppress-ra\nexit\n!\n", up)
	}
	return b.String()
}

// staticdConf holds the blackhole route for the pod block: `network` only announces a
// prefix that is in the RIB (bgp network import-check is on by default), and the
// blackhole is what the seed uses to keep packets for unused pod addresses local.
func (s *Server) staticdConf() string {
	var b strings.Builder
	frrHeader(&b, s.spec.Name, s.dir())
	fmt.Fprintf(&b, "ip route %s blackhole\n!\n", s.spec.Block)
	return b.String()
}

// bgpdConf is the seed's server config plus two lines that only matter with two ToRs,
// and make FRR behave like fabricd there: multipath-relax to use both ToRs (their AS
// paths differ in the first AS), and an outbound filter so that the server announces
// only what it originates instead of passing routes from one ToR to the other.
func (s *Server) bgpdConf() string {
	var b strings.Builder
	frrHeader(&b, s.spec.Name, s.dir())
	b.WriteString("bgp as-path access-list LOCAL seq 5 permit ^$\n!\n")
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n bgp bestpath as-path multipath-relax\n", s.spec.ASN, s.spec.Loopback.Addr())
	b.WriteString(" neighbor TOR peer-group\n neighbor TOR remote-as external\n")
	for _, up := range s.Uplinks() {
		fmt.Fprintf(&b, " neighbor %s interface peer-group TOR\n", up)
	}
	fmt.Fprintf(&b, " address-family ipv4 unicast\n  network %s\n  network %s\n", s.spec.Loopback, s.spec.Block)
	b.WriteString("  neighbor TOR filter-list LOCAL out\n exit-address-family\nexit\n!\n")
	return b.String()
}

// Pod is a Calico-style pod: its own namespace, eth0 with a /32, default route via
// 169.254.1.1, and a cali* veth peer in the server's namespace.
type Pod struct {
	server *Server
	index  int
	addr   netip.Addr
}

// Namespace is the pod's network namespace, e.g. "fd3a9c-c1-pod0".
func (p *Pod) Namespace() string { return fmt.Sprintf("%s-pod%d", p.server.Namespace(), p.index) }

// Addr is the pod's address.
func (p *Pod) Addr() netip.Addr { return p.addr }

// HostInterface is the host side of the pod's veth, "cali" and 11 hex digits.
func (p *Pod) HostInterface() string { return caliName(p.server.spec.Name, p.addr) }

// Exec runs a program in the pod's namespace and returns its standard output.
func (p *Pod) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return execIn(ctx, p.Namespace(), name, args...)
}
