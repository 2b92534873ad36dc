// Package fib writes fabricd's routes into the kernel.
//
// A single Writer goroutine owns every kernel change. It turns the desired
// state (best paths from package rib, usable uplinks, configured blackholes)
// into the smallest set of operations, compares against what it installed,
// and hands them to the Kernel in batches. It only ever adds, replaces or
// deletes routes of its own protocol, nexthop objects in its own ID range,
// and the one neighbour entry (169.254.0.1) per uplink that its routes need.
//
// Where the kernel has nexthop objects (Linux 5.3+), as FRR 8 uses them,
// routes point at an object per uplink set: one per uplink, one group per
// ECMP set. An uplink change then rewrites one object instead of every
// route, and the kernel itself drops an uplink's next hops the moment it
// loses carrier. Elsewhere routes carry their next hops inline.
package fib

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fabricd/fabricd/rib"
)

// Writer is the FIB's single writer. Methods other than Run, Adopt, Flush
// may be called from any goroutine; they are executed in order by Run's
// loop.
type Writer struct {
	kernel Kernel
	rib    *rib.RIB
	metric uint32
	log    *slog.Logger

	cmds chan func()

	// State below is owned by the Run loop.
	uplinks [rib.MaxUplinks]uplink
	// usable are the uplinks routes may point at, per family: the ones
	// whose ToR can forward (Forwarding), with their neighbour entry
	// written for IPv4. An uplink is fresh for settle after it became
	// usable (until freshUntil), then settled.
	usable     [2]rib.Usable
	freshUntil [2][rib.MaxUplinks]time.Time
	// settle is how long a ToR gets to program its own FIB with a route
	// it has just announced before traffic already flowing elsewhere is
	// spread onto it (see appendSync).
	settle time.Duration
	// widen holds back, until the time given, new uplinks of routes that
	// already forward.
	widen map[rib.Key]time.Time
	// retry is when neighbour entries that could not be written are
	// tried again; zero when none failed.
	retry time.Time
	// installed is every learned route in the kernel with the uplink set
	// it was written for: the best paths' uplinks, and with nexthop
	// objects the set whose object the route points at.
	installed map[rib.Key]rib.NexthopSet
	// blackholes are the configured blackholes; installedBlackholes those
	// in the kernel.
	blackholes          map[rib.Key]struct{}
	installedBlackholes map[rib.Key]struct{}
	// adopted are routes of our protocol found in the kernel at start-up
	// (left by an earlier run) and not rewritten since. They keep
	// forwarding until SweepStale, so a restart does not drop traffic.
	adopted map[rib.Key]struct{}

	// Nexthop objects; objects is false when routes carry inline next hops.
	objects bool
	// nexthops are the uplinks whose nexthop object exists, by family
	// (index 0 IPv4, 1 IPv6).
	nexthops [2]rib.NexthopSet
	// groups are the ECMP group objects by uplink set and family.
	groups map[groupKey]*group
	// adoptedNexthops are objects an earlier run left.
	adoptedNexthops map[uint32]struct{}

	changes []rib.Change
	ops     []Op

	stats Stats
}

type uplink struct {
	name string
	fwd  Forwarding
	// neighbor: the 169.254.0.1 entry of fwd's MAC is written.
	neighbor bool
}

// Forwarding says whether, and through which ToR, an uplink carries the
// traffic of each family.
type Forwarding struct {
	V4, V6 bool
	// Syncing: the ToR is still sending its table; the uplink carries
	// only what no other uplink reaches.
	Syncing bool
	Ifindex int
	MAC     net.HardwareAddr // the ToR's, for the IPv4 gateway's neighbour entry
	LL      netip.Addr       // the ToR's link-local address, the IPv6 next hop
}

// family indexes per-family state: 0 for IPv4, 1 for IPv6.
type family int

const (
	ipv4 family = iota
	ipv6
)

func familyOf(k rib.Key) family {
	if k.Is6() {
		return ipv6
	}
	return ipv4
}

type groupKey struct {
	set rib.NexthopSet
	fam family
}

// group is an ECMP nexthop group for a set of uplinks.
type group struct {
	members rib.NexthopSet // what the kernel object holds: the set's usable uplinks
	refs    int            // routes pointing at it
}

// Stats are counters safe to read from any goroutine.
type Stats struct {
	Routes         atomic.Int64 // learned routes in the kernel
	Blackholes     atomic.Int64
	Ops            atomic.Uint64 // kernel operations attempted
	Errors         atomic.Uint64 // kernel operations refused
	NeighborWrites atomic.Uint64
}

// Options tune a Writer.
type Options struct {
	Metric uint32
	// InlineNexthops writes every route with its own next hops even where
	// the kernel has nexthop objects.
	InlineNexthops bool
	// Settle is how long a route that forwards waits before it spreads
	// onto an uplink that has just become usable or just sent a path: the
	// ToR behind it may announce a route a moment before its own FIB
	// holds it (FRR does, unless `bgp suppress-fib-pending`). A route
	// with no other path does not wait. Zero: no wait.
	Settle time.Duration
	Logger *slog.Logger
}

// NewWriter returns a writer that installs r's best paths through k.
func NewWriter(k Kernel, r *rib.RIB, opts Options) *Writer {
	return &Writer{
		kernel:              k,
		rib:                 r,
		metric:              opts.Metric,
		log:                 opts.Logger,
		objects:             !opts.InlineNexthops,
		settle:              opts.Settle,
		widen:               make(map[rib.Key]time.Time),
		cmds:                make(chan func(), 64),
		installed:           make(map[rib.Key]rib.NexthopSet),
		blackholes:          make(map[rib.Key]struct{}),
		installedBlackholes: make(map[rib.Key]struct{}),
		adopted:             make(map[rib.Key]struct{}),
		groups:              make(map[groupKey]*group),
		adoptedNexthops:     make(map[uint32]struct{}),
	}
}

// Stats returns the writer's counters.
func (w *Writer) Stats() *Stats { return &w.stats }

// NexthopObjects reports whether routes point at kernel nexthop objects.
// Valid after Adopt.
func (w *Writer) NexthopObjects() bool { return w.objects }

// Adopt reads the routes and nexthop objects an earlier run left in the
// kernel, and finds out whether the kernel has nexthop objects. Call it
// once before Run. What it finds stays in place (no traffic is dropped)
// until it is rewritten or SweepStale removes it.
func (w *Writer) Adopt() (int, error) {
	nhs, ok, err := w.kernel.Nexthops()
	if err != nil {
		return 0, fmt.Errorf("listing leftover nexthop objects: %w", err)
	}
	if !ok && w.objects {
		w.log.Info("the kernel has no nexthop objects; routes carry their next hops inline")
	}
	w.objects = w.objects && ok
	for _, nh := range nhs {
		w.adoptedNexthops[nh.ID] = struct{}{}
	}
	routes, err := w.kernel.Routes()
	if err != nil {
		return 0, fmt.Errorf("listing leftover routes: %w", err)
	}
	for _, r := range routes {
		w.adopted[rib.KeyOf(r.Prefix)] = struct{}{}
	}
	return len(routes), nil
}

// Run applies changes until ctx is cancelled. It does not remove what it
// installed: see Flush.
func (w *Writer) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if next := w.deadline(); next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(max(time.Until(next), 0))
		}
		select {
		case <-ctx.Done():
			return nil
		case cmd := <-w.cmds:
			cmd()
		case <-w.rib.Changed():
			w.syncChanged()
		case now := <-timer.C:
			w.onTimer(now)
		}
	}
}

// deadline is the writer's next timer: a neighbour entry to retry, a
// fresh uplink to settle, a route to widen.
func (w *Writer) deadline() time.Time {
	next := w.retry
	earlier := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	for fam := range w.freshUntil {
		for _, t := range w.freshUntil[fam] {
			earlier(t)
		}
	}
	for _, t := range w.widen {
		earlier(t)
	}
	return next
}

func (w *Writer) onTimer(now time.Time) {
	if !w.retry.IsZero() && !now.Before(w.retry) {
		w.retry = time.Time{}
		for u := range w.uplinks {
			w.applyForwarding(rib.Uplink(u))
		}
	}
	for fam := range w.freshUntil {
		for u, t := range w.freshUntil[fam] {
			if !t.IsZero() && !now.Before(t) {
				w.settleUplink(rib.Uplink(u), family(fam))
			}
		}
	}
	w.ops = w.ops[:0]
	for p, t := range w.widen {
		if !now.Before(t) {
			delete(w.widen, p)
			w.ops = w.appendSync(w.ops, p, w.rib.Select(p, w.usable), true)
		}
	}
	w.apply()
}

// exec queues f to run on the loop.
func (w *Writer) exec(ctx context.Context, f func()) error {
	select {
	case w.cmds <- f:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// query runs f on the loop and waits for it.
func (w *Writer) query(ctx context.Context, f func()) error {
	done := make(chan struct{})
	if err := w.exec(ctx, func() { f(); close(done) }); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetForwarding makes uplink u (named name) carry the families f says,
// through the ToR it names: for IPv4 it (re)writes the 169.254.0.1
// neighbour entry first, and IPv4 routes use the uplink only once that
// worked (it is retried every second until it does). Routes through the
// uplink's other family, or none, move to the other uplinks or go.
//
// Taking a family off the uplink returns once the kernel has it: what the
// caller does next (re-creating the BGP peer costs milliseconds of CPU)
// must not delay the traffic moving, as it would if the writer's goroutine
// only got its turn afterwards.
func (w *Writer) SetForwarding(ctx context.Context, u rib.Uplink, name string, f Forwarding) error {
	f.MAC = slices.Clone(f.MAC)
	f.LL = f.LL.WithZone("")
	run := w.exec
	if !f.V4 || !f.V6 {
		run = w.query
	}
	return run(ctx, func() {
		old := w.uplinks[u]
		if old.fwd.Ifindex != 0 && old.fwd.Ifindex != f.Ifindex {
			// The interface was recreated: what names the old index must
			// go, as if the uplink had gone and come back.
			w.setLevel(u, ipv4, Unusable)
			w.setLevel(u, ipv6, Unusable)
		}
		w.uplinks[u].name = name
		w.uplinks[u].fwd = f
		if !f.V4 || !slices.Equal(old.fwd.MAC, f.MAC) || old.fwd.Ifindex != f.Ifindex {
			w.uplinks[u].neighbor = false
		}
		w.applyForwarding(u)
	})
}

// applyForwarding makes u's usability match its Forwarding.
func (w *Writer) applyForwarding(u rib.Uplink) {
	up := &w.uplinks[u]
	if up.fwd.V4 && !up.neighbor {
		if err := w.kernel.SetNeighbor(Neighbor{Ifindex: up.fwd.Ifindex, MAC: up.fwd.MAC}); err != nil {
			w.log.Error("writing neighbour entry; IPv4 routes avoid the uplink until it works", "uplink", up.name,
				"gateway", Gateway, "mac", up.fwd.MAC.String(), "err", err)
			if w.retry.IsZero() {
				w.retry = time.Now().Add(time.Second)
			}
		} else {
			up.neighbor = true
			w.stats.NeighborWrites.Add(1)
		}
	}
	lvl := Ready
	if up.fwd.Syncing {
		lvl = Syncing
	}
	w.setLevel(u, ipv4, pick(up.fwd.V4 && up.neighbor, lvl))
	w.setLevel(u, ipv6, pick(up.fwd.V6 && up.fwd.LL.IsValid(), lvl))
}

func pick(ok bool, l Level) Level {
	if ok {
		return l
	}
	return Unusable
}

// Level is how much of a family's traffic an uplink may carry.
type Level uint8

const (
	Unusable Level = iota
	// Syncing: only what no ready uplink reaches (its ToR is still
	// sending its table).
	Syncing
	// Ready: its ToR can forward (for the settle time, it carries only
	// what no other ready uplink reaches).
	Ready
)

func (l Level) String() string {
	switch l {
	case Syncing:
		return "syncing"
	case Ready:
		return "ready"
	}
	return "no"
}

// Usable reports how much of each family uplink u carries now.
func (w *Writer) Usable(ctx context.Context, u rib.Uplink) (v4, v6 Level, err error) {
	err = w.query(ctx, func() { v4, v6 = w.level(u, ipv4), w.level(u, ipv6) })
	return v4, v6, err
}

// RemoveUplink forgets u entirely (it was removed from the config): its
// routes move to other uplinks or go, and its neighbour entry is deleted.
func (w *Writer) RemoveUplink(ctx context.Context, u rib.Uplink) error {
	return w.exec(ctx, func() {
		w.setLevel(u, ipv4, Unusable)
		w.setLevel(u, ipv6, Unusable)
		w.deleteNeighbor(u)
		w.uplinks[u] = uplink{}
	})
}

// CheckNeighbor restores the gateway's neighbour entry on the uplink of
// ifindex if it is not what the writer installed: FRR and admins have
// been known to flush or overwrite it, and without it every IPv4 route
// through the uplink blackholes. Call it when the kernel reports a change
// to the entry.
func (w *Writer) CheckNeighbor(ctx context.Context, ifindex int) error {
	return w.exec(ctx, func() {
		for u := range w.uplinks {
			if w.uplinks[u].fwd.Ifindex == ifindex {
				w.checkNeighbor(rib.Uplink(u))
			}
		}
	})
}

// checkNeighbor rewrites u's neighbour entry if it is not what the writer
// installed.
func (w *Writer) checkNeighbor(u rib.Uplink) {
	up := &w.uplinks[u]
	if !up.neighbor {
		return
	}
	mac, permanent, ok, err := w.kernel.LookupNeighbor(up.fwd.Ifindex)
	if err != nil {
		w.log.Warn("reading neighbour entry", "uplink", up.name, "err", err)
		return
	}
	if ok && permanent && slices.Equal(mac, up.fwd.MAC) {
		return
	}
	if !w.kernel.HasCarrier(up.fwd.Ifindex) {
		// The kernel flushes an interface's neighbours when it loses
		// carrier; the uplink leaves the FIB and the entry is written
		// again when it comes back.
		up.neighbor = false
		return
	}
	w.log.Warn("neighbour entry for the gateway was changed by someone else; restoring it",
		"uplink", up.name, "gateway", Gateway, "found", mac.String(), "permanent", permanent, "present", ok, "want", up.fwd.MAC.String())
	if err := w.kernel.SetNeighbor(Neighbor{Ifindex: up.fwd.Ifindex, MAC: up.fwd.MAC}); err != nil {
		w.log.Error("restoring neighbour entry", "uplink", up.name, "err", err)
		up.neighbor = false
		w.setLevel(u, ipv4, Unusable)
		if w.retry.IsZero() {
			w.retry = time.Now().Add(time.Second)
		}
		return
	}
	w.stats.NeighborWrites.Add(1)
}

// SetBlackholes makes the kernel's blackhole routes equal prefixes.
func (w *Writer) SetBlackholes(ctx context.Context, prefixes []netip.Prefix) error {
	want := make(map[rib.Key]struct{}, len(prefixes))
	for _, p := range prefixes {
		want[rib.KeyOf(p)] = struct{}{}
	}
	return w.exec(ctx, func() {
		var removed []rib.Key
		w.ops = w.ops[:0]
		for p := range w.installedBlackholes {
			if _, ok := want[p]; !ok {
				removed = append(removed, p)
				w.ops = append(w.ops, w.blackholeOp(OpDelete, p))
			}
		}
		for p := range want {
			if _, ok := w.installedBlackholes[p]; ok {
				continue
			}
			// A learned route for the very same prefix yields to the
			// local blackhole: the block is ours.
			if _, ok := w.installed[p]; ok {
				w.ops = append(w.ops, w.deleteOp(p))
			}
			w.ops = append(w.ops, w.blackholeOp(w.addKind(p), p))
		}
		w.blackholes = want
		w.apply()
		// Learned routes that a removed blackhole was hiding come back.
		w.ops = w.ops[:0]
		for _, p := range removed {
			w.ops = w.appendSync(w.ops, p, w.rib.Select(p, w.usable), false)
		}
		w.apply()
	})
}

// Sync returns once every change queued before it has been applied.
func (w *Writer) Sync(ctx context.Context) error {
	return w.query(ctx, func() {
		// The RIB's pending changes too: drain them now rather than
		// waiting for the loop to get to its signal.
		w.syncChanged()
	})
}

// Installed returns the kernel routes the writer owns, sorted by prefix,
// with the uplinks each one uses now.
func (w *Writer) Installed(ctx context.Context) ([]Route, error) {
	var routes []Route
	err := w.query(ctx, func() {
		for p, set := range w.installed {
			r := w.route(p, set)
			r.Via = w.vias(w.forwarding(set, familyOf(p)), familyOf(p))
			routes = append(routes, r)
		}
		for p := range w.installedBlackholes {
			routes = append(routes, Route{Prefix: p.Prefix(), Metric: w.metric, Blackhole: true})
		}
	})
	slices.SortFunc(routes, func(a, b Route) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return routes, err
}

// Via returns, for every learned route in the kernel, the uplinks it
// forwards through now.
func (w *Writer) Via(ctx context.Context) (map[rib.Key]rib.NexthopSet, error) {
	var out map[rib.Key]rib.NexthopSet
	err := w.query(ctx, func() {
		out = make(map[rib.Key]rib.NexthopSet, len(w.installed))
		for p, set := range w.installed {
			out[p] = w.forwarding(set, familyOf(p))
		}
	})
	return out, err
}

// Flush removes every route, nexthop object and neighbour entry the writer
// installed or adopted. Call it only after Run has returned, for a
// deliberate stop.
func (w *Writer) Flush() error {
	w.ops = w.ops[:0]
	for p := range w.installedBlackholes {
		w.ops = append(w.ops, w.blackholeOp(OpDelete, p))
	}
	for p := range w.adopted {
		w.ops = append(w.ops, w.deleteOp(p))
	}
	if w.objects {
		// Deleting an object deletes the routes that point at it: a few
		// operations instead of one per route.
		for k := range w.groups {
			w.ops = append(w.ops, nexthopOp(OpDelete, &Nexthop{ID: groupID(k.set, k.fam)}))
		}
		for fam, set := range w.nexthops {
			for _, u := range set.Uplinks() {
				w.ops = append(w.ops, nexthopOp(OpDelete, &Nexthop{ID: nexthopID(u, family(fam))}))
			}
		}
		for id := range w.adoptedNexthops {
			w.ops = append(w.ops, nexthopOp(OpDelete, &Nexthop{ID: id}))
		}
	} else {
		for p := range w.installed {
			w.ops = append(w.ops, w.deleteOp(p))
		}
	}
	err := w.apply()
	clear(w.installed)
	for u := range w.uplinks {
		w.deleteNeighbor(rib.Uplink(u))
	}
	return err
}

// SweepStale deletes what an earlier run left and nothing rewrote: routes
// the peers no longer send and nexthop objects nothing uses. Call it once
// every peer has sent End-of-RIB, or when the stale timer expires.
func (w *Writer) SweepStale(ctx context.Context) error {
	return w.exec(ctx, func() {
		w.ops = w.ops[:0]
		for p := range w.adopted {
			w.ops = append(w.ops, w.deleteOp(p))
		}
		if n := len(w.ops); n > 0 {
			w.log.Info("removing stale routes left by an earlier run", "routes", n)
		}
		for id := range w.adoptedNexthops {
			if !w.liveNexthop(id) {
				w.ops = append(w.ops, nexthopOp(OpDelete, &Nexthop{ID: id}))
			}
		}
		w.apply()
		clear(w.adopted)
		clear(w.adoptedNexthops)
	})
}

// liveNexthop reports whether id is an object the writer uses now.
func (w *Writer) liveNexthop(id uint32) bool {
	set, fam, isGroup, u := decodeID(id)
	if isGroup {
		_, ok := w.groups[groupKey{set, fam}]
		return ok
	}
	return w.nexthops[fam].Has(u)
}

// syncChanged applies what the RIB reports as changed.
func (w *Writer) syncChanged() {
	start := time.Now()
	w.changes = w.rib.Drain(w.changes[:0], w.usable)
	w.ops = w.ops[:0]
	for _, c := range w.changes {
		w.ops = w.appendSync(w.ops, c.Key, c.Selection, false)
	}
	n := len(w.ops)
	if n == 0 {
		return
	}
	w.apply()
	w.log.Debug("fib batch applied", "changes", len(w.changes), "ops", n, "duration", time.Since(start))
}

// level is how much of fam uplink u may carry.
func (w *Writer) level(u rib.Uplink, fam family) Level {
	us := w.usable[fam]
	switch {
	case (us.Settled | us.Fresh).Has(u):
		return Ready
	case us.Syncing.Has(u):
		return Syncing
	}
	return Unusable
}

// members are the uplinks a route written for set forwards through: its
// settled ones, or when it has none its fresh ones, or else its syncing
// ones. This is what the set's group object holds.
func (w *Writer) members(set rib.NexthopSet, fam family) rib.NexthopSet {
	us := w.usable[fam]
	for _, class := range []rib.NexthopSet{us.Settled, us.Fresh, us.Syncing} {
		if m := set & class; m != 0 {
			return m
		}
	}
	return 0
}

// forwarding are the uplinks the route installed for set uses now.
func (w *Writer) forwarding(set rib.NexthopSet, fam family) rib.NexthopSet {
	if w.objects {
		return w.members(set, fam)
	}
	return set & w.usable[fam].All()
}

// setLevel changes how much of family fam uplink u may carry and rewrites
// what is affected. An uplink that becomes ready while others already
// carry the family is fresh for the settle time first.
func (w *Writer) setLevel(u rib.Uplink, fam family, l Level) {
	was := w.level(u, fam)
	if was == l {
		return
	}
	us := &w.usable[fam]
	us.Settled &^= rib.Of(u)
	us.Fresh &^= rib.Of(u)
	us.Syncing &^= rib.Of(u)
	w.freshUntil[fam][u] = time.Time{}
	switch {
	case l == Syncing:
		us.Syncing |= rib.Of(u)
	case l == Ready && w.settle > 0 && us.Settled != 0:
		us.Fresh |= rib.Of(u)
		w.freshUntil[fam][u] = time.Now().Add(w.settle)
	case l == Ready:
		us.Settled |= rib.Of(u)
	}
	w.ops = w.ops[:0]
	if w.objects {
		switch {
		case l == Unusable:
			w.ops = w.appendUplinkObject(w.ops, u, fam, false)
			// Applied first, on its own: the kernel takes the uplink out
			// of every ECMP group at once, which is what moves the
			// traffic.
			w.apply()
			w.ops = w.ops[:0]
		case was == Unusable:
			w.ops = w.appendUplinkObject(w.ops, u, fam, true)
		}
		w.ops = w.appendGroupRefresh(w.ops, fam)
	}
	w.resync(u, fam)
}

// settleUplink ends u's fresh time: routes that forward elsewhere spread
// onto it.
func (w *Writer) settleUplink(u rib.Uplink, fam family) {
	w.freshUntil[fam][u] = time.Time{}
	us := &w.usable[fam]
	if !us.Fresh.Has(u) {
		return
	}
	us.Fresh &^= rib.Of(u)
	us.Settled |= rib.Of(u)
	w.ops = w.ops[:0]
	if w.objects {
		w.ops = w.appendGroupRefresh(w.ops, fam)
	}
	w.resync(u, fam)
}

// resync appends, to w.ops, what the routes of fam that u offers a path
// for need now, and applies everything.
func (w *Writer) resync(u rib.Uplink, fam family) {
	w.rib.ForOffers(u, w.usable, func(p rib.Key, sel rib.Selection) {
		if familyOf(p) == fam {
			w.ops = w.appendSync(w.ops, p, sel, true)
		}
	})
	w.apply()
}

// appendUplinkObject appends the operation on u's own nexthop object for
// fam: created when it becomes usable, deleted (which also takes it out
// of every group) when it stops being.
func (w *Writer) appendUplinkObject(ops []Op, u rib.Uplink, fam family, usable bool) []Op {
	if !usable {
		// The kernel removes the object from every group, deletes groups
		// left empty and every route pointing at a deleted object. (On
		// carrier loss it has usually done so already.)
		if w.nexthops[fam].Has(u) {
			ops = append(ops, nexthopOp(OpDelete, &Nexthop{ID: nexthopID(u, fam)}))
		}
		return ops
	}
	via, ok := w.via(u, fam)
	if !ok {
		return ops
	}
	id := nexthopID(u, fam)
	kind := OpAdd
	if _, adopted := w.adoptedNexthops[id]; adopted || w.nexthops[fam].Has(u) {
		kind = OpReplace
	}
	return append(ops, nexthopOp(kind, &Nexthop{ID: id, Via: via}))
}

// appendGroupRefresh rewrites the groups of fam whose members changed:
// one operation per group, whatever the number of routes.
func (w *Writer) appendGroupRefresh(ops []Op, fam family) []Op {
	for k, g := range w.groups {
		if k.fam == fam && g.members != w.members(k.set, fam) {
			w.ops = ops // groupOp looks for objects queued in w.ops
			ops = append(ops, w.groupOp(OpReplace, k))
		}
	}
	return ops
}

// via is uplink u's next hop for family fam; ok is false when it has none
// (an IPv6 next hop needs the ToR's link-local address).
func (w *Writer) via(u rib.Uplink, fam family) (Via, bool) {
	f := w.uplinks[u].fwd
	if fam == ipv4 {
		return Via{Ifindex: f.Ifindex, Gateway: Gateway}, true
	}
	return Via{Ifindex: f.Ifindex, Gateway: f.LL}, f.LL.IsValid()
}

// appendSync appends the ops that make the kernel's route for p match its
// selection, if any are needed. A route that forwards keeps what it
// forwards through and spreads onto further uplinks only after the
// settle time (unless widen): the ToR behind a path just learned may not
// have the route in its own FIB yet. Taking uplinks away never waits.
func (w *Writer) appendSync(ops []Op, p rib.Key, sel rib.Selection, widen bool) []Op {
	if _, ok := w.blackholes[p]; ok {
		return ops
	}
	fam := familyOf(p)
	want := sel.Usable
	have, ok := w.installed[p]
	switch {
	case want == 0 && ok:
		delete(w.widen, p)
		return append(ops, w.deleteOp(p))
	case want == 0:
		return ops
	}
	if ok && w.settle > 0 {
		cur := w.forwarding(have, fam)
		_, held := w.widen[p]
		if want&^cur != 0 && want&cur != 0 && (!widen || held) {
			if !held {
				w.widen[p] = time.Now().Add(w.settle)
			}
			want &= cur
		} else {
			delete(w.widen, p)
		}
	}
	if !w.objects {
		if ok && have == want {
			return ops
		}
		return append(ops, Op{Kind: w.addKind(p), Route: w.route(p, want), nexthops: want, key: p})
	}
	// With objects the route names the whole best set while its group
	// holds exactly the uplinks wanted: which of them are usable is then
	// the group object's business, so an uplink coming or going costs one
	// group write, not one per route.
	set := want
	if w.members(sel.Best, fam) == want {
		set = sel.Best
	}
	if ok && have == set {
		return ops
	}
	if set.Len() > 1 {
		k := groupKey{set, fam}
		switch g, exists := w.groups[k]; {
		case !exists:
			kind := OpAdd
			if _, adopted := w.adoptedNexthops[groupID(k.set, k.fam)]; adopted {
				kind = OpReplace
			}
			ops = append(ops, w.groupOp(kind, k))
			// Recorded before apply so that later routes of the batch
			// do not create it again; apply rolls it back on failure.
			w.groups[k] = &group{members: w.members(set, fam)}
		case g.members != w.members(set, fam):
			ops = append(ops, w.groupOp(OpReplace, k))
		}
	}
	return append(ops, Op{Kind: w.addKind(p), Route: w.route(p, set), nexthops: set, key: p})
}

// addKind replaces routes we own and only creates the others, so that a
// route someone else installed with the same prefix and metric survives.
func (w *Writer) addKind(p rib.Key) OpKind {
	_, learned := w.installed[p]
	_, blackhole := w.installedBlackholes[p]
	_, adopted := w.adopted[p]
	if learned || blackhole || adopted {
		return OpReplace
	}
	return OpAdd
}

func (w *Writer) deleteOp(p rib.Key) Op {
	return Op{Kind: OpDelete, Route: Route{Prefix: p.Prefix(), Metric: w.metric}, key: p}
}

func (w *Writer) blackholeOp(kind OpKind, p rib.Key) Op {
	return Op{Kind: kind, Route: Route{Prefix: p.Prefix(), Metric: w.metric, Blackhole: true}, key: p}
}

func nexthopOp(kind OpKind, nh *Nexthop) Op {
	return Op{Kind: kind, Nexthop: nh}
}

// groupOp writes the group object for k with its usable members.
func (w *Writer) groupOp(kind OpKind, k groupKey) Op {
	nh := &Nexthop{ID: groupID(k.set, k.fam)}
	for _, u := range w.members(k.set, k.fam).Uplinks() {
		if w.nexthops[k.fam].Has(u) || w.pendingNexthop(u, k.fam) {
			nh.Group = append(nh.Group, nexthopID(u, k.fam))
		}
	}
	return nexthopOp(kind, nh)
}

// pendingNexthop reports whether w.ops creates u's object for fam.
func (w *Writer) pendingNexthop(u rib.Uplink, fam family) bool {
	id := nexthopID(u, fam)
	return slices.ContainsFunc(w.ops, func(op Op) bool {
		return op.Nexthop != nil && op.Nexthop.ID == id && op.Kind != OpDelete
	})
}

func nexthopID(u rib.Uplink, fam family) uint32 {
	return nexthopIDBase + uint32(fam)*v6Offset + uint32(u)
}

func groupID(set rib.NexthopSet, fam family) uint32 {
	return groupIDBase + uint32(fam)*v6GroupOffset + uint32(set)
}

// decodeID tells what an object ID of ours stands for: a group's uplink
// set, or a single uplink, and the family.
func decodeID(id uint32) (set rib.NexthopSet, fam family, isGroup bool, u rib.Uplink) {
	if id >= groupIDBase {
		off := id - groupIDBase
		return rib.NexthopSet(off % v6GroupOffset), family(off / v6GroupOffset), true, 0
	}
	off := id - nexthopIDBase
	return 0, family(off / v6Offset), false, rib.Uplink(off % v6Offset)
}

func (w *Writer) objectID(set rib.NexthopSet, fam family) uint32 {
	if set.Len() == 1 {
		return nexthopID(set.First(), fam)
	}
	return groupID(set, fam)
}

// route is the kernel form of p's route for uplink set set.
func (w *Writer) route(p rib.Key, set rib.NexthopSet) Route {
	if w.objects {
		return Route{Prefix: p.Prefix(), Metric: w.metric, NexthopID: w.objectID(set, familyOf(p))}
	}
	return Route{Prefix: p.Prefix(), Metric: w.metric, Via: w.vias(set, familyOf(p))}
}

func (w *Writer) vias(set rib.NexthopSet, fam family) []Via {
	out := make([]Via, 0, set.Len())
	for _, u := range set.Uplinks() {
		if v, ok := w.via(u, fam); ok {
			out = append(out, v)
		}
	}
	return out
}

// apply sends w.ops to the kernel and records what took effect.
func (w *Writer) apply() error {
	if len(w.ops) == 0 {
		return nil
	}
	err := w.kernel.Apply(w.ops)
	w.stats.Ops.Add(uint64(len(w.ops)))
	failed := map[int]error{}
	if err != nil {
		w.collectFailures(err, failed)
	}
	for i, op := range w.ops {
		if ferr, bad := failed[i]; bad && !w.harmless(op, ferr) {
			w.rollback(op)
			continue
		}
		w.record(op)
	}
	w.collectGroups()
	w.stats.Routes.Store(int64(len(w.installed)))
	w.stats.Blackholes.Store(int64(len(w.installedBlackholes)))
	return err
}

// collectFailures maps each *OpError back to its op's index.
func (w *Writer) collectFailures(err error, failed map[int]error) {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	for _, e := range errs {
		var oe *OpError
		if !errors.As(e, &oe) || oe.Index < 0 || oe.Index >= len(w.ops) {
			// Not attributable: treat the whole batch as failed so that
			// the recorded state never claims more than the kernel has.
			for i := range w.ops {
				failed[i] = e
			}
			break
		}
		failed[oe.Index] = oe.Err
	}
	w.stats.Errors.Add(uint64(len(failed)))
}

// harmless reports whether a failed op reached its goal anyway, and logs
// the ones that did not.
func (w *Writer) harmless(op Op, err error) bool {
	switch {
	case op.Kind == OpDelete && (errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT)):
		// Already gone: someone deleted it, or the kernel did when the
		// interface or the nexthop object went away.
		return true
	case op.Kind == OpAdd && errors.Is(err, syscall.EEXIST) && op.Nexthop == nil:
		w.log.Warn("a route fabricd did not install already exists; leaving it alone",
			"prefix", op.Route.Prefix, "metric", op.Route.Metric)
	default:
		w.log.Error("kernel refused a change", "op", op.Kind, "target", op.target(), "err", err)
	}
	return false
}

// rollback undoes what appendSync recorded ahead of a failed group write.
func (w *Writer) rollback(op Op) {
	if op.Nexthop == nil || op.Kind == OpDelete {
		return
	}
	if set, fam, isGroup, _ := decodeID(op.Nexthop.ID); isGroup {
		k := groupKey{set, fam}
		if g := w.groups[k]; g != nil && g.refs == 0 {
			delete(w.groups, k)
		}
	}
}

func (w *Writer) record(op Op) {
	if op.Nexthop != nil {
		w.recordNexthop(op)
		return
	}
	p := op.key
	delete(w.adopted, p)
	switch {
	case op.Kind == OpDelete && op.Route.Blackhole:
		delete(w.installedBlackholes, p)
	case op.Kind == OpDelete:
		w.unref(p)
		delete(w.installed, p)
	case op.Route.Blackhole:
		w.installedBlackholes[p] = struct{}{}
	default:
		w.unref(p)
		w.installed[p] = op.nexthops
		if g := w.groups[groupKey{op.nexthops, familyOf(p)}]; g != nil {
			g.refs++
		}
	}
}

// unref drops p's reference to its group, if it had one.
func (w *Writer) unref(p rib.Key) {
	if set, ok := w.installed[p]; ok {
		if g := w.groups[groupKey{set, familyOf(p)}]; g != nil {
			g.refs--
		}
	}
}

func (w *Writer) recordNexthop(op Op) {
	id := op.Nexthop.ID
	delete(w.adoptedNexthops, id)
	set, fam, isGroup, u := decodeID(id)
	if isGroup {
		k := groupKey{set, fam}
		if op.Kind == OpDelete {
			delete(w.groups, k)
		} else if g := w.groups[k]; g != nil {
			g.members = w.members(set, fam)
		}
		return
	}
	if op.Kind != OpDelete {
		w.nexthops[fam] |= rib.Of(u)
		return
	}
	// What the kernel did on deleting the object: groups shrink, empty
	// groups go, and so does every route that pointed at a deleted object.
	w.nexthops[fam] &^= rib.Of(u)
	for k, g := range w.groups {
		if k.fam != fam {
			continue
		}
		g.members &^= rib.Of(u)
		if g.members == 0 {
			delete(w.groups, k)
		}
	}
	for p, set := range w.installed {
		if familyOf(p) != fam {
			continue
		}
		if _, alive := w.groups[groupKey{set, fam}]; !alive && set.Len() > 1 || set == rib.Of(u) {
			delete(w.installed, p)
		}
	}
}

// collectGroups deletes group objects no route points at any more.
func (w *Writer) collectGroups() {
	var ops []Op
	for k, g := range w.groups {
		if g.refs <= 0 {
			ops = append(ops, nexthopOp(OpDelete, &Nexthop{ID: groupID(k.set, k.fam)}))
			delete(w.groups, k)
		}
	}
	if len(ops) == 0 {
		return
	}
	if err := w.kernel.Apply(ops); err != nil {
		w.log.Warn("deleting unused nexthop groups", "err", err)
	}
	w.stats.Ops.Add(uint64(len(ops)))
}

func (w *Writer) deleteNeighbor(u rib.Uplink) {
	up := w.uplinks[u]
	if up.fwd.Ifindex == 0 {
		return
	}
	if err := w.kernel.DeleteNeighbor(up.fwd.Ifindex); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENODEV) {
		w.log.Warn("removing neighbour entry", "uplink", up.name, "err", err)
	}
}
