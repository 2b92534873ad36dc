package bgp

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

func TestASPathLength(t *testing.T) {
	attrs := []gobgp.PathAttributeInterface{
		gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{
			gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65100, 4200000001}),
			// An AS_SET (aggregation) counts as one hop in best-path selection.
			gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SET, []uint32{65201, 65202, 65203}),
		}),
	}
	if got := asPathLen(attrs); got != 3 {
		t.Errorf("asPathLen = %d, want 3", got)
	}
	if got, want := asPath(attrs), []uint32{65100, 4200000001, 65201, 65202, 65203}; !slices.Equal(got, want) {
		t.Errorf("asPath = %v, want %v", got, want)
	}
	if got := asPathLen(attrs[:1]); got != 0 {
		t.Errorf("asPathLen without AS_PATH = %d, want 0", got)
	}
}

// The F bits decide whether a restarting ToR's routes stay in use while
// it restarts.
func TestGracefulRestartOf(t *testing.T) {
	gr := func(tuples ...*gobgp.CapGracefulRestartTuple) []gobgp.ParameterCapabilityInterface {
		return []gobgp.ParameterCapabilityInterface{
			gobgp.NewCapFourOctetASNumber(65100),
			gobgp.NewCapGracefulRestart(true, false, 120, tuples),
		}
	}
	cases := []struct {
		name    string
		caps    []gobgp.ParameterCapabilityInterface
		want    [2]bool
		restart time.Duration
	}{
		{"no graceful restart", []gobgp.ParameterCapabilityInterface{gobgp.NewCapFourOctetASNumber(65100)}, [2]bool{}, 0},
		{"no families", gr(), [2]bool{}, 120 * time.Second},
		{"ipv4 preserved", gr(gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv4_UC, true)), [2]bool{true, false}, 120 * time.Second},
		{"ipv4 not preserved", gr(gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv4_UC, false)), [2]bool{}, 120 * time.Second},
		{"only ipv6 preserved", gr(
			gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv4_UC, false),
			gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv6_UC, true)), [2]bool{false, true}, 120 * time.Second},
	}
	for _, tc := range cases {
		if got, restart := gracefulRestartOf(tc.caps); got != tc.want || restart != tc.restart {
			t.Errorf("%s: gracefulRestartOf = %v, %v; want %v, %v", tc.name, got, restart, tc.want, tc.restart)
		}
	}
}

func TestNLRIPrefix(t *testing.T) {
	p := netip.MustParsePrefix("10.1.8.192/26")
	unicast, err := gobgp.NewIPAddrPrefix(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := nlriPrefix(unicast); !ok || got != p {
		t.Errorf("nlriPrefix(%s) = %s, %v", p, got, ok)
	}
	labelled, err := gobgp.NewLabeledIPAddrPrefix(p, *gobgp.NewMPLSLabelStack(100))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := nlriPrefix(labelled); ok {
		t.Error("a labelled prefix was taken for a unicast one")
	}
}

// GoBGP logs through fabricd's handler, filtered to [log] level, and its
// error about the closed listener during our own StopBgp is dropped.
func TestGoBGPLogFilter(t *testing.T) {
	var buf bytes.Buffer
	var level slog.LevelVar
	level.Set(slog.LevelWarn)
	var stopping atomic.Bool
	log := slog.New(gobgpHandler{
		Handler:  slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}),
		min:      &level,
		stopping: &stopping,
	})
	peerLog := log.With("peer", "fe80::1%eth0") // GoBGP derives loggers like this
	peerLog.Info("peer state changed")
	peerLog.Warn("hold timer expired")
	log.Error("failed to stop BGP server")
	if out := buf.String(); strings.Contains(out, "peer state changed") || !strings.Contains(out, "hold timer expired") ||
		!strings.Contains(out, "failed to stop BGP server") {
		t.Errorf("with min warn, handler wrote:\n%s", out)
	}

	buf.Reset()
	stopping.Store(true)
	log.Error("failed to stop BGP server")
	log.Error("hold timer expired")
	if out := buf.String(); strings.Contains(out, "failed to stop BGP server") || !strings.Contains(out, "hold timer expired") {
		t.Errorf("while stopping, handler wrote:\n%s", out)
	}
}

// judge takes a path as a withdraw when its AS path holds our AS or its
// next hop names another router than the ToR of the session.
func TestJudge(t *testing.T) {
	tor := netip.MustParseAddr("fe80::1%ens3")
	s := &Speaker{cfg: Config{ASN: 65001, ThirdParty: func(iface string, nh netip.Addr) bool {
		return iface == "ens3" && nh == netip.MustParseAddr("192.0.2.99")
	}}}
	se := &session{iface: "ens3", addr: tor}
	asPath := func(asns ...uint32) gobgp.PathAttributeInterface {
		return gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, asns)})
	}
	mp := func(nh, ll string) gobgp.PathAttributeInterface {
		return &gobgp.PathAttributeMpReachNLRI{Nexthop: netip.MustParseAddr(nh), LinkLocalNexthop: addrOrZero(ll)}
	}
	nh4 := func(a string) gobgp.PathAttributeInterface {
		p, err := gobgp.NewPathAttributeNextHop(netip.MustParseAddr(a))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name  string
		attrs []gobgp.PathAttributeInterface
		want  Refusal
	}{
		{"the ToR's link-local (FRR: in both halves)", []gobgp.PathAttributeInterface{asPath(65004, 65002), mp("fe80::1", "fe80::1")}, 0},
		{"the ToR's link-local alone", []gobgp.PathAttributeInterface{mp("fe80::1", "")}, 0},
		{":: and the ToR's link-local (BIRD)", []gobgp.PathAttributeInterface{mp("::", "fe80::1")}, 0},
		{"global and the ToR's link-local", []gobgp.PathAttributeInterface{mp("2001:db8::1", "fe80::1")}, 0},
		{"a global address alone", []gobgp.PathAttributeInterface{mp("2001:db8::1", "")}, 0},
		{"an IPv4 address the kernel does not know as another router's", []gobgp.PathAttributeInterface{nh4("192.0.2.1")}, 0},
		{"another router's link-local", []gobgp.PathAttributeInterface{mp("fe80::99", "")}, RefusedNextHop},
		{"global with another router's link-local", []gobgp.PathAttributeInterface{mp("2001:db8::1", "fe80::99")}, RefusedNextHop},
		{"another router's IPv4 address", []gobgp.PathAttributeInterface{nh4("192.0.2.99")}, RefusedNextHop},
		{"our AS in the path", []gobgp.PathAttributeInterface{asPath(65004, 65001), mp("fe80::1", "")}, RefusedLoop},
	}
	for _, tc := range cases {
		if got := s.judge(se, tc.attrs); got != tc.want {
			t.Errorf("%s: judge = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func addrOrZero(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	return netip.MustParseAddr(s)
}

func TestFamiliesOf(t *testing.T) {
	mp := func(f gobgp.Family) gobgp.ParameterCapabilityInterface { return gobgp.NewCapMultiProtocol(f) }
	cases := []struct {
		name string
		caps []gobgp.ParameterCapabilityInterface
		want [2]bool
	}{
		{"no multiprotocol capability: IPv4", []gobgp.ParameterCapabilityInterface{gobgp.NewCapFourOctetASNumber(1)}, [2]bool{true, false}},
		{"both", []gobgp.ParameterCapabilityInterface{mp(gobgp.RF_IPv4_UC), mp(gobgp.RF_IPv6_UC)}, [2]bool{true, true}},
		{"IPv6 only", []gobgp.ParameterCapabilityInterface{mp(gobgp.RF_IPv6_UC)}, [2]bool{false, true}},
		{"other families only", []gobgp.ParameterCapabilityInterface{mp(gobgp.RF_EVPN)}, [2]bool{false, false}},
	}
	for _, tc := range cases {
		if got := familiesOf(tc.caps); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
