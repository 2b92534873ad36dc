// Package bgp runs fabricd's BGP speaker: GoBGP v4 embedded in-process.
//
// Every GoBGP type stays inside this package. The rest of fabricd sees
// uplinks (by a small ID), prefixes and AS-path lengths, which is all the
// FIB needs, plus plain status structs for the API.
//
// Why GoBGP v4 and not v3: v3 is end-of-line (last tag v3.37.0) and, for
// exactly the link-local peers fabricd uses, advertises an IPv4 next hop of
// "::", silently skips TCP MD5 and cannot add interface peers through its
// API. v4 fixes these and adds BFD.
package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/fabricd/fabricd/config"
)

// Handler receives what the speaker learns. Route is called from GoBGP's
// event goroutine for every received prefix, so it must be cheap: hand the
// work to another goroutine rather than doing I/O.
type Handler interface {
	// Route reports a path from uplink id; withdraw removes it.
	Route(id int, prefix netip.Prefix, asPathLen int, withdraw bool)
	// SessionUp and SessionDown report Established being entered and left.
	// graceful says the peer's graceful restart applies: its routes are
	// to be kept (stale) until it has resent them.
	SessionUp(id int)
	SessionDown(id int, graceful bool)
	// EndOfRIB reports that uplink id has sent its whole table of one
	// family (4 or 6).
	EndOfRIB(id int, family int)
}

// Config is the speaker's global configuration: identity, and the [bgp]
// section (timers, port, graceful restart).
type Config struct {
	ASN      uint32
	RouterID netip.Addr
	config.BGP
	Logger *slog.Logger
}

// Peer is an unnumbered neighbor as discovered on its uplink.
type Peer struct {
	ID       int
	Addr     netip.Addr // link-local, zone = the interface
	Neighbor config.Neighbor
}

// Interface is the uplink the peer is on.
func (p Peer) Interface() string { return p.Neighbor.Interface }

// Speaker wraps a GoBGP server.
type Speaker struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	srv     *server.BgpServer // set by New; served by Run

	mu sync.RWMutex
	// peers by interface, and the reverse index used on the hot path.
	peers  map[string]*peerState
	byAddr map[netip.Addr]*peerState
	// announced maps each originated prefix to GoBGP's path handle.
	announced map[netip.Prefix]*apiutil.Path

	// rearms carries interfaces whose GoBGP peer Run must re-create.
	rearms chan rearmRequest

	// restarting is set when fabricd restarts with its forwarding state
	// intact (routes left in the kernel): sessions then advertise the
	// graceful restart capability's restart and forwarding bits, so the
	// peers keep fabricd's routes until its End-of-RIB.
	restarting atomic.Bool
	// gracefulStop makes Run end the sessions without a NOTIFICATION, so
	// the peers keep fabricd's routes while it restarts.
	gracefulStop atomic.Bool
	stopping     atomic.Bool
}

type peerState struct {
	Peer
	// accepted is false until the session is Established with an AS the
	// neighbor's remote-as allows; routes from other peers are ignored.
	accepted bool
	// preservesForwarding: the peer's graceful restart capability says
	// it keeps forwarding IPv4 while it restarts (the F bit), so its
	// routes may be kept as stale when its session ends that way.
	preservesForwarding bool
	lastState           gobgp.FSMState
	stateSince          time.Time
}

// New returns a speaker; Start runs it.
func New(cfg Config, h Handler) *Speaker {
	s := &Speaker{
		cfg:       cfg,
		handler:   h,
		log:       cfg.Logger.With("component", "bgp"),
		peers:     make(map[string]*peerState),
		byAddr:    make(map[netip.Addr]*peerState),
		announced: make(map[netip.Prefix]*apiutil.Path),
		rearms:    make(chan rearmRequest, config.MaxNeighbors),
	}
	s.srv = newServer(cfg.Logger, &s.stopping)
	return s
}

// SetRestarting says whether fabricd restarted with its routes still in
// the kernel. Call it before peers are added.
func (s *Speaker) SetRestarting(b bool) { s.restarting.Store(b) }

// StopGracefully makes Run end the sessions without a NOTIFICATION when
// its context is cancelled: a restart, not a shutdown. Peers with graceful
// restart keep fabricd's routes for the restart time.
func (s *Speaker) StopGracefully() { s.gracefulStop.Store(true) }

func newServer(log *slog.Logger, stopping *atomic.Bool) *server.BgpServer {
	// GoBGP logs every UPDATE at debug level; keep its records at info
	// and above even when fabricd itself logs debug.
	lvl := new(slog.LevelVar)
	lvl.Set(slog.LevelInfo)
	gobgpLog := slog.New(gobgpHandler{Handler: log.Handler(), min: lvl, stopping: stopping}).With("component", "gobgp")
	return server.NewBgpServer(server.LoggerOption(gobgpLog, lvl))
}

// localOnlyPolicy accepts only locally originated routes.
const localOnlyPolicy = "fabricd-local-only"

// Run starts the BGP server and blocks until ctx is cancelled, then stops
// it. ready is closed once peers can be added.
func (s *Speaker) Run(ctx context.Context, ready chan<- struct{}) error {
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.srv.Serve()
	}()
	defer func() {
		s.stopping.Store(true)
		// StopBgp ends the sessions, with a NOTIFICATION (Cease) unless
		// this is a graceful stop; Stop then also ends GoBGP's BFD loop
		// (and reports, harmlessly, that BGP was already stopped).
		if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: s.gracefulStop.Load()}); err != nil {
			s.log.Warn("stopping BGP", "err", err)
		}
		s.srv.Stop()
		<-served
	}()

	if err := s.start(ctx); err != nil {
		return err
	}
	close(ready)
	// Re-creations waiting for their time, by interface, and when each
	// interface's last one ran: at most one a second, so that a peer that
	// keeps failing cannot make it spin.
	pending := map[string]time.Time{}
	last := map[string]time.Time{}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	stuck := time.NewTicker(time.Second)
	defer stuck.Stop()
	for {
		var next time.Time
		for _, at := range pending {
			if next.IsZero() || at.Before(next) {
				next = at
			}
		}
		if next.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(max(time.Until(next), 0))
		}
		select {
		case <-ctx.Done():
			return nil
		case r := <-s.rearms:
			if r.reset != "" {
				// GoBGP then keeps the peer idle for 30 s: a misconfigured
				// ToR cannot make it reconnect in a tight loop.
				if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: r.addr.String(), Communication: r.reset}); err != nil {
					s.log.Warn("resetting refused peer", "interface", r.iface, "err", err)
				}
				continue
			}
			at := time.Now().Add(r.after)
			if earliest := last[r.iface].Add(time.Second); at.Before(earliest) {
				at = earliest
			}
			if old, ok := pending[r.iface]; !ok || at.After(old) {
				pending[r.iface] = at
			}
		case <-stuck.C:
			for _, iface := range s.stuckOpening() {
				s.requestRearm(iface, 0)
			}
		case now := <-timer.C:
			for iface, at := range pending {
				if !now.Before(at) {
					delete(pending, iface)
					last[iface] = now
					s.rearm(ctx, iface)
				}
			}
		}
	}
}

// stuckOpening lists the peers that have been opening (OpenSent,
// OpenConfirm) for longer than the hold time. GoBGP gives them its OPEN
// hold time of 240 s; a session whose connection died unnoticed meanwhile
// (with TTL security, a reset sent with a low TTL is dropped by our own
// minimum-TTL check) would sit there that long.
func (s *Speaker) stuckOpening() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for iface, st := range s.peers {
		opening := st.lastState == gobgp.BGP_FSM_OPENSENT || st.lastState == gobgp.BGP_FSM_OPENCONFIRM
		if opening && time.Since(st.stateSince) > s.cfg.HoldTime {
			s.log.Warn("BGP session stuck while opening; re-creating the peer", "interface", iface, "state", st.lastState)
			out = append(out, iface)
		}
	}
	return out
}

// rearmRequest asks Run to re-create iface's GoBGP peer after a delay, or
// with reset set, to reset its session saying why.
type rearmRequest struct {
	iface string
	after time.Duration
	reset string
	addr  netip.Addr
}

// requestRearm queues a re-creation; it never blocks GoBGP's event
// goroutine.
func (s *Speaker) requestRearm(iface string, after time.Duration) {
	select {
	case s.rearms <- rearmRequest{iface: iface, after: after}:
	default:
		s.log.Warn("too many pending peer re-creations; dropped one", "interface", iface)
	}
}

func (s *Speaker) start(ctx context.Context) error {
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        s.cfg.ASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: int32(s.cfg.ListenPort),
		// Only IPv6 link-local peers exist; listening on :: covers them.
		ListenAddresses: []string{"::"},
	}})
	if err != nil {
		return fmt.Errorf("starting BGP: %w", err)
	}

	err = s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: localOnlyPolicy,
		Statements: []*api.Statement{{
			Name:       "local",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
		}},
	}})
	if err != nil {
		return fmt.Errorf("adding policy: %w", err)
	}
	// Only locally originated routes go out (a server is never transit),
	// and only they enter GoBGP's own RIB: fabricd selects and installs
	// the received paths itself (package rib), from the updates it
	// watches. Rejecting them at GoBGP's import keeps GoBGP from running
	// its best-path selection and its propagation to the other peers for
	// every received prefix, which cost more than half of its CPU time
	// (formatting a debug string for each path sent back to its source
	// among it) and a copy of the table in memory. GoBGP still keeps
	// every peer's Adj-RIB-In, which `show bgp` reads.
	for _, dir := range []api.PolicyDirection{api.PolicyDirection_POLICY_DIRECTION_EXPORT, api.PolicyDirection_POLICY_DIRECTION_IMPORT} {
		err = s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     dir,
			Policies:      []*api.Policy{{Name: localOnlyPolicy}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		}})
		if err != nil {
			return fmt.Errorf("assigning policy: %w", err)
		}
	}

	// Pre-policy updates arrive once per UPDATE message with all its
	// prefixes, the cheapest stream GoBGP offers; fabricd applies its own
	// policy. What GoBGP withdraws by itself when a session ends is left
	// to the Handler's SessionDown, which decides whether the paths go or
	// stay as stale.
	err = s.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPathUpdate: s.onPaths,
		OnPeerUpdate: s.onPeer,
		OnPathEor:    s.onEOR,
	}, server.WatchUpdate(false, "", ""), server.WatchPeer(), server.WatchEor(false))
	if err != nil {
		return fmt.Errorf("watching BGP events: %w", err)
	}
	return nil
}

// SetPeer adds the neighbor on p.Interface, or moves it to a new address.
// A peer whose address is unchanged is left alone (its session keeps
// running).
func (s *Speaker) SetPeer(ctx context.Context, p Peer) error {
	s.mu.Lock()
	old, exists := s.peers[p.Interface()]
	s.mu.Unlock()
	if exists && old.Addr == p.Addr && old.Neighbor == p.Neighbor {
		return nil
	}
	if exists {
		if err := s.RemovePeer(ctx, p.Interface()); err != nil {
			return err
		}
	}
	// Register before adding so no event of the new session is missed.
	st := &peerState{Peer: p}
	s.mu.Lock()
	s.peers[p.Interface()] = st
	s.byAddr[p.Addr] = st
	s.mu.Unlock()

	if err := s.addPeer(ctx, p); err != nil {
		s.mu.Lock()
		delete(s.peers, p.Interface())
		delete(s.byAddr, p.Addr)
		s.mu.Unlock()
		return err
	}
	s.log.Info("BGP peer configured", "interface", p.Interface(), "address", p.Addr, "remote_as", p.Neighbor.RemoteAS,
		"md5", p.Neighbor.Password != "", "ttl_security", p.Neighbor.TTLSecurity, "bfd", p.Neighbor.BFD, "max_prefixes", p.Neighbor.MaxPrefixes)
	return nil
}

func (s *Speaker) addPeer(ctx context.Context, p Peer) error {
	n := p.Neighbor
	peerASN := uint32(0) // "external": accept any AS, checked on Established
	switch n.RemoteAS.Kind {
	case config.RemoteInternal:
		peerASN = s.cfg.ASN
	case config.RemoteNumber:
		peerASN = n.RemoteAS.ASN
	}
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Addr.String(),
			PeerAsn:         peerASN,
			Description:     n.Interface,
			AuthPassword:    n.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(s.cfg.HoldTime / time.Second),
			KeepaliveInterval: uint64(s.cfg.Keepalive / time.Second),
			ConnectRetry:      uint64(s.cfg.ConnectRetry / time.Second),
		}},
		AfiSafis:        []*api.AfiSafi{s.afiSafi(api.Family_AFI_IP, n), s.afiSafi(api.Family_AFI_IP6, n)},
		GracefulRestart: s.gracefulRestart(),
	}
	if n.TTLSecurity {
		peer.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: 255}
	}
	if n.BFD {
		us := uint32(n.BFDInterval / time.Microsecond)
		peer.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: us,
			RequiredMinimumReceive:   us,
			DetectionMultiplier:      uint32(n.BFDMultiplier),
		}
	}
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		return fmt.Errorf("adding BGP peer %s on %s: %w", p.Addr, n.Interface, err)
	}
	return nil
}

func (s *Speaker) afiSafi(afi api.Family_Afi, n config.Neighbor) *api.AfiSafi {
	a := &api.AfiSafi{
		Config:            &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
		MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: s.cfg.GracefulRestart}},
	}
	if n.MaxPrefixes > 0 {
		// GoBGP counts the peer's Adj-RIB-In before any policy and ends
		// the session (Cease, maximum prefixes) once it is exceeded, so
		// memory stays bounded whatever the peer sends.
		a.PrefixLimits = &api.PrefixLimit{MaxPrefixes: uint32(n.MaxPrefixes)}
	}
	return a
}

func (s *Speaker) gracefulRestart() *api.GracefulRestart {
	if !s.cfg.GracefulRestart {
		return nil
	}
	return &api.GracefulRestart{
		Enabled:     true,
		RestartTime: uint32(s.cfg.RestartTime / time.Second),
		// After a restart fabricd waits this long at most for every
		// peer's End-of-RIB before it sends its own routes.
		DeferralTime:    uint32(s.cfg.HoldTime / time.Second),
		LocalRestarting: s.restarting.Load(),
	}
}

// rearm re-creates the GoBGP peer of a session that just ended. GoBGP
// keeps a peer idle for 5 s after losing a session (a constant) and
// refuses the ToR's connections meanwhile, after which FRR backs off for
// its connect-retry time; a fresh peer accepts and connects at once.
func (s *Speaker) rearm(ctx context.Context, iface string) {
	s.mu.RLock()
	st, ok := s.peers[iface]
	var p Peer
	if ok {
		p = st.Peer
	}
	accepted := ok && st.accepted
	s.mu.RUnlock()
	if !ok || accepted {
		return // gone, or already back up
	}
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Addr.String()}); err != nil {
		s.log.Warn("re-creating BGP peer", "interface", iface, "err", err)
		return
	}
	if err := s.addPeer(ctx, p); err != nil {
		s.log.Error("re-creating BGP peer", "interface", iface, "err", err)
	}
}

// RemovePeer deletes the neighbor on iface, if any.
func (s *Speaker) RemovePeer(ctx context.Context, iface string) error {
	s.mu.Lock()
	st, ok := s.peers[iface]
	if ok {
		delete(s.peers, iface)
		delete(s.byAddr, st.Addr)
	}
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: st.Addr.String()}); err != nil {
		return fmt.Errorf("removing BGP peer %s on %s: %w", st.Addr, iface, err)
	}
	if st.accepted {
		s.handler.SessionDown(st.ID, false)
	}
	return nil
}

// ResetPeer drops the session on iface at once (carrier loss: there is no
// point waiting for the hold timer). It reconnects by itself.
func (s *Speaker) ResetPeer(ctx context.Context, iface string) error {
	s.mu.RLock()
	st, ok := s.peers[iface]
	s.mu.RUnlock()
	if !ok {
		return nil
	}
	err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: st.Addr.String(), Communication: "uplink lost carrier"})
	if err != nil {
		return fmt.Errorf("resetting BGP peer on %s: %w", iface, err)
	}
	return nil
}

// Announce originates prefix.
func (s *Speaker) Announce(ctx context.Context, prefix netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.announced[prefix]; ok {
		return nil
	}
	nlri, err := gobgp.NewIPAddrPrefix(prefix)
	if err != nil {
		return fmt.Errorf("announcing %s: %w", prefix, err)
	}
	// An unspecified next hop makes GoBGP use the session's own address:
	// the link-local IPv6 address, for IPv4 as an RFC 8950 extended next
	// hop.
	var path *apiutil.Path
	origin := gobgp.NewPathAttributeOrigin(gobgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	if prefix.Addr().Is4() {
		nh, err := gobgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return fmt.Errorf("announcing %s: %w", prefix, err)
		}
		path = &apiutil.Path{Family: gobgp.RF_IPv4_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, nh}}
	} else {
		mp, err := gobgp.NewPathAttributeMpReachNLRI(gobgp.RF_IPv6_UC, []gobgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return fmt.Errorf("announcing %s: %w", prefix, err)
		}
		path = &apiutil.Path{Family: gobgp.RF_IPv6_UC, Nlri: nlri, Attrs: []gobgp.PathAttributeInterface{origin, mp}}
	}
	if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("announcing %s: %w", prefix, err)
	}
	s.announced[prefix] = path
	return nil
}

// Withdraw stops originating prefix.
func (s *Speaker) Withdraw(ctx context.Context, prefix netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	path, ok := s.announced[prefix]
	if !ok {
		return nil
	}
	if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("withdrawing %s: %w", prefix, err)
	}
	delete(s.announced, prefix)
	return nil
}

// onPaths is GoBGP's update callback: keep it cheap.
func (s *Speaker) onPaths(paths []*apiutil.Path, _ time.Time) {
	if len(paths) == 0 {
		return
	}
	s.mu.RLock()
	st, ok := s.byAddr[paths[0].PeerAddress]
	accepted := ok && st.accepted
	s.mu.RUnlock()
	if !accepted {
		return
	}
	for _, p := range paths {
		if p.Family != gobgp.RF_IPv4_UC && p.Family != gobgp.RF_IPv6_UC {
			continue
		}
		// Every path of one event comes from the same peer, but check:
		// GoBGP does not promise it.
		if p.PeerAddress != st.Addr {
			continue
		}
		prefix, ok := nlriPrefix(p.Nlri)
		if !ok {
			continue
		}
		s.handler.Route(st.ID, prefix, asPathLen(p.Attrs), p.Withdrawal)
	}
}

func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr := ev.Peer.State.NeighborAddress
	s.mu.Lock()
	st, ok := s.byAddr[addr]
	if !ok {
		s.mu.Unlock()
		return
	}
	state := ev.Peer.State.SessionState
	established := state == gobgp.BGP_FSM_ESTABLISHED
	wasAccepted := st.accepted
	// A session that fails while opening (a connection collision with the
	// ToR, which connects the moment it hears our RA) leaves GoBGP idle
	// for 5 s, refusing the ToR meanwhile.
	failedOpening := state == gobgp.BGP_FSM_IDLE && (st.lastState == gobgp.BGP_FSM_OPENSENT || st.lastState == gobgp.BGP_FSM_OPENCONFIRM)
	if state != st.lastState {
		st.lastState, st.stateSince = state, time.Now()
	}
	remoteAS := ev.Peer.State.PeerASN
	var refuse string
	if established {
		switch {
		case st.Neighbor.RemoteAS.Kind == config.RemoteExternal && remoteAS == s.cfg.ASN:
			refuse = fmt.Sprintf("peer AS %d is our own, but remote-as is external", remoteAS)
		}
		st.accepted = refuse == ""
		st.preservesForwarding = preservesIPv4Forwarding(ev.Peer.State.RemoteCap)
	} else {
		st.accepted = false
	}
	// RFC 4724: stale routes are kept only for families whose forwarding
	// state the restarting peer said it preserves.
	graceful := ev.Peer.State.DisconnectReason == api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART && st.preservesForwarding
	id, iface := st.ID, st.Interface()
	maxPrefixes, maxPrefixesRestart := st.Neighbor.MaxPrefixes, st.Neighbor.MaxPrefixesRestart
	s.mu.Unlock()

	switch {
	case refuse != "":
		s.log.Error("refusing BGP session", "interface", iface, "reason", refuse)
		select {
		case s.rearms <- rearmRequest{iface: iface, reset: refuse, addr: addr}:
		default:
		}
	case failedOpening:
		s.log.Info("BGP session failed while opening; re-creating the peer", "interface", iface, "reason", ev.Peer.State.DisconnectMessage)
		s.requestRearm(iface, 0)
	case established && !wasAccepted:
		s.log.Info("BGP session established", "interface", iface, "peer", addr, "remote_as", remoteAS, "router_id", ev.Peer.State.RouterID)
		s.handler.SessionUp(id)
	case !established && wasAccepted:
		s.log.Warn("BGP session down", "interface", iface, "peer", addr, "state", ev.Peer.State.SessionState,
			"reason", ev.Peer.State.DisconnectMessage)
		s.handler.SessionDown(id, graceful)
		if ev.Peer.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT {
			s.log.Error("peer sent more prefixes than max-prefixes; session torn down", "interface", iface,
				"max_prefixes", maxPrefixes, "retry_in", maxPrefixesRestart)
			s.requestRearm(iface, maxPrefixesRestart)
			return
		}
		s.requestRearm(iface, 0)
	}
}

func (s *Speaker) onEOR(p *apiutil.Path, _ time.Time) {
	family := 0
	switch p.Family {
	case gobgp.RF_IPv4_UC:
		family = 4
	case gobgp.RF_IPv6_UC:
		family = 6
	default:
		return
	}
	s.mu.RLock()
	st, ok := s.byAddr[p.PeerAddress]
	s.mu.RUnlock()
	if ok {
		s.handler.EndOfRIB(st.ID, family)
	}
}

// preservesIPv4Forwarding reads the F bit of IPv4 unicast in a graceful
// restart capability.
func preservesIPv4Forwarding(caps []gobgp.ParameterCapabilityInterface) bool {
	for _, c := range caps {
		gr, ok := c.(*gobgp.CapGracefulRestart)
		if !ok {
			continue
		}
		for _, t := range gr.Tuples {
			if gobgp.NewFamily(t.AFI, t.SAFI) == gobgp.RF_IPv4_UC && t.Flags&0x80 != 0 {
				return true
			}
		}
	}
	return false
}

func nlriPrefix(n gobgp.NLRI) (netip.Prefix, bool) {
	switch v := n.(type) {
	case *gobgp.IPAddrPrefix:
		return v.Prefix, true
	}
	return netip.Prefix{}, false
}

// asPathLen counts the AS path as best-path selection does: every AS of a
// sequence, one for a set.
func asPathLen(attrs []gobgp.PathAttributeInterface) int {
	for _, a := range attrs {
		if ap, ok := a.(*gobgp.PathAttributeAsPath); ok {
			n := 0
			for _, seg := range ap.Value {
				n += seg.ASLen()
			}
			return n
		}
	}
	return 0
}

// gobgpHandler drops GoBGP's records below min whatever the wrapped
// handler accepts, and the one error Stop logs after StopBgp.
type gobgpHandler struct {
	slog.Handler
	min      slog.Leveler
	stopping *atomic.Bool
}

func (h gobgpHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min.Level() && h.Handler.Enabled(ctx, l)
}

func (h gobgpHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.stopping.Load() && r.Message == "failed to stop BGP server" {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h gobgpHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return gobgpHandler{Handler: h.Handler.WithAttrs(attrs), min: h.min, stopping: h.stopping}
}

func (h gobgpHandler) WithGroup(name string) slog.Handler {
	return gobgpHandler{Handler: h.Handler.WithGroup(name), min: h.min, stopping: h.stopping}
}
