package uplink

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// fake records what the machine asked for.
type fake struct {
	peer     Peer
	fib      FIB
	peers    []Peer // every SetPeer, in order
	fibs     []FIB  // every SetFIB
	sweeps   int
	adverts  int
	solicits int
	resolves []netip.Addr
	interval time.Duration
}

func (f *fake) SetPeer(p Peer)                       { f.peer = p; f.peers = append(f.peers, p) }
func (f *fake) SetFIB(x FIB)                         { f.fib = x; f.fibs = append(f.fibs, x) }
func (f *fake) SweepStale()                          { f.sweeps++ }
func (f *fake) Advertise()                           { f.adverts++ }
func (f *fake) Solicit()                             { f.solicits++ }
func (f *fake) SetAdvertiseInterval(d time.Duration) { f.interval = d }
func (f *fake) ResolveMAC(addr netip.Addr)           { f.resolves = append(f.resolves, addr) }
func (f *fake) reset()                               { *f = fake{peer: f.peer, fib: f.fib, interval: f.interval} }
func quiet() *slog.Logger                            { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func (f *fake) lastPeer() (Peer, bool)               { return last(f.peers) }
func last[T any](s []T) (T, bool) {
	var z T
	if len(s) == 0 {
		return z, false
	}
	return s[len(s)-1], true
}

var (
	t0     = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	torLL  = netip.MustParseAddr("fe80::1%ens3")
	torLL2 = netip.MustParseAddr("fe80::2%ens3")
	torMAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}
	newMAC = net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	cfg    = Config{Interface: "ens3", GracefulRestart: true, RestartTime: 120 * time.Second, HoldTime: 9 * time.Second, MaxPrefixesRestart: 30 * time.Second}
)

// rig is a machine with a fake and a clock.
type rig struct {
	m   *Machine
	f   *fake
	now time.Time
}

func newRig(c Config) *rig {
	f := &fake{}
	return &rig{m: New(c, f, quiet(), t0), f: f, now: t0}
}

func (r *rig) ev(e Event)            { r.m.Handle(e, r.now) }
func (r *rig) after(d time.Duration) { r.now = r.now.Add(d); r.m.Tick(r.now) }
func carrierUp() Event               { return Event{Kind: CarrierUp, Ifindex: 2} }
func carrierDown() Event             { return Event{Kind: CarrierDown} }
func ra(addr netip.Addr, mac net.HardwareAddr) Event {
	return Event{Kind: ToRAdvertised, Addr: addr, MAC: mac}
}
func established(epoch uint64, fbits bool) Event {
	return Event{Kind: Session, State: SessionEstablished, Epoch: epoch, PreservesForwarding: [2]bool{fbits, fbits},
		RestartTime: 120 * time.Second, Families: [2]bool{true, true}}
}
func lost(epoch uint64, graceful bool) Event {
	return Event{Kind: Session, State: SessionIdle, Epoch: epoch, Graceful: graceful, Detail: "test"}
}
func state(s SessionState) Event { return Event{Kind: Session, State: s} }
func eor(epoch uint64, f Family) Event {
	return Event{Kind: EndOfRIB, Epoch: epoch, Family: f}
}

// in builds a machine in phase p along the usual path.
func in(t *testing.T, p Phase, fbits bool) *rig {
	t.Helper()
	r := newRig(cfg)
	steps := []Event{carrierUp(), ra(torLL, torMAC), established(1, fbits), eor(1, IPv4), eor(1, IPv6), lost(1, true)}
	n := map[Phase]int{NoCarrier: 0, Discovering: 1, Connecting: 2, Syncing: 3, Forwarding: 5, Helping: 6}[p]
	for _, e := range steps[:n] {
		r.ev(e)
	}
	if r.m.Phase() != p {
		t.Fatalf("setup: phase %v, want %v", r.m.Phase(), p)
	}
	r.f.reset()
	return r
}

func TestTransitions(t *testing.T) {
	type check func(t *testing.T, r *rig)
	peerIs := func(addr netip.Addr, passive bool) check {
		return func(t *testing.T, r *rig) {
			if r.f.peer.Addr != addr || (addr.IsValid() && r.f.peer.Passive != passive) {
				t.Errorf("peer %+v, want %v passive=%v", r.f.peer, addr, passive)
			}
		}
	}
	fibAs := func(v4, v6, syncing bool) check {
		return func(t *testing.T, r *rig) {
			if r.f.fib.V4 != v4 || r.f.fib.V6 != v6 || (v4 || v6) && r.f.fib.Syncing != syncing {
				t.Errorf("FIB %+v, want v4=%v v6=%v syncing=%v", r.f.fib, v4, v6, syncing)
			}
			if r.f.fib.V4 && r.f.fib.MAC == nil {
				t.Errorf("IPv4 in the FIB without a MAC")
			}
		}
	}
	// fibIs: the uplink is in the FIB as ready (its ToR can forward) for
	// these families; lastResort: only for what no other uplink reaches.
	fibIs := func(v4, v6 bool) check { return fibAs(v4, v6, false) }
	lastResort := fibAs(true, true, true)
	advertised := func(t *testing.T, r *rig) {
		if r.f.adverts == 0 {
			t.Errorf("no RA sent")
		}
	}
	solicited := func(want bool) check {
		return func(t *testing.T, r *rig) {
			if (r.f.solicits > 0) != want {
				t.Errorf("%d router solicitations sent, want any: %v", r.f.solicits, want)
			}
		}
	}
	swept := func(t *testing.T, r *rig) {
		if r.f.sweeps == 0 {
			t.Errorf("stale paths not swept")
		}
	}
	newGeneration := func(t *testing.T, r *rig) {
		if len(r.f.peers) == 0 || r.f.peers[len(r.f.peers)-1].Generation == 0 {
			t.Errorf("no fresh peer: %+v", r.f.peers)
		}
	}
	raEvery := func(d time.Duration) check {
		return func(t *testing.T, r *rig) {
			if r.f.interval != d {
				t.Errorf("RAs every %v, want %v", r.f.interval, d)
			}
		}
	}
	noPeerChange := func(t *testing.T, r *rig) {
		if len(r.f.peers) != 0 {
			t.Errorf("peer changed: %+v", r.f.peers)
		}
	}

	tests := []struct {
		name   string
		from   Phase
		fbits  bool
		events []Event
		wait   time.Duration // then Tick
		want   Phase
		checks []check
	}{
		// no-carrier
		{"no-carrier: carrier up, no ToR known", NoCarrier, false, []Event{carrierUp()}, 0, Discovering,
			[]check{peerIs(netip.Addr{}, false), fibIs(false, false)}},
		{"no-carrier: RA before carrier is ignored", NoCarrier, false, []Event{ra(torLL, torMAC)}, 0, NoCarrier,
			[]check{peerIs(netip.Addr{}, false)}},
		{"no-carrier: remembered ToR is configured at carrier up", Forwarding, false, []Event{carrierDown(), carrierUp()}, 0, Connecting,
			[]check{peerIs(torLL, true), fibIs(false, false), advertised}},
		// discovering
		{"discovering: RA with MAC", Discovering, false, []Event{ra(torLL, torMAC)}, 0, Connecting,
			[]check{peerIs(torLL, true), fibIs(false, false), advertised}},
		{"discovering: RA without MAC asks the kernel", Discovering, false, []Event{ra(torLL, nil)}, 0, Connecting,
			[]check{peerIs(torLL, true), func(t *testing.T, r *rig) {
				if !slices.Contains(r.f.resolves, torLL) {
					t.Errorf("MAC not resolved: %v", r.f.resolves)
				}
			}}},
		{"discovering: no RA, advertise anyway", Discovering, false, nil, advertiseAfter, Discovering,
			[]check{advertised, peerIs(netip.Addr{}, false)}},
		{"discovering: ToR found in the neighbour table", Discovering, false,
			[]Event{{Kind: NeighborSeen, Addr: torLL, MAC: torMAC, Router: true}}, 0, Connecting, []check{peerIs(torLL, true)}},
		{"discovering: a neighbour that is not a router is not the ToR", Discovering, false,
			[]Event{{Kind: NeighborSeen, Addr: torLL, MAC: torMAC}}, 0, Discovering, []check{peerIs(netip.Addr{}, false)}},
		{"discovering: unresolved neighbour entry is not a ToR", Discovering, false,
			[]Event{{Kind: NeighborSeen, Addr: torLL}}, 0, Discovering, []check{peerIs(netip.Addr{}, false)}},
		{"discovering: carrier down", Discovering, false, []Event{carrierDown()}, 0, NoCarrier, nil},
		// connecting
		{"connecting: session up", Connecting, false, []Event{established(1, false)}, 0, Syncing,
			[]check{lastResort, noPeerChange}},
		{"connecting: passive peer goes active when the ToR does not connect", Connecting, false, []Event{{Kind: Advertised}}, activeAfter, Connecting,
			[]check{peerIs(torLL, false), newGeneration}},
		{"connecting: no switch to active while opening", Connecting, false, []Event{{Kind: Advertised}, state(SessionOpenSent)}, activeAfter, Connecting,
			[]check{noPeerChange}},
		{"connecting: failure while opening re-creates a passive peer at once", Connecting, false,
			[]Event{state(SessionOpenConfirm), {Kind: Session, State: SessionIdle, Reason: ReasonCollision}}, 0, Connecting,
			[]check{peerIs(torLL, true), newGeneration}},
		{"connecting: stuck opening past the hold time", Connecting, false, []Event{state(SessionOpenSent)}, cfg.HoldTime, Connecting,
			[]check{func(t *testing.T, r *rig) {
				if p, _ := r.f.lastPeer(); p.Unstick == 0 {
					t.Errorf("peer not replaced: %+v", r.f.peers)
				}
			}}},
		{"connecting: new address from RA re-creates the peer", Connecting, false, []Event{ra(torLL2, newMAC)}, 0, Connecting,
			[]check{peerIs(torLL2, true)}},
		{"connecting: kernel entry for another address does not move the ToR", Connecting, false,
			[]Event{{Kind: NeighborSeen, Addr: torLL2, MAC: newMAC}}, 0, Connecting, []check{noPeerChange}},
		{"connecting: carrier down removes the peer", Connecting, false, []Event{carrierDown()}, 0, NoCarrier,
			[]check{peerIs(netip.Addr{}, false)}},
		// syncing
		{"syncing: End-of-RIB of one family", Syncing, false, []Event{eor(1, IPv6)}, 0, Syncing, []check{lastResort}},
		{"syncing: End-of-RIB of both", Syncing, false, []Event{eor(1, IPv4), eor(1, IPv6)}, 0, Forwarding,
			[]check{fibIs(true, true), raEvery(advertiseEveryWhileUp)}},
		{"syncing: End-of-RIB of the only family", Syncing, false,
			[]Event{lost(1, false), {Kind: Session, State: SessionEstablished, Epoch: 2, Families: [2]bool{true, false}}, eor(2, IPv4)},
			0, Forwarding, []check{fibIs(true, false)}},
		{"syncing: End-of-RIB of an older session is ignored", Syncing, false, []Event{eor(0, IPv4)}, 0, Syncing, []check{lastResort}},
		{"syncing: no End-of-RIB within the hold time", Syncing, false, nil, cfg.HoldTime, Forwarding, []check{fibIs(true, true)}},
		{"syncing: session lost", Syncing, false, []Event{lost(1, false)}, 0, Connecting, []check{fibIs(false, false), advertised}},
		// forwarding
		{"forwarding: carrier down", Forwarding, false, []Event{carrierDown()}, 0, NoCarrier,
			[]check{fibIs(false, false), peerIs(netip.Addr{}, false)}},
		{"forwarding: session lost with a NOTIFICATION", Forwarding, true, []Event{lost(1, false)}, 0, Connecting,
			[]check{fibIs(false, false), advertised, raEvery(advertiseEvery)}},
		{"forwarding: session lost gracefully, forwarding not preserved", Forwarding, false, []Event{lost(1, true)}, 0, Connecting,
			[]check{fibIs(false, false)}},
		{"forwarding: session lost gracefully, forwarding preserved", Forwarding, true, []Event{lost(1, true)}, 0, Helping,
			[]check{fibIs(true, true), advertised}},
		{"forwarding: new MAC moves the entry", Forwarding, false, []Event{ra(torLL, newMAC)}, 0, Forwarding,
			[]check{func(t *testing.T, r *rig) {
				if string(r.f.fib.MAC) != string(newMAC) {
					t.Errorf("FIB MAC %v, want %v", r.f.fib.MAC, newMAC)
				}
			}}},
		{"forwarding: RA stops, session stays", Forwarding, false, []Event{{Kind: ToRSilent, Addr: torLL}}, 0, Forwarding,
			[]check{fibIs(true, true), noPeerChange, solicited(true)}},
		{"no-carrier: RAs stopping with the carrier change nothing", Forwarding, false,
			[]Event{carrierDown(), {Kind: ToRSilent, Addr: torLL}}, 0, NoCarrier, []check{solicited(false)}},
		{"forwarding: stale timer after a lost session sweeps", Forwarding, false, []Event{lost(1, false)}, cfg.RestartTime, Connecting,
			[]check{swept}},
		// helping
		{"helping: ToR back, keeps forwarding until End-of-RIB", Helping, true, []Event{established(2, true)}, 0, Helping,
			[]check{fibIs(true, true)}},
		{"helping: End-of-RIB of the new session", Helping, true, []Event{established(2, true), eor(2, IPv4), eor(2, IPv6)}, 0, Forwarding,
			[]check{fibIs(true, true)}},
		{"helping: ToR back without forwarding preserved", Helping, true, []Event{established(2, false)}, 0, Syncing,
			[]check{lastResort, swept}},
		{"helping: restart time passes", Helping, true, nil, cfg.RestartTime, Connecting, []check{fibIs(false, false), swept}},
		{"helping: carrier down", Helping, true, []Event{carrierDown()}, 0, NoCarrier, []check{fibIs(false, false)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := in(t, tc.from, tc.fbits)
			for _, e := range tc.events {
				r.ev(e)
			}
			if tc.wait > 0 {
				r.after(tc.wait)
			}
			if got := r.m.Phase(); got != tc.want {
				t.Errorf("phase %v, want %v", got, tc.want)
			}
			for _, c := range tc.checks {
				c(t, r)
			}
		})
	}
}

// TestRearmBackoff: a peer that keeps failing is re-created at once, then
// after 1, 2, 4 s, ... and never while a connection is opening.
func TestRearmBackoff(t *testing.T) {
	r := in(t, Connecting, false)
	var gens []uint32
	var waits []time.Duration
	for range 5 {
		start := r.now
		before := r.f.peer.Generation
		r.ev(state(SessionOpenSent))
		r.ev(Event{Kind: Session, State: SessionIdle, Reason: ReasonCollision})
		for r.f.peer.Generation == before && r.now.Sub(start) < time.Minute {
			r.after(100 * time.Millisecond)
		}
		gens = append(gens, r.f.peer.Generation)
		waits = append(waits, r.now.Sub(start).Truncate(time.Second))
		r.ev(state(SessionActive))
	}
	want := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	if !slices.Equal(waits, want) {
		t.Errorf("re-created after %v, want %v (generations %v)", waits, want, gens)
	}
	r.ev(established(1, false))
	before := r.f.peer.Generation
	r.ev(lost(1, false))
	if r.f.peer.Generation == before {
		t.Errorf("a session that came up did not reset the backoff: not re-created at once after its loss")
	}
}

// TestMaxPrefixesWaits: a session torn down for max-prefixes comes back
// after max-prefixes-restart, not at once.
func TestMaxPrefixesWaits(t *testing.T) {
	r := in(t, Forwarding, false)
	gen := r.f.peer.Generation
	r.ev(Event{Kind: Session, State: SessionIdle, Epoch: 1, Reason: ReasonMaxPrefixes})
	r.after(cfg.MaxPrefixesRestart - time.Second)
	if r.f.peer.Generation != gen {
		t.Fatalf("re-created before max-prefixes-restart")
	}
	r.after(time.Second)
	if r.f.peer.Generation == gen {
		t.Fatalf("not re-created after max-prefixes-restart")
	}
}

// TestPinnedAddress: with [[neighbor]] address, RAs of other routers do
// not move the peer, and the MAC comes from the kernel.
func TestPinnedAddress(t *testing.T) {
	c := cfg
	c.Pinned = torLL2
	r := newRig(c)
	r.ev(carrierUp())
	if r.f.peer.Addr != torLL2 {
		t.Fatalf("peer %+v, want the pinned address", r.f.peer)
	}
	r.ev(ra(torLL, torMAC))
	if r.f.peer.Addr != torLL2 {
		t.Fatalf("an RA from another router moved the peer to %v", r.f.peer.Addr)
	}
	r.ev(Event{Kind: NeighborSeen, Addr: torLL2, MAC: newMAC})
	r.ev(established(1, false))
	r.ev(eor(1, IPv4))
	r.ev(eor(1, IPv6))
	if !r.f.fib.V4 || string(r.f.fib.MAC) != string(newMAC) || r.m.Status().MACSource != SourceKernel {
		t.Fatalf("FIB %+v, status %+v", r.f.fib, r.m.Status())
	}
}

// TestIPv6DoesNotWaitForMAC: without a MAC, IPv6 routes go in; IPv4 ones
// follow once the kernel has resolved it.
func TestIPv6DoesNotWaitForMAC(t *testing.T) {
	r := in(t, Discovering, false)
	r.ev(ra(torLL, nil))
	r.ev(established(1, false))
	r.ev(eor(1, IPv4))
	r.ev(eor(1, IPv6))
	if r.f.fib.V4 || !r.f.fib.V6 {
		t.Fatalf("FIB %+v, want IPv6 only", r.f.fib)
	}
	r.after(resolveEvery)
	if len(r.f.resolves) < 2 {
		t.Fatalf("MAC asked for %d times, want again after %v", len(r.f.resolves), resolveEvery)
	}
	r.ev(Event{Kind: NeighborSeen, Addr: torLL, MAC: torMAC})
	if !r.f.fib.V4 || r.m.Status().MACSource != SourceKernel {
		t.Fatalf("FIB %+v after the kernel resolved the MAC", r.f.fib)
	}
}

// TestPassiveThenActive: a fresh peer waits for the ToR to connect, and
// connects itself activeAfter after our RA went out; after a collision it
// waits twice as long, until a session comes up.
func TestPassiveThenActive(t *testing.T) {
	r := in(t, Connecting, false)
	if !r.f.peer.Passive {
		t.Fatalf("a fresh peer is active: %+v", r.f.peer)
	}
	r.after(5 * activeAfter)
	if !r.f.peer.Passive {
		t.Fatalf("went active before our RA went out")
	}
	r.ev(Event{Kind: Advertised})
	r.after(activeAfter - time.Millisecond)
	if !r.f.peer.Passive {
		t.Fatalf("went active early")
	}
	r.after(time.Millisecond)
	if r.f.peer.Passive {
		t.Fatalf("still passive %v after our RA", activeAfter)
	}
	// Both sides connected at once.
	r.ev(state(SessionOpenSent))
	r.ev(Event{Kind: Session, State: SessionIdle, Reason: ReasonCollision})
	if !r.f.peer.Passive {
		t.Fatalf("re-created active after a collision: %+v", r.f.peer)
	}
	r.ev(Event{Kind: Advertised})
	r.after(activeAfter)
	if !r.f.peer.Passive {
		t.Fatalf("after a collision, went active after %v", activeAfter)
	}
	r.after(activeAfter)
	if r.f.peer.Passive {
		t.Fatalf("after a collision, still passive after %v", 2*activeAfter)
	}
}

func TestPhaseNames(t *testing.T) {
	var names []string
	for p := NoCarrier; p <= Helping; p++ {
		names = append(names, p.String())
	}
	if got := strings.Join(names, " "); got != "no-carrier discovering connecting syncing forwarding helping" {
		t.Fatalf("phase names %q", got)
	}
}

// A ToR that is on the link but keeps the session down for long is
// reported once; one whose session comes up in time is not.
func TestNoSessionWarning(t *testing.T) {
	const warning = "no BGP session with the ToR although it is on the link"
	for _, tc := range []struct {
		name   string
		steps  func(r *rig)
		warned bool
	}{
		{"connecting for the whole time", func(r *rig) { r.after(noSessionWarnAfter) }, true},
		{"session up in time", func(r *rig) {
			r.after(noSessionWarnAfter / 2)
			r.ev(established(1, false))
			r.after(noSessionWarnAfter)
		}, false},
		{"carrier lost meanwhile", func(r *rig) {
			r.after(noSessionWarnAfter / 2)
			r.ev(carrierDown())
			r.after(noSessionWarnAfter)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			f := &fake{}
			r := &rig{m: New(cfg, f, slog.New(slog.NewTextHandler(&logs, nil)), t0), f: f, now: t0}
			r.ev(carrierUp())
			r.ev(ra(torLL, torMAC))
			if r.m.Phase() != Connecting {
				t.Fatalf("setup: phase %v", r.m.Phase())
			}
			tc.steps(r)
			if got := strings.Count(logs.String(), warning); got != map[bool]int{true: 1, false: 0}[tc.warned] {
				t.Errorf("warned %d times, want warned=%v:\n%s", got, tc.warned, logs.String())
			}
		})
	}
}

// After a lost session the peer connects itself; when that connection
// fails (the ToR's BGP is only coming up), the next passive peer must be
// there at once, not after a backoff, to accept the ToR's own connection.
// A ToR that keeps failing our connections gets the backoff again.
func TestOwnConnectionFailureRearmsAtOnce(t *testing.T) {
	r := in(t, Forwarding, false)
	r.ev(lost(1, false))
	r.ev(Event{Kind: Advertised})
	r.after(activeAfter)
	if p, _ := r.f.lastPeer(); p.Passive {
		t.Fatalf("setup: peer still passive after %v: %+v", activeAfter, p)
	}
	for i := range ownFailuresAtOnce {
		r.f.reset()
		r.ev(state(SessionActive))
		r.ev(Event{Kind: Session, State: SessionIdle, Detail: "write-failed"})
		p, ok := r.f.lastPeer()
		wantAtOnce := i+1 < ownFailuresAtOnce
		if wantAtOnce && (!ok || !p.Passive) {
			t.Fatalf("failure %d of our own connection: no passive peer at once: %+v", i+1, r.f.peers)
		}
		if !wantAtOnce && ok {
			t.Fatalf("failure %d of our own connection: re-created at once, want a backoff: %+v", i+1, r.f.peers)
		}
		// The passive peer goes active again after our next RA.
		r.ev(Event{Kind: Advertised})
		r.after(rearmMax)
	}
}
