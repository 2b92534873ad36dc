package nlmon

import (
	"encoding/binary"
	"iter"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Netlink numbers x/sys/unix does not define.
const (
	rtaNHID      = 30 // RTA_NH_ID, Linux 5.3
	nlaTypeMask  = 0x3fff
	sizeofNhmsg  = 8
	sizeofNhGrp  = 8 // struct nexthop_grp
	rtnhFlagsOff = 2 // offset of rtnh_flags in struct rtnexthop
)

// attrs iterates over the netlink attributes in b (type without the nested and
// byte-order flags, payload). It stops at the first malformed one.
func attrs(b []byte) iter.Seq2[uint16, []byte] {
	return func(yield func(uint16, []byte) bool) {
		for len(b) >= unix.SizeofRtAttr {
			l := int(binary.NativeEndian.Uint16(b[0:2]))
			if l < unix.SizeofRtAttr || l > len(b) {
				return
			}
			if !yield(binary.NativeEndian.Uint16(b[2:4])&nlaTypeMask, b[unix.SizeofRtAttr:l]) {
				return
			}
			next := (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
			if next >= len(b) {
				return
			}
			b = b[next:]
		}
	}
}

func u32(b []byte) uint32 {
	if len(b) < 4 {
		return 0
	}
	return binary.NativeEndian.Uint32(b)
}

// routeMsg is what the model needs of an IPv4 RTM_NEWROUTE or RTM_DELROUTE.
type routeMsg struct {
	prefix   netip.Prefix
	table    uint32
	protocol uint8
	nhid     uint32  // RTA_NH_ID: the route uses a nexthop object
	oifs     []int32 // inline next hops' interfaces, dead ones left out
}

func parseRouteMsg(b []byte) (routeMsg, bool) {
	if len(b) < unix.SizeofRtMsg || b[0] != unix.AF_INET {
		return routeMsg{}, false
	}
	dstLen, table, proto, flags := int(b[1]), uint32(b[4]), b[5], binary.NativeEndian.Uint32(b[8:12])
	r := routeMsg{table: table, protocol: proto}
	dst := netip.IPv4Unspecified()
	var oif int32
	for typ, data := range attrs(b[unix.SizeofRtMsg:]) {
		switch typ {
		case unix.RTA_DST:
			if a, ok := netip.AddrFromSlice(data); ok && a.Is4() {
				dst = a
			}
		case unix.RTA_TABLE:
			r.table = u32(data)
		case unix.RTA_OIF:
			oif = int32(u32(data))
		case rtaNHID:
			r.nhid = u32(data)
		case unix.RTA_MULTIPATH:
			for len(data) >= unix.SizeofRtNexthop {
				l := int(binary.NativeEndian.Uint16(data[0:2]))
				if l < unix.SizeofRtNexthop || l > len(data) {
					break
				}
				if data[rtnhFlagsOff]&unix.RTNH_F_DEAD == 0 {
					r.oifs = append(r.oifs, int32(binary.NativeEndian.Uint32(data[4:8])))
				}
				l = (l + unix.RTNH_ALIGNTO - 1) &^ (unix.RTNH_ALIGNTO - 1)
				if l >= len(data) {
					break
				}
				data = data[l:]
			}
		}
	}
	if oif != 0 && r.nhid == 0 && len(r.oifs) == 0 && flags&unix.RTNH_F_DEAD == 0 {
		r.oifs = []int32{oif}
	}
	p, err := dst.Prefix(dstLen)
	if err != nil {
		return routeMsg{}, false
	}
	r.prefix = p
	return r, true
}

// nexthopMsg is what the model needs of an RTM_NEWNEXTHOP or RTM_DELNEXTHOP.
type nexthopMsg struct {
	id    uint32
	oif   int32
	group []uint32 // member IDs, for a group
}

func parseNexthopMsg(b []byte) (nexthopMsg, bool) {
	if len(b) < sizeofNhmsg {
		return nexthopMsg{}, false
	}
	var nh nexthopMsg
	for typ, data := range attrs(b[sizeofNhmsg:]) {
		switch typ {
		case unix.NHA_ID:
			nh.id = u32(data)
		case unix.NHA_OIF:
			nh.oif = int32(u32(data))
		case unix.NHA_GROUP:
			for ; len(data) >= sizeofNhGrp; data = data[sizeofNhGrp:] {
				nh.group = append(nh.group, binary.NativeEndian.Uint32(data[0:4]))
			}
		}
	}
	return nh, nh.id != 0
}

// linkMsg is what the model needs of an RTM_NEWLINK.
type linkMsg struct {
	index int32
	name  string
	flags uint32
}

func parseLinkMsg(b []byte) (linkMsg, bool) {
	if len(b) < unix.SizeofIfInfomsg {
		return linkMsg{}, false
	}
	l := linkMsg{
		index: int32(binary.NativeEndian.Uint32(b[4:8])),
		flags: binary.NativeEndian.Uint32(b[8:12]),
	}
	for typ, data := range attrs(b[unix.SizeofIfInfomsg:]) {
		if typ == unix.IFLA_IFNAME {
			l.name = strings.TrimRight(string(data), "\x00")
		}
	}
	return l, l.index != 0
}

// devSet is a sorted set of ifindexes, encoded as a string so that it can be a
// map key: the interfaces a route forwards through.
type devSet string

func makeDevSet(idx []int32) devSet {
	s := slices.Clone(idx)
	slices.Sort(s)
	s = slices.Compact(s)
	var b strings.Builder
	for _, i := range s {
		b.WriteString(string(binary.BigEndian.AppendUint32(nil, uint32(i))))
	}
	return devSet(b.String())
}

func (d devSet) members() []int32 {
	var out []int32
	for i := 0; i+4 <= len(d); i += 4 {
		out = append(out, int32(binary.BigEndian.Uint32([]byte(d[i:i+4]))))
	}
	return out
}

func (d devSet) has(idx int32) bool { return slices.Contains(d.members(), idx) }

type modelRoute struct {
	nhid uint32 // 0: inline next hops in devs
	devs devSet
}

type modelLink struct {
	name    string
	lowerUp bool
}

// FIB follows the kernel's IPv4 main table, its nexthop objects and its links
// from netlink messages, for the routes of protocol bgp inside watch: the fabric's
// prefixes. It keeps per-devSet and per-nexthop counts, so the questions asked
// after every message ("how many routes still use ens3?") cost nothing like a walk
// over 100,000 routes.
//
// The kernel changes some state without telling anyone, and the model copies that:
// when an interface loses carrier, every nexthop object on it is deleted, removed
// from its groups, and routes left without a nexthop are deleted, all without a
// netlink notification (net/ipv4/nexthop.c, NETDEV_CHANGE). Inline next hops only
// get the linkdown flag and keep being used.
type FIB struct {
	watch netip.Prefix

	routes   map[netip.Prefix]modelRoute
	nexthops map[uint32]nexthopMsg
	links    map[int32]modelLink

	inline map[devSet]int // watched routes with inline next hops, by interfaces
	byNHID map[uint32]int // watched routes using each nexthop object
	first  time.Time      // when the first watched route appeared
	now    time.Time      // timestamp of the message being applied
	flushd int            // nexthop objects the kernel flushed on carrier loss
	writes int            // notified changes to watched routes and to nexthop objects
}

func newFIB(watch netip.Prefix) *FIB {
	return &FIB{
		watch:    watch,
		routes:   map[netip.Prefix]modelRoute{},
		nexthops: map[uint32]nexthopMsg{},
		links:    map[int32]modelLink{},
		inline:   map[devSet]int{},
		byNHID:   map[uint32]int{},
	}
}

// apply applies one netlink message received at now.
func (m *FIB) apply(typ uint16, data []byte, now time.Time) {
	m.now = now
	switch typ {
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		r, ok := parseRouteMsg(data)
		if !ok || r.table != unix.RT_TABLE_MAIN || r.protocol != unix.RTPROT_BGP || !m.watch.Contains(r.prefix.Addr()) || r.prefix.Bits() < m.watch.Bits() {
			return
		}
		m.writes++
		if typ == unix.RTM_DELROUTE {
			m.delRoute(r.prefix)
			return
		}
		m.setRoute(r.prefix, modelRoute{nhid: r.nhid, devs: makeDevSet(r.oifs)})
	case unix.RTM_NEWNEXTHOP:
		if nh, ok := parseNexthopMsg(data); ok {
			m.writes++
			m.nexthops[nh.id] = nh
		}
	case unix.RTM_DELNEXTHOP:
		if nh, ok := parseNexthopMsg(data); ok {
			m.writes++
			m.deleteNexthops(map[uint32]bool{nh.id: true})
		}
	case unix.RTM_NEWLINK:
		l, ok := parseLinkMsg(data)
		if !ok {
			return
		}
		old, known := m.links[l.index]
		up := l.flags&(unix.IFF_LOWER_UP|unix.IFF_RUNNING) != 0
		if l.name == "" {
			l.name = old.name
		}
		m.links[l.index] = modelLink{name: l.name, lowerUp: up}
		if known && old.lowerUp && !up {
			m.carrierLost(l.index)
		}
	case unix.RTM_DELLINK:
		if l, ok := parseLinkMsg(data); ok {
			delete(m.links, l.index)
		}
	}
}

func (m *FIB) setRoute(p netip.Prefix, r modelRoute) {
	if len(m.routes) == 0 && m.first.IsZero() {
		m.first = m.now
	}
	m.delRoute(p)
	m.routes[p] = r
	if r.nhid != 0 {
		m.byNHID[r.nhid]++
	} else {
		m.inline[r.devs]++
	}
}

func (m *FIB) delRoute(p netip.Prefix) {
	old, ok := m.routes[p]
	if !ok {
		return
	}
	delete(m.routes, p)
	if old.nhid != 0 {
		if m.byNHID[old.nhid]--; m.byNHID[old.nhid] == 0 {
			delete(m.byNHID, old.nhid)
		}
	} else if m.inline[old.devs]--; m.inline[old.devs] == 0 {
		delete(m.inline, old.devs)
	}
}

// carrierLost does what the kernel does silently to nexthop objects on idx.
func (m *FIB) carrierLost(idx int32) {
	gone := map[uint32]bool{}
	for id, nh := range m.nexthops {
		if len(nh.group) == 0 && nh.oif == idx {
			gone[id] = true
		}
	}
	m.flushd += len(gone)
	m.deleteNexthops(gone)
}

// deleteNexthops removes nexthop objects, shrinks the groups that held them (a
// group left empty goes too) and deletes the routes that used any that went.
func (m *FIB) deleteNexthops(gone map[uint32]bool) {
	for len(gone) > 0 {
		for id := range gone {
			delete(m.nexthops, id)
		}
		next := map[uint32]bool{}
		for id, nh := range m.nexthops {
			if len(nh.group) == 0 {
				continue
			}
			kept := slices.DeleteFunc(slices.Clone(nh.group), func(member uint32) bool { return gone[member] })
			if len(kept) == len(nh.group) {
				continue
			}
			if len(kept) == 0 {
				next[id] = true
				continue
			}
			nh.group = kept
			m.nexthops[id] = nh
		}
		for p, r := range m.routes {
			if r.nhid != 0 && gone[r.nhid] {
				m.delRoute(p)
			}
		}
		gone = next
	}
}

// devsOf resolves the interfaces a nexthop object forwards through.
func (m *FIB) devsOf(id uint32) []int32 {
	nh, ok := m.nexthops[id]
	if !ok {
		return nil
	}
	if len(nh.group) == 0 {
		if nh.oif == 0 {
			return nil // blackhole
		}
		return []int32{nh.oif}
	}
	var out []int32
	for _, member := range nh.group {
		if mnh, ok := m.nexthops[member]; ok && mnh.oif != 0 {
			out = append(out, mnh.oif)
		}
	}
	return out
}

// routeDevs resolves the interfaces route r forwards through.
func (m *FIB) routeDevs(r modelRoute) devSet {
	if r.nhid != 0 {
		return makeDevSet(m.devsOf(r.nhid))
	}
	return r.devs
}

// count returns how many watched routes forward through a set of interfaces for
// which match is true.
func (m *FIB) count(match func(devSet) bool) int {
	n := 0
	for set, c := range m.inline {
		if match(set) {
			n += c
		}
	}
	for id, c := range m.byNHID {
		if match(makeDevSet(m.devsOf(id))) {
			n += c
		}
	}
	return n
}

// index returns the ifindex of the named interface, or 0.
func (m *FIB) index(name string) int32 {
	for idx, l := range m.links {
		if l.name == name {
			return idx
		}
	}
	return 0
}

// First is when the first watched route appeared; zero if the monitor started
// with routes already there.
func (m *FIB) First() time.Time { return m.first }

// Flushed counts the nexthop objects the kernel deleted by itself on carrier
// loss since the monitor started.
func (m *FIB) Flushed() int { return m.flushd }

// Writes counts the notified changes to watched routes and to nexthop objects:
// a daemon writing to the FIB moves it.
func (m *FIB) Writes() int { return m.writes }

// Devs returns the names of the interfaces the watched route to p forwards
// through, sorted; nil if there is no such route or it forwards nowhere (a
// blackhole).
func (m *FIB) Devs(p netip.Prefix) []string {
	r, ok := m.routes[p]
	if !ok {
		return nil
	}
	return m.names(m.routeDevs(r))
}

// AllThrough returns a predicate for Track: every prefix in want forwards
// through exactly devs (sorted, as Devs gives them), as an ECMP group when
// there are several.
func AllThrough(want []netip.Prefix, devs []string) func(*FIB) bool {
	return func(f *FIB) bool {
		for _, p := range want {
			if !slices.Equal(f.Devs(p), devs) {
				return false
			}
		}
		return true
	}
}

// Table returns every watched route that forwards through some interface, with
// the interfaces' names (sorted). Blackholes are left out.
func (m *FIB) Table() map[netip.Prefix][]string {
	out := make(map[netip.Prefix][]string, len(m.routes))
	for p, r := range m.routes {
		if devs := m.names(m.routeDevs(r)); len(devs) > 0 {
			out[p] = devs
		}
	}
	return out
}

// names resolves a set of ifindexes to sorted interface names.
func (m *FIB) names(s devSet) []string {
	var out []string
	for _, i := range s.members() {
		if l, ok := m.links[i]; ok {
			out = append(out, l.name)
		}
	}
	slices.Sort(out)
	return out
}

// Routes is the number of watched routes in the FIB.
func (m *FIB) Routes() int { return len(m.routes) }

// Using is the number of watched routes that forward (also) through the named
// interface.
func (m *FIB) Using(name string) int {
	idx := m.index(name)
	if idx == 0 {
		return 0
	}
	return m.count(func(s devSet) bool { return s.has(idx) })
}

// Exactly is the number of watched routes that forward through exactly the named
// interfaces (all of them, ECMP, and no other).
func (m *FIB) Exactly(names ...string) int {
	var idx []int32
	for _, n := range names {
		i := m.index(n)
		if i == 0 {
			return 0
		}
		idx = append(idx, i)
	}
	want := makeDevSet(idx)
	return m.count(func(s devSet) bool { return s == want })
}

// Carrier reports whether the named interface has carrier.
func (m *FIB) Carrier(name string) bool {
	idx := m.index(name)
	return idx != 0 && m.links[idx].lowerUp
}

// diff compares the watched routes of two models, resolved to interfaces, and
// describes up to a few differences.
func (m *FIB) diff(o *FIB) []string {
	var out []string
	note := func(s string) {
		if len(out) < 5 {
			out = append(out, s)
		}
	}
	names := func(mm *FIB, s devSet) string {
		var n []string
		for _, i := range s.members() {
			n = append(n, mm.links[i].name)
		}
		return "[" + strings.Join(n, " ") + "]"
	}
	for p, r := range m.routes {
		or, ok := o.routes[p]
		switch {
		case !ok:
			note(p.String() + " only in the monitor's model")
		case m.routeDevs(r) != o.routeDevs(or):
			note(p.String() + " via " + names(m, m.routeDevs(r)) + " in the model, " + names(o, o.routeDevs(or)) + " in the kernel")
		}
	}
	for p := range o.routes {
		if _, ok := m.routes[p]; !ok {
			note(p.String() + " only in the kernel")
		}
	}
	if d := len(m.routes) - len(o.routes); d != 0 && len(out) < 5 {
		out = append(out, "route counts differ by "+strconv.Itoa(d))
	}
	return out
}
