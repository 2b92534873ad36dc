package autoannounce

import (
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var quiet = slog.New(slog.DiscardHandler)

const rtprotBoot = 3 // what "ip route add" uses, and Calico's felix

func TestBlockOf(t *testing.T) {
	tests := []struct {
		addr string
		bits int
		want string
	}{
		{"10.1.8.195", 26, "10.1.8.192/26"},
		{"10.1.8.192", 26, "10.1.8.192/26"},
		{"10.1.8.63", 26, "10.1.8.0/26"},
		{"10.1.8.64", 26, "10.1.8.64/26"},
		{"10.1.255.255", 16, "10.1.0.0/16"},
		{"10.1.8.195", 32, "10.1.8.195/32"},
		{"fd00:10::1:5", 122, "fd00:10::1:0/122"},
		{"fd00:10::1:7f", 122, "fd00:10::1:40/122"},
		{"fd00:10::abcd", 128, "fd00:10::abcd/128"},
	}
	for _, tt := range tests {
		if got := blockOf(netip.MustParseAddr(tt.addr), tt.bits); got != netip.MustParsePrefix(tt.want) {
			t.Errorf("blockOf(%s, %d) = %s, want %s", tt.addr, tt.bits, got, tt.want)
		}
	}
	// Out of range for the family: no panic, an invalid prefix.
	if got := blockOf(netip.MustParseAddr("10.0.0.1"), 40); got.IsValid() {
		t.Errorf("blockOf with 40 bits on IPv4 = %s, want invalid", got)
	}
}

func TestMatchName(t *testing.T) {
	tests := []struct {
		glob, name string
		want       bool
	}{
		{"cali*", "calib7851807e18", true},
		{"cali*", "cali", true},
		{"cali*", "eth0", false},
		{"cali*", "xcali1", false},
		{"lo", "lo", true},
		{"lo", "lo0", false},
		{"kube-ipvs0", "kube-ipvs0", true},
		{"svc?", "svc0", true},
		{"svc?", "svc10", false},
		{"svc[0-9]", "svc7", true},
		{"svc[0-9]", "svca", false},
		{"*", "anything", true},
		{"[", "[", false}, // malformed: matches nothing
	}
	for _, tt := range tests {
		if got := matchName(tt.glob, tt.name); got != tt.want {
			t.Errorf("matchName(%q, %q) = %v, want %v", tt.glob, tt.name, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	pool := func(p string, bits int, ifs string) PodPool {
		return PodPool{Pool: netip.MustParsePrefix(p), BlockSize: bits, Interfaces: ifs}
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none means valid
	}{
		{"empty", Config{}, nil},
		{"good", Config{
			Pools: []PodPool{pool("10.1.0.0/16", 26, "cali*"), pool("fd00:10::/48", 122, "cali*")},
			Addresses: []AddressSource{{Interfaces: "lo"},
				{Interfaces: "kube-ipvs0", Exclude: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/24")}}},
			HoldDown: time.Second,
		}, nil},
		{"block equal to pool and host size", Config{Pools: []PodPool{pool("10.1.0.0/26", 26, "a"), pool("10.2.0.0/16", 32, "b")}}, nil},
		{"missing pool", Config{Pools: []PodPool{{BlockSize: 26, Interfaces: "cali*"}}}, []string{"pool 1: pool prefix missing"}},
		{"host bits", Config{Pools: []PodPool{pool("10.1.2.3/16", 26, "cali*")}}, []string{"host bits set (did you mean 10.1.0.0/16?)"}},
		{"block too small", Config{Pools: []PodPool{pool("10.1.0.0/16", 8, "cali*")}}, []string{"block size 8 must be between 16 and 32"}},
		{"block too big v4", Config{Pools: []PodPool{pool("10.1.0.0/16", 33, "cali*")}}, []string{"between 16 and 32"}},
		{"block too big v6", Config{Pools: []PodPool{pool("fd00:10::/48", 129, "cali*")}}, []string{"between 48 and 128"}},
		{"mapped", Config{Pools: []PodPool{pool("::ffff:10.1.0.0/112", 122, "cali*")}}, []string{"IPv4-mapped"}},
		{"no interfaces", Config{Pools: []PodPool{pool("10.1.0.0/16", 26, "")}}, []string{"empty pattern"}},
		{"bad glob", Config{Pools: []PodPool{pool("10.1.0.0/16", 26, "cali[")}}, []string{`bad pattern "cali["`}},
		{"overlap", Config{Pools: []PodPool{pool("10.1.0.0/16", 26, "cali*"), pool("10.1.128.0/17", 26, "cali*")}},
			[]string{"pool 2: 10.1.128.0/17 overlaps pool 1 (10.1.0.0/16)"}},
		{"address glob", Config{Addresses: []AddressSource{{Interfaces: "lo"}, {Interfaces: "["}}}, []string{"address source 2: interfaces: bad pattern"}},
		{"bad exclude", Config{Addresses: []AddressSource{{Interfaces: "lo", Exclude: []netip.Prefix{{}}}}}, []string{"exclude: invalid prefix"}},
		{"negative hold-down", Config{HoldDown: -time.Second}, []string{"hold-down -1s is negative"}},
		{"all reported", Config{
			Pools:     []PodPool{pool("10.1.0.0/16", 8, "cali*")},
			Addresses: []AddressSource{{Interfaces: ""}},
			HoldDown:  -1,
		}, []string{"pool 1", "address source 1", "hold-down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestCompile(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	s := compile(Config{
		Pools: []PodPool{
			{Pool: netip.MustParsePrefix("10.1.2.3/16"), BlockSize: 26, Interfaces: "cali*", Blackhole: true},
			{Pool: netip.MustParsePrefix("10.2.0.0/16"), BlockSize: 8, Interfaces: "cali*"},
			{Pool: netip.MustParsePrefix("fd00:10::/48"), BlockSize: 122, Interfaces: "cali*"},
		},
		Addresses: []AddressSource{{Interfaces: "["}, {Interfaces: "lo"}},
	}, log)
	if s.holdDown != DefaultHoldDown {
		t.Errorf("hold-down %v, want the default %v", s.holdDown, DefaultHoldDown)
	}
	var got []string
	for _, p := range s.pools {
		got = append(got, p.source)
	}
	want := []string{"pods on cali* (pool 10.1.0.0/16)", "pods on cali* (pool fd00:10::/48)"}
	if !slices.Equal(got, want) {
		t.Errorf("pools %q, want %q (host bits cleared, bad block size dropped)", got, want)
	}
	if len(s.addrs) != 1 || s.addrs[0].Interfaces != "lo" {
		t.Errorf("address sources %+v, want only lo", s.addrs)
	}
	if n := strings.Count(logged.String(), "level=ERROR"); n != 2 {
		t.Errorf("%d errors logged, want 2:\n%s", n, logged.String())
	}
	if s := compile(Config{HoldDown: -time.Second}, quiet); s.holdDown != DefaultHoldDown {
		t.Errorf("negative hold-down compiled to %v", s.holdDown)
	}
}

func TestPodRouteFilter(t *testing.T) {
	base := route{Dst: netip.MustParsePrefix("10.1.8.195/32"), Link: 5, Table: rtTableMain, Protocol: rtprotBoot, Type: rtnUnicast}
	tests := []struct {
		name            string
		mod             func(*route)
		candidate, kept bool
	}{
		{"calico pod route", func(*route) {}, true, true},
		{"v6 host route", func(r *route) { r.Dst = netip.MustParsePrefix("fd00:10::5/128") }, true, true},
		{"static protocol", func(r *route) { r.Protocol = 4 }, true, true},
		{"fabricd's own", func(r *route) { r.Protocol = rtprotBGP }, true, false},
		{"blackhole", func(r *route) { r.Type = 6 }, true, false},
		{"multipath", func(r *route) { r.Link = 0 }, true, false},
		{"not a host route", func(r *route) { r.Dst = netip.MustParsePrefix("10.1.8.192/26") }, false, false},
		{"v6 not a host route", func(r *route) { r.Dst = netip.MustParsePrefix("fd00:10::/122") }, false, false},
		{"local table", func(r *route) { r.Table = 255 }, false, false},
		{"other table", func(r *route) { r.Table = 100 }, false, false},
		{"no destination", func(r *route) { r.Dst = netip.Prefix{} }, false, false},
	}
	for _, tt := range tests {
		r := base
		tt.mod(&r)
		if got := candidateRoute(r); got != tt.candidate {
			t.Errorf("%s: candidateRoute = %v, want %v", tt.name, got, tt.candidate)
		}
		if got := podRoute(r); got != tt.kept {
			t.Errorf("%s: podRoute = %v, want %v", tt.name, got, tt.kept)
		}
	}
}

func TestAnnounceable(t *testing.T) {
	tests := []struct {
		prefix string
		flags  int
		want   bool
	}{
		{"192.0.2.1/32", 0, true},
		{"10.96.0.10/32", 0, true},
		{"10.0.0.1/24", 0x80 /* permanent */, true},
		{"2001:db8::1/128", 0, true},
		{"127.0.0.1/8", 0, false},
		{"127.1.2.3/32", 0, false},
		{"::1/128", 0, false},
		{"169.254.0.1/32", 0, false},
		{"fe80::1/64", 0, false},
		{"2001:db8::1/64", ifaTentative, false},
		{"2001:db8::1/64", ifaDADFailed | ifaTentative, false},
		{"2001:db8::1/64", 0x20 /* deprecated: still usable */, true},
		{"224.0.0.1/32", 0, false},
		{"0.0.0.0/32", 0, false},
		{"::ffff:10.0.0.1/128", 0, false},
	}
	for _, tt := range tests {
		a := address{Link: 1, Prefix: netip.MustParsePrefix(tt.prefix), Flags: tt.flags}
		if got := announceable(a); got != tt.want {
			t.Errorf("announceable(%s, flags %#x) = %v, want %v", tt.prefix, tt.flags, got, tt.want)
		}
	}
}

// Helpers for scenarios.

func linkUp(index int, name string) event {
	return event{kind: evLink, link: link{Index: index, Name: name, Up: true}}
}

func linkDown(index int, name string) event {
	return event{kind: evLink, link: link{Index: index, Name: name}}
}

func linkDel(index int, name string) event {
	return event{kind: evLink, del: true, link: link{Index: index, Name: name}}
}

func podRt(dst string, index int) route {
	return route{Dst: mustPrefix(dst), Link: index, Table: rtTableMain, Protocol: rtprotBoot, Type: rtnUnicast}
}

func mustPrefix(s string) netip.Prefix {
	if strings.Contains(s, "/") {
		return netip.MustParsePrefix(s)
	}
	a := netip.MustParseAddr(s)
	return netip.PrefixFrom(a, a.BitLen())
}

func routeAdd(dst string, index int) event {
	return event{kind: evRoute, route: podRt(dst, index)}
}

func routeDel(dst string, index int) event {
	return event{kind: evRoute, del: true, route: podRt(dst, index)}
}

func routeWith(dst string, index int, mod func(*route)) event {
	r := podRt(dst, index)
	mod(&r)
	return event{kind: evRoute, route: r}
}

func addrAdd(index int, prefix string, flags int) event {
	return event{kind: evAddr, addr: address{Link: index, Prefix: mustPrefix(prefix), Flags: flags}}
}

func addrDel(index int, prefix string) event {
	return event{kind: evAddr, del: true, addr: address{Link: index, Prefix: mustPrefix(prefix)}}
}

func pod(prefix string, blackhole bool, source string) Announcement {
	return Announcement{Prefix: netip.MustParsePrefix(prefix), Blackhole: blackhole, Source: source}
}

func addr(prefix, ifname string) Announcement {
	return Announcement{Prefix: netip.MustParsePrefix(prefix), Source: "address on " + ifname}
}

const (
	calicoSrc = "pods on cali* (pool 10.1.0.0/16)"
	v6Src     = "pods on cali* (pool fd00:10::/48)"
)

var testConfig = Config{
	Pools: []PodPool{
		{Pool: netip.MustParsePrefix("10.1.0.0/16"), BlockSize: 26, Interfaces: "cali*", Blackhole: true},
		{Pool: netip.MustParsePrefix("fd00:10::/48"), BlockSize: 122, Interfaces: "cali*", Blackhole: true},
	},
	Addresses: []AddressSource{
		{Interfaces: "lo"},
		{Interfaces: "kube-ipvs0", Exclude: []netip.Prefix{netip.MustParsePrefix("10.96.99.0/24")}},
	},
	HoldDown: 2 * time.Second,
}

// step applies events (and optionally a new configuration) at time at
// after the start, evaluates, and checks the set and the next deadline.
type step struct {
	at     time.Duration
	cfg    *Config
	events []event
	want   []Announcement
	next   time.Duration // deadline relative to the start; 0: none
}

func TestStateScenarios(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	block := pod("10.1.8.192/26", true, calicoSrc)
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{
			name: "several pods per block, withdrawn after the hold-down",
			steps: []step{
				{events: []event{linkUp(10, "calia"), linkUp(11, "calib"), routeAdd("10.1.8.195", 10)},
					want: []Announcement{block}},
				{at: time.Second, events: []event{routeAdd("10.1.8.200", 11), routeAdd("10.1.9.7", 11)},
					want: []Announcement{block, pod("10.1.9.0/26", true, calicoSrc)}},
				{at: 2 * time.Second, events: []event{routeDel("10.1.8.195", 10)},
					want: []Announcement{block, pod("10.1.9.0/26", true, calicoSrc)}},
				{at: 3 * time.Second, events: []event{routeDel("10.1.8.200", 11)},
					want: []Announcement{block, pod("10.1.9.0/26", true, calicoSrc)}, next: 5 * time.Second},
				{at: 4999 * time.Millisecond, want: []Announcement{block, pod("10.1.9.0/26", true, calicoSrc)}, next: 5 * time.Second},
				{at: 5 * time.Second, want: []Announcement{pod("10.1.9.0/26", true, calicoSrc)}},
			},
		},
		{
			name: "a returning pod cancels the withdrawal",
			steps: []step{
				{events: []event{linkUp(10, "calia"), routeAdd("10.1.8.195", 10)}, want: []Announcement{block}},
				{at: time.Second, events: []event{routeDel("10.1.8.195", 10)}, want: []Announcement{block}, next: 3 * time.Second},
				// A new pod, another address in the same block, on a new interface.
				{at: 2 * time.Second, events: []event{linkUp(12, "calic"), routeAdd("10.1.8.230", 12)}, want: []Announcement{block}},
				{at: 10 * time.Second, want: []Announcement{block}},
				// Its hold-down starts afresh the next time.
				{at: 11 * time.Second, events: []event{routeDel("10.1.8.230", 12)}, want: []Announcement{block}, next: 13 * time.Second},
				{at: 13 * time.Second, want: nil},
			},
		},
		{
			name: "ignored routes",
			steps: []step{
				{events: []event{
					linkUp(10, "calia"), linkUp(20, "eth0"), linkUp(21, "vcali"),
					routeAdd("10.2.0.5", 10),       // outside the pool
					routeAdd("10.1.20.5", 20),      // interface does not match
					routeAdd("10.1.21.5", 21),      // nor does this one (glob anchored)
					routeAdd("10.1.40.0/24", 10),   // not a host route
					routeAdd("fd00:11::5/128", 10), // outside the v6 pool
					routeWith("10.1.30.5", 10, func(r *route) { r.Protocol = rtprotBGP }),
					routeWith("10.1.31.5", 10, func(r *route) { r.Table = 100 }),
					routeWith("10.1.32.5", 10, func(r *route) { r.Type = 6 /* blackhole */ }),
				}, want: nil},
			},
		},
		{
			name: "deleting the interface drops its routes without RTM_DELROUTE",
			steps: []step{
				{events: []event{linkUp(10, "calia"), routeAdd("10.1.8.195", 10), routeAdd("fd00:10::1:5", 10)},
					want: []Announcement{block, pod("fd00:10::1:0/122", true, v6Src)}},
				{at: time.Second, events: []event{linkDel(10, "calia")},
					want: []Announcement{block, pod("fd00:10::1:0/122", true, v6Src)}, next: 3 * time.Second},
				{at: 3 * time.Second, want: nil},
				// The ifindex has no routes left: reusing it brings nothing back.
				{at: 4 * time.Second, events: []event{linkUp(10, "calix")}, want: nil},
			},
		},
		{
			name: "setting the interface down drops its routes",
			steps: []step{
				{events: []event{linkUp(10, "calia"), routeAdd("10.1.8.195", 10)}, want: []Announcement{block}},
				{at: time.Second, events: []event{linkDown(10, "calia")}, want: []Announcement{block}, next: 3 * time.Second},
				{at: 2 * time.Second, events: []event{linkUp(10, "calia")}, want: []Announcement{block}, next: 3 * time.Second},
				{at: 3 * time.Second, want: nil},
			},
		},
		{
			name: "a route read before its interface counts once the interface is known",
			steps: []step{
				{events: []event{routeAdd("10.1.8.195", 10)}, want: nil},
				{at: time.Millisecond, events: []event{linkUp(10, "calia")}, want: []Announcement{block}},
			},
		},
		{
			name: "renamed interface",
			steps: []step{
				// veth created under a temporary name, then renamed.
				{events: []event{linkUp(10, "tmp123"), routeAdd("10.1.8.195", 10)}, want: nil},
				{at: time.Millisecond, events: []event{linkUp(10, "calia")}, want: []Announcement{block}},
			},
		},
		{
			name: "replace moves a route to another interface",
			steps: []step{
				{events: []event{linkUp(10, "calia"), linkUp(20, "eth0"), routeAdd("10.1.8.195", 10)}, want: []Announcement{block}},
				{at: time.Second, events: []event{{kind: evRoute, replace: true, route: podRt("10.1.8.195", 20)}},
					want: []Announcement{block}, next: 3 * time.Second},
				{at: 3 * time.Second, want: nil},
				{at: 4 * time.Second, events: []event{{kind: evRoute, replace: true, route: podRt("10.1.8.195", 10)}},
					want: []Announcement{block}},
				// Replaced by fabricd's own route: no longer a pod.
				{at: 5 * time.Second, events: []event{{kind: evRoute, replace: true,
					route: route{Dst: mustPrefix("10.1.8.195"), Link: 10, Table: rtTableMain, Protocol: rtprotBGP, Type: rtnUnicast}}},
					want: []Announcement{block}, next: 7 * time.Second},
			},
		},
		{
			name: "deleting one of two identical routes on different interfaces",
			steps: []step{
				{events: []event{linkUp(10, "calia"), linkUp(11, "calib"), routeAdd("10.1.8.195", 10), routeAdd("10.1.8.195", 11)},
					want: []Announcement{block}},
				{at: time.Second, events: []event{routeDel("10.1.8.195", 10)}, want: []Announcement{block}},
				{at: 10 * time.Second, want: []Announcement{block}},
			},
		},
		{
			name: "IPv6 blocks",
			steps: []step{
				{events: []event{linkUp(10, "calia"), routeAdd("fd00:10::1:5", 10), routeAdd("fd00:10::1:3f", 10), routeAdd("fd00:10::1:40", 10)},
					want: []Announcement{pod("fd00:10::1:0/122", true, v6Src), pod("fd00:10::1:40/122", true, v6Src)}},
				{at: time.Second, events: []event{routeDel("fd00:10::1:5", 10)},
					want: []Announcement{pod("fd00:10::1:0/122", true, v6Src), pod("fd00:10::1:40/122", true, v6Src)}},
				{at: 2 * time.Second, events: []event{routeDel("fd00:10::1:3f", 10)},
					want: []Announcement{pod("fd00:10::1:0/122", true, v6Src), pod("fd00:10::1:40/122", true, v6Src)}, next: 4 * time.Second},
				{at: 4 * time.Second, want: []Announcement{pod("fd00:10::1:40/122", true, v6Src)}},
			},
		},
		{
			name: "addresses",
			steps: []step{
				{events: []event{
					linkUp(1, "lo"), linkDown(30, "kube-ipvs0"), linkUp(31, "eth0"),
					addrAdd(1, "127.0.0.1/8", 0), addrAdd(1, "::1/128", 0),
					addrAdd(1, "192.0.2.1/32", 0), addrAdd(1, "2001:db8::1/128", 0),
					addrAdd(30, "10.96.0.10/32", 0), addrAdd(30, "10.96.0.1/32", 0),
					addrAdd(30, "10.96.99.1/32", 0), // excluded
					addrAdd(30, "fe80::1/64", 0),
					addrAdd(30, "2001:db8::5/128", ifaTentative),
					addrAdd(31, "198.51.100.7/24", 0), // interface does not match
				}, want: []Announcement{
					addr("10.96.0.1/32", "kube-ipvs0"), addr("10.96.0.10/32", "kube-ipvs0"),
					addr("192.0.2.1/32", "lo"), addr("2001:db8::1/128", "lo"),
				}},
				// DAD done; a Service deleted: at once, no hold-down.
				{at: time.Second, events: []event{addrAdd(30, "2001:db8::5/128", 0), addrDel(30, "10.96.0.1/32")},
					want: []Announcement{
						addr("10.96.0.10/32", "kube-ipvs0"),
						addr("192.0.2.1/32", "lo"), addr("2001:db8::1/128", "lo"), addr("2001:db8::5/128", "kube-ipvs0"),
					}},
				{at: 2 * time.Second, events: []event{addrAdd(30, "2001:db8::5/128", ifaDADFailed)},
					want: []Announcement{addr("10.96.0.10/32", "kube-ipvs0"), addr("192.0.2.1/32", "lo"), addr("2001:db8::1/128", "lo")}},
				// The interface goes away: its addresses with it, even
				// before their RTM_DELADDR is read.
				{at: 3 * time.Second, events: []event{linkDel(30, "kube-ipvs0")},
					want: []Announcement{addr("192.0.2.1/32", "lo"), addr("2001:db8::1/128", "lo")}},
			},
		},
		{
			name: "the same address on two interfaces is named after the lower ifindex",
			cfg:  Config{Addresses: []AddressSource{{Interfaces: "svc*"}}},
			steps: []step{
				{events: []event{linkUp(40, "svc1"), linkUp(41, "svc0"), addrAdd(41, "10.96.0.10/32", 0), addrAdd(40, "10.96.0.10/32", 0)},
					want: []Announcement{addr("10.96.0.10/32", "svc1")}},
			},
		},
		{
			name: "pools take precedence over addresses",
			cfg: Config{
				Pools:     []PodPool{{Pool: netip.MustParsePrefix("10.1.0.0/16"), BlockSize: 32, Interfaces: "cali*"}},
				Addresses: []AddressSource{{Interfaces: "*"}},
			},
			steps: []step{
				{events: []event{linkUp(1, "lo"), linkUp(10, "calia"), routeAdd("10.1.8.195", 10), addrAdd(1, "10.1.8.195/32", 0)},
					want: []Announcement{pod("10.1.8.195/32", false, "pods on cali* (pool 10.1.0.0/16)")}},
			},
		},
		{
			name: "overlapping pools: the first configured wins",
			cfg: Config{Pools: []PodPool{
				{Pool: netip.MustParsePrefix("10.1.0.0/24"), BlockSize: 26, Interfaces: "cali*", Blackhole: true},
				{Pool: netip.MustParsePrefix("10.1.0.0/16"), BlockSize: 26, Interfaces: "*"},
			}},
			steps: []step{
				{events: []event{linkUp(10, "calia"), linkUp(11, "veth1"), routeAdd("10.1.0.5", 11), routeAdd("10.1.0.6", 10), routeAdd("10.1.0.7", 11)},
					want: []Announcement{pod("10.1.0.0/26", true, "pods on cali* (pool 10.1.0.0/24)")}},
			},
		},
		{
			name: "configuration changes",
			steps: []step{
				{events: []event{linkUp(10, "calia"), routeAdd("10.1.8.195", 10), routeAdd("fd00:10::1:5", 10)},
					want: []Announcement{block, pod("fd00:10::1:0/122", true, v6Src)}},
				{at: time.Second, events: []event{routeDel("10.1.8.195", 10)},
					want: []Announcement{block, pod("fd00:10::1:0/122", true, v6Src)}, next: 3 * time.Second},
				// A reload turns blackholes off: the block in its hold-down
				// follows, and a new hold-down keeps its deadline.
				{at: 2 * time.Second, cfg: &Config{Pools: []PodPool{
					{Pool: netip.MustParsePrefix("10.1.0.0/16"), BlockSize: 26, Interfaces: "cali*"},
					{Pool: netip.MustParsePrefix("fd00:10::/48"), BlockSize: 122, Interfaces: "cali*", Blackhole: true},
				}, HoldDown: 5 * time.Second},
					want: []Announcement{pod("10.1.8.192/26", false, calicoSrc), pod("fd00:10::1:0/122", true, v6Src)}, next: 3 * time.Second},
				// The pools are removed: withdrawn at once, hold-down or not.
				{at: 2500 * time.Millisecond, cfg: &Config{Addresses: []AddressSource{{Interfaces: "cali*"}}}, want: nil},
				// Back: the pod still there reappears.
				{at: 4 * time.Second, cfg: &testConfig, want: []Announcement{pod("fd00:10::1:0/122", true, v6Src)}},
				// Another block size: the old block is not this pool's any more.
				{at: 5 * time.Second, cfg: &Config{Pools: []PodPool{
					{Pool: netip.MustParsePrefix("fd00:10::/48"), BlockSize: 120, Interfaces: "cali*"},
				}}, want: []Announcement{pod("fd00:10::1:0/120", false, v6Src)}},
			},
		},
		{
			name: "a snapshot replaces everything",
			steps: []step{
				{events: []event{linkUp(1, "lo"), linkUp(10, "calia"), routeAdd("10.1.8.195", 10), addrAdd(1, "192.0.2.1/32", 0)},
					want: []Announcement{block, addr("192.0.2.1/32", "lo")}},
				{at: time.Second, events: []event{{kind: evSnapshot, snap: &snapshot{
					links:  []link{{Index: 1, Name: "lo", Up: true}, {Index: 11, Name: "calib", Up: true}},
					routes: []route{podRt("10.1.9.7", 11), podRt("10.1.10.1/24", 11)},
					addrs:  []address{{Link: 1, Prefix: mustPrefix("192.0.2.2/32")}},
				}}}, want: []Announcement{block, pod("10.1.9.0/26", true, calicoSrc), addr("192.0.2.2/32", "lo")}, next: 3 * time.Second},
				{at: 3 * time.Second, want: []Announcement{pod("10.1.9.0/26", true, calicoSrc), addr("192.0.2.2/32", "lo")}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if cfg.Pools == nil && cfg.Addresses == nil {
				cfg = testConfig
			}
			s := newState(compile(cfg, quiet))
			for i, st := range tt.steps {
				if st.cfg != nil {
					s.setConfig(compile(*st.cfg, quiet))
				}
				for _, ev := range st.events {
					s.apply(ev)
				}
				next := s.evaluate(start.Add(st.at))
				if got := s.set(); !slices.Equal(got, st.want) {
					t.Errorf("step %d (at %v): set\n  %v\nwant\n  %v", i, st.at, got, st.want)
				}
				var wantNext time.Time
				if st.next != 0 {
					wantNext = start.Add(st.next)
				}
				if !next.Equal(wantNext) {
					t.Errorf("step %d (at %v): next deadline %v, want %v", i, st.at, next.Sub(start), st.next)
				}
			}
		})
	}
}

// TestStateSortOrder checks the set is sorted, IPv4 first, shorter
// prefixes of the same address first.
func TestStateSortOrder(t *testing.T) {
	s := newState(compile(Config{
		Pools: []PodPool{
			{Pool: netip.MustParsePrefix("10.0.0.0/8"), BlockSize: 26, Interfaces: "cali*"},
			{Pool: netip.MustParsePrefix("fd00:10::/48"), BlockSize: 122, Interfaces: "cali*"},
		},
		Addresses: []AddressSource{{Interfaces: "lo"}},
	}, quiet))
	for _, ev := range []event{
		linkUp(1, "lo"), linkUp(10, "calia"),
		routeAdd("fd00:10::5", 10), routeAdd("10.200.0.1", 10), routeAdd("10.3.0.1", 10), routeAdd("10.20.0.70", 10),
		addrAdd(1, "10.3.0.0/32", 0), addrAdd(1, "192.0.2.1/32", 0), addrAdd(1, "2001:db8::1/128", 0),
	} {
		s.apply(ev)
	}
	s.evaluate(time.Now())
	var got []string
	for _, a := range s.set() {
		got = append(got, a.Prefix.String())
	}
	want := []string{"10.3.0.0/26", "10.3.0.0/32", "10.20.0.64/26", "10.200.0.0/26", "192.0.2.1/32", "2001:db8::1/128", "fd00:10::/122"}
	if !slices.Equal(got, want) {
		t.Errorf("order %q, want %q", got, want)
	}
}
