package bench

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// logMark is where a log file ended, so that only later lines are read.
func logMark(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func readLogFrom(path string, offset int64) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "", err
	}
	b, err := io.ReadAll(f)
	return string(b), err
}

// sessionUp finds the first `%ADJCHANGE: neighbor PORT... Up` line of an FRR log
// and returns its timestamp.
func sessionUp(log, port string) (time.Time, bool) {
	for line := range strings.SplitSeq(log, "\n") {
		i := strings.Index(line, "%ADJCHANGE: neighbor "+port)
		if i < 0 || !strings.HasSuffix(strings.TrimSpace(line), " Up") {
			continue
		}
		// The port name must end there: swp1 is not swp10.
		if rest := line[i+len("%ADJCHANGE: neighbor "+port):]; !strings.HasPrefix(rest, "(") && !strings.HasPrefix(rest, " ") {
			continue
		}
		if len(line) < len(testenv.FRRTimeLayout) {
			continue
		}
		t, err := time.ParseInLocation(testenv.FRRTimeLayout, line[:len(testenv.FRRTimeLayout)], time.Local)
		if err != nil {
			continue
		}
		return t, true
	}
	return time.Time{}, false
}

// logRecord is one line of fabricd's log (log/slog's text format).
type logRecord struct {
	time  time.Time
	msg   string
	attrs map[string]string
}

// parseSlogLine decodes `time=... level=... msg="..." key=value ...`.
func parseSlogLine(line string) (logRecord, bool) {
	rec := logRecord{attrs: map[string]string{}}
	rest := strings.TrimSpace(line)
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			break
		}
		key := rest[:eq]
		rest = rest[eq+1:]
		var val string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return logRecord{}, false
			}
			val, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			end := strings.IndexByte(rest, ' ')
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
		}
		rest = strings.TrimLeft(rest, " ")
		switch key {
		case "time":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return logRecord{}, false
			}
			rec.time = t
		case "msg":
			rec.msg = val
		default:
			rec.attrs[key] = val
		}
	}
	return rec, !rec.time.IsZero() && rec.msg != ""
}

// fabricdPhases is what fabricd's own log says about one start.
type fabricdPhases struct {
	Up          time.Time // "fabricd is up": kernel reconciled, discovery running
	Discovered  time.Time // first "ToR discovered"
	Configured  time.Time // first "BGP peer configured"
	Established time.Time // first "BGP session established" (fabricd's view)

	Batches       int           // "fib batch applied" records
	Ops           int           // route operations in them
	BatchTime     time.Duration // time spent applying them
	FirstBatchEnd time.Time
	LastBatchEnd  time.Time
}

// parseFabricdLog extracts the phases from fabricd's log. Records it does not know
// are skipped: the daemon's messages may change without breaking the benchmark,
// which then only loses detail.
func parseFabricdLog(log string) fabricdPhases {
	var ph fabricdPhases
	setOnce := func(t *time.Time, v time.Time) {
		if t.IsZero() {
			*t = v
		}
	}
	for line := range strings.SplitSeq(log, "\n") {
		rec, ok := parseSlogLine(line)
		if !ok {
			continue
		}
		switch rec.msg {
		case "fabricd is up":
			setOnce(&ph.Up, rec.time)
		case "ToR discovered":
			setOnce(&ph.Discovered, rec.time)
		case "BGP peer configured":
			setOnce(&ph.Configured, rec.time)
		case "BGP session established":
			setOnce(&ph.Established, rec.time)
		case "fib batch applied":
			ph.Batches++
			if n, err := strconv.Atoi(rec.attrs["ops"]); err == nil {
				ph.Ops += n
			}
			if d, err := time.ParseDuration(rec.attrs["duration"]); err == nil {
				ph.BatchTime += d
			}
			setOnce(&ph.FirstBatchEnd, rec.time)
			ph.LastBatchEnd = rec.time
		}
	}
	return ph
}

// procStatusKB reads a "Name:  N kB" field of /proc/PID/status.
func procStatusKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parsing %s of pid %d: %w", field, pid, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("pid %d has no %s", pid, field)
}
