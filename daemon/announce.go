package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/fabricd/fabricd/autoannounce"
	"github.com/fabricd/fabricd/config"
)

// announcement is one prefix fabricd originates.
type announcement struct {
	blackhole bool
	source    string // "config", or what autoannounce found
}

// desiredAnnouncements merges the configured prefixes with the ones
// derived from the kernel. A configured prefix wins over a derived one.
func desiredAnnouncements(cfg *config.Config, auto []autoannounce.Announcement) map[netip.Prefix]announcement {
	want := make(map[netip.Prefix]announcement, len(cfg.Announce)+len(auto))
	for _, a := range auto {
		want[a.Prefix] = announcement{blackhole: a.Blackhole, source: a.Source}
	}
	for _, a := range cfg.Announce {
		want[a.Prefix] = announcement{blackhole: a.Blackhole, source: "config"}
	}
	return want
}

// syncAnnouncements makes what BGP originates, and the blackholes in the
// kernel, equal the configured plus the derived announcements. It runs on
// the control loop (and at start-up, before it) and returns what changed.
func (d *Daemon) syncAnnouncements(ctx context.Context) ([]string, error) {
	d.mu.Lock()
	want := desiredAnnouncements(d.cfg, d.auto)
	have := d.announced
	d.mu.Unlock()

	var changes []string
	var errs []error
	next := make(map[netip.Prefix]announcement, len(want))
	for p, a := range have {
		if _, keep := want[p]; keep {
			next[p] = a
			continue
		}
		if err := d.speaker.Withdraw(ctx, p); err != nil {
			errs = append(errs, err)
			next[p] = a
			continue
		}
		changes = append(changes, fmt.Sprintf("withdrew %s (%s)", p, a.source))
	}
	for p, a := range want {
		if _, had := have[p]; !had {
			if err := d.speaker.Announce(ctx, p); err != nil {
				errs = append(errs, err)
				continue
			}
			changes = append(changes, fmt.Sprintf("announced %s (%s)", p, a.source))
		}
		next[p] = a
	}

	var holes []netip.Prefix
	for p, a := range next {
		if a.blackhole {
			holes = append(holes, p)
		}
	}
	slices.SortFunc(holes, netip.Prefix.Compare)
	if !slices.Equal(holes, d.blackholes) {
		if err := d.fib.SetBlackholes(ctx, holes); err != nil {
			errs = append(errs, err)
		} else {
			d.blackholes = holes
			changes = append(changes, fmt.Sprintf("blackholes now %v", holes))
		}
	}

	d.mu.Lock()
	d.announced = next
	d.mu.Unlock()
	slices.Sort(changes)
	return changes, errors.Join(errs...)
}

// announcedCount is the number of IPv4 (or with v6, IPv6) prefixes
// fabricd originates.
func (d *Daemon) announcedCount(v6 bool) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for p := range d.announced {
		if p.Addr().Is6() == v6 {
			n++
		}
	}
	return n
}

// announcementSource says where a locally originated prefix comes from.
func (d *Daemon) announcementSource(p netip.Prefix) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.announced[p]; ok {
		return a.source
	}
	return "config"
}

// autoConfig is the watcher configuration for cfg; ok is false when cfg
// derives nothing from the kernel.
func autoConfig(cfg *config.Config) (c autoannounce.Config, ok bool) {
	for _, a := range cfg.AutoAnnounce {
		c.Pools = append(c.Pools, autoannounce.PodPool{Pool: a.Pool, BlockSize: a.BlockSize, Interfaces: a.Interfaces, Blackhole: a.Blackhole})
	}
	for _, a := range cfg.AnnounceAddresses {
		c.Addresses = append(c.Addresses, autoannounce.AddressSource{Interfaces: a.Interfaces, Exclude: a.Exclude})
	}
	return c, len(c.Pools)+len(c.Addresses) > 0
}

// autoWatcher is a running autoannounce.Watcher.
type autoWatcher struct {
	w      *autoannounce.Watcher
	cancel context.CancelFunc
	done   chan struct{}
}

// setAutoWatcher starts, reconfigures or stops the kernel watcher to match
// cfg. The watcher only runs when something is to be derived: it
// subscribes to route changes, and on a server with 100k routes those are
// mostly fabricd's own.
func (d *Daemon) setAutoWatcher(ctx context.Context, cfg *config.Config) {
	c, want := autoConfig(cfg)
	switch {
	case want && d.watcher != nil:
		d.watcher.w.SetConfig(c)
	case want:
		c.Logger = d.log.With("component", "autoannounce")
		wctx, cancel := context.WithCancel(ctx)
		aw := &autoWatcher{w: autoannounce.New(c), cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(aw.done)
			if err := aw.w.Run(wctx, d.autoUpdates); err != nil {
				d.log.Error("watching the kernel for announcements", "err", err)
			}
		}()
		d.watcher = aw
	case d.watcher != nil:
		d.stopAutoWatcher()
		d.mu.Lock()
		d.auto = nil
		d.mu.Unlock()
	}
}

func (d *Daemon) stopAutoWatcher() {
	if d.watcher == nil {
		return
	}
	d.watcher.cancel()
	<-d.watcher.done
	d.watcher = nil
}

// awaitFirstAutoSet waits briefly for the watcher's first complete set, so
// that fabricd is ready with every announcement it will make.
func (d *Daemon) awaitFirstAutoSet(ctx context.Context) {
	if d.watcher == nil {
		return
	}
	select {
	case set := <-d.autoUpdates:
		d.mu.Lock()
		d.auto = set
		d.mu.Unlock()
	case <-time.After(5 * time.Second):
		d.log.Warn("kernel watcher has not reported yet; starting without derived announcements")
	case <-ctx.Done():
	}
}
