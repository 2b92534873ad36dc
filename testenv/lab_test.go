package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireLab skips tests that need to build a real lab.
func requireLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/usr/lib/frr/bgpd"); err != nil {
		t.Skip("needs FRR: /usr/lib/frr/bgpd not found")
	}
}

// allDaemons snapshots every process the lab has started so far.
func allDaemons(l *Lab) []*daemon {
	var ds []*daemon
	for _, r := range l.tors {
		r.mu.Lock()
		if r.frr != nil {
			ds = append(ds, r.frr.procs...)
		}
		if r.bird != nil {
			ds = append(ds, r.bird)
		}
		r.mu.Unlock()
	}
	for _, s := range l.servers {
		s.mu.Lock()
		if s.frr != nil {
			ds = append(ds, s.frr.procs...)
		}
		if s.fabricd != nil {
			ds = append(ds, s.fabricd)
		}
		s.mu.Unlock()
	}
	return ds
}

// assertNothingLeft checks that a closed lab left no namespace, FRR run directory,
// process or (own) directory behind.
func assertNothingLeft(t *testing.T, prefix, dir string, daemons []*daemon) {
	t.Helper()
	if prefix == "" {
		t.Fatal("no prefix recorded")
	}
	out, err := run(context.Background(), "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, prefix+"-") {
			t.Errorf("namespace left behind: %s", line)
		}
	}
	left, err := filepath.Glob(filepath.Join(frrRunDir, prefix+"-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("FRR run directories left behind: %v", left)
	}
	for _, d := range daemons {
		if d.running() {
			t.Errorf("%s (pid %d) still running", d.name, d.pid())
		}
	}
	if dir != "" {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lab directory %s left behind (stat: %v)", dir, err)
		}
	}
}

// dumpOnFailure prints the ToR and server logs if the test fails.
func dumpOnFailure(t *testing.T, lab *Lab) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for i := 0; lab.ToR(i) != nil; i++ {
			t.Logf("%s log (tail):\n%s", lab.ToR(i).Name(), tail(lab.ToR(i).Log(), 40))
		}
		for _, s := range lab.Servers() {
			t.Logf("%s log (tail):\n%s", s.Name(), tail(s.Log(), 40))
		}
	})
}

// TestLabFRRSeed builds the seed fabric with FRR on the servers and checks the control
// plane (sessions, prefixes, kernel routes) and the data plane (pings).
func TestLabFRRSeed(t *testing.T) {
	requireLab(t)
	if _, err := exec.LookPath("ping"); err != nil {
		t.Fatal("ping not found (apt-get install iputils-ping)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()

	begin := time.Now()
	lab, err := New(ctx, Options{Role: RoleFRR, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	dumpOnFailure(t, lab)
	t.Logf("lab built in %v", time.Since(begin).Round(time.Millisecond))

	started := time.Now()
	if err := lab.StartServers(ctx); err != nil {
		t.Fatal(err)
	}
	tor := lab.ToR(0)
	err = WaitFor(ctx, 30*time.Second, "3 Established peers with 2 prefixes each on the ToR", func() error {
		peers, err := tor.BGPPeers(ctx)
		if err != nil {
			return err
		}
		established := 0
		for _, p := range peers {
			if p.State == "Established" && p.PfxRcd == 2 {
				established++
			}
		}
		if established != 3 {
			return errors.New(tor.Name() + ": not all 3 peers Established with 2 prefixes: " + summarize(peers))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ToR has 3 Established peers with 2 prefixes each %v after the servers started",
		time.Since(started).Round(time.Millisecond))

	c1, c2 := lab.Server("c1"), lab.Server("c2")
	err = WaitFor(ctx, 10*time.Second, "c1's kernel route to 2.2.2.2 via the ToR", func() error {
		out, err := c1.Exec(ctx, "ip", "-j", "route", "show", "2.2.2.2/32")
		if err != nil {
			return err
		}
		routes, err := parseRoutes(out)
		if err != nil {
			return err
		}
		rt, ok := routes[netip.MustParsePrefix("2.2.2.2/32")]
		if !ok {
			return errors.New("no route yet")
		}
		if rt.Protocol != "bgp" || rt.Dev != "ens3" {
			return errors.New("unexpected route: " + out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConverged(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("fabric converged (all kernels) %v after the servers started", time.Since(started).Round(time.Millisecond))

	out, err := c1.Exec(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", "1.1.1.1", "2.2.2.2")
	if err != nil {
		t.Fatalf("ping c1 -> c2 loopback: %v\n%s", err, out)
	}
	t.Logf("c1 -> c2 loopback:\n%s", out)

	from, to := c1.Pod(0), c2.Pod(0)
	out, err = from.Exec(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "2", to.Addr().String())
	if err != nil {
		t.Fatalf("ping pod %v -> pod %v: %v\n%s", from.Addr(), to.Addr(), err, out)
	}
	t.Logf("pod %v -> pod %v:\n%s", from.Addr(), to.Addr(), out)

	prefix, dir, daemons := lab.Prefix(), lab.Dir(), allDaemons(lab)
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	assertNothingLeft(t, prefix, dir, daemons)
}

func summarize(peers map[string]BGPPeer) string {
	var parts []string
	for port, p := range peers {
		parts = append(parts, port+"="+p.State+"/"+strconv.Itoa(p.PfxRcd))
	}
	return strings.Join(parts, " ")
}

// TestNewFailureCleansUp makes New fail after the ToR's FRR is running, when it has made
// everything but waited for DAD, and checks that nothing is left.
func TestNewFailureCleansUp(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	forced := errors.New("forced failure")
	var (
		prefix, dir string
		daemons     []*daemon
	)
	opts := Options{Role: RoleFRR, ToRs: 2, Logf: t.Logf}
	opts.hook = func(l *Lab, step string) error {
		if step != "tors" {
			return nil
		}
		prefix, dir, daemons = l.Prefix(), l.Dir(), allDaemons(l)
		if len(daemons) != 6 {
			t.Errorf("%d daemons running after the ToRs started, want 6", len(daemons))
		}
		if len(l.Namespaces()) != 2+3+3 {
			t.Errorf("namespaces %v, want 2 ToRs, 3 servers, 3 pods", l.Namespaces())
		}
		return forced
	}
	lab, err := New(ctx, opts)
	if !errors.Is(err, forced) {
		if lab != nil {
			lab.Close()
		}
		t.Fatalf("New: %v, want the forced failure", err)
	}
	assertNothingLeft(t, prefix, dir, daemons)
}

// TestNewRejectsBadToRConfig: FRR skips config lines it does not know; New must not.
func TestNewRejectsBadToRConfig(t *testing.T) {
	requireLab(t)
	var (
		prefix, dir string
		daemons     []*daemon
	)
	opts := Options{Role: RoleFRR, ToRExtraConfig: "bgp no-such-knob", Logf: t.Logf}
	opts.hook = func(l *Lab, step string) error {
		prefix, dir, daemons = l.Prefix(), l.Dir(), allDaemons(l) // the last step run wins
		return nil
	}
	_, err := New(t.Context(), opts)
	if err == nil || !strings.Contains(err.Error(), "no-such-knob") {
		t.Fatalf("New: %v, want the rejected config line", err)
	}
	t.Log(err)
	assertNothingLeft(t, prefix, dir, daemons)
}

// TestLabFRRTwoToRs checks ECMP over two ToRs, extra ToR config, and that the fabric
// converges again after a ToR restart.
func TestLabFRRTwoToRs(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	lab, err := New(ctx, Options{Role: RoleFRR, ToRs: 2, ToRExtraConfig: "neighbor COMPUTE description servers", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	dumpOnFailure(t, lab)

	checkUrgentUplinks(ctx, t, lab)

	started := time.Now()
	if err := lab.StartServers(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConverged(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("two-ToR fabric converged %v after the servers started", time.Since(started).Round(time.Millisecond))

	tor2 := lab.ToR(1)
	if tor2.Namespace() != lab.Prefix()+"-tor2" || tor2.PortFor("c3") != "swp3" || tor2.ASN() != 65005 {
		t.Errorf("tor2: namespace %s, port to c3 %s, AS %d", tor2.Namespace(), tor2.PortFor("c3"), tor2.ASN())
	}
	out, err := tor2.Vtysh(ctx, "show running-config")
	if err != nil || !strings.Contains(out, "neighbor COMPUTE description servers") {
		t.Errorf("ToRExtraConfig not in tor2's running config (%v):\n%s", err, out)
	}

	restarted := time.Now()
	if err := tor2.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Restart returns with tor2's sessions down and its routes gone, so this cannot
	// pass on the state from before the restart.
	if err := lab.WaitConverged(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("converged again %v after restarting tor2", time.Since(restarted).Round(time.Millisecond))

	c3 := lab.Server("c3")
	if out, err := c3.Pod(0).Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "2", lab.Server("c1").Pod(0).Addr().String()); err != nil {
		t.Fatalf("pod ping c3 -> c1: %v\n%s", err, out)
	}
}

// TestLabBIRDToR runs BIRD as tor2 next to an FRR tor, with FRR on the servers
// as the reference: the BIRD ToR must be a working ToR (sessions, its kernel
// forwarding, ECMP on the servers), survive a restart, and leave nothing behind.
func TestLabBIRDToR(t *testing.T) {
	requireLab(t)
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("needs BIRD 2 (apt-get install bird2)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	lab, err := New(ctx, Options{Role: RoleFRR, ToRs: 2, ToRFlavors: []ToRFlavor{ToRFRR, ToRBIRD}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	dumpOnFailure(t, lab)

	tor2 := lab.ToR(1)
	if _, err := tor2.Vtysh(ctx, "show version"); err == nil || !strings.Contains(err.Error(), "not FRR") {
		t.Errorf("vtysh on a BIRD ToR: %v, want an error saying it is not FRR", err)
	}
	if out, err := tor2.Birdc(ctx, "show", "status"); err != nil || !strings.Contains(out, "Router ID is 5.5.5.5") {
		t.Errorf("birdc show status (%v):\n%s", err, out)
	}
	if _, err := tor2.Birdc(ctx, "show", "no-such-thing"); err == nil {
		t.Error("birdc with a bad command: no error")
	}

	if err := lab.StartServers(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	peers, err := tor2.BGPPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"swp1", "swp2", "swp3"} {
		if p := peers[port]; p.State != "Established" || p.RemoteAS != 65001+uint32(port[3]-'1') || p.PfxRcd != 2 || p.PfxSnt == 0 {
			t.Errorf("BIRD's session on %s: %+v", port, p)
		}
	}

	restarted := time.Now()
	if err := tor2.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Restart returns with BIRD's sessions gone (they were spawned by the
	// servers' connections), so this cannot pass on the state from before.
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("converged again %v after restarting BIRD", time.Since(restarted).Round(time.Millisecond))
	if !strings.Contains(tor2.Log(), "swp1_1: BGP session established") {
		t.Errorf("BIRD's log lacks the session trace:\n%s", tail(tor2.Log(), 20))
	}

	prefix, dir, daemons := lab.Prefix(), lab.Dir(), allDaemons(lab)
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, prefix, dir, daemons)
}

// TestNewRejectsUnreachableDir: FRR runs as user frr, which cannot enter t.TempDir().
func TestNewRejectsUnreachableDir(t *testing.T) {
	requireLab(t)
	dir := filepath.Join(t.TempDir(), "lab")
	_, err := New(t.Context(), Options{Role: RoleFRR, Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "user frr cannot") {
		t.Fatalf("New: %v, want an error about user frr", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) > 0 {
		t.Errorf("left in %s: %v", dir, entries)
	}
}

// fakeFabricd stands in for fabricd: it proves the command line, the namespace and the
// log redirection, exits 0 on SIGTERM, and exits 3 at once when asked to crash.
const fakeFabricd = `#!/bin/sh
echo "fake fabricd args: $*"
ip -o link show ens3 >/dev/null && echo "sees ens3"
if [ "$3" = "--crash" ]; then echo "crashing"; exit 3; fi
trap 'echo "got TERM"; exit 0' TERM
while :; do sleep 0.05; done
`

func TestFabricdRoleProcesses(t *testing.T) {
	requireLab(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "fake-fabricd")
	if err := os.WriteFile(bin, []byte(fakeFabricd), 0o755); err != nil {
		t.Fatal(err)
	}

	lab, err := New(ctx, Options{Role: RoleFabricd, FabricdBinary: bin, Servers: SeedServers()[:2], Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lab.Close() })
	c1, c2 := lab.Server("c1"), lab.Server("c2")

	cfg, err := os.ReadFile(c1.ConfigPath())
	if err != nil || string(cfg) != c1.DefaultConfig() {
		t.Fatalf("config file %s: %v\n%s", c1.ConfigPath(), err, cfg)
	}

	if err := c1.Start(ctx, "--extra"); err != nil {
		t.Fatal(err)
	}
	if c1.PID() == 0 {
		t.Error("PID is 0 for a running fabricd")
	}
	if err := c1.Start(ctx); err == nil {
		t.Error("a second Start succeeded")
	}
	want := "fake fabricd args: --config " + c1.ConfigPath() + " --extra"
	if err := WaitFor(ctx, 5*time.Second, "the fake fabricd's output", func() error {
		if !strings.Contains(c1.Log(), want) || !strings.Contains(c1.Log(), "sees ens3") {
			return errors.New("log so far: " + c1.Log())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c1.Stop(syscall.SIGTERM); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !strings.Contains(c1.Log(), "got TERM") || c1.PID() != 0 {
		t.Errorf("after Stop: pid %d, log:\n%s", c1.PID(), c1.Log())
	}

	// A daemon that dies makes WaitConverged fail at once, with its exit and log.
	if err := c1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c2.Start(ctx, "--crash"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = lab.WaitConverged(ctx, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "crashing") {
		t.Fatalf("WaitConverged: %v, want c2's exit status 3 and log", err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("WaitConverged took %v to notice a dead daemon", d)
	}

	prefix, dir, daemons := lab.Prefix(), lab.Dir(), allDaemons(lab)
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, prefix, dir, daemons)
}

// checkUrgentUplinks checks that both ends of every uplink veth have an ifindex that
// differs from their iflink (the peer's index), so that the kernel's linkwatch
// reports their carrier changes at once instead of up to a second later.
func checkUrgentUplinks(ctx context.Context, t *testing.T, lab *Lab) {
	t.Helper()
	type link struct {
		Ifname    string `json:"ifname"`
		Ifindex   int    `json:"ifindex"`
		LinkIndex int    `json:"link_index"`
	}
	check := func(ns string, names []string) {
		out, err := ipn(ctx, ns, "-j", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		var links []link
		if err := json.Unmarshal([]byte(out), &links); err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, l := range links {
			if !slices.Contains(names, l.Ifname) {
				continue
			}
			seen++
			if l.LinkIndex == 0 || l.Ifindex == l.LinkIndex {
				t.Errorf("%s %s: ifindex %d, iflink %d: carrier changes would wait for linkwatch", ns, l.Ifname, l.Ifindex, l.LinkIndex)
			}
		}
		if seen != len(names) {
			t.Errorf("%s: found %d of %v", ns, seen, names)
		}
	}
	for _, s := range lab.Servers() {
		check(s.Namespace(), s.Uplinks())
	}
	for i := 0; lab.ToR(i) != nil; i++ {
		var ports []string
		for _, s := range lab.Servers() {
			ports = append(ports, lab.ToR(i).PortFor(s.Name()))
		}
		check(lab.ToR(i).Namespace(), ports)
	}
}

func TestParseRoles(t *testing.T) {
	rs, err := ParseRoles("frr, fabricd")
	if err != nil || !slices.Equal(rs, []Role{RoleFRR, RoleFabricd}) {
		t.Errorf("ParseRoles(frr, fabricd) = %v, %v", rs, err)
	}
	for _, bad := range []string{"", ",", "bird"} {
		if _, err := ParseRoles(bad); err == nil {
			t.Errorf("ParseRoles(%q) took it", bad)
		}
	}
}
