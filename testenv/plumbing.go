package testenv

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
)

// calicoGateway is the fake next hop every Calico pod routes through; the host answers
// ARP for it by proxy ARP.
const calicoGateway = "169.254.1.1"

// checkHost fails early, with a hint, when the machine cannot run a lab at all.
func checkHost(role Role) error {
	if os.Geteuid() != 0 {
		return errors.New("testenv: needs root (network namespaces, FRR)")
	}
	for _, tool := range []string{"ip", "vtysh", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("testenv: %s not found (install iproute2, frr, procps): %w", tool, err)
		}
	}
	daemons := []string{"zebra", "bgpd", "bfdd"}
	if role == RoleFRR {
		daemons = append(daemons, "staticd")
	}
	for _, d := range daemons {
		if _, err := os.Stat(filepath.Join(frrBin, d)); err != nil {
			return fmt.Errorf("testenv: FRR daemon missing (apt-get install frr): %w", err)
		}
	}
	if _, _, err := frrIDs(); err != nil {
		return err
	}
	return nil
}

// frrIDs returns the uid and gid FRR's daemons drop to. They cannot run as root (they
// insist on root being in the frrvty group), so their directories must belong to frr.
func frrIDs() (uid, gid int, err error) {
	u, err := user.Lookup("frr")
	if err != nil {
		return 0, 0, fmt.Errorf("testenv: FRR's user: %w", err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("testenv: uid of frr: %w", err)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("testenv: gid of frr: %w", err)
	}
	return uid, gid, nil
}

// makeDirs creates Dir and one directory per node (tor, tor2, c1, ...).
func (l *Lab) makeDirs() error {
	if l.opts.Dir == "" {
		d, err := os.MkdirTemp("", "fabricd-lab-")
		if err != nil {
			return err
		}
		l.dir, l.ownDir = d, true
		// MkdirTemp makes it 0700, which would keep user frr out of its own directories.
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
	} else {
		d, err := filepath.Abs(l.opts.Dir)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		l.dir = d
	}

	// FRR's `log file` takes the path as a single word.
	if strings.ContainsFunc(l.dir, unicode.IsSpace) {
		return fmt.Errorf("dir %q contains white space, which FRR config lines cannot hold", l.dir)
	}
	uid, gid, err := frrIDs()
	if err != nil {
		return err
	}
	for _, r := range l.tors {
		if err := l.makeNodeDir(r.dir(), true, uid, gid); err != nil {
			return err
		}
	}
	for _, s := range l.servers {
		if err := l.makeNodeDir(s.dir(), l.opts.Role == RoleFRR, uid, gid); err != nil {
			return err
		}
		if n := len(s.SocketPath()); n >= maxUnixPath {
			return fmt.Errorf("API socket path %s is %d bytes, a Unix socket path must be under %d: use a shorter Dir",
				s.SocketPath(), n, maxUnixPath)
		}
		if err := s.WriteConfig(s.DefaultConfig()); err != nil {
			return err
		}
	}

	// Ask the kernel rather than reimplementing permission checks: can frr write there?
	probe := exec.Command("test", "-w", l.tors[0].dir(), "-a", "-x", l.tors[0].dir())
	probe.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	if err := probe.Run(); err != nil {
		return fmt.Errorf("user frr cannot write to %s (are Dir's parents searchable by others? t.TempDir()'s are not): %w",
			l.tors[0].dir(), err)
	}
	return nil
}

func (l *Lab) makeNodeDir(dir string, frrOwned bool, uid, gid int) error {
	err := os.Mkdir(dir, 0o755)
	switch {
	case err == nil:
		if !l.ownDir {
			l.mu.Lock()
			l.subdirs = append(l.subdirs, dir)
			l.mu.Unlock()
		}
	case !errors.Is(err, os.ErrExist):
		return err
	}
	if frrOwned {
		if err := os.Chown(dir, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// makeRunDir creates FRR's per-namespace socket directory /var/run/frr/<ns>; FRR does
// not create it itself when started with -N.
func (l *Lab) makeRunDir(ns string) error {
	uid, gid, err := frrIDs()
	if err != nil {
		return err
	}
	dir := filepath.Join(frrRunDir, ns)
	if n := len(filepath.Join(dir, "zserv.api")); n >= maxUnixPath {
		return fmt.Errorf("FRR socket directory %s is too long for Unix socket paths", dir)
	}
	if err := os.MkdirAll(frrRunDir, 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err // also if it exists: then it is not ours
	}
	l.mu.Lock()
	l.runDirs = append(l.runDirs, dir)
	l.mu.Unlock()
	return os.Chown(dir, uid, gid)
}

// createNamespaces makes every namespace with lo up (before any address or route: the
// kernel refuses onlink gateways in a namespace whose local table does not exist yet)
// and its sysctls set (before any link exists, so the "default" values apply to them).
func (l *Lab) createNamespaces(ctx context.Context) error {
	ipv6On := []string{"net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0"}
	for _, r := range l.tors {
		ns := r.Namespace()
		if err := l.addNamespace(ctx, ns); err != nil {
			return err
		}
		// A router: forwards both families (and so ignores RAs).
		sysctls := append([]string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"}, ipv6On...)
		if err := setupNode(ctx, ns, r.loopback, sysctls); err != nil {
			return err
		}
	}
	for _, s := range l.servers {
		ns := s.Namespace()
		if err := l.addNamespace(ctx, ns); err != nil {
			return err
		}
		// A host that routes for its pods: IPv4 forwarding only. With IPv6 forwarding off
		// it accepts the ToR's RAs, like a real server does.
		sysctls := append([]string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=0"}, ipv6On...)
		if err := setupNode(ctx, ns, s.spec.Loopback, sysctls); err != nil {
			return err
		}
		// Proxy ARP answers only for addresses the host has a unicast route to, and the
		// servers here have no default route (a real one has, via its management network):
		// without this route no pod could resolve its gateway (projectcalico/calico#3270).
		if _, err := ipn(ctx, ns, "route", "add", calicoGateway+"/32", "dev", "lo"); err != nil {
			return err
		}
		for _, p := range s.pods {
			if err := l.addNamespace(ctx, p.Namespace()); err != nil {
				return err
			}
			if _, err := ipn(ctx, p.Namespace(), "link", "set", "lo", "up"); err != nil {
				return err
			}
		}
	}
	return nil
}

func setupNode(ctx context.Context, ns string, loopback netip.Prefix, sysctls []string) error {
	if _, err := ipn(ctx, ns, "link", "set", "lo", "up"); err != nil {
		return err
	}
	if _, err := execIn(ctx, ns, "sysctl", append([]string{"-q", "-w"}, sysctls...)...); err != nil {
		return err
	}
	_, err := ipn(ctx, ns, "addr", "add", loopback.String(), "dev", "lo")
	return err
}

// torPortIndexBase numbers the ToRs' ports: swpN is ifindex torPortIndexBase+N-1 in
// its ToR's namespace. See wireUplinks.
const torPortIndexBase = 1000

// wireUplinks connects ToR i's swpN to server N's ens(3+i). Both ends are created
// directly inside the namespaces, so no interface name ever exists in the host's
// namespace, where another lab may be using it.
//
// The ToR end gets a fixed high ifindex so that the two ends' indexes always differ
// (the server end gets a small one, as the first devices of a fresh namespace). The
// kernel's linkwatch treats a carrier change as urgent, and reports it at once, only
// for a device whose ifindex differs from its iflink (a veth's iflink is its peer's
// index); otherwise the change waits for the next linkwatch run, which happens at most
// once a second system-wide. Both veth ends of a fresh pair would otherwise often be
// ifindex 2, and a carrier loss on a server uplink would reach the routing daemons
// (and the kernel's own nexthop handling) up to a second late, at random.
func (l *Lab) wireUplinks(ctx context.Context) error {
	for ti, r := range l.tors {
		for si, s := range l.servers {
			port, up := r.port(si), s.Uplinks()[ti]
			if _, err := ipn(ctx, r.Namespace(), "link", "add", port, "index", strconv.Itoa(torPortIndexBase+si),
				"type", "veth", "peer", "name", up, "netns", s.Namespace()); err != nil {
				return err
			}
			if _, err := ipn(ctx, r.Namespace(), "link", "set", port, "up"); err != nil {
				return err
			}
			if _, err := ipn(ctx, s.Namespace(), "link", "set", up, "up"); err != nil {
				return err
			}
		}
	}
	return nil
}

// addPods wires each pod the way Calico's CNI plugin does: a veth with eth0 in the pod
// and caliXXXXXXXXXXX on the host, the pod's /32 on eth0, a default route to the fake
// gateway 169.254.1.1, proxy ARP on the host side and a host route to the pod.
func (l *Lab) addPods(ctx context.Context) error {
	for _, s := range l.servers {
		for _, p := range s.pods {
			pns, host := p.Namespace(), p.HostInterface()
			steps := [][]string{
				{s.Namespace(), "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pns},
				{pns, "addr", "add", netip.PrefixFrom(p.addr, 32).String(), "dev", "eth0"},
				{pns, "link", "set", "eth0", "up"}, // before the onlink route: it needs the device up
				{pns, "route", "add", "default", "via", calicoGateway, "dev", "eth0", "onlink"},
			}
			for _, st := range steps {
				if _, err := ipn(ctx, st[0], st[1:]...); err != nil {
					return err
				}
			}
			// proxy_delay=0 as Calico sets it: the kernel default delays proxy ARP replies
			// by up to 0.8 s.
			if _, err := execIn(ctx, s.Namespace(), "sysctl", "-q", "-w",
				"net.ipv4.conf."+host+".proxy_arp=1", "net.ipv4.neigh."+host+".proxy_delay=0"); err != nil {
				return err
			}
			if _, err := ipn(ctx, s.Namespace(), "link", "set", host, "up"); err != nil {
				return err
			}
			if _, err := ipn(ctx, s.Namespace(), "route", "add", p.addr.String(), "dev", host, "scope", "link"); err != nil {
				return err
			}
		}
	}
	return nil
}

// caliName derives a Calico-style host interface name: "cali" and 11 hex digits of a
// hash of the workload, stable across runs and within IFNAMSIZ.
func caliName(server string, pod netip.Addr) string {
	sum := sha1.Sum([]byte(server + "/" + pod.String()))
	return "cali" + hex.EncodeToString(sum[:])[:11]
}

type ipLink struct {
	Ifname   string   `json:"ifname"`
	Flags    []string `json:"flags"`
	AddrInfo []struct {
		Family    string `json:"family"`
		Local     string `json:"local"`
		Scope     string `json:"scope"`
		Tentative bool   `json:"tentative"`
		DADFailed bool   `json:"dadfailed"`
	} `json:"addr_info"`
}

// waitDAD waits until every up interface in the lab has a usable IPv6 link-local
// address. BGP unnumbered runs over those; while one is tentative, the kernel will not
// use it as a source and the first RAs and TCP SYNs would be lost.
func (l *Lab) waitDAD(ctx context.Context) error {
	namespaces := l.Namespaces()
	return WaitFor(ctx, dadTimeout, "IPv6 link-local addresses to pass DAD", func() error {
		for _, ns := range namespaces {
			out, err := ipn(ctx, ns, "-j", "addr", "show")
			if err != nil {
				return err
			}
			var links []ipLink
			if err := json.Unmarshal([]byte(out), &links); err != nil {
				return fmt.Errorf("parsing `ip -j addr` of %s: %w", ns, err)
			}
			for _, link := range links {
				if link.Ifname == "lo" || !slices.Contains(link.Flags, "UP") {
					continue
				}
				ok := false
				for _, a := range link.AddrInfo {
					if a.Family != "inet6" || a.Scope != "link" {
						continue
					}
					if a.DADFailed {
						return Permanent(fmt.Errorf("%s %s: DAD failed for %s", ns, link.Ifname, a.Local))
					}
					ok = ok || !a.Tentative
				}
				if !ok {
					return fmt.Errorf("%s %s: link-local address missing or tentative", ns, link.Ifname)
				}
			}
		}
		return nil
	})
}

// run executes a command and returns its standard output. The error carries the command
// line and its standard error; the output so far is returned with it (ping prints its
// statistics even when it fails).
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// If the command leaves a child holding its pipes, don't hang on them forever.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			msg = ": " + msg
		}
		return stdout.String(), fmt.Errorf("%s: %w%s", strings.Join(cmd.Args, " "), err, msg)
	}
	return stdout.String(), nil
}

// ipn runs `ip -n ns args...`.
func ipn(ctx context.Context, ns string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"-n", ns}, args...)...)
}

// execIn runs a program inside namespace ns.
func execIn(ctx context.Context, ns, name string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}
