package e2e

// Helpers for the fault, security and churn tests ("never drop traffic, never
// trust input"): metrics, the daemon's own view through fabricctl, kernel
// snapshots, and config changes that undo themselves when the test ends.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// metricsListen is where the tests ask fabricd for its Prometheus endpoint.
// Every server has its own namespace, hence its own 127.0.0.1.
const metricsListen = "127.0.0.1:9179"

// withMetrics appends a [metrics] section to cfg.
func withMetrics(cfg string) string {
	return cfg + "\n[metrics]\nlisten = \"" + metricsListen + "\"\n"
}

// neighborOption inserts lines into the [[neighbor]] table of uplink iface
// of a testenv default config, e.g. "bfd = true".
func neighborOption(t *testing.T, cfg, iface string, lines ...string) string {
	t.Helper()
	head := "[[neighbor]]\ninterface = \"" + iface + "\"\nremote-as = \"external\"\n"
	if !strings.Contains(cfg, head) {
		t.Fatalf("config has no neighbor %s in the expected form:\n%s", iface, cfg)
	}
	return strings.Replace(cfg, head, head+strings.Join(lines, "\n")+"\n", 1)
}

// restartWith stops s's fabricd, starts it with cfg and waits for the fabric
// to converge. The default config, and a converged fabric, are restored when
// the test ends. For changes a reload does not apply ([metrics], [import]).
func restartWith(ctx context.Context, t *testing.T, lab *testenv.Lab, s *testenv.Server, cfg string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Stop(syscall.SIGTERM); err != nil {
			t.Errorf("cleanup: stopping %s: %v", s.Name(), err)
		}
		if err := s.WriteConfig(s.DefaultConfig()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := s.Start(ctx); err != nil {
			t.Errorf("cleanup: starting %s: %v", s.Name(), err)
		}
		if err := lab.WaitConverged(ctx, 45*time.Second); err != nil {
			t.Errorf("cleanup: the lab did not converge again after restoring %s's config: %v", s.Name(), err)
		}
	})
	if err := s.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stopping %s: %v", s.Name(), err)
	}
	if err := s.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConverged(ctx, 45*time.Second); err != nil {
		t.Fatalf("after restarting %s with a new config: %v", s.Name(), err)
	}
}

// reloadWith applies cfg to s's running fabricd with `fabricctl reload`; the
// default config is reloaded when the test ends. It does not wait for
// anything: a neighbor change re-creates that peer.
func reloadWith(ctx context.Context, t *testing.T, s *testenv.Server, cfg string) {
	t.Helper()
	if err := s.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if out, err := fabricctl(ctx, s, "reload"); err != nil {
		t.Fatalf("%s: reload: %v\n%s", s.Name(), err, out)
	}
}

// restoreDefaultOnCleanup reloads s's default config when the test ends.
func restoreDefaultOnCleanup(t *testing.T, s *testenv.Server) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.WriteConfig(s.DefaultConfig()); err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		if out, err := fabricctl(ctx, s, "reload"); err != nil {
			t.Errorf("cleanup: reloading %s's default config: %v\n%s", s.Name(), err, out)
		}
	})
}

// metricLineRE matches one sample of the Prometheus text format.
var metricLineRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$`)

// scrape fetches s's metrics (from inside its namespace) keyed by name and
// labels as printed, e.g. `fabricd_ra_ignored_total{interface="ens3"}`.
func scrape(ctx context.Context, s *testenv.Server) (map[string]float64, error) {
	out, err := s.Exec(ctx, "curl", "-sf", "--max-time", "5", "http://"+metricsListen+"/metrics")
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		match := metricLineRE.FindStringSubmatch(sc.Text())
		if match == nil {
			continue
		}
		v, err := strconv.ParseFloat(match[2], 64)
		if err != nil {
			continue
		}
		m[match[1]] = v
	}
	return m, nil
}

// metric returns one sample, failing the test if it is missing.
func metric(ctx context.Context, t *testing.T, s *testenv.Server, name string) float64 {
	t.Helper()
	m, err := scrape(ctx, s)
	if err != nil {
		t.Fatalf("%s: scraping metrics: %v", s.Name(), err)
	}
	v, ok := m[name]
	if !ok {
		t.Fatalf("%s: no metric %s", s.Name(), name)
	}
	return v
}

// rssOf returns the resident set size of pid in bytes.
func rssOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// openFDs counts the open file descriptors of pid.
func openFDs(pid int) (int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(entries), nil
}

// ifaceStatus is one uplink of `fabricctl show interface json`. protojson
// prints 64-bit integers as strings.
type ifaceStatus struct {
	Name         string `json:"name"`
	LinkUp       bool   `json:"linkUp"`
	PeerAddress  string `json:"peerAddress"`
	PeerMAC      string `json:"peerMac"`
	SessionState string `json:"sessionState"`
	RAsReceived  uint64 `json:"rasReceived,string"`
	RAsIgnored   uint64 `json:"rasIgnored,string"`
	PfxFiltered  uint64 `json:"pfxFiltered,string"`
}

// fabricdIface returns fabricd's view of uplink name on s.
func fabricdIface(ctx context.Context, s *testenv.Server, name string) (ifaceStatus, error) {
	out, err := fabricctl(ctx, s, "show", "interface", "json")
	if err != nil {
		return ifaceStatus{}, err
	}
	var ifs struct {
		Interfaces []ifaceStatus `json:"interfaces"`
	}
	if err := json.Unmarshal([]byte(out), &ifs); err != nil {
		return ifaceStatus{}, fmt.Errorf("show interface json: %w\n%s", err, out)
	}
	for _, i := range ifs.Interfaces {
		if i.Name == name {
			return i, nil
		}
	}
	return ifaceStatus{}, fmt.Errorf("show interface json has no %s:\n%s", name, out)
}

// peerStatus is one peer of `fabricctl show bgp summary json`.
type peerStatus struct {
	Interface   string `json:"interface"`
	PeerAddress string `json:"peerAddress"`
	State       string `json:"state"`
	PfxRcd      uint64 `json:"pfxRcd,string"`
	PfxFiltered uint64 `json:"pfxFiltered,string"`
	UptimeMsec  int64  `json:"peerUptimeMsec,string"`
}

// fabricdPeer returns fabricd's session on uplink iface of s.
func fabricdPeer(ctx context.Context, s *testenv.Server, iface string) (peerStatus, error) {
	out, err := fabricctl(ctx, s, "show", "bgp", "summary", "json")
	if err != nil {
		return peerStatus{}, err
	}
	var sum struct {
		Peers []peerStatus `json:"peers"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		return peerStatus{}, fmt.Errorf("show bgp summary json: %w\n%s", err, out)
	}
	for _, p := range sum.Peers {
		if p.Interface == iface {
			return p, nil
		}
	}
	return peerStatus{}, fmt.Errorf("show bgp summary json has no peer on %s:\n%s", iface, out)
}

// waitSession waits until both fabricd on s and the ToR say the session on
// s's uplink iface (the ToR's port) is Established.
func waitSession(ctx context.Context, t *testing.T, s *testenv.Server, iface string, tor *testenv.Router, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	sessionUpAt(ctx, t, s, iface, tor, timeout)
	return time.Since(start)
}

// sessionUpAt waits like waitSession and returns when the session came up
// by fabricd's account (its uptime when last polled): polling fabricctl
// and vtysh for several servers takes seconds on a loaded machine, which
// must not count as the session's time.
func sessionUpAt(ctx context.Context, t *testing.T, s *testenv.Server, iface string, tor *testenv.Router, timeout time.Duration) time.Time {
	t.Helper()
	var upAt time.Time
	port := tor.PortFor(s.Name())
	err := testenv.WaitFor(ctx, timeout, fmt.Sprintf("%s %s <-> %s %s Established", s.Name(), iface, tor.Name(), port), func() error {
		if s.PID() == 0 {
			return testenv.Permanent(fmt.Errorf("fabricd on %s is not running", s.Name()))
		}
		polled := time.Now()
		p, err := fabricdPeer(ctx, s, iface)
		if err != nil {
			return err
		}
		peers, err := tor.BGPPeers(ctx)
		if err != nil {
			return err
		}
		if p.State != "Established" || peers[port].State != "Established" {
			return fmt.Errorf("fabricd says %s, the ToR says %s", p.State, peers[port].State)
		}
		upAt = polled.Add(-time.Duration(p.UptimeMsec) * time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return upAt
}

// torConfigMu serialises configuration sessions on the ToRs: subtests run
// in parallel, and two vtysh in `configure terminal` at once are asking for
// trouble.
var torConfigMu sync.Mutex

// torConfig runs configuration commands on the ToR (inside `configure
// terminal`) and the undo commands when the test ends.
func torConfig(ctx context.Context, t *testing.T, tor *testenv.Router, do, undo []string) {
	t.Helper()
	configure := func(ctx context.Context, cmds []string) (string, error) {
		torConfigMu.Lock()
		defer torConfigMu.Unlock()
		return tor.Vtysh(ctx, append([]string{"configure terminal"}, cmds...)...)
	}
	if len(undo) > 0 {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if out, err := configure(ctx, undo); err != nil {
				t.Errorf("cleanup: %s: %v\n%s", tor.Name(), err, out)
			}
		})
	}
	out, err := configure(ctx, do)
	if err != nil {
		t.Fatalf("%s: %v\n%s", tor.Name(), err, out)
	}
	// vtysh exits 0 even when a command in the middle was refused.
	if strings.Contains(out, "%") {
		t.Fatalf("%s refused a command of %q:\n%s", tor.Name(), do, out)
	}
}

// nstat returns a kernel SNMP counter (e.g. TcpExtTCPMD5Failure) of a
// namespace; each namespace has its own.
func nstat(ctx context.Context, exec func(context.Context, string, ...string) (string, error), name string) (uint64, error) {
	out, err := exec(ctx, "nstat", "-az", name)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == name {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("nstat has no %s:\n%s", name, out)
}

// kernelState is what fabricd owns in a server's kernel, in a form that
// survives re-creation: nexthop object IDs are blanked.
type kernelState struct {
	routes4, routes6, neigh, nexthops []string
}

var nexthopIDRE = regexp.MustCompile(`^id \d+ `)

func snapshotKernel(ctx context.Context, s *testenv.Server) (kernelState, error) {
	var k kernelState
	var err error
	if k.routes4, err = bgpRouteLines(ctx, s); err != nil {
		return k, err
	}
	all6, err := kernelLines(ctx, s, "-6", "route", "show")
	if err != nil {
		return k, err
	}
	for _, l := range all6 {
		if strings.Contains(l, " proto bgp ") {
			k.routes6 = append(k.routes6, nhidRE.ReplaceAllString(l, ""))
		}
	}
	if k.neigh, err = kernelLines(ctx, s, "neigh", "show", "169.254.0.1"); err != nil {
		return k, err
	}
	nhs, err := kernelLines(ctx, s, "nexthop", "show")
	if err != nil {
		return k, err
	}
	for _, l := range nhs {
		k.nexthops = append(k.nexthops, nexthopIDRE.ReplaceAllString(l, "id N "))
	}
	for _, l := range [][]string{k.routes4, k.routes6, k.neigh, k.nexthops} {
		slices.Sort(l)
	}
	return k, nil
}

func (k kernelState) diff(want kernelState) error {
	var bad []string
	for _, c := range []struct {
		what      string
		got, want []string
	}{
		{"IPv4 routes", k.routes4, want.routes4},
		{"IPv6 routes", k.routes6, want.routes6},
		{"neighbour entries", k.neigh, want.neigh},
		{"nexthop objects", k.nexthops, want.nexthops},
	} {
		if !slices.Equal(c.got, c.want) {
			bad = append(bad, fmt.Sprintf("%s:\n  have %q\n  want %q", c.what, c.got, c.want))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "\n"))
	}
	return nil
}

var (
	ndpinjectOnce sync.Once
	ndpinjectErr  error
)

// ndpinject builds testenv/cmd/ndpinject once per run, next to fabricd.
func ndpinject(t *testing.T) string {
	t.Helper()
	path := bin("ndpinject")
	ndpinjectOnce.Do(func() {
		build := exec.Command("go", "build", "-o", path, "github.com/fabricd/fabricd/testenv/cmd/ndpinject")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			ndpinjectErr = fmt.Errorf("building ndpinject: %v\n%s", err, out)
		}
	})
	if ndpinjectErr != nil {
		t.Fatal(ndpinjectErr)
	}
	return path
}

// torRoutes adds kernel routes in the ToR's namespace with protocol
// torRouteProto, which the ToR's zebra treats as kernel routes (the ToR
// runs no staticd); with `redistribute kernel` bgpd announces them. The
// routes are flushed when the test ends.
const torRouteProto = "99"

func addToRRoutes(ctx context.Context, t *testing.T, tor *testenv.Router, prefixes []string) {
	t.Helper()
	t.Cleanup(func() { flushToRRoutes(t, tor) })
	if err := batchToRRoutes(ctx, tor, "add", prefixes); err != nil {
		t.Fatal(err)
	}
}

// batchToRRoutes adds or deletes blackhole routes for prefixes with one
// `ip -batch`.
func batchToRRoutes(ctx context.Context, tor *testenv.Router, op string, prefixes []string) error {
	if len(prefixes) == 0 {
		return nil
	}
	f, err := os.CreateTemp("", "fabricd-e2e-routes-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	w := bufio.NewWriter(f)
	for _, p := range prefixes {
		fmt.Fprintf(w, "route %s blackhole %s proto %s\n", op, p, torRouteProto)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if out, err := tor.Exec(ctx, "ip", "-batch", f.Name()); err != nil {
		return fmt.Errorf("ip -batch (%d routes, %s): %w\n%s", len(prefixes), op, err, out)
	}
	return nil
}

func flushToRRoutes(t *testing.T, tor *testenv.Router) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := tor.Exec(ctx, "ip", "route", "flush", "proto", torRouteProto); err != nil {
		t.Errorf("cleanup: flushing the ToR's test routes: %v\n%s", err, out)
	}
}

// hostPrefixes returns n consecutive /32 prefixes starting offset addresses
// after base.
func hostPrefixes(base netip.Addr, offset, n int) []string {
	b := base.As4()
	start := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	out := make([]string, n)
	for i := range n {
		a := start + uint32(offset+i)
		out[i] = fmt.Sprintf("%d.%d.%d.%d/32", a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
	}
	return out
}
