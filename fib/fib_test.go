package fib

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fabricd/fabricd/rib"
)

// fakeKernel models the kernel's main table for one metric (at most one
// route per prefix, fabricd's or someone else's) and nexthop objects with
// the kernel's rules: deleting an object removes it from groups, deletes
// groups left empty and every route pointing at a deleted object.
type fakeKernel struct {
	mu        sync.Mutex
	objects   bool // the kernel supports nexthop objects
	routes    map[netip.Prefix]Route
	nexthops  map[uint32]Nexthop
	foreign   map[netip.Prefix]string // routes fabricd must never touch
	neighbors map[int]net.HardwareAddr
	applies   int
	ops       int
	// noCarrier lists interfaces that have lost carrier.
	noCarrier map[int]bool
	// neighborErr fails SetNeighbor.
	neighborErr error
	fail        map[netip.Prefix]error
}

func newFakeKernel(objects bool) *fakeKernel {
	return &fakeKernel{
		objects:   objects,
		routes:    map[netip.Prefix]Route{},
		nexthops:  map[uint32]Nexthop{},
		foreign:   map[netip.Prefix]string{},
		neighbors: map[int]net.HardwareAddr{},
		fail:      map[netip.Prefix]error{},

		noCarrier: map[int]bool{},
	}
}

func (k *fakeKernel) Routes() ([]Route, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []Route
	for _, r := range k.routes {
		out = append(out, r)
	}
	return out, nil
}

func (k *fakeKernel) Nexthops() ([]Nexthop, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []Nexthop
	for _, nh := range k.nexthops {
		out = append(out, nh)
	}
	return out, k.objects, nil
}

func (k *fakeKernel) Apply(ops []Op) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.applies++
	k.ops += len(ops)
	var errs []error
	for i, op := range ops {
		var err error
		if op.Nexthop != nil {
			err = k.applyNexthop(op)
		} else {
			err = k.applyRoute(op)
		}
		if err != nil {
			errs = append(errs, &OpError{Index: i, Op: op, Err: err})
		}
	}
	return errors.Join(errs...)
}

func (k *fakeKernel) applyRoute(op Op) error {
	p := op.Route.Prefix
	if err := k.fail[p]; err != nil {
		return err
	}
	_, foreign := k.foreign[p]
	_, ours := k.routes[p]
	switch op.Kind {
	case OpAdd:
		if foreign || ours {
			return syscall.EEXIST
		}
	case OpReplace:
		if foreign {
			delete(k.foreign, p) // what NLM_F_REPLACE would do: the bug the writer avoids
		}
	case OpDelete:
		if !ours {
			return syscall.ESRCH
		}
		delete(k.routes, p)
		return nil
	}
	r := op.Route
	if r.NexthopID != 0 {
		if _, ok := k.nexthops[r.NexthopID]; !ok {
			return syscall.EINVAL
		}
	}
	r.Via = slices.Clone(r.Via)
	k.routes[p] = r
	return nil
}

func (k *fakeKernel) applyNexthop(op Op) error {
	if !k.objects {
		return syscall.EOPNOTSUPP
	}
	nh := *op.Nexthop
	_, exists := k.nexthops[nh.ID]
	switch op.Kind {
	case OpAdd:
		if exists {
			return syscall.EEXIST
		}
	case OpDelete:
		if !exists {
			return syscall.ENOENT
		}
		k.deleteNexthop(nh.ID)
		return nil
	}
	for _, m := range nh.Group {
		if _, ok := k.nexthops[m]; !ok {
			return syscall.EINVAL
		}
	}
	nh.Group = slices.Clone(nh.Group)
	k.nexthops[nh.ID] = nh
	return nil
}

func (k *fakeKernel) deleteNexthop(id uint32) {
	delete(k.nexthops, id)
	for p, r := range k.routes {
		if r.NexthopID == id {
			delete(k.routes, p)
		}
	}
	for gid, g := range k.nexthops {
		if i := slices.Index(g.Group, id); i >= 0 {
			g.Group = slices.Delete(g.Group, i, i+1)
			k.nexthops[gid] = g
			if len(g.Group) == 0 {
				k.deleteNexthop(gid)
			}
		}
	}
}

// carrierLoss is what the kernel does on its own when ifindex loses
// carrier: it flushes the nexthop objects on it.
func (k *fakeKernel) carrierLoss(ifindex int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id, nh := range k.nexthops {
		if nh.Group == nil && nh.Via.Ifindex == ifindex {
			k.deleteNexthop(id)
		}
	}
}

func (k *fakeKernel) SetNeighbor(n Neighbor) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.neighborErr != nil {
		return k.neighborErr
	}
	k.neighbors[n.Ifindex] = slices.Clone(n.MAC)
	return nil
}

func (k *fakeKernel) DeleteNeighbor(ifindex int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.neighbors[ifindex]; !ok {
		return syscall.ENOENT
	}
	delete(k.neighbors, ifindex)
	return nil
}

func (k *fakeKernel) LookupNeighbor(ifindex int) (net.HardwareAddr, bool, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	mac, ok := k.neighbors[ifindex]
	return mac, ok, ok, nil
}

func (k *fakeKernel) HasCarrier(ifindex int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return !k.noCarrier[ifindex]
}

func (k *fakeKernel) Close() error { return nil }

var ifnames = map[int]string{2: "ens3", 3: "ens4"}

// render prints the fake kernel like `ip route show proto bgp` plus
// `ip neigh show 169.254.0.1`, sorted, for golden comparisons. Routes on
// nexthop objects print their resolved next hops without the "nhid N", so
// that the same golden text holds in both modes.
func (k *fakeKernel) render() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var lines []string
	for _, r := range k.routes {
		if r.NexthopID != 0 {
			r.Via = k.resolve(r.NexthopID)
			r.NexthopID = 0
		}
		lines = append(lines, r.Format(func(i int) string { return ifnames[i] }))
	}
	for ifi, mac := range k.neighbors {
		lines = append(lines, fmt.Sprintf("169.254.0.1 dev %s lladdr %s PERMANENT", ifnames[ifi], mac))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func (k *fakeKernel) resolve(id uint32) []Via {
	nh := k.nexthops[id]
	if nh.Group == nil {
		return []Via{nh.Via}
	}
	var out []Via
	for _, m := range nh.Group {
		out = append(out, k.nexthops[m].Via)
	}
	return out
}

var (
	tor1 = netip.MustParseAddr("fe80::1")
	tor2 = netip.MustParseAddr("fe80::2")
	mac1 = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	mac2 = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	c2lo = netip.MustParsePrefix("2.2.2.2/32")
	c2bk = netip.MustParsePrefix("10.1.71.192/26")
	c3lo = netip.MustParsePrefix("3.3.3.3/32")
	c1bk = netip.MustParsePrefix("10.1.8.192/26")
)

// modes runs a test with nexthop objects and with inline next hops.
func modes(t *testing.T, f func(t *testing.T, objects bool)) {
	t.Run("objects", func(t *testing.T) { f(t, true) })
	t.Run("inline", func(t *testing.T) { f(t, false) })
}

type harness struct {
	t      *testing.T
	kernel *fakeKernel
	rib    *rib.RIB
	w      *Writer
	ctx    context.Context
	stop   func()
}

func newHarness(t *testing.T, k *fakeKernel) *harness {
	t.Helper()
	r := rib.New()
	w := NewWriter(k, r, Options{Metric: 20, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if _, err := w.Adopt(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	h := &harness{t: t, kernel: k, rib: r, w: w, ctx: ctx, stop: func() { cancel(); <-done }}
	t.Cleanup(h.stop)
	return h
}

// up makes uplink u usable for both families through the ToR at mac/ll.
func (h *harness) up(u rib.Uplink, name string, ifindex int, mac net.HardwareAddr, ll netip.Addr) {
	h.w.SetForwarding(h.ctx, u, name, Forwarding{V4: true, V6: true, Ifindex: ifindex, MAC: mac, LL: ll})
}

// down takes uplink u out of the FIB.
func (h *harness) down(u rib.Uplink) {
	ifindex := map[rib.Uplink]int{0: 2, 1: 3}[u]
	h.w.SetForwarding(h.ctx, u, ifnames[ifindex], Forwarding{Ifindex: ifindex})
}

// expect waits until the fake kernel renders as want.
func (h *harness) expect(want string) {
	h.t.Helper()
	want = trimLines(want)
	deadline := time.Now().Add(2 * time.Second)
	for {
		// A query round-trips through the loop, so everything queued
		// before it has been applied.
		if _, err := h.w.Installed(h.ctx); err != nil {
			h.t.Fatal(err)
		}
		got := trimLines(h.kernel.render())
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("kernel state:\n%s\n\nwant:\n%s", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// trimLines drops indentation so golden strings can be indented in code.
func trimLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, "\n")
}

func TestWriterInstallsSeedShape(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		h := newHarness(t, newFakeKernel(objects))
		h.up(0, "ens3", 2, mac1, tor1)
		h.w.SetBlackholes(h.ctx, []netip.Prefix{c1bk})
		h.rib.Update(0, c2lo, 2)
		h.rib.Update(0, c2bk, 2)
		h.expect(`
			10.1.71.192/26 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink
			blackhole 10.1.8.192/26 proto bgp metric 20`)

		h.rib.Withdraw(0, c2bk)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink
			blackhole 10.1.8.192/26 proto bgp metric 20`)

		h.w.SetBlackholes(h.ctx, nil)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
	})
}

func TestWriterECMPAndUplinkLoss(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		h := newHarness(t, newFakeKernel(objects))
		h.up(0, "ens3", 2, mac1, tor1)
		h.up(1, "ens4", 3, mac2, tor2)
		h.rib.Update(0, c2lo, 2)
		h.rib.Update(1, c2lo, 2)
		h.rib.Update(0, c3lo, 2)
		h.rib.Update(1, c3lo, 3) // longer: not used
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 proto bgp metric 20
			nexthop via 169.254.0.1 dev ens3 weight 1 onlink
			nexthop via 169.254.0.1 dev ens4 weight 1 onlink
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)

		// Carrier loss on ens3: the group shrinks, and the route whose
		// shortest path was through ens3 alone moves to its longer path
		// through ens4, before BGP has withdrawn anything.
		h.down(0)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens4 proto bgp metric 20 onlink
			3.3.3.3 via 169.254.0.1 dev ens4 proto bgp metric 20 onlink`)

		// The session on ens3 resets (paths dropped) and then ens3 returns:
		// once it relearns, ECMP is back.
		h.rib.DropUplink(0)
		h.up(0, "ens3", 2, mac1, tor1)
		h.rib.Update(0, c2lo, 2)
		h.rib.Update(0, c3lo, 2)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 proto bgp metric 20
			nexthop via 169.254.0.1 dev ens3 weight 1 onlink
			nexthop via 169.254.0.1 dev ens4 weight 1 onlink
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
	})
}

func TestWriterUplinkUpRestoresKnownPaths(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		h := newHarness(t, newFakeKernel(objects))
		// Paths arrive before the uplink is usable (e.g. the MAC is not known
		// yet): nothing can be installed, but nothing is lost either.
		h.rib.Update(0, c2lo, 2)
		h.expect(``)
		h.up(0, "ens3", 2, mac1, tor1)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
	})
}

func TestWriterNeverTouchesForeignRoutes(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		k := newFakeKernel(objects)
		k.foreign[c2lo] = "admin route"
		h := newHarness(t, k)
		h.up(0, "ens3", 2, mac1, tor1)
		h.rib.Update(0, c2lo, 2)
		h.rib.Update(0, c3lo, 2)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		if _, ok := k.foreign[c2lo]; !ok {
			t.Fatal("foreign route was replaced")
		}
		// Withdrawing the prefix must not delete the foreign route either.
		h.rib.Withdraw(0, c2lo)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		if _, ok := k.foreign[c2lo]; !ok {
			t.Fatal("foreign route was deleted")
		}
		if h.w.Stats().Errors.Load() == 0 {
			t.Fatal("the refused add was not counted as an error")
		}
	})
}

func TestWriterAdoptsAndSweepsLeftovers(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		k := newFakeKernel(objects)
		// An earlier run left two routes behind.
		k.routes[c2lo] = Route{Prefix: c2lo, Metric: 20, Via: []Via{{2, Gateway}}}
		k.routes[c3lo] = Route{Prefix: c3lo, Metric: 20, Via: []Via{{2, Gateway}}}
		h := newHarness(t, k)
		h.up(0, "ens3", 2, mac1, tor1)
		// Relearned: replaced in place, not duplicated, not refused.
		h.rib.Update(0, c2lo, 2)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		h.w.SweepStale(h.ctx)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		if n := h.w.Stats().Errors.Load(); n != 0 {
			t.Fatalf("errors = %d", n)
		}
	})
}

func TestWriterFlushRemovesEverythingItOwns(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		k := newFakeKernel(objects)
		k.foreign[c3lo] = "dhcp"
		k.routes[netip.MustParsePrefix("9.9.9.9/32")] = Route{Prefix: netip.MustParsePrefix("9.9.9.9/32"), Metric: 20}
		h := newHarness(t, k)
		h.up(0, "ens3", 2, mac1, tor1)
		h.w.SetBlackholes(h.ctx, []netip.Prefix{c1bk})
		h.rib.Update(0, c2lo, 2)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink
			9.9.9.9 proto bgp metric 20
			blackhole 10.1.8.192/26 proto bgp metric 20`)
		h.stop()
		if err := h.w.Flush(); err != nil {
			t.Fatal(err)
		}
		if got := k.render(); got != "" {
			t.Fatalf("after flush:\n%s", got)
		}
		if _, ok := k.foreign[c3lo]; !ok {
			t.Fatal("flush removed a foreign route")
		}
	})
}

func TestWriterRestoresTamperedNeighbor(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		k := newFakeKernel(objects)
		h := newHarness(t, k)
		h.up(0, "ens3", 2, mac1, tor1)
		h.expect(`169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT`)
		k.mu.Lock()
		k.neighbors[2] = mac2
		k.mu.Unlock()
		h.w.CheckNeighbor(h.ctx, 2)
		h.expect(`169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT`)
		k.DeleteNeighbor(2)
		h.w.CheckNeighbor(h.ctx, 2)
		h.expect(`169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT`)
		writes := h.w.Stats().NeighborWrites.Load()
		// The kernel flushes the entry itself when the link loses carrier:
		// nothing to restore, and nothing to complain about.
		k.mu.Lock()
		k.noCarrier[2] = true
		delete(k.neighbors, 2)
		k.mu.Unlock()
		h.w.CheckNeighbor(h.ctx, 2)
		h.expect(``)
		if n := h.w.Stats().NeighborWrites.Load(); n != writes {
			t.Fatalf("rewrote the entry of a link without carrier")
		}
	})
}

func TestWriterBatchesBursts(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		k := newFakeKernel(objects)
		h := newHarness(t, k)
		h.up(0, "ens3", 2, mac1, tor1)
		h.w.Installed(h.ctx)
		k.mu.Lock()
		before := k.applies
		k.mu.Unlock()
		for i := range 10000 {
			h.rib.Update(0, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 32), 2)
		}
		deadline := time.Now().Add(5 * time.Second)
		for h.w.Stats().Routes.Load() != 10000 {
			if time.Now().After(deadline) {
				t.Fatalf("installed %d of 10000", h.w.Stats().Routes.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
		k.mu.Lock()
		calls := k.applies - before
		k.mu.Unlock()
		// Coalescing: far fewer kernel calls than routes.
		if calls > 100 {
			t.Fatalf("%d Apply calls for 10000 routes", calls)
		}
		t.Logf("10000 routes in %d Apply calls", calls)
	})
}

// With nexthop objects an uplink flap costs a handful of kernel
// operations however many routes use the uplink.
func TestWriterObjectsLinkFlapIsCheap(t *testing.T) {
	k := newFakeKernel(true)
	h := newHarness(t, k)
	h.up(0, "ens3", 2, mac1, tor1)
	h.up(1, "ens4", 3, mac2, tor2)
	const ecmp, single = 1000, 10
	prefix := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)}), 32)
	}
	for i := range ecmp {
		h.rib.Update(0, prefix(i), 2)
		h.rib.Update(1, prefix(i), 2)
	}
	for i := ecmp; i < ecmp+single; i++ {
		h.rib.Update(0, prefix(i), 2)
	}
	waitRoutes(t, h, ecmp+single)
	if !h.w.NexthopObjects() {
		t.Fatal("writer does not use nexthop objects")
	}
	opsBefore := func() int { k.mu.Lock(); defer k.mu.Unlock(); return k.ops }

	// Carrier loss: the kernel flushes ens3's object by itself, then the
	// writer hears of it.
	before := opsBefore()
	k.carrierLoss(2)
	h.down(0)
	waitRoutes(t, h, ecmp)
	if n := opsBefore() - before; n > 2 {
		t.Errorf("uplink down took %d kernel operations", n)
	}
	if got := k.render(); strings.Contains(got, "ens3 proto") || strings.Count(got, "via 169.254.0.1 dev ens4 proto bgp metric 20 onlink") != ecmp {
		t.Errorf("after down:\n%s", firstLines(got, 5))
	}

	// Back: one object, one group, and the single-path routes again.
	before = opsBefore()
	h.up(0, "ens3", 2, mac1, tor1)
	waitRoutes(t, h, ecmp+single)
	h.w.Installed(h.ctx)
	// An IPv4 and an IPv6 object, the group, and the single-path routes.
	if n := opsBefore() - before; n > 3+single {
		t.Errorf("uplink up took %d kernel operations, want at most %d", n, 3+single)
	}
	if got := k.render(); strings.Count(got, "nexthop via 169.254.0.1 dev ens3 weight 1 onlink") != ecmp {
		t.Errorf("ECMP not restored:\n%s", firstLines(got, 8))
	}
}

func waitRoutes(t *testing.T, h *harness, n int64) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		h.w.Installed(h.ctx)
		if h.w.Stats().Routes.Load() == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d routes installed, want %d", h.w.Stats().Routes.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

func TestWriterIPv6(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		h := newHarness(t, newFakeKernel(objects))
		h.up(0, "ens3", 2, mac1, tor1)
		h.up(1, "ens4", 3, mac2, tor2)
		v6lo := netip.MustParsePrefix("fd00::2/128")
		v6net := netip.MustParsePrefix("2001:db8:2::/64")
		h.rib.Update(0, v6lo, 2)
		h.rib.Update(0, v6net, 2)
		h.rib.Update(1, v6net, 2)
		h.rib.Update(0, c2lo, 2)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink
			2001:db8:2::/64 proto bgp metric 20
			nexthop via fe80::1 dev ens3 weight 1
			nexthop via fe80::2 dev ens4 weight 1
			fd00::2 via fe80::1 dev ens3 proto bgp metric 20`)
		h.down(0)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2001:db8:2::/64 via fe80::2 dev ens4 proto bgp metric 20`)
	})
}

// An uplink whose neighbour entry cannot be written carries no IPv4
// route (it would blackhole), and the write is retried until it works.
func TestWriterWaitsForNeighborEntry(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		k := newFakeKernel(objects)
		k.neighborErr = syscall.ENOBUFS
		h := newHarness(t, k)
		h.rib.Update(0, c2lo, 2)
		h.up(0, "ens3", 2, mac1, tor1)
		h.expect(``)
		if v4, v6, _ := h.w.Usable(h.ctx, 0); v4 != Unusable || v6 != Ready {
			t.Fatalf("usable v4=%v v6=%v with the neighbour entry failing", v4, v6)
		}
		k.mu.Lock()
		k.neighborErr = nil
		k.mu.Unlock()
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
	})
}

// With a settle time, traffic that flows spreads onto an uplink that has
// just become usable, or just sent a path, only after it; a route with
// no other path does not wait.
func TestWriterSettlesBeforeWidening(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		k := newFakeKernel(objects)
		r := rib.New()
		w := NewWriter(k, r, Options{Metric: 20, Settle: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if _, err := w.Adopt(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { w.Run(ctx); close(done) }()
		h := &harness{t: t, kernel: k, rib: r, w: w, ctx: ctx, stop: func() { cancel(); <-done }}
		t.Cleanup(h.stop)

		h.up(1, "ens4", 3, mac2, tor2)
		r.Update(1, c2lo, 2)
		r.Update(0, c2lo, 2)
		r.Update(0, c3lo, 2) // only through ens3
		h.expect(`
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens4 proto bgp metric 20 onlink`)
		start := time.Now()
		h.up(0, "ens3", 2, mac1, tor1)
		// At once: the route only ens3 can carry. Not yet: ECMP.
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens4 proto bgp metric 20 onlink
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		if time.Since(start) > 200*time.Millisecond {
			t.Fatalf("the route without another path waited %v", time.Since(start))
		}
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 proto bgp metric 20
			nexthop via 169.254.0.1 dev ens3 weight 1 onlink
			nexthop via 169.254.0.1 dev ens4 weight 1 onlink
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Fatalf("ECMP widened after %v, before the settle time", took)
		}
		// A path just sent by a settled uplink waits as well.
		start = time.Now()
		r.Update(1, c3lo, 2)
		time.Sleep(100 * time.Millisecond)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 proto bgp metric 20
			nexthop via 169.254.0.1 dev ens3 weight 1 onlink
			nexthop via 169.254.0.1 dev ens4 weight 1 onlink
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 proto bgp metric 20
			nexthop via 169.254.0.1 dev ens3 weight 1 onlink
			nexthop via 169.254.0.1 dev ens4 weight 1 onlink
			3.3.3.3 proto bgp metric 20
			nexthop via 169.254.0.1 dev ens3 weight 1 onlink
			nexthop via 169.254.0.1 dev ens4 weight 1 onlink`)
		if took := time.Since(start); took < 250*time.Millisecond {
			t.Fatalf("the new path was used after %v, before the settle time", took)
		}
		// Taking an uplink away never waits.
		start = time.Now()
		h.down(0)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens4 proto bgp metric 20 onlink
			3.3.3.3 via 169.254.0.1 dev ens4 proto bgp metric 20 onlink`)
		if took := time.Since(start); took > 200*time.Millisecond {
			t.Fatalf("taking the uplink away took %v", took)
		}
	})
}

// A syncing uplink (its ToR still sends its table) carries only what no
// ready uplink reaches: at boot everything it has, beside a ready one only
// the prefixes the ready one lacks.
func TestWriterSyncingIsLastResort(t *testing.T) {
	modes(t, func(t *testing.T, objects bool) {
		h := newHarness(t, newFakeKernel(objects))
		syncing := func(u rib.Uplink, name string, ifindex int, mac net.HardwareAddr, ll netip.Addr) {
			h.w.SetForwarding(h.ctx, u, name, Forwarding{V4: true, V6: true, Syncing: true, Ifindex: ifindex, MAC: mac, LL: ll})
		}
		h.rib.Update(0, c2lo, 2)
		syncing(0, "ens3", 2, mac1, tor1)
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		h.up(1, "ens4", 3, mac2, tor2)
		h.rib.Update(1, c2lo, 2)
		h.rib.Update(0, c3lo, 2) // only the syncing uplink has it
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 via 169.254.0.1 dev ens4 proto bgp metric 20 onlink
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
		h.up(0, "ens3", 2, mac1, tor1) // its End-of-RIB
		h.expect(`
			169.254.0.1 dev ens3 lladdr 02:00:00:00:00:01 PERMANENT
			169.254.0.1 dev ens4 lladdr 02:00:00:00:00:02 PERMANENT
			2.2.2.2 proto bgp metric 20
			nexthop via 169.254.0.1 dev ens3 weight 1 onlink
			nexthop via 169.254.0.1 dev ens4 weight 1 onlink
			3.3.3.3 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink`)
	})
}
