package rib

import (
	"net/netip"
	"slices"
	"testing"
)

var (
	p1 = netip.MustParsePrefix("2.2.2.2/32")
	p2 = netip.MustParsePrefix("10.1.71.192/26")
)

// everything: every uplink usable and settled.
var everything = [2]Usable{{Settled: All}, {Settled: All}}

func drain(r *RIB) map[netip.Prefix]NexthopSet {
	out := map[netip.Prefix]NexthopSet{}
	for _, c := range r.Drain(nil, everything) {
		out[c.Key.Prefix()] = c.Usable
	}
	return out
}

func TestBestPathSelection(t *testing.T) {
	tests := []struct {
		name  string
		steps func(r *RIB)
		want  NexthopSet
	}{
		{"single path", func(r *RIB) { r.Update(0, p1, 2) }, Of(0)},
		{"equal length is ECMP", func(r *RIB) { r.Update(0, p1, 2); r.Update(1, p1, 2) }, Of(0, 1)},
		{"shorter wins", func(r *RIB) { r.Update(0, p1, 3); r.Update(1, p1, 2) }, Of(1)},
		{"update lengthens", func(r *RIB) { r.Update(0, p1, 2); r.Update(1, p1, 2); r.Update(1, p1, 4) }, Of(0)},
		{"withdraw shrinks group", func(r *RIB) { r.Update(0, p1, 2); r.Update(1, p1, 2); r.Withdraw(0, p1) }, Of(1)},
		{"withdraw last", func(r *RIB) { r.Update(0, p1, 2); r.Withdraw(0, p1) }, 0},
		{"withdraw unknown", func(r *RIB) { r.Withdraw(3, p1) }, 0},
		{"drop uplink", func(r *RIB) { r.Update(0, p1, 2); r.Update(1, p1, 3); r.DropUplink(0) }, Of(1)},
		{"high uplink index", func(r *RIB) { r.Update(MaxUplinks-1, p1, 1); r.Update(5, p1, 1) }, Of(5, MaxUplinks-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := New()
			tt.steps(r)
			if got := r.Best(p1); got != tt.want {
				t.Errorf("Best = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDrainCoalescesAndSignals(t *testing.T) {
	r := New()
	select {
	case <-r.Changed():
		t.Fatal("signalled while empty")
	default:
	}
	r.Update(0, p1, 2)
	r.Update(0, p1, 3)
	r.Update(1, p2, 2)
	select {
	case <-r.Changed():
	default:
		t.Fatal("no signal after updates")
	}
	got := drain(r)
	want := map[netip.Prefix]NexthopSet{p1: Of(0), p2: Of(1)}
	if len(got) != len(want) || got[p1] != want[p1] || got[p2] != want[p2] {
		t.Fatalf("drain = %v, want %v", got, want)
	}
	if got := drain(r); len(got) != 0 {
		t.Fatalf("second drain = %v", got)
	}
	// An update that changes nothing is not reported.
	r.Update(0, p1, 3)
	if got := drain(r); len(got) != 0 {
		t.Fatalf("no-op update reported: %v", got)
	}
	// A withdrawal is reported with an empty set.
	r.Withdraw(1, p2)
	if got := drain(r); got[p2] != 0 || len(got) != 1 {
		t.Fatalf("withdraw drained as %v", got)
	}
	if r.Len() != 1 {
		t.Fatalf("Len = %d", r.Len())
	}
}

func TestDropUplinkReportsAffected(t *testing.T) {
	r := New()
	r.Update(0, p1, 2)
	r.Update(1, p1, 2)
	r.Update(1, p2, 2)
	drain(r)
	if n := r.DropUplink(1); n != 2 {
		t.Fatalf("DropUplink = %d, want 2", n)
	}
	got := drain(r)
	if got[p1] != Of(0) || got[p2] != 0 {
		t.Fatalf("after drop: %v", got)
	}
	if r.CountFrom(0, false) != 1 || r.CountFrom(1, false) != 0 {
		t.Fatalf("CountFrom = %d %d", r.CountFrom(0, false), r.CountFrom(1, false))
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"2.2.2.2/32", "10.1.8.192/26", "0.0.0.0/0", "fd00::1/128", "2001:db8::/32", "::ffff:1.2.3.4/128", "::/0"} {
		p := netip.MustParsePrefix(s)
		if got := KeyOf(p).Prefix(); got != p {
			t.Errorf("KeyOf(%s).Prefix() = %s", p, got)
		}
	}
	if KeyOf(netip.MustParsePrefix("1.2.3.4/32")) == KeyOf(netip.MustParsePrefix("::ffff:1.2.3.4/32")) {
		t.Error("IPv4 and IPv4-mapped IPv6 prefixes share a key")
	}
}

func TestNexthopSet(t *testing.T) {
	s := Of(3, 0, 63)
	if !slices.Equal(s.Uplinks(), []Uplink{0, 3, 63}) || s.Len() != 3 || !s.Has(63) || s.Has(1) {
		t.Fatalf("set %v", s)
	}
	if s.String() != "{0,3,63}" {
		t.Fatalf("String = %s", s)
	}
}

func BenchmarkUpdateDrain100k(b *testing.B) {
	prefixes := make([]netip.Prefix, 100_000)
	for i := range prefixes {
		prefixes[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
	}
	buf := make([]Change, 0, len(prefixes))
	b.ReportAllocs()
	for b.Loop() {
		r := New()
		for _, p := range prefixes {
			r.Update(0, p, 2)
		}
		buf = r.Drain(buf[:0], everything)
	}
}

func TestStalePaths(t *testing.T) {
	r := New()
	r.Update(0, p1, 2)
	r.Update(0, p2, 2)
	r.Update(1, p1, 2)
	drain(r)
	if n := r.MarkStale(0); n != 2 {
		t.Fatalf("MarkStale = %d", n)
	}
	// Stale paths still forward: nothing changes for the FIB.
	if got := drain(r); len(got) != 0 || r.Best(p1) != Of(0, 1) {
		t.Fatalf("marking stale changed the FIB: %v %v", got, r.Best(p1))
	}
	// The peer resends p1 only; the sweep then removes p2.
	r.Update(0, p1, 2)
	if n := r.SweepStale(0, 4); n != 1 {
		t.Fatalf("SweepStale = %d, want 1", n)
	}
	got := drain(r)
	if got[p2] != 0 || len(got) != 1 || r.Best(p1) != Of(0, 1) {
		t.Fatalf("after sweep: %v best %v", got, r.Best(p1))
	}
	if n := r.SweepStale(0, 0); n != 0 {
		t.Fatalf("second sweep removed %d", n)
	}
}

func TestSweepStaleByFamily(t *testing.T) {
	r := New()
	v6 := netip.MustParsePrefix("fd00::2/128")
	r.Update(0, p1, 2)
	r.Update(0, v6, 2)
	r.MarkStale(0)
	if n := r.SweepStale(0, 4); n != 1 || r.Best(v6) != Of(0) || r.Best(p1) != 0 {
		t.Fatalf("IPv4 sweep removed %d; v6 %v v4 %v", n, r.Best(v6), r.Best(p1))
	}
	if n := r.SweepStale(0, 6); n != 1 || r.Len() != 0 {
		t.Fatalf("IPv6 sweep removed %d, %d left", n, r.Len())
	}
}

// TestSelectionAmongUsable: an uplink that cannot carry traffic must not
// hide a longer path through one that can; fresh uplinks carry only what
// no settled one can.
func TestSelectionAmongUsable(t *testing.T) {
	r := New()
	r.Update(0, p1, 2) // shortest, through uplink 0
	r.Update(1, p1, 3)
	r.Update(2, p1, 3)
	r.Update(2, p2, 2) // only uplink 2 has p2
	k1, k2 := KeyOf(p1), KeyOf(p2)
	tests := []struct {
		name         string
		usable       Usable
		want1, want2 NexthopSet
	}{
		{"all settled", Usable{Settled: All}, Of(0), Of(2)},
		{"shortest unusable: the longer ECMP pair", Usable{Settled: Of(1, 2)}, Of(1, 2), Of(2)},
		{"shortest fresh: settled longer paths first", Usable{Settled: Of(1, 2), Fresh: Of(0)}, Of(1, 2), Of(2)},
		{"only fresh has it", Usable{Settled: Of(0, 1), Fresh: Of(2)}, Of(0), Of(2)},
		{"nothing usable", Usable{}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := [2]Usable{tt.usable, tt.usable}
			s1, s2 := r.Select(k1, u), r.Select(k2, u)
			if s1.Usable != tt.want1 || s2.Usable != tt.want2 || s1.Best != Of(0) {
				t.Errorf("p1 %+v, p2 %+v; want p1 %v, p2 %v, best of p1 {0}", s1, s2, tt.want1, tt.want2)
			}
		})
	}
	var seen []Key
	r.ForOffers(1, everything, func(k Key, _ Selection) { seen = append(seen, k) })
	if len(seen) != 1 || seen[0] != k1 {
		t.Errorf("ForOffers(1) = %v, want only p1", seen)
	}
	if r.Stale(p1) != 0 {
		t.Errorf("stale before MarkStale")
	}
	r.MarkStale(2)
	if r.Stale(p1) != Of(2) || r.Stale(p2) != Of(2) {
		t.Errorf("Stale = %v, %v after MarkStale(2)", r.Stale(p1), r.Stale(p2))
	}
}
