package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// autoConfig is c1's config with the pod block derived from the kernel
// instead of typed in, plus addresses on svc* interfaces and an IPv6
// loopback.
func autoConfig(s *testenv.Server) string {
	cfg := strings.Replace(s.DefaultConfig(), "[[announce]]\nprefix = \"10.1.8.192/26\"\nblackhole = true\n", "", 1)
	return cfg + `
[[auto-announce]]
pool = "10.1.0.0/16"
block-size = 26
interfaces = "cali*"
blackhole = true

[[announce-addresses]]
interfaces = "svc*"

[[announce-addresses]]
interfaces = "lo"
exclude = ["127.0.0.0/8", "1.1.1.1/32"]
`
}

func TestAutoAnnouncePodsAndAddresses(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	c1, c2, c3, tor := lab.Server("c1"), lab.Server("c2"), lab.Server("c3"), lab.ToR(0)
	good := c1.DefaultConfig()
	auto := autoConfig(c1)
	if strings.Contains(auto, "10.1.8.192/26") {
		t.Fatal("the test config still names the pod block")
	}
	if err := c1.WriteConfig(auto); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c1.WriteConfig(good)
		fabricctl(context.Background(), c1, "reload")
	})
	before := torPeer(ctx, t, tor, "swp1")
	if _, err := fabricctl(ctx, c1, "reload"); err != nil {
		t.Fatal(err)
	}
	// c1's existing pod keeps its block announced, now derived: the
	// session does not notice.
	waitToRHas(ctx, t, tor, "10.1.8.192/26", true)
	table, _ := fabricctl(ctx, c1, "show", "bgp", "ipv4", "unicast")
	if !strings.Contains(table, "(pods on cali* (pool 10.1.0.0/16))") {
		t.Errorf("the block's source is not shown:\n%s", table)
	}

	// A new pod in a new block: announced, in c2's kernel within a second,
	// with a blackhole on c1.
	if _, err := c1.Exec(ctx, "ip", "link", "add", "cali0e2e0e2e0e2", "type", "veth", "peer", "name", "e2epod0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Exec(context.Background(), "ip", "link", "del", "cali0e2e0e2e0e2") })
	for _, args := range [][]string{
		{"link", "set", "cali0e2e0e2e0e2", "up"},
		{"link", "set", "e2epod0", "up"},
		{"route", "add", "10.1.9.5", "dev", "cali0e2e0e2e0e2", "scope", "link"},
	} {
		if _, err := c1.Exec(ctx, "ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	err := testenv.WaitFor(ctx, 5*time.Second, "10.1.9.0/26 in c2's kernel", func() error {
		out, err := c2.Exec(ctx, "ip", "route", "show", "10.1.9.0/26")
		if err != nil || !strings.Contains(out, "proto bgp") {
			return fmt.Errorf("c2 has %q (%v)", out, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("pod route added on c1 -> block in c2's kernel after %v", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the block took %v to reach c2, want under 1 s", took)
	}
	if out, _ := c1.Exec(ctx, "ip", "route", "show", "10.1.9.0/26"); !strings.Contains(out, "blackhole 10.1.9.0/26 proto bgp metric 20") {
		t.Errorf("no blackhole on c1: %q", out)
	}
	waitToRHas(ctx, t, tor, "10.1.9.0/26", true)

	// The last pod goes: after the hold-down the block is withdrawn.
	if _, err := c1.Exec(ctx, "ip", "link", "del", "cali0e2e0e2e0e2"); err != nil {
		t.Fatal(err)
	}
	waitToRHas(ctx, t, tor, "10.1.9.0/26", false)
	if out, _ := c1.Exec(ctx, "ip", "route", "show", "10.1.9.0/26"); out != "" {
		t.Errorf("blackhole left after the block was withdrawn: %q", out)
	}

	// An address on a service interface: reachable from c3.
	if _, err := c1.Exec(ctx, "ip", "link", "add", "svc0", "type", "veth", "peer", "name", "svc0peer"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Exec(context.Background(), "ip", "link", "del", "svc0") })
	if _, err := c1.Exec(ctx, "ip", "addr", "add", "10.96.0.10/32", "dev", "svc0"); err != nil {
		t.Fatal(err)
	}
	waitToRHas(ctx, t, tor, "10.96.0.10/32", true)
	if err := testenv.WaitFor(ctx, 10*time.Second, "ping from c3 to c1's service address", func() error {
		_, err := c3.Exec(ctx, "ping", "-c", "1", "-W", "1", "-I", "3.3.3.3", "10.96.0.10")
		return err
	}); err != nil {
		t.Error(err)
	}
	if _, err := c1.Exec(ctx, "ip", "addr", "del", "10.96.0.10/32", "dev", "svc0"); err != nil {
		t.Fatal(err)
	}
	waitToRHas(ctx, t, tor, "10.96.0.10/32", false)

	if p := torPeer(ctx, t, tor, "swp1"); p.ConnectionsEstablished != before.ConnectionsEstablished {
		t.Errorf("c1's session was reset: %+v", p)
	}
}

func TestIPv6Loopbacks(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, time.Minute)
	c1, c2 := lab.Server("c1"), lab.Server("c2")
	addrs := map[*testenv.Server]string{c1: "fd00::1", c2: "fd00::2"}
	for s, a := range addrs {
		if _, err := s.Exec(ctx, "ip", "-6", "addr", "add", a+"/128", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		good := s.DefaultConfig()
		if err := s.WriteConfig(good + "\n[[announce]]\nprefix = \"" + a + "/128\"\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := fabricctl(ctx, s, "reload"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			s.WriteConfig(good)
			fabricctl(context.Background(), s, "reload")
			s.Exec(context.Background(), "ip", "-6", "addr", "del", a+"/128", "dev", "lo")
		})
	}
	// c2 installs c1's loopback via the ToR's link-local address.
	err := testenv.WaitFor(ctx, 10*time.Second, "fd00::1 in c2's kernel", func() error {
		out, err := c2.Exec(ctx, "ip", "-6", "route", "show", "fd00::1")
		if err != nil || !strings.Contains(out, "via fe80::") || !strings.Contains(out, "dev ens3 proto bgp metric 20") {
			return fmt.Errorf("c2 has %q (%v)", out, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.WaitFor(ctx, 10*time.Second, "ping -6 from c2 to c1", func() error {
		_, err := c2.Exec(ctx, "ping", "-6", "-c", "1", "-W", "1", "-I", "fd00::2", "fd00::1")
		return err
	}); err != nil {
		t.Error(err)
	}
	out, err := fabricctl(ctx, c2, "show", "ipv6", "route")
	if err != nil || !strings.Contains(out, "B>* fd00::1/128 [20/0] via fe80::") {
		t.Errorf("show ipv6 route: %v\n%s", err, out)
	}
	out, err = fabricctl(ctx, c2, "show", "bgp", "ipv6", "unicast")
	if err != nil || !strings.Contains(out, "fd00::1/128") {
		t.Errorf("show bgp ipv6 unicast: %v\n%s", err, out)
	}
}
