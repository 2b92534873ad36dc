package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/rib"
)

type reloadRequest struct {
	result chan reloadResult
}

type reloadResult struct {
	changes []string
	err     error
}

// Reload re-reads the configuration file and applies what changed, without
// touching sessions the change does not concern. A configuration that
// fails validation, or changes a setting only a restart can apply, is
// refused and the running one stays.
func (d *Daemon) Reload(ctx context.Context) ([]string, error) {
	req := reloadRequest{result: make(chan reloadResult, 1)}
	select {
	case d.reloads <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case r := <-req.result:
		return r.changes, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// reload runs on the control loop.
func (d *Daemon) reload(ctx context.Context) ([]string, error) {
	cur := d.config()
	next, err := LoadConfig(cur.Path)
	if err != nil {
		return nil, err
	}
	if d.apiSocket != "" {
		next.API.Socket = d.apiSocket
	}
	if keys := restartOnly(cur, next); len(keys) > 0 {
		return nil, fmt.Errorf("%s: changing %s needs a restart (systemctl restart fabricd); the running configuration is unchanged",
			cur.Path, strings.Join(keys, ", "))
	}
	d.notifier.Reloading()
	defer d.notifier.Ready(d.statusLine())

	var changes []string
	if next.Log.Level != cur.Log.Level && d.level != nil {
		d.level.Set(next.Log.Level)
		changes = append(changes, fmt.Sprintf("log level %s", next.Log.Level))
	}

	var errs []error
	// Announcements, configured and derived, and their blackholes.
	d.setConfig(next)
	d.setAutoWatcher(ctx, next)
	annChanges, err := d.syncAnnouncements(ctx)
	changes = append(changes, annChanges...)
	if err != nil {
		errs = append(errs, err)
	}

	// Neighbors: stop removed uplinks, start new ones, update changed ones.
	for _, n := range cur.Neighbors {
		if _, keep := next.Neighbor(n.Interface); !keep {
			d.stopUplink(ctx, n.Interface)
			changes = append(changes, "removed neighbor "+n.Interface)
		}
	}
	for _, n := range next.Neighbors {
		old, had := cur.Neighbor(n.Interface)
		switch {
		case !had:
			id, ok := d.freeID()
			if !ok {
				errs = append(errs, fmt.Errorf("neighbor %s: more than %d uplinks", n.Interface, rib.MaxUplinks))
				continue
			}
			d.startUplink(ctx, id, n)
			changes = append(changes, "added neighbor "+n.Interface)
		case old.Address != n.Address || old.MaxPrefixesRestart != n.MaxPrefixesRestart:
			// The uplink's machine knows these: start it afresh.
			d.stopUplink(ctx, n.Interface)
			if id, ok := d.freeID(); ok {
				d.startUplink(ctx, id, n)
			}
			changes = append(changes, "changed neighbor "+n.Interface)
		case old != n:
			d.updateUplink(ctx, n)
			changes = append(changes, "changed neighbor "+n.Interface)
		}
	}

	if len(changes) == 0 {
		changes = append(changes, "no changes")
	}
	d.log.Info("configuration reloaded", "changes", strings.Join(changes, "; "))
	return changes, errors.Join(errs...)
}

// restartOnly lists the settings that differ and cannot be applied live.
func restartOnly(cur, next *config.Config) []string {
	var keys []string
	check := func(key string, differs bool) {
		if differs {
			keys = append(keys, key)
		}
	}
	check("asn", cur.ASN != next.ASN)
	check("router-id", cur.RouterID != next.RouterID)
	check("bgp", cur.BGP != next.BGP)
	check("api", cur.API != next.API)
	check("metrics", cur.Metrics != next.Metrics)
	check("fib", cur.FIB != next.FIB)
	check("import", !slices.Equal(cur.Import.Allow, next.Import.Allow) || cur.Import.AllowDefault != next.Import.AllowDefault)
	return keys
}
