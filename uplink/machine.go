package uplink

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Phase is what an uplink is doing; `fabricctl show interface` and the
// logs name it.
//
//	phase        carrier ToR address BGP peer    session                     in the FIB
//	no-carrier   no      (kept)      none        -                           no
//	discovering  yes     unknown     none        -                           no
//	connecting   yes     known       configured  not Established             no
//	syncing      yes     known       configured  Established, table not in   last resort: only what no other
//	                                                                         uplink reaches
//	forwarding   yes     known       configured  Established, End-of-RIB of  yes, for its families
//	                                             every family it carries
//	helping      yes     known       configured  ended gracefully; the ToR   yes, on the paths kept from the
//	                                             said it keeps forwarding    ended session (RFC 4724 helper)
//
// An uplink carries traffic only when the ToR behind it can forward: its
// session has delivered the ToR's whole table (End-of-RIB), or the ToR is
// restarting its BGP with its forwarding state preserved. IPv4 also needs
// the ToR's MAC (the 169.254.0.1 neighbour entry); IPv6 does not.
//
// Transitions (the phase is derived from these facts by derive):
//
//	carrier-up          no-carrier -> discovering, or connecting when the ToR's
//	                    address is remembered: the peer is configured at once so
//	                    the ToR's first connection is accepted
//	carrier-down        any -> no-carrier; the peer is removed (its session is
//	                    gone with the link), paths are kept stale but unused
//	tor found           discovering -> connecting (RA, kernel neighbour entry,
//	                    or the pinned address); a new address re-creates the peer
//	session up          connecting -> syncing; helping stays helping for the
//	                    families the ToR again says it preserves
//	end-of-rib          syncing -> forwarding once every family the session
//	                    carries has its End-of-RIB (also: none within the hold
//	                    time, with a warning)
//	session lost        syncing/forwarding -> helping (graceful, forwarding
//	                    preserved, graceful restart on) or connecting
//	stale timer         helping -> connecting/syncing; kept paths swept
//
// Around them, for the BGP peer: a peer that failed is re-created (GoBGP
// would refuse the ToR for 5 s), after a backoff, never while a
// connection is opening (collision resolution must finish). A peer waits
// for the ToR to connect (passive): most ToRs connect the moment our RA
// tells them our address, and two sides connecting at once collide. If
// the ToR has not connected activeAfter after our RA went out, the peer
// connects itself; after a collision it waits longer.
type Phase uint8

const (
	NoCarrier Phase = iota
	Discovering
	Connecting
	Syncing
	Forwarding
	Helping
)

// Forwards: the uplink carries traffic in this phase.
func (p Phase) Forwards() bool { return p == Forwarding || p == Helping }

func (p Phase) String() string {
	switch p {
	case NoCarrier:
		return "no-carrier"
	case Discovering:
		return "discovering"
	case Connecting:
		return "connecting"
	case Syncing:
		return "syncing"
	case Forwarding:
		return "forwarding"
	case Helping:
		return "helping"
	}
	return fmt.Sprintf("Phase(%d)", uint8(p))
}

const (
	// advertiseAfter: with no ToR found this long after carrier, we
	// advertise anyway. A ToR that sends no RAs still learns us from ours
	// and connects; its address then shows in the neighbour table.
	advertiseAfter = 2 * time.Second
	// activeAfter: a passive peer whose ToR has not connected this long
	// after our first RA becomes active. A ToR that waits for servers to
	// connect (BIRD's or FRR's dynamic neighbors) gets its session, and so
	// does one that knew our address already and waits for its own
	// connect-retry timer. FRR connects within milliseconds of an RA that
	// tells it our address.
	activeAfter = time.Second
	// Our RAs tell the ToR our address. While the uplink forwards the ToR
	// knows it, and a ToR that restarts says so (its session ends, its RAs
	// return), which makes us advertise at once: slow periodic RAs then
	// only cost wakeups on both sides.
	advertiseEvery        = 10 * time.Second
	advertiseEveryWhileUp = time.Minute
	// noSessionWarnAfter: connecting this long to a ToR that is there
	// (carrier, its address known) is worth a warning: something on the
	// ToR's side keeps the session down.
	noSessionWarnAfter = 30 * time.Second
	// resolveEvery: how often the kernel is asked again for a ToR MAC it
	// has not resolved.
	resolveEvery = 2 * time.Second
	// rearm backoff: the first re-creation is immediate, then doubling.
	rearmMin = time.Second
	rearmMax = 30 * time.Second
	// ownFailuresAtOnce: while fewer failures than this are in a row (the
	// lost session counts), a failure of our own connection (the peer was
	// active) re-creates the peer without waiting.
	ownFailuresAtOnce = 3
)

// Machine is one uplink's state machine. It is not safe for concurrent
// use: one goroutine feeds it events and the time.
type Machine struct {
	cfg Config
	act Actions
	log *slog.Logger

	phase Phase
	since time.Time

	carrier bool
	ifindex int

	// The ToR: its link-local address and MAC, and where each came from.
	tor       netip.Addr
	torSource Source
	mac       net.HardwareAddr
	macSource Source
	lastHeard time.Time

	// The current BGP session.
	session     SessionState
	epoch       uint64
	established time.Time // zero unless Established
	eor         [2]bool
	families    [2]bool       // negotiated in the current session
	preserves   [2]bool       // the ToR's F bits from its last OPEN
	torRestart  time.Duration // its restart time from its last OPEN
	// collisions counts connection attempts that failed while opening
	// since the last session: the ToR connects too, so wait longer for it.
	collisions int

	helping    bool
	staleUntil time.Time // kept paths of an ended session are swept then
	syncUntil  time.Time // Established without End-of-RIB: forward anyway then
	noEOR      bool      // syncUntil passed without End-of-RIB

	// The BGP peer.
	generation uint32
	passive    bool
	rearmAt    time.Time // re-create the peer then (if idle)
	failures   int       // in a row since the last session, for backoff
	activeAt   time.Time // a passive peer becomes active then
	unstick    uint32
	stuckAt    time.Time // a session still opening then is stuck

	advertiseAt time.Time // discovering: advertise anyway then
	noSessionAt time.Time // connecting since noSessionWarnAfter before then: warn
	resolveAt   time.Time // MAC unknown: ask the kernel again then

	// What was last handed to act: outputs change only on a difference.
	applied struct {
		peer     Peer
		fwd      FIB
		interval time.Duration
	}
	warnedNoMAC, warnedNoToR bool
}

// New returns the machine of an uplink without carrier.
func New(cfg Config, act Actions, log *slog.Logger, now time.Time) *Machine {
	m := &Machine{cfg: cfg, act: act, log: log, since: now, passive: true}
	if cfg.Pinned.IsValid() {
		m.tor, m.torSource = cfg.Pinned, SourceConfig
	}
	return m
}

// Phase is the uplink's phase.
func (m *Machine) Phase() Phase { return m.phase }

// Status returns a snapshot.
func (m *Machine) Status() Status {
	return Status{
		Phase: m.phase, Since: m.since, Carrier: m.carrier, Ifindex: m.ifindex,
		ToR: m.tor, ToRSource: m.torSource, MAC: cloneMAC(m.mac), MACSource: m.macSource, LastHeard: m.lastHeard,
		Session: m.session, Epoch: m.epoch, EndOfRIB: m.eor, FIB: m.applied.fwd, Peer: m.applied.peer,
		Established: m.established, StaleUntil: m.staleUntil,
	}
}

// Handle feeds one event at time now.
func (m *Machine) Handle(ev Event, now time.Time) {
	switch ev.Kind {
	case CarrierUp:
		m.onCarrierUp(ev.Ifindex, now)
	case CarrierDown:
		m.onCarrierDown(now)
	case ToRAdvertised:
		m.onToR(ev.Addr, ev.MAC, SourceRA, now)
	case Advertised:
		m.onAdvertised(now)
	case ToRSilent:
		// Without carrier the RAs stop with everything else, and the
		// carrier loss has been handled.
		if ev.Addr == m.tor && m.carrier {
			if !m.established.IsZero() {
				m.log.Warn("the ToR's router advertisements stopped; keeping its session while BGP holds", "address", ev.Addr)
			} else {
				m.log.Info("the ToR's router advertisements stopped", "address", ev.Addr)
			}
			// Perhaps only RAs got lost: ask.
			m.act.Solicit()
		}
	case NeighborSeen:
		m.onNeighbor(ev, now)
	case Session:
		m.onSession(ev, now)
	case EndOfRIB:
		if ev.Epoch == m.epoch && !m.established.IsZero() && int(ev.Family) < len(m.eor) {
			m.eor[ev.Family] = true
			if m.helping {
				// The restarted ToR has resent its table; what it did not
				// resend was swept with the End-of-RIB.
				m.log.Info("the restarted ToR has resent its routes", "family", ev.Family)
				m.helping = false
			}
		}
	}
	m.Tick(now)
}

// Tick runs the timers due at now.
func (m *Machine) Tick(now time.Time) {
	if due(m.syncUntil, now) {
		m.syncUntil = time.Time{}
		m.noEOR = true
		m.log.Warn("the ToR sent no End-of-RIB within the hold time; using its routes anyway",
			"hint", "enable graceful restart on the ToR so that it marks the end of its table")
	}
	if due(m.staleUntil, now) {
		m.staleUntil = time.Time{}
		if m.helping {
			m.log.Warn("the ToR did not resend its routes within the restart time; no longer using the kept ones")
		}
		m.helping = false
		m.act.SweepStale()
	}
	if due(m.advertiseAt, now) {
		m.advertiseAt = time.Time{}
		if !m.tor.IsValid() && !m.warnedNoToR {
			m.warnedNoToR = true
			m.log.Warn("no router advertisement from the ToR; advertising ourselves so that it can connect",
				"waited", advertiseAfter, "hint", "enable IPv6 RAs on the ToR's port, or set [[neighbor]] address to its link-local address")
		}
		m.advertise(now)
	}
	if due(m.resolveAt, now) {
		m.resolveAt = time.Time{}
		if m.tor.IsValid() && m.mac == nil {
			m.act.ResolveMAC(m.tor)
			m.resolveAt = now.Add(resolveEvery)
		}
	}
	if due(m.activeAt, now) {
		m.activeAt = time.Time{}
		if m.passive && m.established.IsZero() && !m.session.opening() {
			m.log.Info("the ToR has not connected; connecting to it", "waited", m.activeWait())
			m.passive = false
			m.generation++
		}
	}
	if due(m.noSessionAt, now) {
		m.noSessionAt = time.Time{}
		if m.phase == Connecting {
			m.log.Warn("no BGP session with the ToR although it is on the link", "address", m.tor, "for", noSessionWarnAfter,
				"hint", "check the ToR's side of the session; an FRR ToR can keep an unnumbered peer 'Waiting for NHT' after its port flapped, until the port is shut and enabled again")
		}
	}
	if due(m.stuckAt, now) {
		m.stuckAt = time.Time{}
		if m.session.opening() {
			m.log.Warn("BGP session stuck while opening for longer than the hold time; replacing the peer", "state", m.session)
			m.unstick++
		}
	}
	if due(m.rearmAt, now) {
		m.rearmAt = time.Time{}
		if m.session == SessionIdle && m.carrier && m.tor.IsValid() {
			// The fresh peer waits for the ToR to connect first.
			m.passive = true
			m.generation++
		}
	}
	m.settle(now)
}

// Deadline is when Tick must run next; zero when no timer is pending.
func (m *Machine) Deadline() time.Time {
	var next time.Time
	for _, t := range []time.Time{m.staleUntil, m.syncUntil, m.advertiseAt, m.resolveAt, m.activeAt, m.rearmAt, m.stuckAt, m.noSessionAt} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	return next
}

func due(t, now time.Time) bool { return !t.IsZero() && !now.Before(t) }

func (m *Machine) onCarrierUp(ifindex int, now time.Time) {
	if m.carrier && ifindex == m.ifindex {
		return
	}
	if m.carrier {
		// A new interface under the same name: as if the old one went.
		m.onCarrierDown(now)
	}
	m.carrier, m.ifindex = true, ifindex
	m.passive = true
	if m.tor.IsValid() {
		// The ToR we had, most likely the same one: configure its peer and
		// advertise at once (the RA leaves once our address is usable), so
		// its connection is accepted the moment it comes.
		m.advertise(now)
	} else {
		m.advertiseAt = now.Add(advertiseAfter)
	}
	m.act.Solicit()
}

func (m *Machine) onCarrierDown(now time.Time) {
	if !m.carrier {
		return
	}
	m.carrier = false
	if !m.established.IsZero() {
		// The peer goes with the carrier, and its session with it.
		m.onSessionLost(Event{Detail: "carrier lost"}, now)
	}
	m.helping = false // a ToR we cannot reach forwards nothing for us
	m.advertiseAt, m.activeAt, m.rearmAt, m.resolveAt, m.stuckAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}, time.Time{}
	m.failures = 0
	// The session is gone with the link; the peer's removal reports it
	// (the loss of an Established session). The next peer is a new one.
	m.session = SessionIdle
	m.generation++
	// The ToR's address is kept: after a flap it is most likely the same
	// ToR, so its peer is configured again at once. Its MAC is learned
	// again (from its RA or the kernel, which resolves it as soon as the
	// session talks): the uplink forwards only after End-of-RIB anyway.
	m.lastHeard = time.Time{}
	m.mac, m.macSource = nil, SourceNone
	m.warnedNoMAC = false
}

// onToR takes the ToR's address (and MAC) from a router advertisement.
func (m *Machine) onToR(addr netip.Addr, mac net.HardwareAddr, src Source, now time.Time) {
	if !m.carrier {
		return // a late RA from before the carrier loss
	}
	if m.cfg.Pinned.IsValid() && addr != m.cfg.Pinned {
		return // another router on the link; the ToR is configured
	}
	heardAgain := m.lastHeard.IsZero() || m.tor != addr
	switch {
	case addr == m.tor:
		if src > m.torSource {
			m.torSource = src
		}
	case m.torSource <= src || !m.tor.IsValid():
		if m.tor.IsValid() {
			m.log.Info("ToR address changed", "old", m.tor, "new", addr, "source", src)
		} else {
			m.log.Info("ToR found", "address", addr, "source", src)
		}
		m.setToR(addr, src)
	default:
		return // a weaker source names another address: keep ours
	}
	m.lastHeard = now
	if mac != nil {
		m.setMAC(mac, src)
	}
	if heardAgain || m.session != SessionEstablished {
		// The ToR is there again, or we have no session with it: make
		// sure it has heard us (FRR will not connect before it has).
		m.advertise(now)
	}
}

// onNeighbor takes a kernel neighbour entry for a link-local address on
// the uplink: the ToR's MAC for its known address, or the ToR's address
// itself when no RA named one (a ToR that sends none connects to us, and
// the kernel resolves it on the way; its neighbour advertisements say it
// is a router).
func (m *Machine) onNeighbor(ev Event, now time.Time) {
	if !m.carrier {
		return
	}
	switch {
	case ev.Addr == m.tor:
		if ev.MAC != nil {
			m.setMAC(ev.MAC, SourceKernel)
		}
		m.lastHeard = now
	case !m.tor.IsValid() && !m.cfg.Pinned.IsValid() && ev.MAC != nil && ev.Router:
		m.log.Info("ToR found in the neighbour table (it sent no router advertisement)", "address", ev.Addr, "mac", ev.MAC.String(), "router", ev.Router)
		m.setToR(ev.Addr, SourceKernel)
		m.setMAC(ev.MAC, SourceKernel)
		m.lastHeard = now
		m.advertise(now)
	}
}

func (m *Machine) setToR(addr netip.Addr, src Source) {
	m.tor, m.torSource = addr, src
	m.mac, m.macSource = nil, SourceNone
	m.warnedNoMAC = false
	m.advertiseAt = time.Time{}
}

func (m *Machine) setMAC(mac net.HardwareAddr, src Source) {
	if bytes.Equal(mac, m.mac) {
		if src > m.macSource {
			m.macSource = src
		}
		return
	}
	if m.mac != nil {
		m.log.Info("ToR MAC changed", "old", m.mac.String(), "new", mac.String(), "source", src)
	}
	m.mac, m.macSource = cloneMAC(mac), src
	m.resolveAt = time.Time{}
}

func (m *Machine) onSession(ev Event, now time.Time) {
	switch {
	case ev.State == SessionEstablished:
		if ev.Epoch <= m.epoch && !m.established.IsZero() {
			return // an event already seen
		}
		m.session, m.epoch, m.established = SessionEstablished, ev.Epoch, now
		m.eor, m.families = [2]bool{}, ev.Families
		if !m.families[IPv4] && !m.families[IPv6] {
			m.families[IPv4] = true // no multiprotocol capability: IPv4 (RFC 4760)
		}
		m.preserves, m.torRestart = ev.PreservesForwarding, ev.RestartTime
		m.rearmAt, m.failures, m.activeAt, m.stuckAt, m.collisions = time.Time{}, 0, time.Time{}, time.Time{}, 0
		m.syncUntil, m.noEOR = now.Add(m.cfg.HoldTime), false
		if m.helping && !m.preserves[IPv4] && !m.preserves[IPv6] {
			// RFC 4724 4.2: no F bit in the new OPEN means the ToR lost
			// its forwarding state: its old routes go now.
			m.log.Warn("the restarted ToR did not preserve its forwarding state; dropping its kept routes")
			m.helping = false
			m.staleUntil = time.Time{}
			m.act.SweepStale()
		}
		if m.helping {
			// The kept paths serve until this session's End-of-RIB.
			m.staleUntil = now.Add(m.cfg.RestartTime)
		}
		return
	case !m.established.IsZero() && (ev.Epoch == 0 || ev.Epoch == m.epoch):
		m.onSessionLost(ev, now)
	}
	if ev.State.opening() && !m.session.opening() {
		m.stuckAt = now.Add(m.cfg.HoldTime)
	} else if !ev.State.opening() {
		m.stuckAt = time.Time{}
	}
	m.session = ev.State
	if ev.Reason == ReasonCollision && ev.State == SessionIdle {
		// Both sides connected at once and each dropped a connection:
		// the ToR connects on its own, so the next peer waits longer.
		m.collisions++
	}
	if ev.State == SessionIdle {
		m.scheduleRearm(ev, now)
	}
}

func (m *Machine) onSessionLost(ev Event, now time.Time) {
	m.established = time.Time{}
	m.eor = [2]bool{}
	m.syncUntil, m.noEOR = time.Time{}, false
	// The paths of the ended session are kept (stale) for the restart
	// time: a ToR that comes back resends them, and until then they cost
	// nothing as long as they are not used.
	m.staleUntil = now.Add(m.cfg.RestartTime)
	helper := m.cfg.GracefulRestart && ev.Graceful && m.carrier && (m.preserves[IPv4] || m.preserves[IPv6])
	if helper {
		if m.torRestart > 0 && m.torRestart < m.cfg.RestartTime {
			m.staleUntil = now.Add(m.torRestart)
		}
		m.log.Info("BGP session lost; the ToR preserves its forwarding state, so its routes stay in use while it restarts",
			"until", m.staleUntil.Format(time.RFC3339), "reason", ev.Detail)
	} else {
		m.log.Warn("BGP session lost; the uplink carries no traffic until the ToR has resent its routes", "reason", ev.Detail)
	}
	m.helping = helper
	if m.carrier {
		// So the ToR can connect again as soon as it is able to.
		m.advertise(now)
		m.act.Solicit()
	}
}

// scheduleRearm plans a fresh peer after a failure: GoBGP would keep the
// failed one idle, refusing the ToR, for 5 s. The first comes at once,
// later ones back off; except that our own connection failing is no
// reason to wait, for the first few times: a ToR whose BGP is just coming
// up (it restarted) resets it and connects to us a moment later, which
// the failed peer would refuse. (Seen in make scale: a session back 5 s
// late, the ToR's connection refused 6 ms before the backed-off peer.)
func (m *Machine) scheduleRearm(ev Event, now time.Time) {
	var delay time.Duration
	switch {
	case ev.Reason == ReasonMaxPrefixes:
		delay = m.cfg.MaxPrefixesRestart
	case ev.Reason == ReasonRefused:
		delay = rearmMax
	case !m.passive && m.failures < ownFailuresAtOnce:
	case m.failures > 0:
		delay = min(rearmMin<<min(m.failures-1, 10), rearmMax)
	}
	m.failures++
	m.rearmAt = now.Add(delay)
	m.activeAt = time.Time{}
}

// advertise sends our RA now and keeps advertising.
func (m *Machine) advertise(now time.Time) {
	m.advertiseAt = time.Time{}
	m.act.Advertise()
}

// onAdvertised: our RA went out. A ToR that connects on its own does so
// now; give it activeWait before connecting ourselves.
func (m *Machine) onAdvertised(now time.Time) {
	if m.passive && m.established.IsZero() && m.activeAt.IsZero() && m.carrier && m.tor.IsValid() {
		m.activeAt = now.Add(m.activeWait())
	}
}

// activeWait is how long a passive peer waits for the ToR: activeAfter,
// doubled for each collision since the last session, at most 16 times.
func (m *Machine) activeWait() time.Duration {
	return activeAfter << min(m.collisions, 4)
}

// derive is the phase the facts add up to.
func (m *Machine) derive(now time.Time) Phase {
	switch {
	case !m.carrier:
		return NoCarrier
	case !m.tor.IsValid():
		return Discovering
	case m.helping:
		return Helping
	case m.established.IsZero():
		return Connecting
	case m.synced(IPv4) && m.synced(IPv6):
		return Forwarding
	default:
		return Syncing
	}
}

// synced: the ToR has sent its whole table of family f (or the session
// does not carry f), or has had the hold time to do so without saying.
func (m *Machine) synced(f Family) bool {
	return m.eor[f] || m.noEOR || !m.families[f]
}

// settle derives the phase and hands any changed output to act.
func (m *Machine) settle(now time.Time) {
	if m.established.IsZero() || m.synced(IPv4) && m.synced(IPv6) {
		m.syncUntil = time.Time{}
	}
	phase := m.derive(now)
	if phase != m.phase {
		m.log.Info("uplink "+phase.String(), "was", m.phase.String(), "after", now.Sub(m.since).Round(time.Millisecond))
		m.phase, m.since = phase, now
		m.noSessionAt = time.Time{}
		if phase == Connecting {
			m.noSessionAt = now.Add(noSessionWarnAfter)
		}
	}

	var peer Peer
	if m.carrier && m.tor.IsValid() {
		peer = Peer{Addr: m.tor, Passive: m.passive, Generation: m.generation, Unstick: m.unstick}
	}
	if peer != m.applied.peer {
		m.applied.peer = peer
		m.act.SetPeer(peer)
	}

	var fwd FIB
	switch phase {
	case Helping:
		fwd = FIB{V4: m.preserves[IPv4] || m.eor[IPv4], V6: m.preserves[IPv6] || m.eor[IPv6]}
	case Forwarding:
		fwd = FIB{V4: m.families[IPv4], V6: m.families[IPv6]}
	case Syncing:
		fwd = FIB{V4: m.families[IPv4], V6: m.families[IPv6], Syncing: true}
	}
	if fwd.V4 && m.mac == nil {
		fwd.V4 = false
		if !m.warnedNoMAC {
			m.warnedNoMAC = true
			m.log.Warn("the ToR's MAC is not known yet; IPv4 routes wait for it (IPv6 routes do not)",
				"hint", "the kernel is resolving it by neighbour solicitation")
		}
	}
	if fwd.V4 || fwd.V6 {
		fwd.Ifindex, fwd.Addr = m.ifindex, m.tor
		if fwd.V4 {
			fwd.MAC = cloneMAC(m.mac)
		}
	} else {
		fwd = FIB{}
	}
	if !fwd.equal(m.applied.fwd) {
		m.applied.fwd = fwd
		m.act.SetFIB(fwd)
	}
	interval := advertiseEvery
	if phase.Forwards() {
		interval = advertiseEveryWhileUp
	}
	if interval != m.applied.interval {
		m.applied.interval = interval
		m.act.SetAdvertiseInterval(interval)
	}

	if m.carrier && m.tor.IsValid() && m.mac == nil && m.resolveAt.IsZero() {
		m.act.ResolveMAC(m.tor)
		m.resolveAt = now.Add(resolveEvery)
	}
}

func cloneMAC(mac net.HardwareAddr) net.HardwareAddr {
	if mac == nil {
		return nil
	}
	return append(net.HardwareAddr(nil), mac...)
}
