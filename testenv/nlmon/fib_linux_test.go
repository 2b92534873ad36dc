package nlmon

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func u32b(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func linkMsgBytes(index int32, name string, carrier bool) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:8], uint32(index))
	flags := uint32(unix.IFF_UP)
	if carrier {
		flags |= unix.IFF_LOWER_UP | unix.IFF_RUNNING
	}
	binary.NativeEndian.PutUint32(b[8:12], flags)
	return append(b, rtattr(unix.IFLA_IFNAME, append([]byte(name), 0))...)
}

func nexthopBytes(id uint32, oif int32, group ...uint32) []byte {
	b := make([]byte, sizeofNhmsg)
	b = append(b, rtattr(unix.NHA_ID, u32b(id))...)
	if len(group) > 0 {
		var g []byte
		for _, m := range group {
			g = append(g, u32b(m)...)
			g = append(g, 1, 0, 0, 0) // weight, reserved
		}
		return append(b, rtattr(unix.NHA_GROUP, g)...)
	}
	return append(b, rtattr(unix.NHA_OIF, u32b(uint32(oif)))...)
}

// routeBytes encodes an IPv4 route: through nexthop object nhid, or inline
// through oifs (one: RTA_OIF, more: RTA_MULTIPATH).
func routeBytes(prefix string, proto uint8, nhid uint32, oifs ...int32) []byte {
	p := netip.MustParsePrefix(prefix)
	b := make([]byte, unix.SizeofRtMsg)
	b[0], b[1], b[4], b[5], b[7] = unix.AF_INET, byte(p.Bits()), unix.RT_TABLE_MAIN, proto, unix.RTN_UNICAST
	a := p.Addr().As4()
	b = append(b, rtattr(unix.RTA_DST, a[:])...)
	switch {
	case nhid != 0:
		b = append(b, rtattr(rtaNHID, u32b(nhid))...)
	case len(oifs) == 1:
		b = append(b, rtattr(unix.RTA_OIF, u32b(uint32(oifs[0])))...)
	default:
		var mp []byte
		for _, oif := range oifs {
			nh := make([]byte, unix.SizeofRtNexthop)
			binary.NativeEndian.PutUint16(nh[0:2], unix.SizeofRtNexthop)
			binary.NativeEndian.PutUint32(nh[4:8], uint32(oif))
			mp = append(mp, nh...)
		}
		b = append(b, rtattr(unix.RTA_MULTIPATH, mp)...)
	}
	return b
}

func TestFIBModel(t *testing.T) {
	m := newFIB(netip.MustParsePrefix("100.64.0.0/10"))
	t0 := time.Unix(1000, 0)
	apply := func(typ uint16, b []byte) {
		t0 = t0.Add(time.Millisecond)
		m.apply(typ, b, t0)
	}
	apply(unix.RTM_NEWLINK, linkMsgBytes(2, "ens3", true))
	apply(unix.RTM_NEWLINK, linkMsgBytes(3, "ens4", true))
	apply(unix.RTM_NEWNEXTHOP, nexthopBytes(10, 2))
	apply(unix.RTM_NEWNEXTHOP, nexthopBytes(11, 3))
	apply(unix.RTM_NEWNEXTHOP, nexthopBytes(20, 0, 10, 11))
	firstAt := t0.Add(time.Millisecond)
	apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.1/32", unix.RTPROT_BGP, 20))
	apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.2/32", unix.RTPROT_BGP, 0, 2, 3))
	apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.3/32", unix.RTPROT_BGP, 10))
	apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.4/32", unix.RTPROT_BGP, 0, 3))
	apply(unix.RTM_NEWROUTE, routeBytes("10.0.0.1/32", unix.RTPROT_BGP, 0, 2))      // not watched
	apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.9/32", unix.RTPROT_STATIC, 0, 2)) // not bgp
	apply(unix.RTM_NEWROUTE, routeBytes("100.0.0.0/8", unix.RTPROT_BGP, 0, 2))      // covers, not inside
	apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.4/32", unix.RTPROT_BGP, 0, 3))    // replace, same
	if got := m.Routes(); got != 4 {
		t.Fatalf("Routes() = %d, want 4", got)
	}
	if !m.first.Equal(firstAt) {
		t.Errorf("first = %v, want %v", m.first, firstAt)
	}
	if got := m.Exactly("ens3", "ens4"); got != 2 {
		t.Errorf("Exactly(ens3, ens4) = %d, want 2", got)
	}
	if got := m.Using("ens3"); got != 3 {
		t.Errorf("Using(ens3) = %d, want 3", got)
	}
	if got := m.Exactly("ens4"); got != 1 {
		t.Errorf("Exactly(ens4) = %d, want 1", got)
	}

	// Carrier loss: the kernel silently flushes nexthop 10 (group 20 keeps 11, the
	// route through 10 alone goes); the inline multipath route keeps ens3.
	apply(unix.RTM_NEWLINK, linkMsgBytes(2, "ens3", false))
	if m.Carrier("ens3") || !m.Carrier("ens4") {
		t.Errorf("carrier ens3 %v ens4 %v, want false true", m.Carrier("ens3"), m.Carrier("ens4"))
	}
	if m.flushd != 1 {
		t.Errorf("flushed %d nexthops, want 1", m.flushd)
	}
	if got := m.Routes(); got != 3 {
		t.Errorf("Routes() after carrier loss = %d, want 3", got)
	}
	if got := m.Using("ens3"); got != 1 {
		t.Errorf("Using(ens3) after carrier loss = %d, want 1 (the inline route)", got)
	}
	if got := m.Exactly("ens4"); got != 2 {
		t.Errorf("Exactly(ens4) after carrier loss = %d, want 2", got)
	}
	// A repeated no-carrier message must not flush a nexthop added since.
	apply(unix.RTM_NEWNEXTHOP, nexthopBytes(12, 2))
	apply(unix.RTM_NEWLINK, linkMsgBytes(2, "ens3", false))
	if _, ok := m.nexthops[12]; !ok {
		t.Error("nexthop 12 flushed without a carrier transition")
	}

	// Deleting the group's last member deletes the group and its routes.
	apply(unix.RTM_DELNEXTHOP, nexthopBytes(11, 3))
	if _, ok := m.nexthops[20]; ok {
		t.Error("empty group 20 survived")
	}
	if got := m.Routes(); got != 2 {
		t.Errorf("Routes() after deleting nexthop 11 = %d, want 2", got)
	}
	apply(unix.RTM_DELROUTE, routeBytes("100.64.0.2/32", unix.RTPROT_BGP, 0, 2, 3))
	if got, want := m.Using("ens3"), 0; got != want {
		t.Errorf("Using(ens3) = %d, want %d", got, want)
	}
	if len(m.inline) != 1 || len(m.byNHID) != 0 {
		t.Errorf("counters not cleaned up: inline %v byNHID %v", m.inline, m.byNHID)
	}
}

func TestFIBModelDiff(t *testing.T) {
	watch := netip.MustParsePrefix("100.64.0.0/10")
	a, b := newFIB(watch), newFIB(watch)
	for _, m := range []*FIB{a, b} {
		m.apply(unix.RTM_NEWLINK, linkMsgBytes(2, "ens3", true), time.Time{})
		m.apply(unix.RTM_NEWLINK, linkMsgBytes(3, "ens4", true), time.Time{})
		m.apply(unix.RTM_NEWNEXTHOP, nexthopBytes(10, 2), time.Time{})
	}
	// The same forwarding, written two ways, is no difference.
	a.apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.1/32", unix.RTPROT_BGP, 10), time.Time{})
	b.apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.1/32", unix.RTPROT_BGP, 0, 2), time.Time{})
	if d := a.diff(b); len(d) != 0 {
		t.Errorf("diff = %v, want none", d)
	}
	b.apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.1/32", unix.RTPROT_BGP, 0, 3), time.Time{})
	b.apply(unix.RTM_NEWROUTE, routeBytes("100.64.0.2/32", unix.RTPROT_BGP, 0, 3), time.Time{})
	if d := a.diff(b); len(d) != 3 {
		t.Errorf("diff = %q, want a changed route, a missing one and the count", d)
	}
}

func TestParseRouteMsgRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, make([]byte, 5), append([]byte{unix.AF_INET6}, make([]byte, 11)...)} {
		if _, ok := parseRouteMsg(b); ok {
			t.Errorf("parseRouteMsg(%x) accepted", b)
		}
	}
	// A truncated attribute ends parsing without a panic.
	b := routeBytes("100.64.0.1/32", unix.RTPROT_BGP, 0, 2, 3)
	for i := range b {
		parseRouteMsg(b[:i])
		parseNexthopMsg(b[:i])
		parseLinkMsg(b[:i])
	}
}

func TestFIBDevsAndTable(t *testing.T) {
	m := newFIB(netip.MustParsePrefix("0.0.0.0/0"))
	m.apply(unix.RTM_NEWLINK, linkMsgBytes(2, "ens3", true), time.Time{})
	m.apply(unix.RTM_NEWLINK, linkMsgBytes(3, "ens4", true), time.Time{})
	m.apply(unix.RTM_NEWNEXTHOP, nexthopBytes(10, 2), time.Time{})
	m.apply(unix.RTM_NEWNEXTHOP, nexthopBytes(11, 3), time.Time{})
	m.apply(unix.RTM_NEWNEXTHOP, nexthopBytes(20, 0, 11, 10), time.Time{})
	m.apply(unix.RTM_NEWNEXTHOP, nexthopBytes(30, 0), time.Time{}) // a blackhole object
	m.apply(unix.RTM_NEWROUTE, routeBytes("10.0.0.2/32", unix.RTPROT_BGP, 20), time.Time{})
	m.apply(unix.RTM_NEWROUTE, routeBytes("4.4.4.4/32", unix.RTPROT_BGP, 0, 2), time.Time{})
	m.apply(unix.RTM_NEWROUTE, routeBytes("10.1.1.0/26", unix.RTPROT_BGP, 30), time.Time{})

	if got := m.Devs(netip.MustParsePrefix("10.0.0.2/32")); !slices.Equal(got, []string{"ens3", "ens4"}) {
		t.Errorf("Devs(10.0.0.2/32) = %v, want [ens3 ens4]", got)
	}
	if got := m.Devs(netip.MustParsePrefix("10.0.0.3/32")); got != nil {
		t.Errorf("Devs of a missing route = %v, want nil", got)
	}
	want := map[netip.Prefix][]string{
		netip.MustParsePrefix("10.0.0.2/32"): {"ens3", "ens4"},
		netip.MustParsePrefix("4.4.4.4/32"):  {"ens3"},
	}
	if got := m.Table(); !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("Table() = %v, want %v (no blackhole)", got, want)
	}
	m.apply(unix.RTM_NEWLINK, linkMsgBytes(3, "ens4", false), time.Time{})
	if got := m.Devs(netip.MustParsePrefix("10.0.0.2/32")); !slices.Equal(got, []string{"ens3"}) {
		t.Errorf("Devs(10.0.0.2/32) after ens4's carrier loss = %v, want [ens3]", got)
	}
}

func TestTrackerRecordsTransitions(t *testing.T) {
	mon := &Monitor{model: newFIB(netip.MustParsePrefix("0.0.0.0/0"))}
	mon.model.apply(unix.RTM_NEWLINK, linkMsgBytes(2, "ens3", true), time.Time{})
	tr := mon.Track("ens3 has carrier", func(f *FIB) bool { return f.Carrier("ens3") })
	t0 := time.Unix(2000, 0)
	for i, carrier := range []bool{true, false, false, true, true, false} {
		mon.model.apply(unix.RTM_NEWLINK, linkMsgBytes(2, "ens3", carrier), t0)
		mon.checkLocked(t0.Add(time.Duration(i) * time.Millisecond))
	}
	h := tr.History()
	var got []bool
	for _, tr := range h {
		got = append(got, tr.On)
	}
	if !slices.Equal(got, []bool{true, false, true, false}) {
		t.Fatalf("transitions %v, want [true false true false]", got)
	}
	if !h[1].At.Equal(t0.Add(time.Millisecond)) || !h[3].At.Equal(t0.Add(5*time.Millisecond)) {
		t.Errorf("transition times %v", h)
	}
}
