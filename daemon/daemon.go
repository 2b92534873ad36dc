// Package daemon ties fabricd's parts together under one lifecycle: uplink
// discovery feeds BGP peers, BGP feeds the RIB, the RIB feeds the FIB
// writer. Every goroutine runs under one errgroup and is joined on stop.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fabricd/fabricd/api"
	"github.com/fabricd/fabricd/autoannounce"
	"github.com/fabricd/fabricd/bgp"
	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/fib"
	"github.com/fabricd/fabricd/metrics"
	"github.com/fabricd/fabricd/rib"
	"github.com/fabricd/fabricd/systemd"
	"github.com/fabricd/fabricd/unnumbered"
)

// Options are what the command hands the daemon.
type Options struct {
	Config *config.Config
	Kernel fib.Kernel
	Logger *slog.Logger
	// LogLevel, when set, is the level of Logger's handler; reload
	// changes it.
	LogLevel *slog.LevelVar
	// APISocket, when set, overrides [api] socket (fabricd --socket), for
	// every reload too.
	APISocket string
}

// Daemon is one fabricd instance.
type Daemon struct {
	log       *slog.Logger
	level     *slog.LevelVar
	apiSocket string
	kernel    fib.Kernel
	notifier  *systemd.Notifier

	rib     *rib.RIB
	fib     *fib.Writer
	speaker *bgp.Speaker

	// events carries uplink discovery events and BGP session events to
	// the control loop, which alone changes the uplink table.
	events chan event
	// reloads carries reload requests (SIGHUP, API) to the control loop.
	reloads chan reloadRequest
	// pings lets the watchdog check that the control loop answers.
	pings chan chan struct{}
	// ready is closed once the kernel is reconciled, announcements are
	// made and discovery runs on every uplink.
	ready chan struct{}

	// importFilter decides which received prefixes enter the RIB;
	// filtered counts, per uplink, the announcements it refused.
	importFilter config.Import
	filtered     [rib.MaxUplinks]atomic.Uint64

	// keepRoutes makes Run leave the kernel as it is: a restart (see
	// StopGracefully), not a shutdown.
	keepRoutes atomic.Bool

	// retainOnDown[u] makes the next session loss on uplink u keep its
	// paths as stale instead of dropping them: set when fabricd itself
	// resets the session because the link lost carrier. The ToR's
	// forwarding state is intact, so when the link returns the FIB can
	// use the paths at once instead of waiting for the session and the
	// ToR's first-update delay.
	retainOnDown [rib.MaxUplinks]atomic.Bool

	// autoUpdates carries the kernel watcher's announcement sets.
	autoUpdates chan []autoannounce.Announcement
	// Owned by the control loop (and start, before it runs).
	watcher    *autoWatcher
	blackholes []netip.Prefix // in the kernel, sorted

	mu        sync.Mutex
	cfg       *config.Config
	auto      []autoannounce.Announcement // the watcher's latest set
	announced map[netip.Prefix]announcement
	uplinks   map[string]*uplink // by interface name
	ids       [rib.MaxUplinks]*uplink
}

type uplink struct {
	id       rib.Uplink
	neighbor config.Neighbor
	link     *unnumbered.Link
	cancel   context.CancelFunc
	done     chan struct{}

	// Guarded by Daemon.mu; written by the control loop.
	peer        unnumbered.Neighbor
	established bool
	eor         bool
	// staleUntil is when the uplink's stale paths are dropped if its
	// peer has not sent End-of-RIB by then; zero when it has none.
	staleUntil time.Time
	// downSince is when the uplink last lost carrier.
	downSince time.Time
}

type event struct {
	discovery *unnumbered.Event
	session   *sessionEvent
}

type sessionEvent struct {
	id   rib.Uplink
	kind sessionKind
	// stale: on sessionDown, the paths were kept as stale.
	stale bool
}

type sessionKind int

const (
	sessionUp sessionKind = iota + 1
	sessionDown
	endOfRIB
)

// New prepares a daemon; Run starts it.
func New(opts Options) *Daemon {
	cfg, log := opts.Config, opts.Logger
	if opts.APISocket != "" {
		cfg.API.Socket = opts.APISocket
	}
	d := &Daemon{
		apiSocket:    opts.APISocket,
		cfg:          cfg,
		importFilter: cfg.Import,
		log:          log,
		level:        opts.LogLevel,
		kernel:       opts.Kernel,
		notifier:     systemd.New(log),
		rib:          rib.New(),
		events:       make(chan event, 256),
		reloads:      make(chan reloadRequest),
		pings:        make(chan chan struct{}),
		ready:        make(chan struct{}),
		uplinks:      make(map[string]*uplink),

		autoUpdates: make(chan []autoannounce.Announcement, 1),
	}
	d.fib = fib.NewWriter(opts.Kernel, d.rib, fib.Options{
		Metric:         cfg.FIB.Metric,
		InlineNexthops: !cfg.FIB.NexthopObjects,
		Logger:         log.With("component", "fib"),
	})
	d.speaker = bgp.New(bgp.Config{
		ASN:      cfg.ASN,
		RouterID: cfg.RouterID,
		BGP:      cfg.BGP,
		Logger:   log,
	}, (*bgpHandler)(d))
	return d
}

func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (d *Daemon) setConfig(c *config.Config) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg = c
}

// Ready is closed once fabricd is up: kernel reconciled, prefixes
// announced and discovery running on every uplink.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Run runs fabricd until ctx is cancelled, then withdraws its routes from
// the peers and removes what it installed in the kernel.
func (d *Daemon) Run(ctx context.Context) error {
	cfg := d.config()
	// The socket first: a second fabricd must fail before it touches the
	// kernel.
	apiListener, err := api.Listen(api.SocketConfig{Path: cfg.API.Socket, Group: cfg.API.Group})
	if err != nil {
		return err
	}
	adopted, err := d.fib.Adopt()
	if err != nil {
		apiListener.Close()
		return err
	}
	if adopted > 0 {
		d.log.Info("found routes of an earlier run; keeping them until the peers have resent their tables", "routes", adopted)
	}
	// Restarting with the forwarding state intact: the peers are told so
	// and keep our routes until we have resent them.
	d.speaker.SetRestarting(adopted > 0)

	g, gctx := errgroup.WithContext(ctx)
	// The FIB writer outlives the rest so that the final flush happens
	// after BGP and discovery have stopped feeding it.
	fibCtx, stopFIB := context.WithCancel(context.Background())
	defer stopFIB()
	fibDone := make(chan error, 1)
	go func() { fibDone <- d.fib.Run(fibCtx) }()

	g.Go(func() error { return api.Serve(gctx, apiListener, &apiServer{d: d}, d.log) })
	if cfg.Metrics.Listen != "" {
		g.Go(func() error { return metrics.Serve(gctx, cfg.Metrics.Listen, newCollector(d), d.log) })
	}
	g.Go(func() error { return d.notifier.Watchdog(gctx, d.ping) })
	g.Go(func() error {
		// Not fatal: without it fabricd still works, it just cannot undo
		// someone else's change to the gateway's neighbour entry.
		if err := d.fib.WatchNeighbors(gctx); err != nil {
			d.log.Error("watching neighbour entries", "err", err)
		}
		return nil
	})

	speakerReady := make(chan struct{})
	g.Go(func() error { return d.speaker.Run(gctx, speakerReady) })

	g.Go(func() error {
		select {
		case <-speakerReady:
		case <-gctx.Done():
			return nil
		}
		if err := d.start(gctx); err != nil {
			return err
		}
		close(d.ready)
		d.notifier.Ready(d.statusLine())
		d.mu.Lock()
		announced := len(d.announced)
		d.mu.Unlock()
		d.log.Info("fabricd is up", "asn", cfg.ASN, "router_id", cfg.RouterID, "derived", cfg.IdentityDerived(),
			"uplinks", len(cfg.Neighbors), "announced", announced)
		return d.control(gctx, adopted > 0)
	})

	<-gctx.Done()
	d.notifier.Stopping()
	err = g.Wait()
	d.stopAutoWatcher()
	d.stopUplinks()

	stopFIB()
	<-fibDone
	if d.keepRoutes.Load() {
		d.log.Info("stopped for a restart: routes stay in the kernel, and the peers keep ours for the restart time")
		return err
	}
	if ferr := d.fib.Flush(); ferr != nil {
		d.log.Error("removing installed routes", "err", ferr)
		err = errors.Join(err, ferr)
	} else {
		d.log.Info("removed installed routes and neighbour entries")
	}
	return err
}

// StopGracefully makes the coming stop a restart: the sessions end
// without a NOTIFICATION, so peers with graceful restart keep fabricd's
// routes, and the kernel keeps the routes fabricd installed, so traffic
// flows on until the next fabricd takes them over. Call it before
// cancelling Run's context.
func (d *Daemon) StopGracefully() {
	d.keepRoutes.Store(true)
	d.speaker.StopGracefully()
}

// ping succeeds when the control loop answers.
func (d *Daemon) ping(ctx context.Context) error {
	pong := make(chan struct{})
	select {
	case d.pings <- pong:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-pong:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// statusLine is the STATUS= systemd shows.
func (d *Daemon) statusLine() string {
	d.mu.Lock()
	total, up := len(d.uplinks), 0
	for _, u := range d.uplinks {
		if u.established {
			up++
		}
	}
	d.mu.Unlock()
	return fmt.Sprintf("%d of %d BGP sessions established, %d routes installed", up, total, d.fib.Stats().Routes.Load())
}

// start announces the configured and derived prefixes, installs the
// blackholes and starts discovery on every uplink.
func (d *Daemon) start(ctx context.Context) error {
	cfg := d.config()
	d.setAutoWatcher(ctx, cfg)
	d.awaitFirstAutoSet(ctx)
	if _, err := d.syncAnnouncements(ctx); err != nil {
		return err
	}
	for i, n := range cfg.Neighbors {
		d.startUplink(ctx, rib.Uplink(i), n)
	}
	return nil
}

func (d *Daemon) startUplink(ctx context.Context, id rib.Uplink, n config.Neighbor) {
	lctx, cancel := context.WithCancel(ctx)
	u := &uplink{
		id:       id,
		neighbor: n,
		link: unnumbered.NewLink(unnumbered.Config{
			Interface: n.Interface,
			Logger:    d.log.With("component", "unnumbered", "interface", n.Interface),
			// Our RAs make the ToR connect; hold them until the peer is
			// configured here, or the connection would be refused.
			DeferAdvertisements: true,
		}),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	d.mu.Lock()
	d.uplinks[n.Interface] = u
	d.ids[id] = u
	d.mu.Unlock()
	discovery := make(chan unnumbered.Event, 16)
	go func() {
		defer close(u.done)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case ev := <-discovery:
					select {
					case d.events <- event{discovery: &ev}:
					case <-lctx.Done():
						return
					}
				case <-lctx.Done():
					return
				}
			}
		}()
		if err := u.link.Run(lctx, discovery); err != nil {
			d.log.Error("uplink discovery stopped", "interface", n.Interface, "err", err)
		}
		cancel()
		wg.Wait()
	}()
}

// restoreAfterFlap puts an uplink that was down for less than the BGP
// hold time back into the FIB at once, with the ToR it had before. After a
// carrier flap the ToR's link-local address goes through duplicate address
// detection again, so its first RA comes a second or two later; its
// forwarding state is intact all the while. Should the RA show another
// ToR, NeighborUp rewrites the uplink within milliseconds. After a longer
// outage fabricd waits for the RA.
func (d *Daemon) restoreAfterFlap(ctx context.Context, u *uplink, log *slog.Logger) {
	d.mu.Lock()
	peer, downSince := u.peer, u.downSince
	hold := d.cfg.BGP.HoldTime
	d.mu.Unlock()
	if len(peer.MAC) == 0 || downSince.IsZero() || time.Since(downSince) >= hold {
		return
	}
	log.Info("carrier back within the hold time; using the ToR it had until its next RA confirms it",
		"down_for", time.Since(downSince).Round(time.Millisecond), "mac", peer.MAC.String())
	if err := d.fib.SetUplink(ctx, u.id, u.neighbor.Interface, peer.Index, peer.MAC, peer.Addr); err != nil {
		log.Warn("restoring the uplink", "err", err)
	}
}

// stopUplink stops discovery on iface and forgets its peer, paths and
// kernel state.
func (d *Daemon) stopUplink(ctx context.Context, iface string) {
	d.mu.Lock()
	u := d.uplinks[iface]
	delete(d.uplinks, iface)
	if u != nil {
		d.ids[u.id] = nil
	}
	d.mu.Unlock()
	if u == nil {
		return
	}
	u.cancel()
	<-u.done
	if err := d.speaker.RemovePeer(ctx, iface); err != nil {
		d.log.Warn("removing peer", "interface", iface, "err", err)
	}
	d.rib.DropUplink(u.id)
	if err := d.fib.RemoveUplink(ctx, u.id); err != nil {
		d.log.Warn("removing uplink from the FIB", "interface", iface, "err", err)
	}
}

// updateUplink applies a changed neighbor setting (remote-as) to a running
// uplink; the session restarts only if the peer must be re-added.
func (d *Daemon) updateUplink(ctx context.Context, n config.Neighbor) {
	u := d.uplinkByName(n.Interface)
	if u == nil {
		return
	}
	d.mu.Lock()
	u.neighbor = n
	peer := u.peer
	d.mu.Unlock()
	if !peer.Addr.IsValid() {
		return
	}
	if err := d.speaker.SetPeer(ctx, bgp.Peer{ID: int(u.id), Addr: peer.Addr, Neighbor: n}); err != nil {
		d.log.Error("updating BGP peer", "interface", n.Interface, "err", err)
	}
}

// freeID returns an unused uplink index.
func (d *Daemon) freeID() (rib.Uplink, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, u := range d.ids {
		if u == nil {
			return rib.Uplink(i), true
		}
	}
	return 0, false
}

func (d *Daemon) stopUplinks() {
	d.mu.Lock()
	ups := make([]*uplink, 0, len(d.uplinks))
	for _, u := range d.uplinks {
		ups = append(ups, u)
	}
	d.mu.Unlock()
	for _, u := range ups {
		u.cancel()
		<-u.done
	}
}

// control is the loop that reacts to discovery and session events.
func (d *Daemon) control(ctx context.Context, haveStale bool) error {
	// One timer for every stale deadline: the earlier run's routes, and
	// each uplink's stale paths.
	var adoptedUntil time.Time
	if haveStale {
		// Stale routes (here the earlier run's, below a session's) are
		// kept at most the restart time when End-of-RIB does not come.
		adoptedUntil = time.Now().Add(d.config().BGP.RestartTime)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		d.armStaleTimer(timer, adoptedUntil)
		select {
		case <-ctx.Done():
			return nil
		case pong := <-d.pings:
			close(pong)
		case req := <-d.reloads:
			changes, err := d.reload(ctx)
			req.result <- reloadResult{changes: changes, err: err}
		case set := <-d.autoUpdates:
			d.mu.Lock()
			d.auto = set
			d.mu.Unlock()
			changes, err := d.syncAnnouncements(ctx)
			if err != nil {
				d.log.Error("updating derived announcements", "err", err)
			}
			for _, c := range changes {
				d.log.Info("announcements changed", "change", c)
			}
		case now := <-timer.C:
			if !adoptedUntil.IsZero() && !now.Before(adoptedUntil) {
				adoptedUntil = time.Time{}
				d.speaker.SetRestarting(false)
				d.log.Warn("not every peer sent End-of-RIB in time; removing routes of the earlier run that were not relearned")
				if err := d.fib.SweepStale(ctx); err != nil {
					return err
				}
			}
			d.expireStalePaths(now)
		case ev := <-d.events:
			switch {
			case ev.discovery != nil:
				d.onDiscovery(ctx, *ev.discovery)
			case ev.session != nil:
				d.onSession(*ev.session)
				d.notifier.Status(d.statusLine())
				if !adoptedUntil.IsZero() && d.allEndOfRIB() {
					adoptedUntil = time.Time{}
					d.speaker.SetRestarting(false)
					d.log.Info("every peer sent End-of-RIB; removing routes of the earlier run that were not relearned")
					if err := d.fib.SweepStale(ctx); err != nil {
						return err
					}
				}
			}
		}
	}
}

// armStaleTimer sets timer for the earliest stale deadline.
func (d *Daemon) armStaleTimer(timer *time.Timer, adoptedUntil time.Time) {
	next := adoptedUntil
	d.mu.Lock()
	for _, u := range d.uplinks {
		if !u.staleUntil.IsZero() && (next.IsZero() || u.staleUntil.Before(next)) {
			next = u.staleUntil
		}
	}
	d.mu.Unlock()
	if next.IsZero() {
		timer.Stop()
		return
	}
	timer.Reset(max(time.Until(next), 0))
}

// expireStalePaths drops the stale paths of uplinks whose peer did not
// resend its table in time.
func (d *Daemon) expireStalePaths(now time.Time) {
	d.mu.Lock()
	var expired []*uplink
	for _, u := range d.uplinks {
		if !u.staleUntil.IsZero() && !now.Before(u.staleUntil) {
			u.staleUntil = time.Time{}
			expired = append(expired, u)
		}
	}
	d.mu.Unlock()
	for _, u := range expired {
		n := d.rib.SweepStale(u.id, 0)
		d.log.Warn("stale paths expired before the peer resent them", "interface", u.neighbor.Interface, "paths", n)
	}
}

func (d *Daemon) uplinkByName(name string) *uplink {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.uplinks[name]
}

func (d *Daemon) onDiscovery(ctx context.Context, ev unnumbered.Event) {
	u := d.uplinkByName(ev.Interface)
	if u == nil {
		return
	}
	log := d.log.With("interface", ev.Interface)
	switch ev.Kind {
	case unnumbered.LinkDown:
		// Carrier loss: stop forwarding through the uplink now rather
		// than after the hold timer, and reset the session, keeping its
		// paths as stale for when the link returns.
		log.Warn("uplink lost carrier")
		if err := d.fib.UplinkDown(ctx, u.id); err != nil {
			return
		}
		d.mu.Lock()
		u.downSince = time.Now()
		d.mu.Unlock()
		d.retainOnDown[u.id].Store(true)
		if err := d.speaker.ResetPeer(ctx, ev.Interface); err != nil {
			log.Warn("resetting session after carrier loss", "err", err)
		}
	case unnumbered.LinkUp:
		log.Info("uplink has carrier")
		d.restoreAfterFlap(ctx, u, log)
	case unnumbered.NeighborUp:
		n := ev.Neighbor
		log.Info("ToR discovered", "address", n.Addr, "mac", n.MAC.String())
		d.mu.Lock()
		u.peer = n
		neighbor := u.neighbor
		d.mu.Unlock()
		if len(n.MAC) == 0 {
			log.Warn("ToR's router advertisement has no source link-layer address; cannot install routes through it yet")
		} else if err := d.fib.SetUplink(ctx, u.id, ev.Interface, n.Index, n.MAC, n.Addr); err != nil {
			return
		}
		err := d.speaker.SetPeer(ctx, bgp.Peer{ID: int(u.id), Addr: n.Addr, Neighbor: neighbor})
		if err != nil {
			log.Error("configuring BGP peer", "err", err)
			return
		}
		u.link.Advertise()
	case unnumbered.NeighborDown:
		// The ToR stopped advertising itself. The BGP hold timer decides
		// whether the session is gone; discovery will report a new ToR.
		log.Warn("ToR's router advertisements stopped", "address", ev.Neighbor.Addr)
	}
}

func (d *Daemon) onSession(ev sessionEvent) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.ids[ev.id]
	if u == nil {
		return
	}
	switch ev.kind {
	case sessionUp:
		u.established, u.eor = true, false
	case sessionDown:
		u.established, u.eor = false, false
		if ev.stale {
			u.staleUntil = time.Now().Add(d.cfg.BGP.RestartTime)
		}
	case endOfRIB:
		u.eor = true
		u.staleUntil = time.Time{}
	}
}

// endOfRIBs says, per uplink, whether its session is up and sent End-of-RIB.
func (d *Daemon) endOfRIBs() map[rib.Uplink]bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[rib.Uplink]bool, len(d.uplinks))
	for _, u := range d.uplinks {
		out[u.id] = u.established && u.eor
	}
	return out
}

// allEndOfRIB reports whether every uplink has an established session that
// sent End-of-RIB.
func (d *Daemon) allEndOfRIB() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, u := range d.uplinks {
		if !u.established || !u.eor {
			return false
		}
	}
	return len(d.uplinks) > 0
}

// bgpHandler receives the speaker's callbacks. They run on GoBGP's single
// event goroutine, in order, so dropping a session's paths here cannot
// race with the paths of the next session.
type bgpHandler Daemon

func (h *bgpHandler) Route(id int, prefix netip.Prefix, asPathLen int, withdraw bool) {
	if withdraw {
		h.rib.Withdraw(rib.Uplink(id), prefix)
		return
	}
	if !h.importFilter.Accepts(prefix) {
		h.filtered[id].Add(1)
		return
	}
	h.rib.Update(rib.Uplink(id), prefix, asPathLen)
}

func (h *bgpHandler) SessionUp(id int) {
	h.retainOnDown[id].Store(false)
	h.session(sessionEvent{id: rib.Uplink(id), kind: sessionUp})
}

func (h *bgpHandler) SessionDown(id int, graceful bool) {
	u := rib.Uplink(id)
	if graceful || h.retainOnDown[id].Swap(false) {
		n := h.rib.MarkStale(u)
		h.log.Info("keeping the session's paths as stale until the peer resends them", "uplink", id, "paths", n, "graceful_restart", graceful)
		h.session(sessionEvent{id: u, kind: sessionDown, stale: true})
		return
	}
	h.rib.DropUplink(u)
	h.session(sessionEvent{id: u, kind: sessionDown})
}

// EndOfRIB sweeps the stale paths of the family the peer did not resend.
// It runs in order with the peer's updates, so every path it resent is
// fresh by now.
func (h *bgpHandler) EndOfRIB(id int, family int) {
	if n := h.rib.SweepStale(rib.Uplink(id), family); n > 0 {
		h.log.Info("peer did not resend some stale paths; removed them", "uplink", id, "family", family, "paths", n)
	}
	if family == 4 {
		h.session(sessionEvent{id: rib.Uplink(id), kind: endOfRIB})
	}
}

func (h *bgpHandler) session(ev sessionEvent) {
	// Never block GoBGP's event goroutine on a stopped control loop.
	select {
	case h.events <- event{session: &ev}:
	default:
		h.log.Warn("control loop is not keeping up; dropped a session event", "uplink", ev.id, "kind", ev.kind)
	}
}

// String helps logs.
func (k sessionKind) String() string {
	switch k {
	case sessionUp:
		return "up"
	case sessionDown:
		return "down"
	case endOfRIB:
		return "end-of-rib"
	}
	return fmt.Sprintf("session(%d)", int(k))
}
