// Package fib writes fabricd's routes into the kernel.
//
// A single Writer goroutine owns every kernel change. It turns the desired
// state (best paths from package rib, usable uplinks, configured blackholes)
// into the smallest set of route operations, compares against what it
// installed, and hands them to the Kernel in batches. It only ever adds,
// replaces or deletes routes of its own protocol, and the one neighbour
// entry (169.254.0.1) per uplink that its routes need.
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

// Writer is the FIB's single writer. Methods other than Run, Flush and
// SweepStale may be called from any goroutine; they are executed in order
// by Run's loop.
type Writer struct {
	kernel Kernel
	rib    *rib.RIB
	metric uint32
	log    *slog.Logger

	cmds chan func()

	// State below is owned by the Run loop.
	uplinks [rib.MaxUplinks]uplink
	// usable is the set of uplinks routes may point at: known interface,
	// known ToR MAC, carrier up.
	usable rib.NexthopSet
	// installed is every learned route in the kernel with the uplinks it
	// uses (already masked by usable).
	installed map[netip.Prefix]rib.NexthopSet
	// blackholes are the configured blackholes; installedBlackholes those
	// in the kernel.
	blackholes          map[netip.Prefix]struct{}
	installedBlackholes map[netip.Prefix]struct{}
	// adopted are routes of our protocol found in the kernel at start-up
	// (left by an earlier run) and not rewritten since. They keep
	// forwarding until SweepStale, so a restart does not drop traffic.
	adopted map[netip.Prefix]struct{}
	changes []rib.Change
	ops     []Op

	stats Stats
}

type uplink struct {
	name    string
	ifindex int
	mac     net.HardwareAddr
	up      bool
}

// Stats are counters safe to read from any goroutine.
type Stats struct {
	Routes         atomic.Int64 // learned routes in the kernel
	Blackholes     atomic.Int64
	Ops            atomic.Uint64 // route operations attempted
	Errors         atomic.Uint64 // route operations the kernel refused
	NeighborWrites atomic.Uint64
}

// NewWriter returns a writer that installs r's best paths through k with
// the given route metric.
func NewWriter(k Kernel, r *rib.RIB, metric uint32, log *slog.Logger) *Writer {
	return &Writer{
		kernel:              k,
		rib:                 r,
		metric:              metric,
		log:                 log,
		cmds:                make(chan func(), 64),
		installed:           make(map[netip.Prefix]rib.NexthopSet),
		blackholes:          make(map[netip.Prefix]struct{}),
		installedBlackholes: make(map[netip.Prefix]struct{}),
		adopted:             make(map[netip.Prefix]struct{}),
	}
}

// Stats returns the writer's counters.
func (w *Writer) Stats() *Stats { return &w.stats }

// Adopt reads the routes an earlier run left in the kernel. Call it once
// before Run. They stay in place (no traffic is dropped) until they are
// rewritten or SweepStale removes them.
func (w *Writer) Adopt() (int, error) {
	routes, err := w.kernel.Routes()
	if err != nil {
		return 0, fmt.Errorf("listing leftover routes: %w", err)
	}
	for _, r := range routes {
		w.adopted[r.Prefix] = struct{}{}
	}
	return len(routes), nil
}

// Run applies changes until ctx is cancelled. It does not remove what it
// installed: see Flush.
func (w *Writer) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case cmd := <-w.cmds:
			cmd()
		case <-w.rib.Changed():
			w.syncChanged()
		}
	}
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

// SetUplink declares uplink u usable: interface ifindex, carrier up, ToR at
// mac. It (re)writes the 169.254.0.1 neighbour entry and points every route
// whose best paths include u at it.
func (w *Writer) SetUplink(ctx context.Context, u rib.Uplink, name string, ifindex int, mac net.HardwareAddr) error {
	mac = slices.Clone(mac)
	return w.exec(ctx, func() {
		old := w.uplinks[u]
		w.uplinks[u] = uplink{name: name, ifindex: ifindex, mac: mac, up: true}
		if err := w.kernel.SetNeighbor(Neighbor{Ifindex: ifindex, MAC: mac}); err != nil {
			w.log.Error("writing neighbour entry", "uplink", name, "gateway", Gateway, "mac", mac, "err", err)
		} else {
			w.stats.NeighborWrites.Add(1)
		}
		if old.ifindex != 0 && old.ifindex != ifindex {
			// The interface was recreated: routes naming the old index
			// must move, as if the uplink had gone and come back.
			w.setUsable(u, false)
		}
		w.setUsable(u, true)
	})
}

// UplinkDown takes u out of every route at once, without waiting for BGP
// to notice: used on carrier loss. The neighbour entry stays so that the
// uplink is usable again as soon as SetUplink is called.
func (w *Writer) UplinkDown(ctx context.Context, u rib.Uplink) error {
	return w.exec(ctx, func() {
		w.uplinks[u].up = false
		w.setUsable(u, false)
	})
}

// RemoveUplink forgets u entirely (it was removed from the config): its
// routes move to other uplinks or go, and its neighbour entry is deleted.
func (w *Writer) RemoveUplink(ctx context.Context, u rib.Uplink) error {
	return w.exec(ctx, func() {
		w.setUsable(u, false)
		w.deleteNeighbor(u)
		w.uplinks[u] = uplink{}
	})
}

// CheckNeighbor restores u's neighbour entry if something else changed or
// removed it. FRR and admins have been known to flush it; without it every
// route through the uplink blackholes.
func (w *Writer) CheckNeighbor(ctx context.Context, u rib.Uplink) error {
	return w.exec(ctx, func() {
		up := w.uplinks[u]
		if !up.up || up.ifindex == 0 {
			return
		}
		mac, permanent, ok, err := w.kernel.LookupNeighbor(up.ifindex)
		if err != nil {
			w.log.Warn("reading neighbour entry", "uplink", up.name, "err", err)
			return
		}
		if ok && permanent && slices.Equal(mac, up.mac) {
			return
		}
		w.log.Warn("neighbour entry for the gateway was changed by someone else; restoring it",
			"uplink", up.name, "gateway", Gateway, "found", mac, "permanent", permanent, "present", ok, "want", up.mac)
		if err := w.kernel.SetNeighbor(Neighbor{Ifindex: up.ifindex, MAC: up.mac}); err != nil {
			w.log.Error("restoring neighbour entry", "uplink", up.name, "err", err)
			return
		}
		w.stats.NeighborWrites.Add(1)
	})
}

// SetBlackholes makes the kernel's blackhole routes equal prefixes.
func (w *Writer) SetBlackholes(ctx context.Context, prefixes []netip.Prefix) error {
	want := make(map[netip.Prefix]struct{}, len(prefixes))
	for _, p := range prefixes {
		want[p] = struct{}{}
	}
	return w.exec(ctx, func() {
		var removed []netip.Prefix
		w.ops = w.ops[:0]
		for p := range w.installedBlackholes {
			if _, ok := want[p]; !ok {
				removed = append(removed, p)
				w.ops = append(w.ops, Op{Kind: OpDelete, Route: Route{Prefix: p, Metric: w.metric, Blackhole: true}})
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
			w.ops = append(w.ops, Op{Kind: w.addKind(p), Route: Route{Prefix: p, Metric: w.metric, Blackhole: true}})
		}
		w.blackholes = want
		w.apply()
		// Learned routes that a removed blackhole was hiding come back.
		w.ops = w.ops[:0]
		for _, p := range removed {
			w.ops = w.appendSync(w.ops, p, w.rib.Best(p))
		}
		w.apply()
	})
}

// Installed returns the kernel routes the writer owns, sorted by prefix.
func (w *Writer) Installed(ctx context.Context) ([]Route, error) {
	var routes []Route
	err := w.query(ctx, func() {
		for p, set := range w.installed {
			routes = append(routes, w.route(p, set))
		}
		for p := range w.installedBlackholes {
			routes = append(routes, Route{Prefix: p, Metric: w.metric, Blackhole: true})
		}
	})
	slices.SortFunc(routes, func(a, b Route) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return routes, err
}

// Flush removes every route and neighbour entry the writer installed or
// adopted. Call it only after Run has returned, for a deliberate stop.
func (w *Writer) Flush() error {
	w.ops = w.ops[:0]
	for p := range w.installed {
		w.ops = append(w.ops, w.deleteOp(p))
	}
	for p := range w.installedBlackholes {
		w.ops = append(w.ops, Op{Kind: OpDelete, Route: Route{Prefix: p, Metric: w.metric, Blackhole: true}})
	}
	for p := range w.adopted {
		w.ops = append(w.ops, w.deleteOp(p))
	}
	err := w.apply()
	for u := range w.uplinks {
		w.deleteNeighbor(rib.Uplink(u))
	}
	return err
}

// SweepStale deletes adopted routes that nothing rewrote: what an earlier
// run installed and the peers no longer send. Call it once every peer has
// sent End-of-RIB, or when the stale timer expires.
func (w *Writer) SweepStale(ctx context.Context) error {
	return w.exec(ctx, func() {
		w.ops = w.ops[:0]
		for p := range w.adopted {
			w.ops = append(w.ops, w.deleteOp(p))
		}
		if n := len(w.ops); n > 0 {
			w.log.Info("removing stale routes left by an earlier run", "routes", n)
		}
		w.apply()
		clear(w.adopted)
	})
}

// syncChanged applies what the RIB reports as changed.
func (w *Writer) syncChanged() {
	start := time.Now()
	w.changes = w.rib.Drain(w.changes[:0])
	w.ops = w.ops[:0]
	for _, c := range w.changes {
		w.ops = w.appendSync(w.ops, c.Prefix, c.Nexthops)
	}
	n := len(w.ops)
	if n == 0 {
		return
	}
	w.apply()
	w.log.Debug("fib batch applied", "changes", len(w.changes), "ops", n, "duration", time.Since(start))
}

// setUsable changes whether uplink u may carry routes and rewrites the
// routes affected.
func (w *Writer) setUsable(u rib.Uplink, usable bool) {
	if w.usable.Has(u) == usable {
		return
	}
	if usable {
		w.usable |= rib.Of(u)
	} else {
		w.usable &^= rib.Of(u)
	}
	w.ops = w.ops[:0]
	if usable {
		// Every prefix whose best paths include u may gain a nexthop.
		w.rib.ForEach(func(p netip.Prefix, best rib.NexthopSet) {
			if best.Has(u) {
				w.ops = w.appendSync(w.ops, p, best)
			}
		})
	} else {
		for p, set := range w.installed {
			if set.Has(u) {
				w.ops = w.appendSync(w.ops, p, w.rib.Best(p))
			}
		}
	}
	w.apply()
}

// appendSync appends the op that makes the kernel's route for p match best
// (masked by the usable uplinks), if any is needed.
func (w *Writer) appendSync(ops []Op, p netip.Prefix, best rib.NexthopSet) []Op {
	if _, ok := w.blackholes[p]; ok {
		return ops
	}
	want := best & w.usable
	have, ok := w.installed[p]
	switch {
	case want == 0 && ok:
		return append(ops, w.deleteOp(p))
	case want == 0:
		return ops
	case ok && have == want:
		return ops
	}
	return append(ops, Op{Kind: w.addKind(p), Route: w.route(p, want), nexthops: want})
}

// addKind replaces routes we own and only creates the others, so that a
// route someone else installed with the same prefix and metric survives.
func (w *Writer) addKind(p netip.Prefix) OpKind {
	_, learned := w.installed[p]
	_, blackhole := w.installedBlackholes[p]
	_, adopted := w.adopted[p]
	if learned || blackhole || adopted {
		return OpReplace
	}
	return OpAdd
}

func (w *Writer) deleteOp(p netip.Prefix) Op {
	return Op{Kind: OpDelete, Route: Route{Prefix: p, Metric: w.metric}}
}

func (w *Writer) route(p netip.Prefix, set rib.NexthopSet) Route {
	r := Route{Prefix: p, Metric: w.metric, Ifindexes: make([]int, 0, set.Len())}
	for _, u := range set.Uplinks() {
		r.Ifindexes = append(r.Ifindexes, w.uplinks[u].ifindex)
	}
	return r
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
		if ferr, bad := failed[i]; bad {
			w.logFailure(op, ferr)
			continue
		}
		w.record(op)
	}
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

func (w *Writer) logFailure(op Op, err error) {
	switch {
	case op.Kind == OpDelete && errors.Is(err, syscall.ESRCH):
		// Already gone (someone deleted it, or the interface went away and
		// took it along): the goal is reached.
		w.record(op)
	case op.Kind == OpAdd && errors.Is(err, syscall.EEXIST):
		w.log.Warn("a route fabricd did not install already exists; leaving it alone",
			"prefix", op.Route.Prefix, "metric", op.Route.Metric)
	default:
		w.log.Error("kernel refused route change", "op", op.Kind, "prefix", op.Route.Prefix, "err", err)
	}
}

func (w *Writer) record(op Op) {
	p := op.Route.Prefix
	delete(w.adopted, p)
	switch {
	case op.Kind == OpDelete && op.Route.Blackhole:
		delete(w.installedBlackholes, p)
	case op.Kind == OpDelete:
		delete(w.installed, p)
	case op.Route.Blackhole:
		w.installedBlackholes[p] = struct{}{}
	default:
		w.installed[p] = op.nexthops
	}
}

func (w *Writer) deleteNeighbor(u rib.Uplink) {
	up := w.uplinks[u]
	if up.ifindex == 0 {
		return
	}
	if err := w.kernel.DeleteNeighbor(up.ifindex); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENODEV) {
		w.log.Warn("removing neighbour entry", "uplink", up.name, "err", err)
	}
}
