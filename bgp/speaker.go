// Package bgp runs fabricd's BGP speaker: GoBGP v4 embedded in-process.
//
// Every GoBGP type stays inside this package. The rest of fabricd sees
// uplinks (by a small ID), prefixes and AS-path lengths, which is all the
// FIB needs, session events in package uplink's terms, and plain status
// structs for the API.
//
// Which peers exist is decided elsewhere (package uplink); this package
// makes GoBGP's peers match that wish (peers.go) and reports what happens
// to them (events.go). It keeps no list of GoBGP's peers of its own:
// GoBGP's list is read whenever peers are reconciled.
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
	"github.com/fabricd/fabricd/uplink"
)

// Handler receives what the speaker learns. Its methods are called from
// GoBGP's event goroutine, in the order things happened, so they must be
// cheap and must not block: hand work to another goroutine.
type Handler interface {
	// Route reports a path from uplink id; withdraw removes it.
	Route(id int, prefix netip.Prefix, asPathLen int, withdraw bool)
	// Stale says uplink id's session ended: keep its paths, marked stale,
	// until Sweep or until they are sent again.
	Stale(id int)
	// Sweep drops uplink id's paths of family that are still stale: the
	// ToR has resent its table (End-of-RIB).
	Sweep(id int, family uplink.Family)
	// Session reports a session change (kind uplink.Session or
	// uplink.EndOfRIB) for the uplink's state machine.
	Session(id int, ev uplink.Event)
	// Refused counts an announcement refused as a withdraw.
	Refused(id int, why Refusal)
}

// Refusal says why an announcement was taken as a withdraw.
type Refusal int

const (
	// RefusedLoop: the AS path holds our own AS (RFC 4271 9.1.2).
	RefusedLoop Refusal = iota + 1
	// RefusedNextHop: the next hop is another router on the link, not the
	// ToR the session is with.
	RefusedNextHop
)

func (r Refusal) String() string {
	switch r {
	case RefusedLoop:
		return "as-path loop"
	case RefusedNextHop:
		return "third-party next hop"
	}
	return fmt.Sprintf("Refusal(%d)", int(r))
}

// Config is the speaker's global configuration: identity, and the [bgp]
// section (timers, port, graceful restart).
type Config struct {
	ASN      uint32
	RouterID netip.Addr
	config.BGP
	Logger *slog.Logger
	// ThirdParty, when set, reports whether nh, a global or IPv4 next hop
	// received on iface, belongs to another router than the ToR (from the
	// kernel's neighbour table). Link-local next hops are judged without
	// it.
	ThirdParty func(iface string, nh netip.Addr) bool
}

// Speaker wraps a GoBGP server.
type Speaker struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	srv     *server.BgpServer // set by New; served by Run

	mu sync.Mutex
	// wanted are the peers the uplinks want, by uplink ID; byAddr indexes
	// them by address.
	wanted map[int]*wantedPeer
	byAddr map[netip.Addr]*wantedPeer
	// announced maps each originated prefix to GoBGP's path handle.
	announced map[netip.Prefix]*apiutil.Path

	// reconcileMu makes reconciliations one at a time; applied is what the
	// last ones left in GoBGP, to tell corrections from wished changes.
	reconcileMu sync.Mutex
	applied     map[netip.Addr]string
	// kick asks Run to reconcile soon; resets carries peers to reset;
	// established carries peers whose session just came up.
	kick        chan struct{}
	resets      chan reset
	established chan netip.Addr

	// sessions is what GoBGP's events say about each peer, by address.
	// Only the event goroutine touches it.
	sessions map[netip.Addr]*session
	// epochs numbers each uplink's Established sessions.
	epochs [config.MaxNeighbors]uint64

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

// reconcileEvery is how often GoBGP's peers are compared with the wanted
// ones when nothing changes, to catch and correct drift.
const reconcileEvery = 30 * time.Second

// New returns a speaker; Run runs it.
func New(cfg Config, h Handler) *Speaker {
	s := &Speaker{
		cfg:       cfg,
		handler:   h,
		log:       cfg.Logger.With("component", "bgp"),
		wanted:    make(map[int]*wantedPeer),
		byAddr:    make(map[netip.Addr]*wantedPeer),
		announced: make(map[netip.Prefix]*apiutil.Path),
		applied:   make(map[netip.Addr]string),
		kick:      make(chan struct{}, 1),
		resets:    make(chan reset, config.MaxNeighbors),
		sessions:  make(map[netip.Addr]*session),

		established: make(chan netip.Addr, config.MaxNeighbors),
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
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-s.resets:
			// GoBGP then keeps the peer idle for 30 s: a misconfigured
			// ToR cannot make it reconnect in a tight loop.
			if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: r.addr.String(), Communication: r.why}); err != nil {
				s.log.Warn("resetting refused peer", "address", r.addr, "err", err)
			}
		case addr := <-s.established:
			s.sendOwnRoutesNow(ctx, addr)
		case <-s.kick:
			s.reconcile(ctx)
		case <-tick.C:
			s.reconcile(ctx)
		}
	}
}

// sendOwnRoutesNow sends fabricd's routes and End-of-RIB to the peer at
// addr at once if GoBGP is holding them back because fabricd restarted.
//
// GoBGP, restarting, defers everything it sends until every peer's
// End-of-RIB has arrived (RFC 4724's selection deferral); an FRR ToR sends
// its End-of-RIB about a second after the session comes up (its update
// coalescing). Until then the ToR keeps fabricd's routes only as stale,
// and FRR deletes paths that are still stale when the session drops again:
// a crash or a second restart in that second cost the server its routes
// at the ToR until the next session. fabricd sends only what it originates
// (never routes it selected among received ones), all announced before any
// peer exists, so there is nothing to defer: a soft reset out sends them
// and the End-of-RIB now. (A ToR still in its own first 120 s sets the
// Restart State bit, and GoBGP then does not wait either.)
func (s *Speaker) sendOwnRoutesNow(ctx context.Context, addr netip.Addr) {
	deferring := false
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: addr.String()}, func(p *api.Peer) {
		deferring = p.GetGracefulRestart().GetLocalRestarting() &&
			p.GetState().GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED
	})
	if err != nil || !deferring {
		return
	}
	if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true, Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
		s.log.Warn("sending our routes after the restart", "address", addr, "err", err)
		return
	}
	s.log.Info("restarted: sent our routes and End-of-RIB without waiting for the ToR's", "address", addr)
}

// reset asks Run to reset a peer's session, saying why.
type reset struct {
	addr netip.Addr
	why  string
}

func (s *Speaker) start(ctx context.Context) error {
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        s.cfg.ASN,
		RouterId:   s.cfg.RouterID.String(),
		ListenPort: int32(s.cfg.ListenPort),
		// Only IPv6 link-local peers exist; listening on :: covers them.
		ListenAddresses: []string{"::"},
		// IPv4 and IPv6 unicast only (GoBGP's AfiSafiType numbers): GoBGP
		// otherwise keeps empty tables for every family it knows, twice
		// (its global and route-server RIBs), about 10 MB at 2048 map
		// shards each.
		Families: []uint32{0, 1},
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
	// to the Handler, which keeps the paths as stale.
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
