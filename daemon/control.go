package daemon

import (
	"context"
	"net/netip"
	"time"

	"github.com/fabricd/fabricd/bgp"
	"github.com/fabricd/fabricd/neighbors"
	"github.com/fabricd/fabricd/rib"
	"github.com/fabricd/fabricd/unnumbered"
	"github.com/fabricd/fabricd/uplink"
)

// control is the loop that owns the uplinks' machines: it feeds them
// discovery, neighbour-table and BGP session events and their timers, and
// carries out what they decide. It also runs reloads and derived
// announcements, and ends the takeover of an earlier run's routes.
func (d *Daemon) control(ctx context.Context, haveStale bool) error {
	// Routes of the earlier run are kept until every uplink with carrier
	// forwards again (its ToR resent its table), at most the restart
	// time.
	var adoptedUntil time.Time
	if haveStale {
		adoptedUntil = time.Now().Add(d.config().BGP.RestartTime)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	lastStatus := ""
	for {
		d.armTimer(timer, adoptedUntil)
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
		case ev := <-d.discovery:
			d.onDiscovery(ctx, ev)
		case n := <-d.neighbors:
			d.onKernelNeighbor(ctx, n)
		case <-d.sessions:
			d.takeSessions(ctx)
		case now := <-timer.C:
			// Session events first: a timer must not act on a session
			// state that has already changed.
			d.takeSessions(ctx)
			for _, u := range d.runs() {
				if dl := u.machine.Deadline(); !dl.IsZero() && !now.Before(dl) {
					u.machine.Tick(now)
					d.apply(ctx, u)
				}
			}
			if !adoptedUntil.IsZero() && !now.Before(adoptedUntil) {
				adoptedUntil = time.Time{}
				d.log.Warn("not every uplink forwards again in time; removing routes of the earlier run that were not relearned")
				if err := d.endTakeover(ctx); err != nil {
					return err
				}
			}
		}
		if !adoptedUntil.IsZero() && d.allForwarding() {
			adoptedUntil = time.Time{}
			d.log.Info("every uplink forwards again; removing routes of the earlier run that were not relearned")
			if err := d.endTakeover(ctx); err != nil {
				return err
			}
		}
		if s := d.statusLine(); s != lastStatus {
			lastStatus = s
			d.notifier.Status(s)
		}
	}
}

// endTakeover ends a restart: the earlier run's routes that nobody sent
// again go, and new sessions no longer claim a restart.
func (d *Daemon) endTakeover(ctx context.Context) error {
	d.speaker.SetRestarting(false)
	return d.fib.SweepStale(ctx)
}

// runs returns the running uplinks (for the control loop).
func (d *Daemon) runs() []*uplinkRun {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*uplinkRun, 0, len(d.uplinks))
	for _, u := range d.uplinks {
		out = append(out, u)
	}
	return out
}

// armTimer sets timer for the earliest machine deadline or adoptedUntil.
func (d *Daemon) armTimer(timer *time.Timer, adoptedUntil time.Time) {
	next := adoptedUntil
	for _, u := range d.runs() {
		if dl := u.machine.Deadline(); !dl.IsZero() && (next.IsZero() || dl.Before(next)) {
			next = dl
		}
	}
	if next.IsZero() {
		timer.Stop()
		return
	}
	timer.Reset(max(time.Until(next), 0))
}

// allForwarding: every uplink with carrier forwards, and one does.
func (d *Daemon) allForwarding() bool {
	any := false
	for _, st := range d.uplinkStatuses() {
		switch {
		case !st.machine.Carrier:
		case st.machine.Phase != uplink.Forwarding:
			return false
		default:
			any = true
		}
	}
	return any
}

func (d *Daemon) uplinkByName(name string) *uplinkRun {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.uplinks[name]
}

func (d *Daemon) onDiscovery(ctx context.Context, ev unnumbered.Event) {
	u := d.uplinkByName(ev.Interface)
	if u == nil {
		return
	}
	switch ev.Kind {
	case unnumbered.LinkUp:
		d.handle(ctx, u, uplink.Event{Kind: uplink.CarrierUp, Ifindex: ev.Index})
	case unnumbered.LinkDown:
		d.handle(ctx, u, uplink.Event{Kind: uplink.CarrierDown})
	case unnumbered.NeighborUp:
		d.handle(ctx, u, uplink.Event{Kind: uplink.ToRAdvertised, Addr: ev.Neighbor.Addr, MAC: ev.Neighbor.MAC})
	case unnumbered.NeighborDown:
		d.handle(ctx, u, uplink.Event{Kind: uplink.ToRSilent, Addr: ev.Neighbor.Addr})
	case unnumbered.Advertised:
		d.handle(ctx, u, uplink.Event{Kind: uplink.Advertised})
	}
}

func (d *Daemon) onKernelNeighbor(ctx context.Context, n neighbors.Update) {
	d.mu.Lock()
	id, ok := d.ifindexes[n.Ifindex]
	u := d.ids[id]
	d.mu.Unlock()
	if !ok || u == nil {
		return
	}
	if string(n.MAC) == string(u.link.Status().MAC) {
		// Ourselves: the kernel makes an entry for our own address when
		// our RA comes back to it through the ND socket's multicast loop.
		return
	}
	d.handle(ctx, u, uplink.Event{Kind: uplink.NeighborSeen, Addr: n.Addr.WithZone(u.neighbor.Interface), MAC: n.MAC, Router: n.Router})
}

// takeSessions feeds every uplink's queued session events to its machine.
func (d *Daemon) takeSessions(ctx context.Context) {
	for _, u := range d.runs() {
		for _, ev := range u.mailbox.Take() {
			d.handle(ctx, u, ev)
		}
	}
}

// bgpHandler receives the speaker's callbacks. They run on GoBGP's single
// event goroutine, in order, so a session's stale marking cannot race
// with the paths of the next session.
type bgpHandler Daemon

// busyEvery: a table load is under way once this many routes arrived
// (and tells the processor governor again every so many).
const busyEvery = 1024

func (h *bgpHandler) Route(id int, prefix netip.Prefix, asPathLen int, withdraw bool) {
	if h.routes.Add(1)%busyEvery == 0 {
		h.busy()
	}
	if withdraw {
		h.rib.Withdraw(rib.Uplink(id), prefix)
		return
	}
	if !h.importFilter.Accepts(prefix) {
		h.filtered[id].Add(1)
		// Refused, so a withdraw of what it replaces.
		h.rib.Withdraw(rib.Uplink(id), prefix)
		return
	}
	h.rib.Update(rib.Uplink(id), prefix, asPathLen)
}

func (h *bgpHandler) Stale(id int) {
	n := h.rib.MarkStale(rib.Uplink(id))
	h.log.Debug("keeping the ended session's paths as stale", "uplink", id, "paths", n)
}

// Sweep drops the stale paths of the family the peer did not resend. It
// runs in order with the peer's updates, so every path it resent is fresh
// by now.
func (h *bgpHandler) Sweep(id int, family uplink.Family) {
	fam := 4
	if family == uplink.IPv6 {
		fam = 6
	}
	if n := h.rib.SweepStale(rib.Uplink(id), fam); n > 0 {
		h.log.Info("the ToR did not resend some paths of its last session; removed them", "uplink", id, "family", family, "paths", n)
	}
}

func (h *bgpHandler) Session(id int, ev uplink.Event) {
	h.mu.Lock()
	u := h.ids[id]
	h.mu.Unlock()
	if u != nil {
		u.mailbox.Push(ev)
	}
}

func (h *bgpHandler) Refused(id int, why bgp.Refusal) {
	switch why {
	case bgp.RefusedLoop:
		h.refused[id][0].Add(1)
	case bgp.RefusedNextHop:
		h.refused[id][1].Add(1)
	}
}
