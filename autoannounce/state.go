package autoannounce

import (
	"net/netip"
	"slices"
	"time"
)

// Kernel constants used by the pure logic. They are the Linux values,
// spelled out so this file builds and tests anywhere.
const (
	rtTableMain  = 254  // RT_TABLE_MAIN
	rtnUnicast   = 1    // RTN_UNICAST
	rtprotBGP    = 186  // RTPROT_BGP: fabricd's own routes
	ifaTentative = 0x40 // IFA_F_TENTATIVE
	ifaDADFailed = 0x08 // IFA_F_DADFAILED
)

// link is what the state knows about an interface.
type link struct {
	Index int
	Name  string
	Up    bool // IFF_UP
}

// route is a kernel route, reduced to what matters here. It is also the
// route's identity: a deletion carries the same values as the addition.
type route struct {
	Dst      netip.Prefix
	Link     int // output ifindex; 0 for multipath routes, which never count
	Table    int
	Priority int
	Tos      int
	Protocol int
	Type     int
}

// routeKey identifies a route among those the state keeps. Protocol and
// type are not part of it: the kernel does not tell routes apart by them,
// and a replacement may change them.
type routeKey struct {
	Dst      netip.Prefix
	Link     int
	Table    int
	Priority int
	Tos      int
}

func (r route) key() routeKey {
	return routeKey{Dst: r.Dst, Link: r.Link, Table: r.Table, Priority: r.Priority, Tos: r.Tos}
}

// sameSlot reports whether the kernel would see a and b as the same route
// for "ip route replace": same table, destination, TOS and metric, any
// device.
func (k routeKey) sameSlot(o routeKey) bool {
	return k.Dst == o.Dst && k.Table == o.Table && k.Priority == o.Priority && k.Tos == o.Tos
}

// candidateRoute reports whether r could ever be kept by the state: a host
// route in the main table. The netlink side drops everything else early
// (fabricd's own table can be thousands of routes); the rest of the
// filtering (protocol, type) happens in state.applyRoute so a replacement
// that turns a kept route into an ignored one is still seen.
func candidateRoute(r route) bool {
	return r.Table == rtTableMain && r.Dst.IsValid() && r.Dst.IsSingleIP()
}

// podRoute reports whether r can mark a pod: a unicast host route in the
// main table, not installed by fabricd itself. Calico's routes are
// "boot"/"static" protocol, scope link.
func podRoute(r route) bool {
	return candidateRoute(r) && r.Type == rtnUnicast && r.Protocol != rtprotBGP && r.Link != 0
}

// address is an interface address.
type address struct {
	Link   int
	Prefix netip.Prefix // the local address with its prefix length, as on the interface
	Flags  int          // IFA_F_*
}

type addrKey struct {
	Link   int
	Prefix netip.Prefix
}

func (a address) key() addrKey { return addrKey{Link: a.Link, Prefix: a.Prefix} }

// announceable reports whether an interface address can be announced as a
// host prefix: not link-local (meaningless off the link), not loopback
// (127.0.0.1 on lo is on every host), not an address the kernel does not
// use yet (tentative) or will never use (DAD failed).
func announceable(a address) bool {
	ip := a.Prefix.Addr()
	switch {
	case !ip.IsValid(), ip.IsUnspecified(), ip.IsLoopback(), ip.IsMulticast(),
		ip.IsLinkLocalUnicast(), ip.Is4In6():
		return false
	case a.Flags&(ifaTentative|ifaDADFailed) != 0:
		return false
	}
	return true
}

// eventKind says what an event carries.
type eventKind uint8

const (
	evSnapshot eventKind = iota + 1 // the complete kernel state; replaces everything
	evLink
	evRoute
	evAddr
)

// event is one change from the kernel, in the order the source saw it.
type event struct {
	kind eventKind
	del  bool // the link, route or address is gone
	// replace marks a route that replaced whatever occupied its slot
	// (NLM_F_REPLACE): the kernel does not report the old one's removal.
	replace bool
	link    link
	route   route
	addr    address
	snap    *snapshot
}

// snapshot is the kernel state from a dump.
type snapshot struct {
	links  []link
	routes []route
	addrs  []address
}

// entry is an announcement with what state needs to know about it.
type entry struct {
	Announcement
	pool int // index of the pod pool it came from; -1 for an address
}

// pod reports whether e is a pod block, subject to the hold-down.
func (e entry) pod() bool { return e.pool >= 0 }

// state turns kernel objects into the announcement set. It is owned by one
// goroutine and does no I/O; time is passed in.
type state struct {
	cfg    settings
	links  map[int]link
	routes map[routeKey]route
	addrs  map[addrKey]address

	// announced is the set as last evaluated, including blocks in their
	// hold-down; withdrawAt holds those blocks' deadlines.
	announced  map[netip.Prefix]entry
	withdrawAt map[netip.Prefix]time.Time
}

func newState(cfg settings) *state {
	return &state{
		cfg:        cfg,
		links:      make(map[int]link),
		routes:     make(map[routeKey]route),
		addrs:      make(map[addrKey]address),
		announced:  make(map[netip.Prefix]entry),
		withdrawAt: make(map[netip.Prefix]time.Time),
	}
}

// setConfig replaces the configuration; the next evaluate applies it.
func (s *state) setConfig(cfg settings) { s.cfg = cfg }

// apply records one kernel change.
func (s *state) apply(ev event) {
	switch ev.kind {
	case evSnapshot:
		s.applySnapshot(ev.snap)
	case evLink:
		s.applyLink(ev.link, ev.del)
	case evRoute:
		s.applyRoute(ev.route, ev.del, ev.replace)
	case evAddr:
		if ev.del {
			delete(s.addrs, ev.addr.key())
		} else {
			s.addrs[ev.addr.key()] = ev.addr
		}
	}
}

// applySnapshot replaces the kernel view. Events the source delivers after
// the snapshot may predate it (they were queued on the subscription while
// the dump ran); applied in order on top of it they still converge, because
// every event states the whole truth about one object.
func (s *state) applySnapshot(snap *snapshot) {
	clear(s.links)
	clear(s.routes)
	clear(s.addrs)
	if snap == nil {
		return
	}
	for _, l := range snap.links {
		s.links[l.Index] = l
	}
	for _, r := range snap.routes {
		if podRoute(r) {
			s.routes[r.key()] = r
		}
	}
	for _, a := range snap.addrs {
		s.addrs[a.key()] = a
	}
}

func (s *state) applyLink(l link, del bool) {
	if del {
		delete(s.links, l.Index)
		// The kernel removes a deleted interface's routes without an
		// RTM_DELROUTE for IPv4 (and its addresses, though those are
		// reported). A pod going away deletes its cali interface, so this
		// is the common way a pod route disappears.
		s.dropRoutesOn(l.Index)
		for k := range s.addrs {
			if k.Link == l.Index {
				delete(s.addrs, k)
			}
		}
		return
	}
	s.links[l.Index] = l
	if !l.Up {
		// Setting an interface down flushes its routes, again without
		// notifications for IPv4; they do not come back with the link.
		s.dropRoutesOn(l.Index)
	}
}

func (s *state) dropRoutesOn(index int) {
	for k := range s.routes {
		if k.Link == index {
			delete(s.routes, k)
		}
	}
}

func (s *state) applyRoute(r route, del, replace bool) {
	k := r.key()
	if del {
		delete(s.routes, k)
		return
	}
	if replace {
		for old := range s.routes {
			if old.sameSlot(k) {
				delete(s.routes, old)
			}
		}
	}
	if podRoute(r) {
		s.routes[k] = r
	}
}

// desired computes the announcements the kernel state calls for right now,
// without hold-down. Pools come first, in configuration order, then
// address sources: the first source that claims a prefix names it.
func (s *state) desired() map[netip.Prefix]entry {
	want := make(map[netip.Prefix]entry)
	for _, r := range s.routes {
		l, ok := s.links[r.Link]
		// An unknown link is one whose RTM_NEWLINK has not been read yet
		// (separate sockets are not ordered): the route counts once it is.
		if !ok || !l.Up {
			continue
		}
		ip := r.Dst.Addr()
		for i, p := range s.cfg.pools {
			if !p.Pool.Contains(ip) || !matchName(p.Interfaces, l.Name) {
				continue
			}
			// Two pools can only claim the same block when they overlap
			// (Validate refuses that); then the earlier one wins, whatever
			// the map order.
			b := blockOf(ip, p.BlockSize)
			if e, dup := want[b]; !dup || e.pool > i {
				want[b] = entry{Announcement{Prefix: b, Blackhole: p.Blackhole, Source: p.source}, i}
			}
			break
		}
	}

	// Sorted, so that an address on two matching interfaces is always
	// named after the same one.
	keys := make([]addrKey, 0, len(s.addrs))
	for k := range s.addrs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b addrKey) int {
		if a.Link != b.Link {
			return a.Link - b.Link
		}
		return comparePrefix(a.Prefix, b.Prefix)
	})
	for _, k := range keys {
		a := s.addrs[k]
		l, ok := s.links[a.Link]
		if !ok || !announceable(a) {
			continue
		}
		// No check of IFF_UP: kube-proxy's kube-ipvs0 is a dummy device it
		// never sets up, and its addresses are exactly what we want.
		ip := a.Prefix.Addr()
		host := netip.PrefixFrom(ip, ip.BitLen())
		if _, dup := want[host]; dup {
			continue
		}
		for _, src := range s.cfg.addrs {
			if !matchName(src.Interfaces, l.Name) || excluded(src.Exclude, ip) {
				continue
			}
			want[host] = entry{Announcement{Prefix: host, Source: "address on " + l.Name}, -1}
			break
		}
	}
	return want
}

func excluded(ex []netip.Prefix, ip netip.Addr) bool {
	for _, p := range ex {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// holdingPool returns the index of the first pool that would announce
// block b, if the current configuration still has one.
func (s *state) holdingPool(b netip.Prefix) (int, bool) {
	for i, p := range s.cfg.pools {
		if p.BlockSize == b.Bits() && p.Pool.Contains(b.Addr()) {
			return i, true
		}
	}
	return -1, false
}

// evaluate recomputes the announced set at time now, applying the
// hold-down: a pod block that lost its last pod stays announced until
// withdrawAt, and a pod that comes back before then cancels the
// withdrawal. It returns the earliest pending deadline (zero if none), when
// evaluate must run again.
func (s *state) evaluate(now time.Time) (next time.Time) {
	want := s.desired()
	for b, e := range s.announced {
		if _, ok := want[b]; ok {
			delete(s.withdrawAt, b)
			continue
		}
		if !e.pod() {
			continue // addresses follow the kernel at once
		}
		i, ok := s.holdingPool(b)
		if !ok {
			delete(s.withdrawAt, b) // the pool was removed from the configuration
			continue
		}
		at, ok := s.withdrawAt[b]
		if !ok {
			at = now.Add(s.cfg.holdDown)
			s.withdrawAt[b] = at
		}
		if !now.Before(at) {
			delete(s.withdrawAt, b)
			continue
		}
		// Announced as the current configuration says (a reload may have
		// changed the blackhole flag meanwhile).
		p := s.cfg.pools[i]
		want[b] = entry{Announcement{Prefix: b, Blackhole: p.Blackhole, Source: p.source}, i}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for b := range s.withdrawAt {
		if _, ok := want[b]; !ok {
			delete(s.withdrawAt, b)
		}
	}
	s.announced = want
	return next
}

// set returns the announced set sorted by prefix.
func (s *state) set() []Announcement {
	out := make([]Announcement, 0, len(s.announced))
	for _, e := range s.announced {
		out = append(out, e.Announcement)
	}
	slices.SortFunc(out, func(a, b Announcement) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// comparePrefix orders by address (IPv4 before IPv6), then by length.
func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
