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

// First is the lowest uplink in the set (0 for the empty set).
func (s NexthopSet) First() Uplink { return Uplink(bits.TrailingZeros64(uint64(s)) % 64) }

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

// Key is a prefix in a form without pointers: netip.Addr carries one for
// its zone, which would make the garbage collector scan maps of 100,000
// prefixes on every cycle. Keys of the RIB and the FIB are Keys.
type Key struct {
	addr [16]byte
	bits uint8
	v6   bool
}

// KeyOf converts a prefix; the zone is dropped (prefixes have none).
func KeyOf(p netip.Prefix) Key {
	return Key{addr: p.Addr().As16(), bits: uint8(p.Bits()), v6: p.Addr().Is6()}
}

// Prefix converts back.
func (k Key) Prefix() netip.Prefix {
	a := netip.AddrFrom16(k.addr)
	if !k.v6 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, int(k.bits))
}

// Is6 reports whether the key is an IPv6 prefix.
func (k Key) Is6() bool { return k.v6 }

func (k Key) family() int {
	if k.v6 {
		return 1
	}
	return 0
}

// entry is every uplink's offer for one prefix, in a fixed-size value (no
// allocation per prefix, nothing for the garbage collector to follow).
type entry struct {
	offers NexthopSet // uplinks with a path
	// stale paths are kept from a session that went down (graceful
	// restart, or a link flap) until the peer resends them or the stale
	// time ends; they are used for forwarding like the others.
	stale NexthopSet
	// asPathLen per uplink, saturated at 255 (longer paths are not
	// realistic in a fabric).
	asPathLen [MaxUplinks]uint8
}

// best selects, among the uplinks in mask, those whose paths have the
// shortest AS path. In an eBGP fabric every other tie-breaker (local
// preference, MED between different neighbour ASes) is either absent or
// must be ignored for ECMP across ToRs, which is what multipath-relax
// means.
func (e *entry) best(mask NexthopSet) NexthopSet {
	var set NexthopSet
	shortest := 256
	for v := uint64(e.offers & mask); v != 0; v &= v - 1 {
		u := Uplink(bits.TrailingZeros64(v))
		switch l := int(e.asPathLen[u]); {
		case l < shortest:
			shortest, set = l, Of(u)
		case l == shortest:
			set |= Of(u)
		}
	}
	return set
}

// All is the mask of every uplink.
const All = ^NexthopSet(0)

// Usable says which uplinks may carry a family's traffic, in three
// classes, each used only for what the classes before it cannot reach:
// settled uplinks, whose ToR can forward; fresh ones, whose ToR has just
// said so (a ToR often announces a route a moment before its own FIB
// holds it); and syncing ones, whose ToR is still sending its table.
type Usable struct {
	Settled, Fresh, Syncing NexthopSet
}

// All is every class.
func (u Usable) All() NexthopSet { return u.Settled | u.Fresh | u.Syncing }

// Selection is a prefix's best paths: among all uplinks, and among those
// that may carry traffic now. An uplink whose ToR cannot forward (its
// session is syncing, or gone with its paths kept) must not hide a
// longer path through another one.
type Selection struct {
	// Best are the uplinks with the shortest AS path of all.
	Best NexthopSet
	// Usable are the uplinks with the shortest AS path among the settled
	// ones, or when none has a path, among the fresh ones, or else among
	// the syncing ones: where the route points. Empty: no route.
	Usable NexthopSet
}

func (e *entry) selection(usable [2]Usable, fam int) Selection {
	u := usable[fam]
	sel := Selection{Best: e.best(All)}
	for _, class := range []NexthopSet{u.Settled, u.Fresh, u.Syncing} {
		if sel.Usable = e.best(class); sel.Usable != 0 {
			break
		}
	}
	return sel
}

// Change is a prefix whose selection may have changed.
type Change struct {
	Key Key
	Selection
}

// RIB is safe for concurrent use: the BGP event callback writes it and the
// FIB writer drains it.
type RIB struct {
	mu     sync.Mutex
	routes map[Key]entry
	// dirty collects prefixes touched since the last Drain. Coalescing here,
	// rather than queueing every event, is what keeps a burst of 100k
	// updates from building a backlog: a prefix updated twice is written once.
	dirty  map[Key]struct{}
	notify chan struct{}
	// offers counts, per family (0 IPv4, 1 IPv6) and uplink, the
	// prefixes it offers a path for.
	offers [2][MaxUplinks]int
}

// New returns an empty RIB.
func New() *RIB {
	return &RIB{
		routes: make(map[Key]entry),
		dirty:  make(map[Key]struct{}),
		notify: make(chan struct{}, 1),
	}
}

// Changed is signalled (level-triggered, capacity one) whenever Drain has
// something to return.
func (r *RIB) Changed() <-chan struct{} { return r.notify }

func (r *RIB) markLocked(k Key) {
	r.dirty[k] = struct{}{}
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Update records that uplink offers a path to prefix with the given AS path
// length, replacing its previous offer.
func (r *RIB) Update(u Uplink, prefix netip.Prefix, asPathLen int) {
	l := uint8(min(max(asPathLen, 0), 255))
	k := KeyOf(prefix)
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.routes[k]
	unchanged := e.offers.Has(u) && e.asPathLen[u] == l
	if !e.offers.Has(u) {
		r.offers[k.family()][u]++
	}
	e.offers |= Of(u)
	e.stale &^= Of(u)
	e.asPathLen[u] = l
	r.routes[k] = e
	if !unchanged {
		r.markLocked(k)
	}
}

// Withdraw removes uplink's offer for prefix.
func (r *RIB) Withdraw(u Uplink, prefix netip.Prefix) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.withdrawLocked(u, KeyOf(prefix))
}

func (r *RIB) withdrawLocked(u Uplink, k Key) {
	e, ok := r.routes[k]
	if !ok || !e.offers.Has(u) {
		return
	}
	e.offers &^= Of(u)
	e.stale &^= Of(u)
	r.offers[k.family()][u]--
	if e.offers == 0 {
		delete(r.routes, k)
	} else {
		r.routes[k] = e
	}
	r.markLocked(k)
}

// DropUplink removes every offer of uplink, as when its session goes down.
// It returns how many prefixes lost a path.
func (r *RIB) DropUplink(u Uplink) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, e := range r.routes {
		if e.offers.Has(u) {
			r.withdrawLocked(u, k)
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
	for k, e := range r.routes {
		if e.offers.Has(u) {
			e.stale |= Of(u)
			r.routes[k] = e
			n++
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
	for k, e := range r.routes {
		if family == 4 && k.v6 || family == 6 && !k.v6 {
			continue
		}
		if e.stale.Has(u) {
			r.withdrawLocked(u, k)
			n++
		}
	}
	return n
}

// Drain appends every changed prefix with its selection, given the
// uplinks usable per family (index 0 IPv4, 1 IPv6), to buf and forgets the
// changes. Prefixes that changed and changed back are included; the FIB
// writer compares against what it installed.
func (r *RIB) Drain(buf []Change, usable [2]Usable) []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.dirty {
		e := r.routes[k]
		buf = append(buf, Change{Key: k, Selection: e.selection(usable, k.family())})
	}
	clear(r.dirty)
	return buf
}

// Best returns the uplinks with the shortest AS path to prefix.
func (r *RIB) Best(prefix netip.Prefix) NexthopSet {
	return r.Select(KeyOf(prefix), [2]Usable{{Settled: All}, {Settled: All}}).Best
}

// Select returns k's selection given the usable uplinks per family.
func (r *RIB) Select(k Key, usable [2]Usable) Selection {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.routes[k]
	return e.selection(usable, k.family())
}

// Stale returns the uplinks whose path to prefix is kept from a session
// that ended.
func (r *RIB) Stale(prefix netip.Prefix) NexthopSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes[KeyOf(prefix)].stale
}

// Offers returns the uplinks that offer a path to prefix (the accepted
// ones: a filtered or looped path never enters the RIB).
func (r *RIB) Offers(prefix netip.Prefix) NexthopSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes[KeyOf(prefix)].offers
}

// ForOffers calls fn with every prefix that uplink u offers a path for,
// and its selection. fn must not call back into the RIB.
func (r *RIB) ForOffers(u Uplink, usable [2]Usable, fn func(Key, Selection)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, e := range r.routes {
		if e.offers.Has(u) {
			fn(k, e.selection(usable, k.family()))
		}
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

// CountFrom is the number of IPv4 (or with v6, IPv6) prefixes uplink
// offers a path for.
func (r *RIB) CountFrom(u Uplink, v6 bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v6 {
		return r.offers[1][u]
	}
	return r.offers[0][u]
}
