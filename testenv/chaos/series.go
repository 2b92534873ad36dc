package chaos

import (
	"sort"
	"sync"
	"time"

	"github.com/fabricd/fabricd/testenv/nlmon"
)

// CounterSample is every ToR's forwarded-ICMP counters at one moment: per ToR,
// per port.
type CounterSample struct {
	At  time.Time
	ToR []map[string]nlmon.Count
}

// Samples is the timeline of the ToRs' counters.
type Samples struct {
	List []CounterSample
	Err  string // the first read that failed, if any
}

// series reads the ToRs' counters every interval, in process.
type series struct {
	meters []*nlmon.Counters

	mu  sync.Mutex
	out Samples

	quit chan struct{}
	done chan struct{}
}

func startSeries(meters []*nlmon.Counters, every time.Duration) *series {
	s := &series{meters: meters, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			s.read()
			select {
			case <-s.quit:
				s.read() // the state at the end
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *series) read() {
	cs := CounterSample{At: time.Now()}
	for _, m := range s.meters {
		c, err := m.Read()
		if err != nil {
			s.mu.Lock()
			if s.out.Err == "" {
				s.out.Err = err.Error()
			}
			s.mu.Unlock()
			return
		}
		cs.ToR = append(cs.ToR, c)
	}
	s.mu.Lock()
	s.out.List = append(s.out.List, cs)
	s.mu.Unlock()
}

// stop ends the sampling and returns the timeline.
func (s *series) stop() Samples {
	close(s.quit)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out
}

// at returns the last sample taken at or before t.
func (s Samples) at(t time.Time) (CounterSample, bool) {
	i := sort.Search(len(s.List), func(i int) bool { return s.List[i].At.After(t) })
	if i == 0 {
		return CounterSample{}, false
	}
	return s.List[i-1], true
}

// between returns, per ToR and port, the packets counted from one moment to
// another (to the nearest sample at or before each), or false if the
// timeline does not cover them.
func (s Samples) between(from, to time.Time) ([]map[string]nlmon.Count, bool) {
	a, ok1 := s.at(from)
	b, ok2 := s.at(to)
	if !ok1 || !ok2 || !b.At.After(a.At) {
		return nil, false
	}
	out := make([]map[string]nlmon.Count, len(b.ToR))
	for i := range b.ToR {
		out[i] = map[string]nlmon.Count{}
		for port, c := range b.ToR[i] {
			out[i][port] = c.Sub(a.ToR[i][port])
		}
	}
	return out, true
}
