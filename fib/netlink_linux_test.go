package fib

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

// inNetns runs fn on a locked OS thread inside a new, uniquely named
// network namespace with lo up and a veth pair a0/a1, and removes the
// namespace afterwards.
func inNetns(t *testing.T, fn func(ns string, a0, a1 int)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	var b [3]byte
	rand.Read(b[:])
	ns := "fib" + hex.EncodeToString(b[:])
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "link", "add", "a0", "type", "veth", "peer", "name", "a1")
	run("-n", ns, "link", "set", "a0", "up")
	run("-n", ns, "link", "set", "a1", "up")

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	a0, err := net.InterfaceByName("a0")
	if err != nil {
		t.Fatal(err)
	}
	a1, err := net.InterfaceByName("a1")
	if err != nil {
		t.Fatal(err)
	}
	fn(ns, a0.Index, a1.Index)
}

func ipOut(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestNetlinkKernelRealTables(t *testing.T) {
	inNetns(t, func(ns string, a0, a1 int) {
		k, err := NewNetlinkKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()

		mac := net.HardwareAddr{0x02, 0xfa, 0xb1, 0, 0, 1}
		if err := k.SetNeighbor(Neighbor{Ifindex: a0, MAC: mac}); err != nil {
			t.Fatal(err)
		}
		if got, want := ipOut(t, ns, "neigh", "show", "169.254.0.1"), "169.254.0.1 dev a0 lladdr 02:fa:b1:00:00:01 PERMANENT proto bgp"; got != want {
			t.Fatalf("neighbour:\n%s\nwant\n%s", got, want)
		}
		gotMAC, perm, ok, err := k.LookupNeighbor(a0)
		if err != nil || !ok || !perm || gotMAC.String() != mac.String() {
			t.Fatalf("LookupNeighbor = %v %v %v %v", gotMAC, perm, ok, err)
		}

		// Someone else's routes: an admin route with our metric and a
		// static route for a prefix we will try to delete.
		ipOut(t, ns, "route", "add", "192.0.2.0/24", "dev", "a1", "metric", "20")
		ipOut(t, ns, "route", "add", "198.51.100.0/24", "dev", "a1", "proto", "static", "metric", "20")

		p := netip.MustParsePrefix
		ops := []Op{
			{Kind: OpAdd, Route: Route{Prefix: p("2.2.2.2/32"), Metric: 20, Ifindexes: []int{a0}}},
			{Kind: OpAdd, Route: Route{Prefix: p("10.1.71.192/26"), Metric: 20, Ifindexes: []int{a0, a1}}},
			{Kind: OpAdd, Route: Route{Prefix: p("192.0.2.0/24"), Metric: 20, Ifindexes: []int{a0}}}, // refused: not ours
			{Kind: OpAdd, Route: Route{Prefix: p("10.1.8.192/26"), Metric: 20, Blackhole: true}},
			{Kind: OpDelete, Route: Route{Prefix: p("198.51.100.0/24"), Metric: 20}}, // refused: other protocol
		}
		err = k.Apply(ops)
		var failed []int
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var oe *OpError
			if !errors.As(e, &oe) {
				t.Fatalf("unattributed error %v", e)
			}
			failed = append(failed, oe.Index)
			switch oe.Index {
			case 2:
				if !errors.Is(oe, syscall.EEXIST) {
					t.Errorf("op 2: %v, want EEXIST", oe)
				}
			case 4:
				if !errors.Is(oe, syscall.ESRCH) {
					t.Errorf("op 4: %v, want ESRCH", oe)
				}
			}
		}
		if len(failed) != 2 || failed[0]+failed[1] != 6 {
			t.Fatalf("failed ops %v (%v), want [2 4]", failed, err)
		}

		// The whole main table as iproute2 prints it: ours in the seed's
		// shape, the foreign routes untouched.
		want := strings.Join([]string{
			"2.2.2.2 via 169.254.0.1 dev a0 proto bgp metric 20 onlink ",
			"blackhole 10.1.8.192/26 proto bgp metric 20 ",
			"10.1.71.192/26 proto bgp metric 20 ",
			"\tnexthop via 169.254.0.1 dev a0 weight 1 onlink ",
			"\tnexthop via 169.254.0.1 dev a1 weight 1 onlink ",
			"192.0.2.0/24 dev a1 scope link metric 20 ",
			"198.51.100.0/24 dev a1 proto static scope link metric 20",
		}, "\n")
		if got := ipOut(t, ns, "route", "show"); got != want {
			t.Fatalf("ip route show:\n%s\nwant\n%s", got, want)
		}

		routes, err := k.Routes()
		if err != nil || len(routes) != 3 {
			t.Fatalf("Routes = %v, %v", routes, err)
		}

		// Replace the multipath route with a single path, then delete all.
		if err := k.Apply([]Op{{Kind: OpReplace, Route: Route{Prefix: p("10.1.71.192/26"), Metric: 20, Ifindexes: []int{a1}}}}); err != nil {
			t.Fatal(err)
		}
		if got := ipOut(t, ns, "route", "show", "10.1.71.192/26"); got != "10.1.71.192/26 via 169.254.0.1 dev a1 proto bgp metric 20 onlink" {
			t.Fatalf("after replace: %q", got)
		}
		var dels []Op
		for _, r := range routes {
			dels = append(dels, Op{Kind: OpDelete, Route: Route{Prefix: r.Prefix, Metric: 20}})
		}
		if err := k.Apply(dels); err != nil {
			t.Fatal(err)
		}
		if got := ipOut(t, ns, "route", "show", "proto", "bgp"); got != "" {
			t.Fatalf("left after delete:\n%s", got)
		}
		if err := k.DeleteNeighbor(a0); err != nil {
			t.Fatal(err)
		}
		if got := ipOut(t, ns, "neigh", "show", "169.254.0.1"); got != "" {
			t.Fatalf("neighbour left: %s", got)
		}
	})
}

func TestNetlinkKernelLargeBatch(t *testing.T) {
	inNetns(t, func(ns string, a0, a1 int) {
		k, err := NewNetlinkKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		const n = 20000
		ops := make([]Op, n)
		for i := range ops {
			ops[i] = Op{Kind: OpAdd, Route: Route{
				Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 32), Metric: 20, Ifindexes: []int{a0}}}
		}
		// Make one in the middle fail to check attribution across batches.
		ops[12345].Route.Ifindexes = []int{99999}
		err = k.Apply(ops)
		var oe *OpError
		if !errors.As(err, &oe) || oe.Index != 12345 {
			t.Fatalf("Apply = %v, want one failure at 12345", err)
		}
		routes, err := k.Routes()
		if err != nil || len(routes) != n-1 {
			t.Fatalf("Routes = %d, %v; want %d", len(routes), err, n-1)
		}
	})
}
