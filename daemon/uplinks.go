package daemon

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/fib"
	"github.com/fabricd/fabricd/neighbors"
	"github.com/fabricd/fabricd/rib"
	"github.com/fabricd/fabricd/unnumbered"
	"github.com/fabricd/fabricd/uplink"
)

// uplinkRun is one configured uplink at work: its discovery, its state
// machine and the mailbox of its BGP session events.
type uplinkRun struct {
	id       rib.Uplink
	neighbor config.Neighbor // guarded by Daemon.mu
	link     *unnumbered.Link
	mailbox  *uplink.Mailbox
	cancel   context.CancelFunc
	done     chan struct{}

	// Owned by the control loop.
	machine *uplink.Machine
	effects effects

	// status is the machine's last snapshot, for the API and metrics;
	// guarded by Daemon.mu.
	status uplink.Status
}

// uplinkStatus is what queries see of an uplink.
type uplinkStatus struct {
	id       rib.Uplink
	neighbor config.Neighbor
	link     *unnumbered.Link
	machine  uplink.Status
}

// uplinkStatuses returns every uplink's latest snapshot, by uplink ID.
func (d *Daemon) uplinkStatuses() []uplinkStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]uplinkStatus, 0, len(d.uplinks))
	for _, u := range d.uplinks {
		out = append(out, uplinkStatus{id: u.id, neighbor: u.neighbor, link: u.link, machine: u.status})
	}
	slices.SortFunc(out, func(a, b uplinkStatus) int { return int(a.id) - int(b.id) })
	return out
}

// effects collects what a machine asks for while it handles one event, so
// that it happens afterwards in a fixed order: the FIB first (traffic
// leaves a ToR that lost its session at once, not after GoBGP has replaced
// the peer, which takes hundreds of milliseconds when many things happen
// at once), then the BGP peer (before our RA: the ToR must not connect
// before the peer exists to accept it), then the rest.
type effects struct {
	peer      *uplink.Peer
	fib       *uplink.FIB
	sweep     bool
	advertise bool
	solicit   bool
	resolve   []netip.Addr
	interval  time.Duration
}

func (e *effects) SetPeer(p uplink.Peer)                { e.peer = &p }
func (e *effects) SetFIB(f uplink.FIB)                  { e.fib = &f }
func (e *effects) SweepStale()                          { e.sweep = true }
func (e *effects) Advertise()                           { e.advertise = true }
func (e *effects) Solicit()                             { e.solicit = true }
func (e *effects) SetAdvertiseInterval(d time.Duration) { e.interval = d }
func (e *effects) ResolveMAC(addr netip.Addr)           { e.resolve = append(e.resolve, addr) }

// take returns the collected effects and forgets them.
func (e *effects) take() effects {
	x := *e
	*e = effects{}
	return x
}

func (d *Daemon) startUplink(ctx context.Context, id rib.Uplink, n config.Neighbor) {
	cfg := d.config()
	lctx, cancel := context.WithCancel(ctx)
	u := &uplinkRun{
		id:       id,
		neighbor: n,
		link: unnumbered.NewLink(unnumbered.Config{
			Interface: n.Interface,
			Logger:    d.log.With("component", "unnumbered", "interface", n.Interface),
		}),
		mailbox: uplink.NewMailbox(func() {
			select {
			case d.sessions <- struct{}{}:
			default:
			}
		}),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	u.machine = uplink.New(uplink.Config{
		Interface:          n.Interface,
		Pinned:             n.Address,
		GracefulRestart:    cfg.BGP.GracefulRestart,
		RestartTime:        cfg.BGP.RestartTime,
		HoldTime:           cfg.BGP.HoldTime,
		MaxPrefixesRestart: n.MaxPrefixesRestart,
	}, &u.effects, d.log.With("interface", n.Interface), time.Now())
	d.mu.Lock()
	d.uplinks[n.Interface] = u
	d.ids[id] = u
	u.status = u.machine.Status()
	d.mu.Unlock()
	go func() {
		defer close(u.done)
		if err := u.link.Run(lctx, d.discovery); err != nil {
			d.log.Error("uplink discovery stopped", "interface", n.Interface, "err", err)
		}
	}()
}

// stopUplink stops discovery on iface and forgets its peer, paths and
// kernel state.
func (d *Daemon) stopUplink(ctx context.Context, iface string) {
	d.mu.Lock()
	u := d.uplinks[iface]
	delete(d.uplinks, iface)
	if u != nil {
		d.ids[u.id] = nil
		for i, id := range d.ifindexes {
			if id == u.id {
				delete(d.ifindexes, i)
			}
		}
	}
	d.mu.Unlock()
	if u == nil {
		return
	}
	u.cancel()
	<-u.done
	if err := d.speaker.SetPeer(ctx, int(u.id), uplink.Peer{}, u.neighbor); err != nil {
		d.log.Warn("removing peer", "interface", iface, "err", err)
	}
	d.rib.DropUplink(u.id)
	if err := d.fib.RemoveUplink(ctx, u.id); err != nil {
		d.log.Warn("removing uplink from the FIB", "interface", iface, "err", err)
	}
}

// updateUplink applies a changed neighbor setting to a running uplink: its
// peer is re-created with the new settings.
func (d *Daemon) updateUplink(ctx context.Context, n config.Neighbor) {
	d.mu.Lock()
	u := d.uplinks[n.Interface]
	if u != nil {
		u.neighbor = n
	}
	d.mu.Unlock()
	if u == nil {
		return
	}
	if err := d.speaker.SetPeer(ctx, int(u.id), u.status.Peer, n); err != nil {
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
	ups := make([]*uplinkRun, 0, len(d.uplinks))
	for _, u := range d.uplinks {
		ups = append(ups, u)
	}
	d.mu.Unlock()
	for _, u := range ups {
		u.cancel()
		<-u.done
	}
}

// handle feeds an event to u's machine and carries out what it asks for.
func (d *Daemon) handle(ctx context.Context, u *uplinkRun, ev uplink.Event) {
	u.machine.Handle(ev, time.Now())
	d.apply(ctx, u)
}

// apply carries out u's collected effects, FIB first.
func (d *Daemon) apply(ctx context.Context, u *uplinkRun) {
	e := u.effects.take()
	st := u.machine.Status()
	d.mu.Lock()
	u.status = st
	n := u.neighbor
	if st.Carrier {
		d.ifindexes[st.Ifindex] = u.id
	}
	d.mu.Unlock()
	if e.fib != nil {
		f := fib.Forwarding{V4: e.fib.V4, V6: e.fib.V6, Syncing: e.fib.Syncing, Ifindex: e.fib.Ifindex, MAC: e.fib.MAC, LL: e.fib.Addr}
		if err := d.fib.SetForwarding(ctx, u.id, n.Interface, f); err != nil {
			return // stopping
		}
	}
	if e.peer != nil {
		if err := d.speaker.SetPeer(ctx, int(u.id), *e.peer, n); err != nil {
			d.log.Error("configuring BGP peer", "interface", n.Interface, "err", err)
		}
	}
	if e.sweep {
		if k := d.rib.SweepStale(u.id, 0); k > 0 {
			d.log.Info("dropped paths kept from an ended session", "interface", n.Interface, "paths", k)
		}
	}
	if e.interval > 0 {
		u.link.SetRAInterval(e.interval)
	}
	if e.advertise {
		u.link.Advertise()
	}
	if e.solicit {
		u.link.Solicit()
	}
	for _, addr := range e.resolve {
		if err := neighbors.Resolve(st.Ifindex, addr); err != nil {
			d.log.Debug("asking the kernel to resolve the ToR's MAC", "interface", n.Interface, "err", err)
		}
	}
}

// onNeighbor takes a neighbour table change (on the watcher's goroutine):
// the 169.254.0.1 entries are the FIB writer's, IPv6 link-local entries
// on uplinks go to their machines.
func (d *Daemon) onNeighbor(ctx context.Context, u neighbors.Update) {
	switch {
	case u.Addr == fib.Gateway:
		d.fib.CheckNeighbor(ctx, u.Ifindex)
	case u.Addr.Is6() && u.Addr.IsLinkLocalUnicast() && !u.Deleted && u.MAC != nil:
		d.mu.Lock()
		_, ours := d.ifindexes[u.Ifindex]
		d.mu.Unlock()
		if !ours {
			return
		}
		select {
		case d.neighbors <- u:
		case <-ctx.Done():
		}
	}
}

// thirdPartyNextHop says whether a global or IPv4 next hop received on
// iface is another router's than the ToR's: the kernel knows it with
// another MAC. (Called from GoBGP's event goroutine.)
func (d *Daemon) thirdPartyNextHop(iface string, nh netip.Addr) bool {
	d.mu.Lock()
	u := d.uplinks[iface]
	var st uplink.Status
	if u != nil {
		st = u.status
	}
	d.mu.Unlock()
	if u == nil || st.MAC == nil {
		return false
	}
	mac, err := neighbors.Lookup(st.Ifindex, nh)
	return err == nil && mac != nil && string(mac) != string(st.MAC)
}
