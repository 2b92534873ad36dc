package bgp

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/uplink"
)

// event is one Handler call.
type event struct {
	kind     string // route, withdraw, stale, sweep, up, down, state, eor, refused
	id       int
	prefix   netip.Prefix
	pathLen  int
	graceful bool
	family   int
	epoch    uint64
	state    uplink.SessionState
	refusal  Refusal
}

type recorder chan event

func (r recorder) Route(id int, p netip.Prefix, n int, withdraw bool) {
	kind := "route"
	if withdraw {
		kind = "withdraw"
	}
	r <- event{kind: kind, id: id, prefix: p, pathLen: n}
}
func (r recorder) Stale(id int) { r <- event{kind: "stale", id: id} }
func (r recorder) Sweep(id int, f uplink.Family) {
	r <- event{kind: "sweep", id: id, family: familyNumber(f)}
}
func (r recorder) Session(id int, ev uplink.Event) {
	e := event{id: id, epoch: ev.Epoch, state: ev.State, graceful: ev.Graceful}
	switch {
	case ev.Kind == uplink.EndOfRIB:
		e.kind, e.family = "eor", familyNumber(ev.Family)
	case ev.State == uplink.SessionEstablished:
		e.kind = "up"
	case ev.Epoch != 0:
		e.kind = "down"
	default:
		e.kind = "state"
	}
	r <- e
}
func (r recorder) Refused(id int, why Refusal) { r <- event{kind: "refused", id: id, refusal: why} }

func familyNumber(f uplink.Family) int {
	if f == uplink.IPv6 {
		return 6
	}
	return 4
}

// await returns the first event matching ok, failing the test after a
// deadline; events before it are dropped, so events that may come in
// either order must be awaited together.
func (r recorder) await(t *testing.T, what string, ok func(event) bool) event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-r:
			if ok(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startToR runs a plain GoBGP server as the ToR, in process, connecting to
// the speaker on [::1]:port. It does not listen, so nothing outside the
// test is involved.
func startToR(t *testing.T, asn uint32, port int, onPeer func(*apiutil.WatchEventMessage_PeerEvent, time.Time)) *server.BgpServer {
	t.Helper()
	tor := server.NewBgpServer(server.LoggerOption(slog.New(slog.NewTextHandler(io.Discard, nil)), new(slog.LevelVar)))
	go tor.Serve()
	ctx := context.Background()
	if err := tor.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: asn, RouterId: "10.255.0.1", ListenPort: -1}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tor.StopBgp(context.Background(), &api.StopBgpRequest{}); tor.Stop() })
	if onPeer != nil {
		// Registered before the peer exists: GoBGP v4.8.0 reads the peer's
		// OPEN without its lock when a watcher registers while a session
		// starts (osrg/gobgp#3540).
		if err := tor.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnPeerUpdate: onPeer}, server.WatchPeer()); err != nil {
			t.Fatal(err)
		}
	}
	family := func(afi api.Family_Afi) *api.AfiSafi {
		return &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}},
		}
	}
	err := tor.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		// Like FRR, the ToR sends a path even if the AS path holds the
		// peer's AS (GoBGP itself would not, but for this option).
		Conf:            &api.PeerConf{NeighborAddress: "::1", PeerAsn: 65001, AllowAspathLoopLocal: true},
		Transport:       &api.Transport{RemotePort: uint32(port)},
		Timers:          &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, IdleHoldTimeAfterReset: 1}},
		AfiSafis:        []*api.AfiSafi{family(api.Family_AFI_IP), family(api.Family_AFI_IP6)},
		GracefulRestart: &api.GracefulRestart{Enabled: true, RestartTime: 120},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return tor
}

// startSpeaker runs a Speaker listening on port with the ToR as peer 1.
func startSpeaker(t *testing.T, port int, remote config.RemoteAS) (*Speaker, recorder) {
	t.Helper()
	events := make(recorder, 1024)
	s := New(Config{
		ASN:      65001,
		RouterID: netip.MustParseAddr("10.0.0.1"),
		BGP: config.BGP{ListenPort: port, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
			ConnectRetry: time.Second, GracefulRestart: true, RestartTime: 120 * time.Second},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, events)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ready) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	err := s.SetPeer(ctx, 1, uplink.Peer{Addr: netip.MustParseAddr("::1")}, config.Neighbor{Interface: "lo", RemoteAS: remote})
	if err != nil {
		t.Fatal(err)
	}
	return s, events
}

func torPath(t *testing.T, prefix string) *apiutil.Path {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	nlri, err := gobgp.NewIPAddrPrefix(p)
	if err != nil {
		t.Fatal(err)
	}
	origin := gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	// As a ToR relays another server's route: two ASes.
	asPath := gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{
		gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65003}),
	})
	if p.Addr().Is4() {
		nh, err := gobgp.NewPathAttributeNextHop(netip.MustParseAddr("10.255.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		return &apiutil.Path{Family: gobgp.RF_IPv4_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, asPath, nh}}
	}
	mp, err := gobgp.NewPathAttributeMpReachNLRI(gobgp.RF_IPv6_UC, []gobgp.PathNLRI{{NLRI: nlri}}, netip.MustParseAddr("::1"))
	if err != nil {
		t.Fatal(err)
	}
	return &apiutil.Path{Family: gobgp.RF_IPv6_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, asPath, mp}}
}

// received lists what the ToR holds from the speaker.
func received(t *testing.T, tor *server.BgpServer, family gobgp.Family) map[netip.Prefix]bool {
	t.Helper()
	out := map[netip.Prefix]bool{}
	err := tor.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN, Name: "::1", Family: family},
		func(nlri gobgp.NLRI, _ []*apiutil.Path) {
			if p, ok := nlriPrefix(nlri); ok {
				out[p] = true
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitReceived(t *testing.T, tor *server.BgpServer, family gobgp.Family, prefix string, want bool) {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if received(t, tor, family)[p] == want {
			return
		}
	}
	t.Fatalf("ToR has %s: want %v", prefix, want)
}

// TestSpeakerAgainstGoBGP runs a session between the Speaker and an
// in-process GoBGP "ToR" over IPv6 loopback: the Handler sees the session,
// the ToR's routes, its End-of-RIB and withdrawals; the ToR sees what the
// speaker announces and withdraws, and nothing it was sent.
func TestSpeakerAgainstGoBGP(t *testing.T) {
	port := freePort(t)
	s, events := startSpeaker(t, port, config.RemoteAS{Kind: config.RemoteExternal})
	tor := startToR(t, 65100, port, nil)
	ctx := context.Background()

	events.await(t, "session up", func(ev event) bool { return ev.kind == "up" && ev.id == 1 })
	eor := map[int]bool{}
	for len(eor) < 2 {
		ev := events.await(t, "End-of-RIB for IPv4 and IPv6", func(ev event) bool { return ev.kind == "eor" })
		eor[ev.family] = true
	}
	if !eor[4] || !eor[6] {
		t.Errorf("End-of-RIB for families %v, want 4 and 6", eor)
	}

	if _, err := tor.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{torPath(t, "10.1.8.192/26"), torPath(t, "2001:db8:8::/64")}}); err != nil {
		t.Fatal(err)
	}
	routes := map[netip.Prefix]event{}
	for len(routes) < 2 {
		ev := events.await(t, "the ToR's two routes", func(ev event) bool { return ev.kind == "route" })
		routes[ev.prefix] = ev
	}
	for _, prefix := range []string{"10.1.8.192/26", "2001:db8:8::/64"} {
		ev, ok := routes[netip.MustParsePrefix(prefix)]
		// The ToR prepends its own AS: 65100 65003.
		if !ok || ev.id != 1 || ev.pathLen != 2 {
			t.Errorf("route %s: got %+v (present %v), want uplink 1, AS path length 2", prefix, ev, ok)
		}
	}

	if err := s.Announce(ctx, netip.MustParsePrefix("10.0.0.1/32")); err != nil {
		t.Fatal(err)
	}
	if err := s.Announce(ctx, netip.MustParsePrefix("2001:db8::1/128")); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, tor, gobgp.RF_IPv4_UC, "10.0.0.1/32", true)
	waitReceived(t, tor, gobgp.RF_IPv6_UC, "2001:db8::1/128", true)
	// A server is never transit: the ToR's own routes do not come back.
	if got := received(t, tor, gobgp.RF_IPv4_UC); len(got) != 1 {
		t.Errorf("ToR received %v from the speaker, want only 10.0.0.1/32", got)
	}

	if err := s.Withdraw(ctx, netip.MustParsePrefix("10.0.0.1/32")); err != nil {
		t.Fatal(err)
	}
	waitReceived(t, tor, gobgp.RF_IPv4_UC, "10.0.0.1/32", false)

	err := tor.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{torPath(t, "10.1.8.192/26")}})
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix("10.1.8.192/26")
	events.await(t, "withdrawal", func(ev event) bool { return ev.kind == "withdraw" && ev.prefix == p })

	// A session that ends with a NOTIFICATION is not graceful: the
	// uplink's routes must go at once.
	if err := tor.ShutdownPeer(ctx, &api.ShutdownPeerRequest{Address: "::1"}); err != nil {
		t.Fatal(err)
	}
	if ev := events.await(t, "session down", func(ev event) bool { return ev.kind == "down" }); ev.graceful {
		t.Error("a session shut down with a NOTIFICATION was reported as a graceful restart")
	}
}

// With remote-as external, a peer in our own AS is refused: no SessionUp,
// none of its routes.
func TestSpeakerRefusesOwnASAsExternal(t *testing.T) {
	port := freePort(t)
	_, events := startSpeaker(t, port, config.RemoteAS{Kind: config.RemoteExternal})
	established := make(chan struct{}, 1)
	tor := startToR(t, 65001, port, func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
		if ev.Type == apiutil.PEER_EVENT_STATE && ev.Peer.State.SessionState == gobgp.BGP_FSM_ESTABLISHED {
			select {
			case established <- struct{}{}:
			default:
			}
		}
	})
	if _, err := tor.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{torPath(t, "10.1.8.192/26")}}); err != nil {
		t.Fatal(err)
	}
	// GoBGP itself establishes iBGP; the speaker must then reset it.
	select {
	case <-established:
	case <-time.After(20 * time.Second):
		t.Fatal("the session never reached Established, so the refusal was not exercised")
	}
	deadline := time.After(3 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.kind == "up" || ev.kind == "route" {
				t.Fatalf("a peer in our own AS was accepted as external: %+v", ev)
			}
		case <-deadline:
			return
		}
	}
}

// GoBGP drops a received path whose AS path holds our AS without telling
// its watchers, which would leave the path it replaced installed. fabricd
// lets such paths through and takes them as withdraws (RFC 4271 9.1.2).
func TestSpeakerTakesOwnASPathAsWithdraw(t *testing.T) {
	port := freePort(t)
	_, events := startSpeaker(t, port, config.RemoteAS{Kind: config.RemoteExternal})
	tor := startToR(t, 65100, port, nil)
	events.await(t, "session up", func(ev event) bool { return ev.kind == "up" })
	anycast := "10.9.9.9/32"
	if _, err := tor.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{torPath(t, anycast)}}); err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix(anycast)
	events.await(t, "the anycast route", func(ev event) bool { return ev.kind == "route" && ev.prefix == p })

	// The ToR's best path changes to one through us (65001): its UPDATE
	// replaces the old path with one we must not use.
	looped := torPath(t, anycast)
	looped.Attrs[1] = gobgp.NewPathAttributeAsPath([]gobgp.AsPathParamInterface{
		gobgp.NewAs4PathParam(gobgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{65001}),
	})
	if _, err := tor.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{looped}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for !got["refused"] || !got["withdraw"] {
		ev := events.await(t, "the looped path refused and taken as a withdraw", func(ev event) bool {
			return ev.kind == "refused" && ev.refusal == RefusedLoop || ev.kind == "withdraw" && ev.prefix == p || ev.kind == "route" && ev.prefix == p
		})
		if ev.kind == "route" {
			t.Fatalf("a path through our own AS was taken: %+v", ev)
		}
		got[ev.kind] = true
	}
}

// The speaker keeps no list of GoBGP's peers: it reads GoBGP's and makes
// it match what the uplinks want. A peer deleted behind its back comes
// back at the next reconciliation, logged as a correction; a fresh peer
// wished for while the session is up waits.
func TestReconcileCorrectsDrift(t *testing.T) {
	port := freePort(t)
	var logs syncBuffer
	events := make(recorder, 1024)
	s := New(Config{
		ASN: 65001, RouterID: netip.MustParseAddr("10.0.0.1"),
		BGP:    config.BGP{ListenPort: port, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: time.Second},
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	}, events)
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- s.Run(ctx, ready) }()
	t.Cleanup(func() { cancel(); <-done })
	<-ready
	nb := config.Neighbor{Interface: "lo", RemoteAS: config.RemoteAS{Kind: config.RemoteExternal}}
	peer := uplink.Peer{Addr: netip.MustParseAddr("::1"), Passive: true}
	if err := s.SetPeer(ctx, 1, peer, nb); err != nil {
		t.Fatal(err)
	}
	startToR(t, 65100, port, nil)
	events.await(t, "session up", func(ev event) bool { return ev.kind == "up" })

	// A fresh peer is wanted, but the session is up: it stays.
	peer.Generation++
	if err := s.SetPeer(ctx, 1, peer, nb); err != nil {
		t.Fatal(err)
	}
	if st := peerStates(t, s); st["::1"] != "Established" {
		t.Fatalf("GoBGP's peers after wishing a fresh one while up: %v", st)
	}

	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: "::1"}); err != nil {
		t.Fatal(err)
	}
	events.await(t, "the session ending with the deleted peer", func(ev event) bool { return ev.kind == "down" })
	if err := s.reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if st := peerStates(t, s); len(st) != 1 {
		t.Fatalf("GoBGP's peers after reconciling: %v", st)
	}
	if !strings.Contains(logs.String(), "correcting") {
		t.Errorf("the correction was not logged:\n%s", logs.String())
	}
	events.await(t, "session up again", func(ev event) bool { return ev.kind == "up" })
}

func peerStates(t *testing.T, s *Speaker) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		out[p.GetConf().GetNeighborAddress()] = stateName(p.GetState().GetSessionState())
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
