package testenv

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// RaceReport is one "WARNING: DATA RACE" report written by a binary built
// with -race, read from the files GORACE=log_path=... leaves behind.
type RaceReport struct {
	File string // the log file it came from (log_path.PID)
	Text string // the report as printed
	// TopFrames holds the innermost function of each conflicting access,
	// the current one first.
	TopFrames []string
}

// KnownUpstream names the upstream bug the report is an instance of, or ""
// when the race is not a known one and must be fixed.
func (r RaceReport) KnownUpstream() string {
	if len(r.TopFrames) != 2 {
		return ""
	}
	const pkg = "github.com/osrg/gobgp/v4/pkg/server."
	// GoBGP v4.8.0 reads fsm.recvOpen without fsm.lock in newWatchEventPeer
	// (every peer state change a watcher sees) and toConfig (ListPeer),
	// while the peer's FSM goroutine writes it under the lock on each new
	// connection (fsmHandler.active and .opensent). Fixed upstream by
	// osrg/gobgp#3540, after the last release on the module proxy.
	readers := []string{pkg + "newWatchEventPeer()", pkg + "(*BgpServer).toConfig()"}
	writers := []string{pkg + "(*fsmHandler).active()", pkg + "(*fsmHandler).opensent()"}
	a, b := r.TopFrames[0], r.TopFrames[1]
	if (slices.Contains(readers, a) && slices.Contains(writers, b)) ||
		(slices.Contains(writers, a) && slices.Contains(readers, b)) {
		return "osrg/gobgp#3540 (unlocked read of fsm.recvOpen)"
	}
	return ""
}

// accessHeader matches the line that opens each side of a race report:
// "Read at 0x... by goroutine 7:", "Previous atomic write at 0x... by main goroutine:".
var accessHeader = regexp.MustCompile(`(?i)^(previous )?(atomic )?(read|write) at 0x[0-9a-f]+ by `)

const raceBanner = "WARNING: DATA RACE"

// ReadRaceReports parses every race report in the files matching glob
// (the log_path given to GORACE, followed by "*").
func ReadRaceReports(glob string) ([]RaceReport, error) {
	files, err := filepath.Glob(glob)
	if err != nil {
		return nil, fmt.Errorf("race logs %s: %w", glob, err)
	}
	var reports []RaceReport
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("race log: %w", err)
		}
		for _, r := range parseRaceReports(string(data)) {
			r.File = name
			reports = append(reports, r)
		}
	}
	return reports, nil
}

// parseRaceReports splits a race log into reports. Each report sits
// between lines of '=' and starts with the banner.
func parseRaceReports(log string) []RaceReport {
	var reports []RaceReport
	var cur *RaceReport
	var text strings.Builder
	wantFrame := false
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	flush := func() {
		if cur != nil {
			cur.Text = strings.TrimSpace(text.String())
			reports = append(reports, *cur)
		}
		cur, wantFrame = nil, false
		text.Reset()
	}
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == raceBanner:
			flush()
			cur = &RaceReport{}
		case cur == nil:
			continue
		case strings.HasPrefix(trimmed, "=================="):
			flush()
			continue
		case accessHeader.MatchString(trimmed):
			wantFrame = true
		case wantFrame && trimmed != "":
			cur.TopFrames = append(cur.TopFrames, trimmed)
			wantFrame = false
		}
		text.WriteString(line)
		text.WriteByte('\n')
	}
	flush()
	return reports
}
