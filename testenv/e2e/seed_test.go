package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// wantKernel is the seed's kernel shape on server s: every other server's
// loopback and block through the ToR, the ToR's loopback, its own block
// blackholed.
func wantKernel(lab *testenv.Lab, s *testenv.Server) []string {
	var want []string
	via := " via 169.254.0.1 dev ens3 proto bgp metric 20 onlink"
	for _, o := range lab.Servers() {
		if o == s {
			want = append(want, "blackhole "+o.Spec().Block.String()+" proto bgp metric 20")
			continue
		}
		want = append(want, o.Spec().Loopback.Addr().String()+via, o.Spec().Block.String()+via)
	}
	want = append(want, "4.4.4.4"+via)
	slices.Sort(want)
	return want
}

func waitKernel(ctx context.Context, t *testing.T, lab *testenv.Lab, s *testenv.Server, want []string) {
	t.Helper()
	var got []string
	err := testenv.WaitFor(ctx, 20*time.Second, s.Name()+"'s kernel routes", func() error {
		var err error
		got, err = bgpRouteLines(ctx, s)
		if err != nil {
			return err
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("have\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// torMAC is the MAC of the ToR's port facing s.
func torMAC(ctx context.Context, t *testing.T, lab *testenv.Lab, s *testenv.Server) string {
	t.Helper()
	return portMAC(ctx, t, lab.ToR(0), s)
}

// portMAC is the MAC of tor's port facing s.
func portMAC(ctx context.Context, t *testing.T, tor *testenv.Router, s *testenv.Server) string {
	t.Helper()
	out, err := tor.Exec(ctx, "cat", "/sys/class/net/"+tor.PortFor(s.Name())+"/address")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func TestSeedFabric(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, time.Minute)

	// The ToR: three Established sessions, two prefixes from each server.
	peers, err := lab.ToR(0).BGPPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"swp1", "swp2", "swp3"} {
		p := peers[port]
		if p.State != "Established" || p.PfxRcd != 2 {
			t.Errorf("ToR %s: state %s, %d prefixes received; want Established with 2", port, p.State, p.PfxRcd)
		}
	}

	for _, s := range lab.Servers() {
		waitKernel(ctx, t, lab, s, wantKernel(lab, s))
		neigh, err := kernelLines(ctx, s, "neigh", "show", "169.254.0.1")
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("169.254.0.1 dev ens3 lladdr %s PERMANENT proto bgp", torMAC(ctx, t, lab, s))
		if !slices.Equal(neigh, []string{want}) {
			t.Errorf("%s: neighbour entries %q, want %q", s.Name(), neigh, want)
		}
		// Routes point at kernel nexthop objects for the uplink: one for
		// IPv4 routes, one for IPv6 routes (via the ToR's link-local).
		nhs, err := kernelLines(ctx, s, "nexthop", "show")
		if err != nil {
			t.Fatal(err)
		}
		if len(nhs) != 2 || !regexp.MustCompile(`^id \d+ via 169\.254\.0\.1 dev ens3 scope link proto bgp onlink$`).MatchString(nhs[0]) ||
			!regexp.MustCompile(`^id \d+ via fe80::\S+ dev ens3 scope link proto bgp$`).MatchString(nhs[1]) {
			t.Errorf("%s: nexthop objects %q", s.Name(), nhs)
		}
	}

	// Traffic: loopback to loopback, and pod to pod across servers.
	c1 := lab.Server("c1")
	for _, dst := range []string{"2.2.2.2", "3.3.3.3", "4.4.4.4"} {
		if out, err := c1.Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "1.1.1.1", dst); err != nil {
			t.Errorf("ping -I 1.1.1.1 %s: %v\n%s", dst, err, out)
		}
	}
	for _, pair := range [][2]string{{"c1", "c2"}, {"c2", "c3"}, {"c3", "c1"}} {
		from, to := lab.Server(pair[0]).Pod(0), lab.Server(pair[1]).Pod(0)
		if out, err := from.Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "1", to.Addr().String()); err != nil {
			t.Errorf("pod %s -> pod %s: %v\n%s", from.Addr(), to.Addr(), err, out)
		}
	}
}

func TestStopWithdrawsAndRestartRelearns(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	c1, c2, c3 := lab.Server("c1"), lab.Server("c2"), lab.Server("c3")

	// Routes and a neighbour entry that are not fabricd's, on c2 itself.
	// They must survive fabricd's stop (which removes what fabricd made).
	foreign := [][]string{
		{"route", "add", "192.0.2.0/24", "dev", "ens3", "proto", "static", "metric", "20"},
		{"route", "add", "198.51.100.7", "via", "169.254.0.1", "dev", "ens3", "onlink", "proto", "dhcp"},
		{"neigh", "add", "192.0.2.99", "lladdr", "02:00:00:00:00:99", "dev", "ens3", "nud", "permanent"},
	}
	for _, args := range foreign {
		if _, err := c2.Exec(ctx, "ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		c2.Exec(context.Background(), "ip", "route", "del", "192.0.2.0/24", "proto", "static")
		c2.Exec(context.Background(), "ip", "route", "del", "198.51.100.7", "proto", "dhcp")
		c2.Exec(context.Background(), "ip", "neigh", "del", "192.0.2.99", "dev", "ens3")
	})

	if err := c2.Stop(syscall.SIGTERM); err != nil {
		t.Fatalf("stopping fabricd on c2: %v", err)
	}
	// c2's routes leave c1 and c3.
	for _, s := range []*testenv.Server{c1, c3} {
		var want []string
		for _, l := range wantKernel(lab, s) {
			if !strings.HasPrefix(l, "2.2.2.2 ") && !strings.HasPrefix(l, "10.1.71.192/26 ") {
				want = append(want, l)
			}
		}
		waitKernel(ctx, t, lab, s, want)
	}
	// c2 itself: nothing of fabricd's is left, everything else is.
	if got, err := bgpRouteLines(ctx, c2); err != nil || len(got) != 0 {
		t.Errorf("c2 still has fabricd routes after stop: %q %v", got, err)
	}
	if got, _ := kernelLines(ctx, c2, "neigh", "show", "169.254.0.1"); len(got) != 0 {
		t.Errorf("c2 still has the gateway neighbour entry: %q", got)
	}
	if got, _ := kernelLines(ctx, c2, "nexthop", "show"); len(got) != 0 {
		t.Errorf("c2 still has nexthop objects: %q", got)
	}
	routes, _ := c2.Exec(ctx, "ip", "route")
	neighs, _ := c2.Exec(ctx, "ip", "neigh")
	for _, want := range []string{"192.0.2.0/24 dev ens3 proto static scope link metric 20", "198.51.100.7 via 169.254.0.1 dev ens3 proto dhcp onlink"} {
		if !strings.Contains(routes, want) {
			t.Errorf("foreign route %q was removed; c2 has:\n%s", want, routes)
		}
	}
	if !strings.Contains(neighs, "192.0.2.99 dev ens3 lladdr 02:00:00:00:00:99 PERMANENT") {
		t.Errorf("foreign neighbour entry was removed; c2 has:\n%s", neighs)
	}

	// Restart: everything comes back.
	start := time.Now()
	if err := c2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range lab.Servers() {
		waitKernel(ctx, t, lab, s, wantKernel(lab, s))
	}
	t.Logf("c2 restarted: every kernel converged %v after start", time.Since(start).Round(time.Millisecond))
}

func TestBrokenConfigChangesNothing(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, time.Minute)
	c3 := lab.Server("c3")
	good := c3.DefaultConfig()
	bad := strings.Replace(good, `prefix = "3.3.3.3/32"`, `prefix = "3.3.3.300/32"`, 1)
	if bad == good {
		t.Fatal("test config did not change")
	}
	if err := c3.WriteConfig(bad); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c3.WriteConfig(good) })
	badLine := 1 + slices.Index(strings.Split(bad, "\n"), `prefix = "3.3.3.300/32"`)

	// --check names file, line and key, exits 2.
	out, err := exec.CommandContext(ctx, bin("fabricd"), "--config", c3.ConfigPath(), "--check").CombinedOutput()
	wantMsg := fmt.Sprintf("%s:%d: announce#1.prefix: \"3.3.3.300/32\" is not a prefix", c3.ConfigPath(), badLine)
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), wantMsg) {
		t.Fatalf("fabricd --check: exit %d, output:\n%s\nwant exit 2 and %q", code, out, wantMsg)
	}

	// Starting with it: same error, and the running kernel is untouched.
	before, _ := c3.Exec(ctx, "ip", "route")
	out2, err := c3.Exec(ctx, bin("fabricd"), "--config", c3.ConfigPath())
	if code := exitCode(err); code != 2 {
		t.Fatalf("fabricd with a broken config: exit %d (%v) %s", code, err, out2)
	}
	after, _ := c3.Exec(ctx, "ip", "route")
	if before != after {
		t.Errorf("kernel changed:\nbefore\n%s\nafter\n%s", before, after)
	}

	// A good config passes --check.
	if err := c3.WriteConfig(good); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, bin("fabricd"), "--config", c3.ConfigPath(), "--check").CombinedOutput(); err != nil {
		t.Fatalf("fabricd --check on a good config: %v\n%s", err, out)
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
