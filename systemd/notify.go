// Package systemd speaks the sd_notify protocol (Type=notify units): READY
// once fabricd is up, STATUS lines, RELOADING/READY around a reload,
// STOPPING, and WATCHDOG pings while the daemon's control loop answers.
// Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
package systemd

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends state changes to the service manager.
type Notifier struct {
	log *slog.Logger
}

// New returns a notifier that logs failed notifications to log.
func New(log *slog.Logger) *Notifier { return &Notifier{log: log} }

func (n *Notifier) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("notifying systemd", "state", state, "err", err)
	}
}

// Ready reports start-up (or a reload) complete.
func (n *Notifier) Ready(status string) { n.notify("READY=1\nSTATUS=" + status) }

// Reloading reports that a reload started; Ready must follow.
func (n *Notifier) Reloading() {
	n.notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec())
}

// Status sets the one-line status `systemctl status` shows.
func (n *Notifier) Status(status string) { n.notify("STATUS=" + status) }

// Stopping reports that shutdown began.
func (n *Notifier) Stopping() { n.notify("STOPPING=1") }

// Watchdog pings systemd at half the unit's WatchdogSec for as long as
// alive succeeds, so a wedged control loop gets the daemon restarted. It
// returns when ctx is done, at once if the watchdog is not enabled.
func (n *Notifier) Watchdog(ctx context.Context, alive func(context.Context) error) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("reading watchdog settings", "err", err)
		return nil
	}
	if interval == 0 {
		return nil
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		check, cancel := context.WithTimeout(ctx, interval/2)
		err := alive(check)
		cancel()
		if err == nil {
			n.notify("WATCHDOG=1")
		} else if ctx.Err() == nil {
			n.log.Error("control loop is not answering; withholding the watchdog ping", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
