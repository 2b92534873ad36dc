package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
)

// linkSample is one carrier loss and return on a server with two ToRs that both
// originate the same N prefixes (so every one of them is ECMP over ens3 and ens4).
type linkSample struct {
	DownTrigger time.Time // ToR's swp1 set down (its peer ens3 loses carrier)
	CarrierLost time.Time // ens3's RTM_NEWLINK without carrier, in the server
	OffUplink   time.Time // no route uses ens3 any more
	// DaemonWrite is the daemon's first change to the FIB after the carrier loss
	// (zero if it made none while the carrier was off).
	DaemonWrite time.Time
	// Flushed is how many nexthop objects the kernel itself deleted at carrier
	// loss: with nexthop objects the FIB stops using the uplink without the daemon.
	Flushed int

	UpTrigger      time.Time // swp1 set up again
	CarrierBack    time.Time // ens3 has carrier
	Established    time.Time // the ToR's session on swp1 is up again
	FirstUpdate    time.Time // its first UPDATE reached the server
	ECMPRestored   time.Time // every prefix is ECMP over ens3+ens4 again; zero if never
	FirstMultipath time.Time // the first prefix is; zero if never
}

// linkUpTimeout bounds the wait for ECMP to return. A daemon that has not restored
// it by then is recorded as never restoring it (FRR 8.4 does that: see the report).
const linkUpTimeout = 20 * time.Second

// sessionTimeout bounds the wait for the ToR's session to come back after the
// carrier did: over three hold times (9 s).
const sessionTimeout = 30 * time.Second

// since is t-from in milliseconds, or +Inf if t never happened.
func since(from, t time.Time) float64 {
	if t.IsZero() {
		return math.Inf(1)
	}
	return ms(t.Sub(from))
}

func (s linkSample) carrierLossDelay() float64 { return ms(s.CarrierLost.Sub(s.DownTrigger)) }
func (s linkSample) linkDown() float64         { return ms(max(0, s.OffUplink.Sub(s.CarrierLost))) }
func (s linkSample) daemonWrite() float64      { return since(s.CarrierLost, s.DaemonWrite) }
func (s linkSample) carrierBackDelay() float64 { return ms(s.CarrierBack.Sub(s.UpTrigger)) }
func (s linkSample) linkUp() float64           { return since(s.CarrierBack, s.ECMPRestored) }
func (s linkSample) linkUpFirst() float64      { return since(s.CarrierBack, s.FirstMultipath) }
func (s linkSample) upToEstablished() float64  { return since(s.CarrierBack, s.Established) }
func (s linkSample) upToRDelay() float64 {
	if s.Established.IsZero() {
		return math.NaN() // no session, no delay to speak of
	}
	return since(s.Established, s.FirstUpdate)
}

// runLink builds a two-ToR lab, converges c1 to ECMP for n prefixes, then takes
// tor's port to c1 down and up again and times the server's FIB.
func (b *Bench) runLink(ctx context.Context, role testenv.Role, n int) (_ linkSample, err error) {
	lab, err := testenv.New(ctx, b.labOptions(role, 2, n))
	if err != nil {
		return linkSample{}, err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	srv, tor := lab.Server("c1"), lab.ToR(0)
	port := tor.PortFor("c1")
	up1, up2 := srv.Uplinks()[0], srv.Uplinks()[1]

	mon, err := nlmon.Open(srv.Namespace(), nlmon.Options{Watch: b.base(), Poll: monitorPoll})
	if err != nil {
		return linkSample{}, err
	}
	defer mon.Close()
	ecmp := mon.Watch(fmt.Sprintf("%d routes ECMP over %s+%s", n, up1, up2), func(m *nlmon.FIB) bool { return m.Exactly(up1, up2) >= n })
	if err := srv.Start(ctx); err != nil {
		return linkSample{}, err
	}
	if _, err := ecmp.Wait(ctx, fibTimeout(2*n)); err != nil {
		return linkSample{}, fmt.Errorf("%w\n%s", err, tailLog(srv.Log(), 15))
	}
	if err := sleep(ctx, settle); err != nil {
		return linkSample{}, err
	}
	if err := mon.Verify(); err != nil {
		return linkSample{}, fmt.Errorf("before the carrier loss: %w", err)
	}
	capt, err := StartCapture(srv.Namespace(), up1)
	if err != nil {
		return linkSample{}, err
	}
	defer capt.Close()

	var s linkSample
	// Carrier loss.
	lost := mon.Watch(up1+" to lose carrier", func(m *nlmon.FIB) bool { return !m.Carrier(up1) })
	off := mon.Watch("no route through "+up1, func(m *nlmon.FIB) bool { return !m.Carrier(up1) && m.Using(up1) == 0 })
	var flushedBefore, writesBefore int
	mon.Read(func(m *nlmon.FIB) { flushedBefore, writesBefore = m.Flushed(), m.Writes() })
	wrote := mon.Watch("the daemon's first FIB write after the carrier loss", func(m *nlmon.FIB) bool {
		return !m.Carrier(up1) && m.Writes() > writesBefore
	})
	if s.DownTrigger, err = nlmon.SetLink(tor.Namespace(), port, false); err != nil {
		return linkSample{}, err
	}
	if s.CarrierLost, err = lost.Wait(ctx, 10*time.Second); err != nil {
		return linkSample{}, err
	}
	// Past the hold time (9 s) even a daemon that ignores carrier has withdrawn.
	if s.OffUplink, err = off.Wait(ctx, 30*time.Second); err != nil {
		return linkSample{}, err
	}
	mon.Read(func(m *nlmon.FIB) { s.Flushed = m.Flushed() - flushedBefore })
	// Let the server settle on its remaining uplink before the carrier returns.
	single := mon.Watch(fmt.Sprintf("%d routes through %s only", n, up2), func(m *nlmon.FIB) bool { return m.Exactly(up2) >= n })
	if _, err := single.Wait(ctx, 30*time.Second); err != nil {
		return linkSample{}, err
	}
	if err := sleep(ctx, 2*settle); err != nil {
		return linkSample{}, err
	}
	if err := mon.Verify(); err != nil {
		return linkSample{}, fmt.Errorf("after the carrier loss: %w", err)
	}
	// By now it has written, or it never does while the carrier is off.
	if s.DaemonWrite, err = wrote.Wait(ctx, time.Millisecond); err != nil && ctx.Err() != nil {
		return linkSample{}, err
	}

	// Carrier back.
	back := mon.Watch(up1+" to get carrier", func(m *nlmon.FIB) bool { return m.Carrier(up1) })
	first := mon.Watch("a route ECMP again", func(m *nlmon.FIB) bool { return m.Carrier(up1) && m.Exactly(up1, up2) > 0 })
	restored := mon.Watch(fmt.Sprintf("%d routes ECMP again", n), func(m *nlmon.FIB) bool { return m.Carrier(up1) && m.Exactly(up1, up2) >= n })
	mark := logMark(tor.LogPath())
	if s.UpTrigger, err = nlmon.SetLink(tor.Namespace(), port, true); err != nil {
		return linkSample{}, err
	}
	if s.CarrierBack, err = back.Wait(ctx, 10*time.Second); err != nil {
		return linkSample{}, err
	}
	// Not restoring ECMP is a result, not a failed run.
	if s.ECMPRestored, err = restored.Wait(ctx, linkUpTimeout); err != nil && ctx.Err() != nil {
		return linkSample{}, err
	}
	if s.FirstMultipath, err = first.Wait(ctx, time.Millisecond); err != nil && ctx.Err() != nil {
		return linkSample{}, err
	}
	// Only for the timeline: a daemon may well restore ECMP before its session is
	// back (fabricd reuses the paths it kept as stale). A session that does not come
	// back within sessionTimeout is a result too.
	if s.Established, err = waitSessionUp(ctx, tor.LogPath(), mark, port, sessionTimeout); err != nil {
		if ctx.Err() != nil {
			return linkSample{}, err
		}
		s.Established = time.Time{}
	}
	if !s.Established.IsZero() {
		// The ToR holds its UPDATEs back for about a second after Established.
		err = testenv.WaitFor(ctx, 5*time.Second, "the ToR's first UPDATE after the carrier returned", func() error {
			if s.FirstUpdate = capt.FirstUpdate(s.CarrierBack); s.FirstUpdate.IsZero() {
				return errors.New("none captured yet")
			}
			return nil
		})
		if err != nil {
			return linkSample{}, err
		}
	}
	if err := sleep(ctx, settle); err != nil {
		return linkSample{}, err
	}
	if err := mon.Verify(); err != nil {
		return linkSample{}, fmt.Errorf("after the carrier returned: %w", err)
	}
	return s, nil
}
