// Package daemon wires fabricd's parts together under one lifecycle:
// discovery and the kernel's neighbour table feed each uplink's state
// machine (package uplink), which configures BGP peers and puts uplinks
// into the FIB; BGP feeds the RIB, the RIB feeds the FIB writer. Every
// goroutine runs under one errgroup and is joined on stop.
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
	"github.com/fabricd/fabricd/neighbors"
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
	// Busy, when set, is told whenever fabricd has work in hand (a table
	// arriving, start-up), for the processor governor; it must be cheap.
	Busy func()
}

// Daemon is one fabricd instance.
type Daemon struct {
	log       *slog.Logger
	level     *slog.LevelVar
	apiSocket string
	busy      func()
	// routes counts received routes, to tell busy every busyEvery.
	routes   atomic.Uint64
	kernel   fib.Kernel
	notifier *systemd.Notifier

	rib     *rib.RIB
	fib     *fib.Writer
	speaker *bgp.Speaker

	// discovery carries router advertisement and carrier events of every
	// uplink to the control loop; neighbors the kernel's neighbour entries
	// on uplinks; sessions is signalled when a session mailbox has events.
	discovery chan unnumbered.Event
	neighbors chan neighbors.Update
	sessions  chan struct{}
	// reloads carries reload requests (SIGHUP, API) to the control loop.
	reloads chan reloadRequest
	// pings lets the watchdog check that the control loop answers.
	pings chan chan struct{}
	// ready is closed once the kernel is reconciled, announcements are
	// made and discovery runs on every uplink.
	ready chan struct{}

	// importFilter decides which received prefixes enter the RIB;
	// filtered counts, per uplink, the announcements it refused, refused
	// those refused as withdraws (AS-path loop, third-party next hop).
	importFilter config.Import
	filtered     [rib.MaxUplinks]atomic.Uint64
	refused      [rib.MaxUplinks][2]atomic.Uint64

	// keepRoutes makes Run leave the kernel as it is: a restart (see
	// StopGracefully), not a shutdown.
	keepRoutes atomic.Bool

	// autoUpdates carries the kernel watcher's announcement sets.
	autoUpdates chan []autoannounce.Announcement
	// Owned by the control loop (and start, before it runs).
	watcher    *autoWatcher
	blackholes []netip.Prefix // in the kernel, sorted

	mu        sync.Mutex
	cfg       *config.Config
	auto      []autoannounce.Announcement // the watcher's latest set
	announced map[netip.Prefix]announcement
	uplinks   map[string]*uplinkRun // by interface name
	ids       [rib.MaxUplinks]*uplinkRun
	// ifindexes maps uplink interfaces to their uplink, for the
	// neighbour watcher.
	ifindexes map[int]rib.Uplink
}

// ecmpSettle is how long traffic that already flows waits before it
// spreads onto a ToR that has just become able to forward or just sent a
// path: FRR (without `bgp suppress-fib-pending`) announces a route a few
// milliseconds before its own kernel holds it, and packets hashed onto it
// then would be dropped there.
const ecmpSettle = 300 * time.Millisecond

// New prepares a daemon; Run starts it.
func New(opts Options) *Daemon {
	cfg, log := opts.Config, opts.Logger
	if opts.APISocket != "" {
		cfg.API.Socket = opts.APISocket
	}
	if opts.Busy == nil {
		opts.Busy = func() {}
	}
	d := &Daemon{
		apiSocket:    opts.APISocket,
		busy:         opts.Busy,
		cfg:          cfg,
		importFilter: cfg.Import,
		log:          log,
		level:        opts.LogLevel,
		kernel:       opts.Kernel,
		notifier:     systemd.New(log),
		rib:          rib.New(),
		discovery:    make(chan unnumbered.Event, 16),
		neighbors:    make(chan neighbors.Update, 16),
		sessions:     make(chan struct{}, 1),
		reloads:      make(chan reloadRequest),
		pings:        make(chan chan struct{}),
		ready:        make(chan struct{}),
		uplinks:      make(map[string]*uplinkRun),
		ifindexes:    make(map[int]rib.Uplink),
		autoUpdates:  make(chan []autoannounce.Announcement, 1),
	}
	d.fib = fib.NewWriter(opts.Kernel, d.rib, fib.Options{
		Metric:         cfg.FIB.Metric,
		InlineNexthops: !cfg.FIB.NexthopObjects,
		Settle:         ecmpSettle,
		Logger:         log.With("component", "fib"),
	})
	d.speaker = bgp.New(bgp.Config{
		ASN:        cfg.ASN,
		RouterID:   cfg.RouterID,
		BGP:        cfg.BGP,
		Logger:     log,
		ThirdParty: d.thirdPartyNextHop,
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
	d.busy() // start-up: the kernel's state is read, the FIB rebuilt
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
		neighbors.Watch(gctx, d.log.With("component", "neighbors"), func(u neighbors.Update) { d.onNeighbor(gctx, u) })
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
	total, forwarding := 0, 0
	for _, st := range d.uplinkStatuses() {
		total++
		if st.machine.Phase.Forwards() {
			forwarding++
		}
	}
	return fmt.Sprintf("%d of %d uplinks forwarding, %d routes installed", forwarding, total, d.fib.Stats().Routes.Load())
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
