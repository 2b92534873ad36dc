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
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/fabricd/fabricd/bgp"
	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/fib"
	"github.com/fabricd/fabricd/rib"
	"github.com/fabricd/fabricd/unnumbered"
)

// StaleTime bounds how long routes left by an earlier run are kept when
// not every peer sends End-of-RIB.
const StaleTime = 120 * time.Second

// Daemon is one fabricd instance.
type Daemon struct {
	cfg    *config.Config
	log    *slog.Logger
	kernel fib.Kernel

	rib     *rib.RIB
	fib     *fib.Writer
	speaker *bgp.Speaker

	// events carries uplink discovery events and BGP session events to
	// the control loop, which alone changes the uplink table.
	events chan event
	// ready is closed once the kernel is reconciled, announcements are
	// made and discovery runs on every uplink.
	ready chan struct{}

	mu      sync.Mutex
	uplinks map[string]*uplink // by interface name
	ids     [rib.MaxUplinks]*uplink
}

type uplink struct {
	id       rib.Uplink
	neighbor config.Neighbor
	link     *unnumbered.Link
	cancel   context.CancelFunc
	done     chan struct{}

	// Owned by the control loop.
	peer        unnumbered.Neighbor
	established bool
	eor         bool
}

type event struct {
	discovery *unnumbered.Event
	session   *sessionEvent
}

type sessionEvent struct {
	id   rib.Uplink
	kind sessionKind
}

type sessionKind int

const (
	sessionUp sessionKind = iota + 1
	sessionDown
	endOfRIB
)

// New prepares a daemon; Run starts it.
func New(cfg *config.Config, kernel fib.Kernel, log *slog.Logger) *Daemon {
	d := &Daemon{
		cfg:     cfg,
		log:     log,
		kernel:  kernel,
		rib:     rib.New(),
		events:  make(chan event, 256),
		ready:   make(chan struct{}),
		uplinks: make(map[string]*uplink),
	}
	d.fib = fib.NewWriter(kernel, d.rib, cfg.FIB.Metric, log.With("component", "fib"))
	d.speaker = bgp.New(bgp.Config{
		ASN:          cfg.ASN,
		RouterID:     cfg.RouterID,
		ListenPort:   cfg.BGP.ListenPort,
		HoldTime:     cfg.BGP.HoldTime,
		Keepalive:    cfg.BGP.Keepalive,
		ConnectRetry: cfg.BGP.ConnectRetry,
		Logger:       log,
	}, (*bgpHandler)(d))
	return d
}

// Ready is closed once fabricd is up: kernel reconciled, prefixes
// announced and discovery running on every uplink.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Run runs fabricd until ctx is cancelled, then withdraws its routes from
// the peers and removes what it installed in the kernel.
func (d *Daemon) Run(ctx context.Context) error {
	adopted, err := d.fib.Adopt()
	if err != nil {
		return err
	}
	if adopted > 0 {
		d.log.Info("found routes of an earlier run; keeping them until the peers have resent their tables", "routes", adopted)
	}

	g, gctx := errgroup.WithContext(ctx)
	// The FIB writer outlives the rest so that the final flush happens
	// after BGP and discovery have stopped feeding it.
	fibCtx, stopFIB := context.WithCancel(context.Background())
	defer stopFIB()
	fibDone := make(chan error, 1)
	go func() { fibDone <- d.fib.Run(fibCtx) }()

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
		d.log.Info("fabricd is up", "asn", d.cfg.ASN, "router_id", d.cfg.RouterID, "uplinks", len(d.cfg.Neighbors), "announced", len(d.cfg.Announce))
		return d.control(gctx, adopted > 0)
	})

	err = g.Wait()
	d.stopUplinks()

	stopFIB()
	<-fibDone
	if ferr := d.fib.Flush(); ferr != nil {
		d.log.Error("removing installed routes", "err", ferr)
		err = errors.Join(err, ferr)
	} else {
		d.log.Info("removed installed routes and neighbour entries")
	}
	return err
}

// start announces the configured prefixes, installs the blackholes and
// starts discovery on every uplink.
func (d *Daemon) start(ctx context.Context) error {
	var blackholes []netip.Prefix
	for _, a := range d.cfg.Announce {
		if err := d.speaker.Announce(ctx, a.Prefix); err != nil {
			return err
		}
		if a.Blackhole {
			blackholes = append(blackholes, a.Prefix)
		}
	}
	if err := d.fib.SetBlackholes(ctx, blackholes); err != nil {
		return err
	}
	for i, n := range d.cfg.Neighbors {
		d.startUplink(ctx, rib.Uplink(i), n)
	}
	return nil
}

func (d *Daemon) startUplink(ctx context.Context, id rib.Uplink, n config.Neighbor) {
	lctx, cancel := context.WithCancel(ctx)
	u := &uplink{
		id:       id,
		neighbor: n,
		link:     unnumbered.NewLink(unnumbered.Config{Interface: n.Interface, Logger: d.log.With("component", "unnumbered", "interface", n.Interface)}),
		cancel:   cancel,
		done:     make(chan struct{}),
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
	var staleTimer <-chan time.Time
	if haveStale {
		t := time.NewTimer(StaleTime)
		defer t.Stop()
		staleTimer = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-staleTimer:
			staleTimer = nil
			d.log.Warn("not every peer sent End-of-RIB in time; removing routes of the earlier run that were not relearned")
			if err := d.fib.SweepStale(ctx); err != nil {
				return err
			}
			haveStale = false
		case ev := <-d.events:
			switch {
			case ev.discovery != nil:
				d.onDiscovery(ctx, *ev.discovery)
			case ev.session != nil:
				d.onSession(*ev.session)
				if haveStale && d.allEndOfRIB() {
					d.log.Info("every peer sent End-of-RIB; removing routes of the earlier run that were not relearned")
					if err := d.fib.SweepStale(ctx); err != nil {
						return err
					}
					haveStale, staleTimer = false, nil
				}
			}
		}
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
		// than after the hold timer, and drop the session.
		log.Warn("uplink lost carrier")
		if err := d.fib.UplinkDown(ctx, u.id); err != nil {
			return
		}
		if err := d.speaker.ResetPeer(ctx, ev.Interface); err != nil {
			log.Warn("resetting session after carrier loss", "err", err)
		}
	case unnumbered.LinkUp:
		log.Info("uplink has carrier")
	case unnumbered.NeighborUp:
		n := ev.Neighbor
		log.Info("ToR discovered", "address", n.Addr, "mac", n.MAC.String())
		u.peer = n
		if len(n.MAC) == 0 {
			log.Warn("ToR's router advertisement has no source link-layer address; cannot install routes through it yet")
		} else if err := d.fib.SetUplink(ctx, u.id, ev.Interface, n.Index, n.MAC); err != nil {
			return
		}
		err := d.speaker.SetPeer(ctx, bgp.Peer{ID: int(u.id), Interface: ev.Interface, Addr: n.Addr, RemoteAS: u.neighbor.RemoteAS})
		if err != nil {
			log.Error("configuring BGP peer", "err", err)
		}
	case unnumbered.NeighborDown:
		// The ToR stopped advertising itself. The BGP hold timer decides
		// whether the session is gone; discovery will report a new ToR.
		log.Warn("ToR's router advertisements stopped", "address", ev.Neighbor.Addr)
	}
}

func (d *Daemon) onSession(ev sessionEvent) {
	d.mu.Lock()
	u := d.ids[ev.id]
	d.mu.Unlock()
	if u == nil {
		return
	}
	switch ev.kind {
	case sessionUp:
		u.established, u.eor = true, false
	case sessionDown:
		u.established, u.eor = false, false
	case endOfRIB:
		u.eor = true
	}
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
	h.rib.Update(rib.Uplink(id), prefix, asPathLen)
}

func (h *bgpHandler) SessionUp(id int) { h.session(id, sessionUp) }

func (h *bgpHandler) SessionDown(id int) {
	h.rib.DropUplink(rib.Uplink(id))
	h.session(id, sessionDown)
}

func (h *bgpHandler) EndOfRIB(id int) { h.session(id, endOfRIB) }

func (h *bgpHandler) session(id int, kind sessionKind) {
	// Never block GoBGP's event goroutine on a stopped control loop.
	select {
	case h.events <- event{session: &sessionEvent{id: rib.Uplink(id), kind: kind}}:
	default:
		h.log.Warn("control loop is not keeping up; dropped a session event", "uplink", id, "kind", kind)
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
