// Package rib keeps the compact routing state the FIB needs: for every
// learned prefix, which uplinks offer a path and how long each path's AS path
// is. It chooses the best paths (shortest AS path; equal lengths across
// different ASes are all used, FRR's "bestpath as-path multipath-relax") and
// tells the FIB writer which prefixes changed.
//
// GoBGP keeps the full BGP table with every attribute; this package keeps a
// few bytes per prefix so that the FIB writer never has to query GoBGP and
// fabricd does not hold a second copy of the RIB.
package rib

import (
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// MaxUplinks is how many uplinks fabricd handles. A NexthopSet could name
// 64, but the FIB numbers nexthop groups by their set within 16 bits, and
// no server has more than a handful of uplinks.
const MaxUplinks = 16

// Uplink is the index of an uplink in the daemon's uplink table.
type Uplink uint8

// NexthopSet is a set of uplinks, bit i standing for Uplink(i). The zero
// set means "no route".
type NexthopSet uint64

// Of builds a set from uplinks.
func Of(uplinks ...Uplink) NexthopSet {
	var s NexthopSet
	for _, u := range uplinks {
		s |= 1 << u
	}
	return s
}

// Has reports whether u is in the set.
func (s NexthopSet) Has(u Uplink) bool { return s&(1<<u) != 0 }

// Len is the number of uplinks in the set.
func (s NexthopSet) Len() int { return bits.OnesCount64(uint64(s)) }

// Uplinks lists the set's members in ascending order.
func (s NexthopSet) Uplinks() []Uplink {
	out := make([]Uplink, 0, s.Len())
	for v := uint64(s); v != 0; v &= v - 1 {
		out = append(out, Uplink(bits.TrailingZeros64(v)))
	}
	return out
}

func (s NexthopSet) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, u := range s.Uplinks() {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, u)
	}
	b.WriteByte('}')
	return b.String()
}

// path is one uplink's offer for a prefix.
type path struct {
	uplink    Uplink
	asPathLen uint8 // saturated at 255; longer paths are not realistic in a fabric
	// stale paths are kept from a session that went down (graceful
	// restart, or a link flap) until the peer resends them or the stale
	// time ends; they are used for forwarding like the others.
	stale bool
}

// Change is a prefix whose best nexthop set may have changed. An empty
// Nexthops means the prefix has no path left and must leave the FIB.
type Change struct {
	Prefix   netip.Prefix
	Nexthops NexthopSet
}

// RIB is safe for concurrent use: the BGP event callback writes it and the
// FIB writer drains it.
type RIB struct {
	mu     sync.Mutex
	routes map[netip.Prefix][]path
	// dirty collects prefixes touched since the last Drain. Coalescing here,
	// rather than queueing every event, is what keeps a burst of 100k
	// updates from building a backlog: a prefix updated twice is written once.
	dirty  map[netip.Prefix]struct{}
	notify chan struct{}
}

// New returns an empty RIB.
func New() *RIB {
	return &RIB{
		routes: make(map[netip.Prefix][]path),
		dirty:  make(map[netip.Prefix]struct{}),
		notify: make(chan struct{}, 1),
	}
}

// Changed is signalled (level-triggered, capacity one) whenever Drain has
// something to return.
func (r *RIB) Changed() <-chan struct{} { return r.notify }

func (r *RIB) markLocked(p netip.Prefix) {
	r.dirty[p] = struct{}{}
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Update records that uplink offers a path to prefix with the given AS path
// length, replacing its previous offer.
func (r *RIB) Update(u Uplink, prefix netip.Prefix, asPathLen int) {
	l := uint8(min(max(asPathLen, 0), 255))
	r.mu.Lock()
	defer r.mu.Unlock()
	paths := r.routes[prefix]
	i := slices.IndexFunc(paths, func(p path) bool { return p.uplink == u })
	if i >= 0 {
		paths[i].stale = false
		if paths[i].asPathLen == l {
			return
		}
		paths[i].asPathLen = l
	} else {
		r.routes[prefix] = append(paths, path{uplink: u, asPathLen: l})
	}
	r.markLocked(prefix)
}

// Withdraw removes uplink's offer for prefix.
func (r *RIB) Withdraw(u Uplink, prefix netip.Prefix) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.withdrawLocked(u, prefix)
}

func (r *RIB) withdrawLocked(u Uplink, prefix netip.Prefix) {
	paths, ok := r.routes[prefix]
	if !ok {
		return
	}
	i := slices.IndexFunc(paths, func(p path) bool { return p.uplink == u })
	if i < 0 {
		return
	}
	paths = slices.Delete(paths, i, i+1)
	if len(paths) == 0 {
		delete(r.routes, prefix)
	} else {
		r.routes[prefix] = paths
	}
	r.markLocked(prefix)
}

// DropUplink removes every offer of uplink, as when its session goes down.
// It returns how many prefixes lost a path.
func (r *RIB) DropUplink(u Uplink) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for prefix, paths := range r.routes {
		if slices.ContainsFunc(paths, func(p path) bool { return p.uplink == u }) {
			r.withdrawLocked(u, prefix)
			n++
		}
	}
	return n
}

// MarkStale marks every path of uplink u stale, as when its session went
// down but its routes are to be kept for now. It returns how many.
func (r *RIB) MarkStale(u Uplink) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, paths := range r.routes {
		for i := range paths {
			if paths[i].uplink == u {
				paths[i].stale = true
				n++
			}
		}
	}
	return n
}

// SweepStale withdraws uplink u's paths that are still stale: the peer
// came back and did not resend them, or never came back in time. With
// family set (4 or 6) it sweeps only that family, as End-of-RIB arrives
// per family; 0 sweeps both. It returns how many.
func (r *RIB) SweepStale(u Uplink, family int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for prefix, paths := range r.routes {
		if family == 4 && !prefix.Addr().Is4() || family == 6 && !prefix.Addr().Is6() {
			continue
		}
		if slices.ContainsFunc(paths, func(p path) bool { return p.uplink == u && p.stale }) {
			r.withdrawLocked(u, prefix)
			n++
		}
	}
	return n
}

// Drain appends every changed prefix with its current best nexthop set to
// buf and forgets the changes. Prefixes that changed and changed back are
// included; the FIB writer compares against what it installed.
func (r *RIB) Drain(buf []Change) []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	for prefix := range r.dirty {
		buf = append(buf, Change{Prefix: prefix, Nexthops: best(r.routes[prefix])})
	}
	clear(r.dirty)
	return buf
}

// Best returns the nexthop set currently chosen for prefix.
func (r *RIB) Best(prefix netip.Prefix) NexthopSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return best(r.routes[prefix])
}

// ForEach calls fn with every prefix and its best nexthop set. fn must not
// call back into the RIB.
func (r *RIB) ForEach(fn func(netip.Prefix, NexthopSet)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for prefix, paths := range r.routes {
		fn(prefix, best(paths))
	}
}

// Pending is the number of changed prefixes not drained yet.
func (r *RIB) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dirty)
}

// Len is the number of prefixes with at least one path.
func (r *RIB) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.routes)
}

// CountFrom is the number of prefixes uplink offers a path for.
func (r *RIB) CountFrom(u Uplink) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, paths := range r.routes {
		if slices.ContainsFunc(paths, func(p path) bool { return p.uplink == u }) {
			n++
		}
	}
	return n
}

// best selects the uplinks whose paths have the shortest AS path. In an eBGP
// fabric every other tie-breaker (local preference, MED between different
// neighbour ASes) is either absent or must be ignored for ECMP across ToRs,
// which is what multipath-relax means.
func best(paths []path) NexthopSet {
	var set NexthopSet
	shortest := uint8(255)
	for _, p := range paths {
		switch {
		case p.asPathLen < shortest:
			shortest = p.asPathLen
			set = Of(p.uplink)
		case p.asPathLen == shortest:
			set |= Of(p.uplink)
		}
	}
	return set
}
