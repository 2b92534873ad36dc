package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
)

// settle is how long a run waits after its last timed event before it reads
// memory or verifies the FIB: long enough for End-of-RIB and the daemons'
// follow-up work, short enough to keep the whole benchmark in minutes.
const settle = time.Second

// fibSample is one FIB-completion run: a server daemon started next to a ToR that
// already holds N prefixes.
type fibSample struct {
	Start        time.Time // just before the daemon was started
	Established  time.Time // the ToR's %ADJCHANGE ... Up
	FirstUpdate  time.Time // the ToR's first UPDATE with routes reached the server
	LastData     time.Time // the last of the ToR's UPDATE data reached the server
	FirstRoute   time.Time // first of the N routes in the server's kernel
	AllRoutes    time.Time // the N-th
	PeakRSSKB    int64     // VmHWM summed over the server's daemons
	RSSBy        map[string]int64
	FIBPrefixes  int // /proc/net/fib_triestat afterwards
	FabricdPhase *fabricdPhases
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (s fibSample) estToAll() float64   { return ms(s.AllRoutes.Sub(s.Established)) }
func (s fibSample) firstToAll() float64 { return ms(s.AllRoutes.Sub(s.FirstRoute)) }
func (s fibSample) startToEst() float64 { return ms(s.Established.Sub(s.Start)) }
func (s fibSample) startToAll() float64 { return ms(s.AllRoutes.Sub(s.Start)) }
func (s fibSample) torDelay() float64   { return ms(s.FirstUpdate.Sub(s.Established)) }

// rssDaemons are the processes whose peak RSS a role is charged with.
var rssDaemons = map[testenv.Role][]string{
	testenv.RoleFabricd: {"fabricd"},
	testenv.RoleFRR:     {"zebra", "bgpd"},
}

// fibTimeout bounds a run's wait for all N routes; FRR took about 5 s from start
// for 100,000 here.
func fibTimeout(n int) time.Duration { return 60*time.Second + time.Duration(n)*400*time.Microsecond }

// runFIB builds a lab whose ToR originates n prefixes, starts c1's daemon(s) and
// times the session and the routes' arrival in c1's kernel.
func (b *Bench) runFIB(ctx context.Context, role testenv.Role, n int) (_ fibSample, err error) {
	lab, err := testenv.New(ctx, b.labOptions(role, 1, n))
	if err != nil {
		return fibSample{}, err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	srv, tor := lab.Server("c1"), lab.ToR(0)
	port := tor.PortFor("c1")

	mon, err := nlmon.Open(srv.Namespace(), nlmon.Options{Watch: b.base(), Poll: monitorPoll})
	if err != nil {
		return fibSample{}, err
	}
	defer mon.Close()
	capt, err := StartCapture(srv.Namespace(), srv.Uplinks()[0])
	if err != nil {
		return fibSample{}, err
	}
	defer capt.Close()
	fibBefore, err := FIBPrefixes(srv.Namespace())
	if err != nil {
		return fibSample{}, err
	}
	mark := logMark(tor.LogPath())
	all := mon.Watch(fmt.Sprintf("%d routes in %s's kernel", n, srv.Name()), func(m *nlmon.FIB) bool { return m.Routes() >= n })

	var s fibSample
	s.Start = time.Now()
	if err := srv.Start(ctx); err != nil {
		return fibSample{}, err
	}
	if s.AllRoutes, err = all.Wait(ctx, fibTimeout(n)); err != nil {
		var got int
		mon.Read(func(m *nlmon.FIB) { got = m.Routes() })
		return fibSample{}, fmt.Errorf("%w (%d there)\n%s", err, got, tailLog(srv.Log(), 15))
	}
	mon.Read(func(m *nlmon.FIB) { s.FirstRoute = m.First() })
	if s.Established, err = waitSessionUp(ctx, tor.LogPath(), mark, port, 10*time.Second); err != nil {
		return fibSample{}, err
	}
	s.FirstUpdate = capt.FirstUpdate(s.Start)
	s.LastData = capt.LastData(s.Start, s.AllRoutes)

	if err := sleep(ctx, settle); err != nil {
		return fibSample{}, err
	}
	if s.PeakRSSKB, s.RSSBy, err = peakRSS(srv, rssDaemons[role]); err != nil {
		return fibSample{}, err
	}
	if s.FIBPrefixes, err = FIBPrefixes(srv.Namespace()); err != nil {
		return fibSample{}, err
	}
	if s.FIBPrefixes < fibBefore+n {
		return fibSample{}, fmt.Errorf("fib_triestat of %s counts %d prefixes, want at least %d+%d", srv.Namespace(), s.FIBPrefixes, fibBefore, n)
	}
	if err := mon.Verify(); err != nil {
		return fibSample{}, err
	}
	if role == testenv.RoleFabricd {
		text, err := readLogFrom(srv.LogPath(), 0)
		if err != nil {
			return fibSample{}, err
		}
		ph := parseFabricdLog(text)
		s.FabricdPhase = &ph
	}
	return s, nil
}

// waitSessionUp waits for the ToR to log that its session on port came up after
// mark and returns when it did.
func waitSessionUp(ctx context.Context, logPath string, mark int64, port string, timeout time.Duration) (time.Time, error) {
	var up time.Time
	err := testenv.WaitFor(ctx, timeout, "the ToR to log its session on "+port+" Up", func() error {
		text, err := readLogFrom(logPath, mark)
		if err != nil {
			return err
		}
		t, ok := sessionUp(text, port)
		if !ok {
			return errors.New("no %ADJCHANGE ... Up line yet")
		}
		up = t
		return nil
	})
	return up, err
}

// peakRSS sums VmHWM over the named daemons of srv.
func peakRSS(srv *testenv.Server, names []string) (int64, map[string]int64, error) {
	pids := srv.PIDs()
	by := map[string]int64{}
	var total int64
	for _, name := range names {
		pid, ok := pids[name]
		if !ok {
			return 0, nil, fmt.Errorf("%s is not running on %s", name, srv.Name())
		}
		kb, err := procStatusKB(pid, "VmHWM")
		if err != nil {
			return 0, nil, err
		}
		by[name] = kb
		total += kb
	}
	// Shown, not charged: FRR's server role also runs staticd for the pod block.
	if pid, ok := pids["staticd"]; ok {
		if kb, err := procStatusKB(pid, "VmHWM"); err == nil {
			by["staticd"] = kb
		}
	}
	return total, by, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func tailLog(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
