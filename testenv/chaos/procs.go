package chaos

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/netns"
)

// ProcSample is what one server daemon holds at a moment.
type ProcSample struct {
	At         time.Time
	FDs        int // entries of /proc/PID/fd
	Goroutines int // fabricd's go_goroutines metric; -1 for FRR's daemons
}

// ProcTrack follows one server daemon process through the run: its baseline,
// taken once it had run baselineAge on a healthy fabric, and its state at the
// end. A process that did not live to the end (a fault restarted it) has no
// final sample.
type ProcTrack struct {
	Server, Daemon string
	PID            int
	Baseline       *ProcSample
	Final          *ProcSample
	Err            string

	firstSeen time.Time // zero: running since the soak began
}

// Leak describes growth beyond the tolerance, or "" if there is none.
func (t ProcTrack) Leak() string {
	if t.Baseline == nil || t.Final == nil {
		return ""
	}
	var out []string
	if d := t.Final.FDs - t.Baseline.FDs; d > fdTolerance {
		out = append(out, fmt.Sprintf("%d more file descriptors", d))
	}
	if t.Baseline.Goroutines >= 0 && t.Final.Goroutines >= 0 {
		if d := t.Final.Goroutines - t.Baseline.Goroutines; d > goroutineTolerance {
			out = append(out, fmt.Sprintf("%d more goroutines", d))
		}
	}
	return strings.Join(out, ", ")
}

// procs samples the server daemons' descriptors and goroutines at quiet
// moments of the soak, without starting a process: /proc and, for fabricd, its
// metrics endpoint reached from inside the server's namespace.
type procs struct {
	role    testenv.Role
	servers []*testenv.Server
	tracks  []*ProcTrack
}

func newProcs(role testenv.Role, servers []*testenv.Server) *procs {
	p := &procs{role: role, servers: servers}
	p.discover(time.Time{})
	return p
}

// discover adds a track for every daemon process not seen before.
func (p *procs) discover(now time.Time) {
	for _, s := range p.servers {
		for daemon, pid := range s.PIDs() {
			if p.find(s.Name(), pid) == nil {
				p.tracks = append(p.tracks, &ProcTrack{Server: s.Name(), Daemon: daemon, PID: pid, firstSeen: now})
			}
		}
	}
}

func (p *procs) find(server string, pid int) *ProcTrack {
	for _, t := range p.tracks {
		if t.Server == server && t.PID == pid {
			return t
		}
	}
	return nil
}

// running reports whether the track's process still is the server's daemon.
func (p *procs) running(t *ProcTrack) bool {
	for _, s := range p.servers {
		if s.Name() == t.Server {
			return s.PIDs()[t.Daemon] == t.PID
		}
	}
	return false
}

// checkpoint is called at quiet moments: it notices new processes and takes
// the baseline of those that have run long enough, if the fabric is healthy
// (a process in the middle of recovering holds extra sessions and sockets).
func (p *procs) checkpoint(healthy bool) {
	now := time.Now()
	p.discover(now)
	if !healthy {
		return
	}
	for _, t := range p.tracks {
		if t.Baseline != nil || !p.running(t) || (!t.firstSeen.IsZero() && now.Sub(t.firstSeen) < baselineAge) {
			continue
		}
		s, err := p.sample(t, 3, 100*time.Millisecond)
		if err != nil {
			t.Err = err.Error()
			continue
		}
		t.Baseline = &s
	}
}

// finish takes the final samples of the processes that are still running and
// returns every track.
func (p *procs) finish() []ProcTrack {
	p.discover(time.Now())
	var out []ProcTrack
	for _, t := range p.tracks {
		if t.Baseline != nil && p.running(t) {
			s, err := p.sample(t, 5, 400*time.Millisecond)
			if err != nil {
				t.Err = err.Error()
			} else {
				t.Final = &s
			}
		}
		out = append(out, *t)
	}
	return out
}

// sample takes n samples, gap apart, and keeps the lowest of each figure: a
// keepalive or a scrape adds a goroutine for a moment.
func (p *procs) sample(t *ProcTrack, n int, gap time.Duration) (ProcSample, error) {
	best := ProcSample{At: time.Now(), FDs: 1 << 30, Goroutines: 1 << 30}
	if t.Daemon != "fabricd" {
		best.Goroutines = -1
	}
	var ns string
	for _, s := range p.servers {
		if s.Name() == t.Server {
			ns = s.Namespace()
		}
	}
	for i := range n {
		if i > 0 {
			time.Sleep(gap)
		}
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", t.PID))
		if err != nil {
			return ProcSample{}, fmt.Errorf("%s %s (pid %d): %w", t.Server, t.Daemon, t.PID, err)
		}
		best.FDs = min(best.FDs, len(ents))
		if best.Goroutines >= 0 {
			g, err := goroutines(ns)
			if err != nil {
				return ProcSample{}, fmt.Errorf("%s %s (pid %d): %w", t.Server, t.Daemon, t.PID, err)
			}
			best.Goroutines = min(best.Goroutines, g)
		}
	}
	return best, nil
}

// goroutines reads go_goroutines from fabricd's metrics endpoint in namespace
// ns, over a connection opened inside it.
func goroutines(ns string) (int, error) {
	var conn net.Conn
	err := netns.Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", metricsListen, 2*time.Second)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", metricsListen); err != nil {
		return 0, fmt.Errorf("metrics: %w", err)
	}
	return parseGoroutines(conn)
}

// parseGoroutines finds the go_goroutines sample in an HTTP response carrying
// Prometheus' text format.
func parseGoroutines(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("metrics: go_goroutines %q: %w", v, err)
			}
			return int(f), nil
		}
	}
	return 0, errors.Join(errors.New("metrics: no go_goroutines sample"), sc.Err())
}
