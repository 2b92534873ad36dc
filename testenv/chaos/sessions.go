package chaos

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
)

// sessions follows the ToRs' BGP sessions with the servers from the ToRs' own
// logs (their %ADJCHANGE lines, microsecond timestamps), read in process as
// they grow: a session whose ToR says it is up can carry traffic, which a FIB
// holding stale paths does not show. A ToR whose daemons were killed or frozen
// logs nothing: the faults say so with killed and frozen.
type sessions struct {
	paths []string // per ToR: frr.log
	ports []string // per server: its port on every ToR

	mu      sync.Mutex
	offsets []int64
	partial []string
	history [][][]nlmon.Transition // per ToR, per server: up or down
	// pending: per ToR, per server, when the ToR was resumed from a freeze
	// with the session's state unknown (zero: known). See frozen.
	pending [][]time.Time

	quit chan struct{}
	done chan struct{}
}

// followSessions starts following the ToRs' logs. Every session is taken to
// be up now (the fabric has converged).
func followSessions(paths, ports []string, every time.Duration) *sessions {
	s := &sessions{paths: paths, ports: ports, quit: make(chan struct{}), done: make(chan struct{})}
	now := time.Now()
	for _, p := range paths {
		fi, err := os.Stat(p)
		var off int64
		if err == nil {
			off = fi.Size()
		}
		s.offsets = append(s.offsets, off)
		s.partial = append(s.partial, "")
		h := make([][]nlmon.Transition, len(ports))
		for i := range h {
			h[i] = []nlmon.Transition{{At: now, On: true}}
		}
		s.history = append(s.history, h)
		s.pending = append(s.pending, make([]time.Time, len(ports)))
	}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			s.read()
			select {
			case <-s.quit:
				s.read()
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// read parses what the logs gained since the last read.
func (s *sessions) read() {
	for t, path := range s.paths {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		s.mu.Lock()
		off := s.offsets[t]
		s.mu.Unlock()
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			continue
		}
		b, _ := io.ReadAll(f)
		f.Close()
		s.mu.Lock()
		s.offsets[t] += int64(len(b))
		text := s.partial[t] + string(b)
		lines := strings.Split(text, "\n")
		s.partial[t] = lines[len(lines)-1] // an unfinished line waits for its end
		for _, line := range lines[:len(lines)-1] {
			if at, port, up, ok := testenv.ParseADJChange(line); ok {
				for i, p := range s.ports {
					if p == port {
						s.setLocked(t, i, up, at)
						s.pending[t][i] = time.Time{}
					}
				}
			}
		}
		// A session the ToR said nothing about long after a freeze lived
		// through it.
		for i, p := range s.pending[t] {
			if !p.IsZero() && time.Since(p) > unknownAfterFreeze {
				s.setLocked(t, i, true, p)
				s.pending[t][i] = time.Time{}
			}
		}
		s.mu.Unlock()
	}
}

// unknownAfterFreeze is how long after a freeze a ToR may take to log a
// session going down (its hold timer, 9 s, expired while frozen) before the
// session is taken to have survived.
const unknownAfterFreeze = 20 * time.Second

// frozen records that a ToR's daemons were stopped and resumed at end. While
// frozen it logged nothing, and its sessions outlived the servers' hold timers:
// they are down from end until the ToR logs them up again. If the ToR logs
// nothing about one for unknownAfterFreeze, it survived (up again at end).
func (s *sessions) frozen(tor int, end time.Time) {
	s.read()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, h := range s.history[tor] {
		if !h[len(h)-1].At.Before(end) {
			continue // the ToR has already said what became of it
		}
		s.setLocked(tor, i, false, end)
		s.pending[tor][i] = end
	}
}

// setLocked records a session's change.
func (s *sessions) setLocked(tor, server int, up bool, at time.Time) {
	h := s.history[tor][server]
	if h[len(h)-1].On != up {
		s.history[tor][server] = append(h, nlmon.Transition{At: at, On: up})
	}
}

// killed records that a ToR's daemons died at a moment: its sessions are
// down until it logs them up again.
func (s *sessions) killed(tor int, at time.Time) {
	s.read() // what it logged before dying comes first
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.ports {
		s.setLocked(tor, i, false, at)
	}
}

// allUp reports whether every session is up now.
func (s *sessions) allUp() bool { return len(s.down(nil)) == 0 }

// down lists the sessions that are down now, as "tor2 swp3" (with the ToRs'
// names given) or as indexes.
func (s *sessions) down(tors []string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for t, hs := range s.history {
		for i, h := range hs {
			if h[len(h)-1].On {
				continue
			}
			name := fmt.Sprint(t)
			if t < len(tors) {
				name = tors[t]
			}
			out = append(out, name+" "+s.ports[i])
		}
	}
	return out
}

// stop ends the following and returns every session's timeline, flattened
// (ToR by ToR, server by server), in time order.
func (s *sessions) stop() [][]nlmon.Transition {
	close(s.quit)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	var out [][]nlmon.Transition
	for _, hs := range s.history {
		for _, h := range hs {
			h = slices.Clone(h)
			slices.SortStableFunc(h, func(a, b nlmon.Transition) int { return a.At.Compare(b.At) })
			out = append(out, h)
		}
	}
	return out
}
