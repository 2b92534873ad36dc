package scale

import (
	"io"
	"os"
	"strings"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
)

// fabricdUpAt returns the time of the first "fabricd is up" line of a fabricd
// log (log/slog's text format, millisecond stamps) at or after since: a
// lab directory kept with --dir and used again appends to the old logs.
func fabricdUpAt(log string, since time.Time) (time.Time, bool) {
	for line := range strings.SplitSeq(log, "\n") {
		if !strings.Contains(line, `msg="fabricd is up"`) {
			continue
		}
		v, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		if i := strings.IndexByte(v, ' '); i > 0 {
			v = v[:i]
		}
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil && !t.Before(since.Truncate(time.Millisecond)) {
			return t, true
		}
	}
	return time.Time{}, false
}

// torLog follows one ToR's BGP sessions with the servers from its FRR log, read
// in process as it grows (poll), from its first line. A ToR whose daemons are
// dead or stopped logs nothing, so the disturbances mark its sessions down
// themselves (down).
type torLog struct {
	path    string
	ports   []string // server i's port on this ToR
	off     int64
	partial string
	history [][]nlmon.Transition // per server: its session up or down, oldest first
}

func newTorLog(path string, ports []string) *torLog {
	return &torLog{path: path, ports: ports, history: make([][]nlmon.Transition, len(ports))}
}

// poll reads what the log gained since the last call.
func (l *torLog) poll() {
	f, err := os.Open(l.path)
	if err != nil {
		return // not written yet
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return
	}
	b, _ := io.ReadAll(f)
	l.off += int64(len(b))
	l.feed(string(b))
}

// feed parses a piece of the log; an unfinished last line waits for its end.
func (l *torLog) feed(text string) {
	lines := strings.Split(l.partial+text, "\n")
	l.partial = lines[len(lines)-1]
	for _, line := range lines[:len(lines)-1] {
		at, port, up, ok := testenv.ParseADJChange(line)
		if !ok {
			continue
		}
		for i, p := range l.ports {
			if p == port {
				l.set(i, up, at)
			}
		}
	}
}

func (l *torLog) set(i int, up bool, at time.Time) {
	h := l.history[i]
	if n := len(h); n > 0 && h[n-1].On == up {
		return
	}
	l.history[i] = append(h, nlmon.Transition{At: at, On: up})
}

// down marks every session down at t: the ToR's daemons died or were frozen
// then, and it will only log what becomes of the sessions once it runs again.
func (l *torLog) down(t time.Time) {
	l.poll() // what it logged before comes first
	for i := range l.ports {
		l.set(i, false, t)
	}
}

// allUp reports whether the ToR has logged every session up and none down
// since.
func (l *torLog) allUp() bool {
	for _, h := range l.history {
		if len(h) == 0 || !h[len(h)-1].On {
			return false
		}
	}
	return true
}

// upCount is how many sessions are up now.
func (l *torLog) upCount() int {
	n := 0
	for _, h := range l.history {
		if len(h) > 0 && h[len(h)-1].On {
			n++
		}
	}
	return n
}

// firstUp returns, per server, when its session first came up after t (zero:
// not yet).
func (l *torLog) firstUp(t time.Time) []time.Time {
	out := make([]time.Time, len(l.history))
	for i, h := range l.history {
		for _, tr := range h {
			if tr.On && !tr.At.Before(t) {
				out[i] = tr.At
				break
			}
		}
	}
	return out
}

// backUp returns, per server, when its session came up for good after t: the
// start of its last stretch up, if that began after t; zero if it is down now
// or has not been down and up again since t.
func (l *torLog) backUp(t time.Time) []time.Time {
	out := make([]time.Time, len(l.history))
	for i, h := range l.history {
		if n := len(h); n > 0 && h[n-1].On && !h[n-1].At.Before(t) {
			out[i] = h[n-1].At
		}
	}
	return out
}
