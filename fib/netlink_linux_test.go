package fib

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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
			{Kind: OpAdd, Route: Route{Prefix: p("2.2.2.2/32"), Metric: 20, Via: []Via{{a0, Gateway}}}},
			{Kind: OpAdd, Route: Route{Prefix: p("10.1.71.192/26"), Metric: 20, Via: []Via{{a0, Gateway}, {a1, Gateway}}}},
			{Kind: OpAdd, Route: Route{Prefix: p("192.0.2.0/24"), Metric: 20, Via: []Via{{a0, Gateway}}}}, // refused: not ours
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
		if err := k.Apply([]Op{{Kind: OpReplace, Route: Route{Prefix: p("10.1.71.192/26"), Metric: 20, Via: []Via{{a1, Gateway}}}}}); err != nil {
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
				Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 32), Metric: 20, Via: []Via{{a0, Gateway}}}}
		}
		// Make one in the middle fail to check attribution across batches.
		ops[12345].Route.Via = []Via{{99999, Gateway}}
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

func TestNetlinkKernelNexthopObjects(t *testing.T) {
	inNetns(t, func(ns string, a0, a1 int) {
		k, err := NewNetlinkKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		if nhs, ok, err := k.Nexthops(); err != nil || !ok || len(nhs) != 0 {
			t.Fatalf("Nexthops on a fresh namespace = %v %v %v", nhs, ok, err)
		}
		// An object someone else owns, outside our range: never listed.
		ipOut(t, ns, "nexthop", "add", "id", "7", "dev", "a1")

		n0, n1, g := uint32(nexthopIDBase), uint32(nexthopIDBase+1), uint32(groupIDBase+3)
		p := netip.MustParsePrefix
		ops := []Op{
			{Kind: OpAdd, Nexthop: &Nexthop{ID: n0, Via: Via{a0, Gateway}}},
			{Kind: OpAdd, Nexthop: &Nexthop{ID: n1, Via: Via{a1, Gateway}}},
			{Kind: OpAdd, Nexthop: &Nexthop{ID: g, Group: []uint32{n0, n1}}},
			{Kind: OpAdd, Route: Route{Prefix: p("2.2.2.2/32"), Metric: 20, NexthopID: n0}},
			{Kind: OpAdd, Route: Route{Prefix: p("10.1.71.192/26"), Metric: 20, NexthopID: g}},
		}
		if err := k.Apply(ops); err != nil {
			t.Fatal(err)
		}
		want := strings.Join([]string{
			fmt.Sprintf("2.2.2.2 nhid %d via 169.254.0.1 dev a0 proto bgp metric 20 onlink ", n0),
			fmt.Sprintf("10.1.71.192/26 nhid %d proto bgp metric 20 ", g),
			"\tnexthop via 169.254.0.1 dev a0 weight 1 onlink ",
			"\tnexthop via 169.254.0.1 dev a1 weight 1 onlink",
		}, "\n")
		if got := ipOut(t, ns, "route", "show"); got != want {
			t.Fatalf("ip route show:\n%s\nwant\n%s", got, want)
		}
		if got := ipOut(t, ns, "nexthop", "show", "id", fmt.Sprint(n0)); got != fmt.Sprintf("id %d via 169.254.0.1 dev a0 scope link proto bgp onlink", n0) {
			t.Errorf("nexthop object: %q", got)
		}
		nhs, _, err := k.Nexthops()
		if err != nil || len(nhs) != 3 {
			t.Fatalf("Nexthops = %+v %v", nhs, err)
		}
		routes, err := k.Routes()
		if err != nil || len(routes) != 2 {
			t.Fatalf("Routes = %+v %v", routes, err)
		}
		for _, r := range routes {
			if r.NexthopID == 0 || r.Metric != 20 {
				t.Errorf("route read back without its object: %+v", r)
			}
		}

		// Deleting an uplink's object: the group shrinks, the route on it
		// alone goes. Re-creating it and rewriting the group restores ECMP.
		if err := k.Apply([]Op{{Kind: OpDelete, Nexthop: &Nexthop{ID: n0}}}); err != nil {
			t.Fatal(err)
		}
		want = fmt.Sprintf("10.1.71.192/26 nhid %d via 169.254.0.1 dev a1 proto bgp metric 20 onlink", g)
		if got := ipOut(t, ns, "route", "show"); got != want {
			t.Fatalf("after deleting the object:\n%s\nwant\n%s", got, want)
		}
		err = k.Apply([]Op{
			{Kind: OpAdd, Nexthop: &Nexthop{ID: n0, Via: Via{a0, Gateway}}},
			{Kind: OpReplace, Nexthop: &Nexthop{ID: g, Group: []uint32{n0, n1}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := ipOut(t, ns, "route", "show", "10.1.71.192/26"); !strings.Contains(got, "dev a0") || !strings.Contains(got, "dev a1") {
			t.Fatalf("ECMP not restored: %s", got)
		}
		// a1 going down takes a0's carrier too (veth peers): the kernel
		// flushes the objects on both links, the group and the route by
		// itself, with no help from us.
		ipOut(t, ns, "link", "set", "a1", "down")
		// a0's carrier loss reaches the kernel's link watcher
		// asynchronously (at most a second later for a veth).
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if nhs, _, err = k.Nexthops(); err != nil || len(nhs) == 0 || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || len(nhs) != 0 {
			t.Errorf("objects left after carrier loss: %+v %v", nhs, err)
		}
		if got := ipOut(t, ns, "route", "show", "proto", "bgp"); got != "" {
			t.Errorf("routes left after carrier loss: %s", got)
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	f.Add(appendRouteMsg(nil, Op{Kind: OpAdd, Route: Route{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Metric: 20, Via: []Via{{2, Gateway}, {3, Gateway}}}}, 1, 0)[16:])
	f.Add(appendRouteMsg(nil, Op{Kind: OpAdd, Route: Route{Prefix: netip.MustParsePrefix("1.2.3.4/32"), Metric: 20, NexthopID: 99}}, 1, 0)[16:])
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, ok := parseRoute(b); ok && (!r.Prefix.IsValid() || r.Prefix.Bits() > r.Prefix.Addr().BitLen()) {
			t.Fatalf("bad prefix from %x: %v", b, r.Prefix)
		}
	})
}

func FuzzParseNexthop(f *testing.F) {
	f.Add(appendNexthopMsg(nil, Op{Kind: OpAdd, Nexthop: &Nexthop{ID: 5, Group: []uint32{1, 2}}}, 1, 0)[16:])
	f.Add(appendNexthopMsg(nil, Op{Kind: OpAdd, Nexthop: &Nexthop{ID: 5, Via: Via{3, Gateway}}}, 1, 0)[16:])
	f.Fuzz(func(t *testing.T, b []byte) {
		parseNexthop(b)
	})
}

// The encoders' output is what the parsers read back.
func TestEncodeParseRoundTrip(t *testing.T) {
	ll := netip.MustParseAddr("fe80::1")
	for _, r := range []Route{
		{Prefix: netip.MustParsePrefix("10.1.8.192/26"), Metric: 20, Via: []Via{{2, Gateway}, {3, Gateway}}},
		{Prefix: netip.MustParsePrefix("2.2.2.2/32"), Metric: 20, Via: []Via{{2, Gateway}}},
		{Prefix: netip.MustParsePrefix("fd00::1/128"), Metric: 20, Via: []Via{{2, ll}}},
		{Prefix: netip.MustParsePrefix("2001:db8::/64"), Metric: 20, Via: []Via{{2, ll}, {3, ll}}},
	} {
		got, ok := parseRoute(appendRouteMsg(nil, Op{Kind: OpAdd, Route: r}, 1, 0)[16:])
		if !ok || got.Prefix != r.Prefix || got.Metric != 20 || !slices.Equal(got.Via, r.Via) {
			t.Fatalf("route round trip: %+v, want %+v", got, r)
		}
	}
	nh := Nexthop{ID: groupIDBase + 3, Group: []uint32{nexthopIDBase, nexthopIDBase + 1}}
	gotNH, ok := parseNexthop(appendNexthopMsg(nil, Op{Kind: OpAdd, Nexthop: &nh}, 1, 0)[16:])
	if !ok || gotNH.ID != nh.ID || !slices.Equal(gotNH.Group, nh.Group) {
		t.Fatalf("nexthop round trip: %+v", gotNH)
	}
}

func TestNetlinkKernelIPv6(t *testing.T) {
	inNetns(t, func(ns string, a0, a1 int) {
		k, err := NewNetlinkKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		tor := netip.MustParseAddr("fe80::1")
		id := uint32(nexthopIDBase + v6Offset)
		p := netip.MustParsePrefix
		err = k.Apply([]Op{
			{Kind: OpAdd, Nexthop: &Nexthop{ID: id, Via: Via{a0, tor}}},
			{Kind: OpAdd, Route: Route{Prefix: p("fd00::2/128"), Metric: 20, NexthopID: id}},
			{Kind: OpAdd, Route: Route{Prefix: p("2001:db8:2::/64"), Metric: 20, Via: []Via{{a0, tor}, {a1, tor}}}},
			{Kind: OpAdd, Route: Route{Prefix: p("2001:db8:3::/64"), Metric: 20, Blackhole: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		got := ipOut(t, ns, "-6", "route", "show", "proto", "bgp")
		for _, want := range []string{
			fmt.Sprintf("fd00::2 nhid %d via fe80::1 dev a0 metric 20", id),
			"2001:db8:2::/64 metric 20",
			"nexthop via fe80::1 dev a0 weight 1",
			"nexthop via fe80::1 dev a1 weight 1",
			"blackhole 2001:db8:3::/64 dev lo metric 20",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("ip -6 route lacks %q:\n%s", want, got)
			}
		}
		routes, err := k.Routes()
		if err != nil || len(routes) != 3 {
			t.Fatalf("Routes = %+v %v", routes, err)
		}
		var dels []Op
		for _, r := range routes {
			dels = append(dels, Op{Kind: OpDelete, Route: Route{Prefix: r.Prefix, Metric: 20}})
		}
		if err := k.Apply(dels); err != nil {
			t.Fatal(err)
		}
		if got := ipOut(t, ns, "-6", "route", "show", "proto", "bgp"); got != "" {
			t.Errorf("left after delete: %s", got)
		}
	})
}
