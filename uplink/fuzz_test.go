package uplink

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// world stands in for everything around a machine: it answers SetPeer the
// way GoBGP does (removing or replacing a peer ends its session) and
// produces a plausible stream of sensor and session events from fuzz
// input. Session events reach the machine through a Mailbox, as in the
// daemon. It also keeps the facts the invariants are checked against,
// independently of the machine's own bookkeeping.
type world struct {
	t   *testing.T
	m   *Machine
	box *Mailbox
	now time.Time

	peer, wantPeer Peer
	fib            FIB
	opening        bool // a connection of the current peer is opening

	// Session facts, as GoBGP would know them.
	epoch       uint64
	established bool
	estAt       time.Time
	fbits       bool
	eor         [2]bool
	// The last loss of an Established session.
	lossAt       time.Time
	lossGraceful bool
	lossFbits    bool
	carrierSince time.Time // when carrier last came (zero: no carrier)
	macs         map[netip.Addr]net.HardwareAddr
	fbitsOf      map[uint64]bool // per session epoch
	families     [2]bool         // of the current session

	pushed, taken int
}

// SetPeer is what package bgp does: a peer for another address (or none)
// replaces the current one, ending its session; a fresh peer for the same
// address waits while a connection opens or a session is up, since
// replacing it then would cut collision resolution short or end a working
// session.
func (w *world) SetPeer(p Peer) {
	w.wantPeer = p
	if p.Addr == w.peer.Addr && (w.opening || w.established) && p.Unstick == w.peer.Unstick {
		return
	}
	w.replacePeer()
}

func (w *world) replacePeer() {
	if w.established && w.wantPeer != w.peer {
		w.lose(false)
	}
	if w.wantPeer != w.peer {
		w.opening = false
	}
	w.peer = w.wantPeer
}
func (w *world) SetFIB(f FIB)                       { w.fib = f }
func (w *world) SweepStale()                        {}
func (w *world) Advertise()                         {}
func (w *world) Solicit()                           {}
func (w *world) SetAdvertiseInterval(time.Duration) {}
func (w *world) ResolveMAC(addr netip.Addr)         {}

func (w *world) push(ev Event) {
	w.pushed++
	w.box.Push(ev)
}

func (w *world) lose(graceful bool) {
	w.established, w.opening = false, false
	w.push(Event{Kind: Session, State: SessionIdle, Epoch: w.epoch, Graceful: graceful})
}

// deliver hands the mailbox to the machine. The machine's clocks run from
// when it learns of a session change, so the facts take that time too.
func (w *world) deliver() {
	evs := w.box.Take()
	w.taken += len(evs)
	for _, ev := range evs {
		switch {
		case ev.Kind == Session && ev.State == SessionEstablished:
			w.estAt = w.now
			if !w.fbitsOf[ev.Epoch] {
				w.lossAt = time.Time{} // RFC 4724: no F bit, the kept routes go
			}
		case ev.Kind == Session && ev.Epoch != 0:
			w.lossAt, w.lossGraceful, w.lossFbits = w.now, ev.Graceful, w.fbitsOf[ev.Epoch]
		}
		w.m.Handle(ev, w.now)
	}
}

// step applies one fuzz instruction.
func (w *world) step(op, arg byte) {
	addrs := []netip.Addr{torLL, torLL2}
	macs := []net.HardwareAddr{torMAC, newMAC, nil}
	switch op % 10 {
	case 0:
		if w.carrierSince.IsZero() {
			w.carrierSince = w.now
		}
		w.m.Handle(Event{Kind: CarrierUp, Ifindex: 2 + int(arg%2)}, w.now)
	case 1:
		w.carrierSince = time.Time{}
		w.m.Handle(Event{Kind: CarrierDown}, w.now)
	case 2:
		addr, mac := addrs[arg%2], macs[(arg>>1)%3]
		if mac != nil {
			w.macs[addr] = mac
		}
		w.m.Handle(Event{Kind: ToRAdvertised, Addr: addr, MAC: mac}, w.now)
	case 3:
		if arg&1 != 0 {
			w.m.Handle(Event{Kind: Advertised}, w.now)
		} else {
			w.m.Handle(Event{Kind: ToRSilent, Addr: addrs[arg%2]}, w.now)
		}
	case 4:
		addr, mac := addrs[arg%2], macs[(arg>>1)%3]
		if mac != nil {
			w.macs[addr] = mac
		}
		w.m.Handle(Event{Kind: NeighborSeen, Addr: addr, MAC: mac, Router: arg&8 != 0}, w.now)
	case 5:
		if w.peer.Addr.IsValid() && !w.established {
			s := []SessionState{SessionActive, SessionOpenSent, SessionOpenConfirm}[arg%3]
			w.opening = s.opening()
			w.push(Event{Kind: Session, State: s})
		}
	case 6:
		if w.peer.Addr.IsValid() && !w.established {
			w.epoch++
			w.established, w.estAt, w.fbits, w.eor, w.opening = true, w.now, arg&1 != 0, [2]bool{}, false
			w.fbitsOf[w.epoch] = w.fbits
			w.push(Event{Kind: Session, State: SessionEstablished, Epoch: w.epoch,
				PreservesForwarding: [2]bool{w.fbits, w.fbits}, RestartTime: time.Duration(arg%4) * 30 * time.Second,
				Families: [2]bool{true, arg&4 == 0}})
			w.families = [2]bool{true, arg&4 == 0}
		}
	case 7:
		switch {
		case w.established:
			w.lose(arg&1 != 0)
			w.replacePeer()
		case w.peer.Addr.IsValid():
			w.opening = false
			w.push(Event{Kind: Session, State: SessionIdle, Reason: Reason(arg % 4)})
			w.replacePeer()
		}
	case 8:
		f := Family(arg % 2)
		epoch := w.epoch
		if arg&4 != 0 && epoch > 0 {
			epoch-- // a late one from an older session
		}
		if w.established && epoch == w.epoch {
			w.eor[f] = true
		}
		if w.established || arg&4 != 0 {
			w.push(Event{Kind: EndOfRIB, Family: f, Epoch: epoch})
		}
	case 9:
		// Time passes: up to 2.5 minutes, in steps the timers care about.
		w.now = w.now.Add(time.Duration(arg) * 600 * time.Millisecond)
		w.m.Tick(w.now)
	}
	if arg&16 == 0 {
		w.deliver()
	}
}

// check asserts the invariants.
func (w *world) check() {
	t := w.t
	st := w.m.Status()
	if n := len(w.box.queue); n > 12 {
		t.Fatalf("mailbox holds %d events", n)
	}
	if d := w.m.Deadline(); !d.IsZero() && !d.After(w.now) {
		t.Fatalf("a timer is due after Tick: %v <= %v", d, w.now)
	}
	// The peer is configured exactly when there is carrier and a ToR.
	if want := w.carrierSince != (time.Time{}) && st.ToR.IsValid(); w.wantPeer.Addr.IsValid() != want {
		t.Fatalf("peer %+v with carrier=%v ToR=%v", w.wantPeer, w.carrierSince, st.ToR)
	}
	if w.peer.Addr != w.wantPeer.Addr || w.peer.Addr.IsValid() && w.peer.Addr != st.ToR {
		t.Fatalf("peer %v, wanted %v, ToR %v", w.peer.Addr, w.wantPeer.Addr, st.ToR)
	}
	if !w.fib.V4 && !w.fib.V6 {
		return
	}
	// In the FIB only when the ToR can forward.
	if w.carrierSince.IsZero() {
		t.Fatalf("in the FIB without carrier: %+v", w.fib)
	}
	if w.fib.Addr != w.peer.Addr {
		t.Fatalf("FIB through %v, peer %v", w.fib.Addr, w.peer.Addr)
	}
	if w.fib.V4 && (w.fib.MAC == nil || string(w.fib.MAC) != string(w.macs[w.fib.Addr])) {
		t.Fatalf("IPv4 in the FIB with MAC %v; the ToR %v has %v", w.fib.MAC, w.fib.Addr, w.macs[w.fib.Addr])
	}
	if w.fib.Syncing {
		// Last resort while the ToR sends its table: only with its session up.
		if !w.established && w.box.empty() {
			t.Fatalf("in the FIB as syncing (%+v) without a session", w.fib)
		}
		return
	}
	synced := w.established && w.box.empty() && ((w.eor[IPv4] || !w.families[IPv4]) && (w.eor[IPv6] || !w.families[IPv6]) ||
		!w.now.Before(w.estAt.Add(cfg.HoldTime)))
	helper := !w.lossAt.IsZero() && w.lossGraceful && w.lossFbits && w.now.Before(w.lossAt.Add(cfg.RestartTime)) &&
		!w.carrierSince.After(w.lossAt)
	if !synced && !helper && w.box.empty() {
		t.Fatalf("in the FIB (%+v) but the ToR cannot forward: established=%v eor=%v since %v; last loss at %v graceful=%v F=%v; now %v",
			w.fib, w.established, w.eor, w.estAt, w.lossAt, w.lossGraceful, w.lossFbits, w.now)
	}
}

func (b *Mailbox) empty() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue) == 0
}

// FuzzMachine drives a machine with random event sequences and checks
// after every step that the peer is what is wanted, that the uplink is in
// the FIB only when its ToR can forward, that IPv4 never goes in without
// the ToR's MAC, that no timer is left due, and that the mailbox stays
// small.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{0, 0, 2, 0, 6, 1, 8, 0, 9, 5, 7, 1, 9, 200, 6, 1, 8, 0})
	f.Add([]byte{0, 0, 2, 2, 5, 1, 5, 2, 7, 1, 9, 10, 9, 10, 6, 0, 8, 0, 1, 0, 0, 0, 9, 255})
	f.Add([]byte{0, 0, 9, 4, 4, 0, 6, 3, 8, 16, 8, 1, 7, 17, 6, 1, 9, 1, 8, 4, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		w := &world{t: t, now: t0, macs: map[netip.Addr]net.HardwareAddr{}, fbitsOf: map[uint64]bool{}}
		w.box = NewMailbox(func() {})
		w.m = New(cfg, w, quiet(), t0)
		for i := 0; i+1 < len(data); i += 2 {
			w.step(data[i], data[i+1])
			w.check()
		}
		w.deliver()
		w.check()
		if w.taken > w.pushed {
			t.Fatalf("took %d events, pushed %d", w.taken, w.pushed)
		}
	})
}

// FuzzMailbox checks that coalescing loses nothing the machine needs: a
// machine fed every session event and one fed through a mailbox, taken
// at random moments, end in the same state.
func FuzzMailbox(f *testing.F) {
	f.Add([]byte{6, 1, 8, 0, 7, 1, 6, 0, 8, 1, 7, 0, 5, 1, 7, 2})
	f.Add([]byte{5, 1, 5, 2, 7, 1, 5, 0, 6, 1, 7, 1, 6, 1, 7, 0, 6, 0, 8, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		direct, boxed := &fake{}, &fake{}
		a, b := New(cfg, direct, quiet(), t0), New(cfg, boxed, quiet(), t0)
		box := NewMailbox(func() {})
		now := t0
		for _, m := range []*Machine{a, b} {
			m.Handle(carrierUp(), now)
			m.Handle(ra(torLL, torMAC), now)
		}
		var epoch uint64
		established := false
		emit := func(ev Event) {
			a.Handle(ev, now)
			box.Push(ev)
		}
		for i := 0; i+1 < len(data); i += 2 {
			op, arg := data[i], data[i+1]
			switch op % 5 {
			case 0:
				if !established {
					emit(Event{Kind: Session, State: []SessionState{SessionActive, SessionOpenSent, SessionOpenConfirm}[arg%3]})
				}
			case 1:
				if !established {
					epoch++
					established = true
					emit(Event{Kind: Session, State: SessionEstablished, Epoch: epoch, PreservesForwarding: [2]bool{arg&1 != 0, arg&2 != 0},
						Families: [2]bool{true, arg&8 != 0}})
				}
			case 2:
				if established {
					established = false
					emit(Event{Kind: Session, State: SessionIdle, Epoch: epoch, Graceful: arg&1 != 0})
				} else {
					emit(Event{Kind: Session, State: SessionIdle, Reason: Reason(arg % 4)})
				}
			case 3:
				if established {
					emit(Event{Kind: EndOfRIB, Epoch: epoch, Family: Family(arg % 2)})
				}
			case 4:
				// The machine's loop gets round to its mailbox.
				for _, ev := range box.Take() {
					b.Handle(ev, now)
				}
			}
		}
		for _, ev := range box.Take() {
			b.Handle(ev, now)
		}
		sa, sb := a.Status(), b.Status()
		if sa.Phase != sb.Phase || !sa.FIB.equal(sb.FIB) || sa.Session != sb.Session || sa.Epoch != sb.Epoch || sa.EndOfRIB != sb.EndOfRIB {
			t.Fatalf("direct: %v %+v %v epoch %d eor %v\nboxed:  %v %+v %v epoch %d eor %v",
				sa.Phase, sa.FIB, sa.Session, sa.Epoch, sa.EndOfRIB, sb.Phase, sb.FIB, sb.Session, sb.Epoch, sb.EndOfRIB)
		}
		if (direct.peer.Addr == netip.Addr{}) != (boxed.peer.Addr == netip.Addr{}) || direct.peer.Passive != boxed.peer.Passive {
			t.Fatalf("peers differ: %+v vs %+v", direct.peer, boxed.peer)
		}
	})
}
