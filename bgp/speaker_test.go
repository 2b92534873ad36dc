package bgp

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

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

// The F bit for IPv4 unicast decides whether a restarting ToR's routes
// stay in the kernel as stale or go at once.
func TestPreservesIPv4Forwarding(t *testing.T) {
	gr := func(tuples ...*gobgp.CapGracefulRestartTuple) []gobgp.ParameterCapabilityInterface {
		return []gobgp.ParameterCapabilityInterface{
			gobgp.NewCapFourOctetASNumber(65100),
			gobgp.NewCapGracefulRestart(true, false, 120, tuples),
		}
	}
	cases := []struct {
		name string
		caps []gobgp.ParameterCapabilityInterface
		want bool
	}{
		{"no graceful restart", []gobgp.ParameterCapabilityInterface{gobgp.NewCapFourOctetASNumber(65100)}, false},
		{"no families", gr(), false},
		{"ipv4 preserved", gr(gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv4_UC, true)), true},
		{"ipv4 not preserved", gr(gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv4_UC, false)), false},
		{"only ipv6 preserved", gr(
			gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv4_UC, false),
			gobgp.NewCapGracefulRestartTuple(gobgp.RF_IPv6_UC, true)), false},
	}
	for _, tc := range cases {
		if got := preservesIPv4Forwarding(tc.caps); got != tc.want {
			t.Errorf("%s: preservesIPv4Forwarding = %v, want %v", tc.name, got, tc.want)
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
