package autoannounce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// source is the kernel-facing side of a Watcher.
type source interface {
	// run sends a snapshot of the kernel's links, candidate routes and
	// addresses to out, then every change in the order it was read, until
	// ctx is done; then it returns nil with all its goroutines finished.
	// When its view may have become incomplete (a netlink socket
	// overflowed) it starts over with a new snapshot. It returns an error
	// only if it could not produce the first snapshot: then the Watcher
	// cannot work at all.
	run(ctx context.Context, out chan<- event, log *slog.Logger, resync time.Duration) error
}

// errRunning is returned by a second concurrent Run.
var errRunning = errors.New("autoannounce: Watcher is already running")

// Run watches until ctx is cancelled and returns nil then. It returns an
// error only when watching cannot start (no netlink access, a second Run).
//
// Every time the set of announcements changes, Run sends the complete
// current set, sorted by prefix, on updates. Sending never holds up
// watching: while the consumer is busy, changes accumulate and it receives
// only the latest set. Bursts of changes are coalesced into one send
// shortly after they settle. The first send comes once the kernel's
// initial state has been read, even if the set is empty, so the consumer
// knows its first picture is complete. Sent slices are the consumer's.
// updates may be nil; Current has the same data.
func (w *Watcher) Run(ctx context.Context, updates chan<- []Announcement) error {
	if !w.running.CompareAndSwap(false, true) {
		return errRunning
	}
	defer w.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// Deferred in this order: stop everything, then wait for it.
	defer wg.Wait()
	defer cancel()

	events := make(chan event, 256)
	srcDone := make(chan error, 1)
	wg.Go(func() { srcDone <- w.src.run(ctx, events, w.log, w.resync) })
	// What an earlier Run published is not news to this Run's consumer.
	_, seen := w.latest()
	wg.Go(func() { w.send(ctx, updates, seen) })

	l := loop{w: w, st: newState(compile(w.config(), w.log))}
	return l.run(ctx, events, srcDone)
}

// loop is the state of one Run. Only Run's goroutine touches it.
type loop struct {
	w     *Watcher
	st    *state
	last  []Announcement // the set last published
	ready bool           // the first snapshot has been applied and published

	// dirty is set while a change waits to be evaluated; since is when
	// the first such change came.
	dirty bool
	since time.Time
}

func (l *loop) run(ctx context.Context, events <-chan event, srcDone <-chan error) error {
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	defer hold.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-srcDone:
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				return errors.New("autoannounce: kernel watch ended unexpectedly")
			}
			return fmt.Errorf("autoannounce: %w", err)
		case ev := <-events:
			snapshot := l.apply(ev)
			// Take whatever else is queued before deciding anything: a
			// burst costs one evaluation, not one per message. Bounded, so
			// that a flood cannot keep the loop from its timers and ctx.
			for n, drained := 0, false; !drained && n < 1024; n++ {
				select {
				case ev = <-events:
					snapshot = l.apply(ev) || snapshot
				default:
					drained = true
				}
			}
			if !l.ready {
				// Nothing before the first snapshot is worth reporting;
				// the snapshot itself is reported at once.
				if snapshot {
					l.ready = true
					l.flush(hold, true)
				}
				continue
			}
			l.touch(settle)
		case <-l.w.cfgChanged:
			l.st.setConfig(compile(l.w.config(), l.w.log))
			if l.ready {
				l.touch(settle)
			}
		case <-settle.C:
			l.flush(hold, false)
		case <-hold.C:
			l.flush(hold, false)
		}
	}
}

// apply applies ev and reports whether it was a snapshot.
func (l *loop) apply(ev event) bool {
	l.st.apply(ev)
	return ev.kind == evSnapshot
}

// touch notes a change and (re)arms the settle timer: publish after
// w.settle of quiet, but no later than w.maxDelay after the first change.
func (l *loop) touch(settle *time.Timer) {
	now := time.Now()
	if !l.dirty {
		l.dirty, l.since = true, now
	}
	d := min(l.w.settle, l.w.maxDelay-now.Sub(l.since))
	settle.Reset(max(d, 0))
}

// flush evaluates the state and publishes the set if it changed (or
// always, with force), and arms hold for the next hold-down deadline.
func (l *loop) flush(hold *time.Timer, force bool) {
	l.dirty = false
	now := time.Now()
	next := l.st.evaluate(now)
	if !next.IsZero() {
		hold.Reset(next.Sub(now))
	} else {
		hold.Stop()
	}
	set := l.st.set()
	if !force && slices.Equal(set, l.last) {
		return
	}
	l.logDiff(set)
	l.last = set
	l.w.publish(slices.Clip(set))
}

// logDiff logs what changed between the last published set and set, one
// line per prefix: operators grep their logs for a block.
func (l *loop) logDiff(set []Announcement) {
	old := make(map[netip.Prefix]Announcement, len(l.last))
	for _, a := range l.last {
		old[a.Prefix] = a
	}
	for _, a := range set {
		o, ok := old[a.Prefix]
		delete(old, a.Prefix)
		if !ok || o != a {
			l.w.log.Info("announcing", "prefix", a.Prefix, "blackhole", a.Blackhole, "source", a.Source)
		}
	}
	for _, a := range l.last {
		if _, gone := old[a.Prefix]; gone {
			l.w.log.Info("withdrawing", "prefix", a.Prefix, "source", a.Source)
		}
	}
}

// send delivers published sets to updates: always the latest, each
// version after seen at most once, never blocking past ctx.
func (w *Watcher) send(ctx context.Context, updates chan<- []Announcement, seen uint64) {
	sent := seen
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.published:
		}
		for {
			set, v := w.latest()
			if v == sent {
				break
			}
			select {
			case updates <- set:
				sent = v
			case <-w.published:
				// A newer set replaced the one we were offering.
			case <-ctx.Done():
				return
			}
		}
	}
}
