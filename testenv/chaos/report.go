package chaos

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// fmtDur prints a duration in ms below 10 s, in s above.
func fmtDur(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

func fmtShare(cross, total uint64) string {
	if total == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100*share(cross, total))
}

func (row Row) worst() string {
	switch {
	case row.Events == 0:
		return "-"
	case row.Never > 0:
		return fmt.Sprintf("never (%d of %d)", row.Never, row.Events)
	case row.WorstOverlap:
		return fmtDur(row.WorstToFull) + "*"
	}
	return fmtDur(row.WorstToFull)
}

func (row Row) worstSessions() string {
	switch {
	case row.Events == 0:
		return "-"
	case row.SessionsNever > 0:
		return fmt.Sprintf("never (%d of %d)", row.SessionsNever, row.Events)
	}
	return fmtDur(row.WorstSessions)
}

func (row Row) inFlight() string {
	if row.InFlight == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (<= %d ms)", row.InFlight, row.InFlightLatest.Milliseconds())
}

func (row Row) notes() string {
	var n []string
	if row.Shared > 0 {
		n = append(n, fmt.Sprintf("%d lost while an earlier fault was also active", row.Shared))
	}
	if row.Degraded > 0 {
		n = append(n, fmt.Sprintf("%d on a degraded fabric", row.Degraded))
	}
	if row.Errors > 0 {
		n = append(n, fmt.Sprintf("%d not injected", row.Errors))
	}
	return strings.Join(n, ", ")
}

// Table prints the per-class table of one or more roles' results (same seed),
// the rows of the roles side by side.
func Table(results []*Result) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "class\trole\tfaults\tlost\tin flight (own link)\tvia disturbed, before\tafter\tworst time to full ECMP\tto all sessions up\tnotes")
	if len(results) == 0 {
		w.Flush()
		return b.String()
	}
	for i := range results[0].Rows {
		for _, r := range results {
			row := r.Rows[i]
			if row.Class == noEvent {
				fmt.Fprintf(w, "%s\t%v\t\t%d\t\t\t\t\t\t\n", row.Class, r.Role, row.Lost)
				continue
			}
			fmt.Fprintf(w, "%s\t%v\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", row.Class, r.Role, row.Events, row.Lost, row.inFlight(),
				fmtShare(row.CrossBefore, row.TotalBefore), fmtShare(row.CrossAfter, row.TotalAfter), row.worst(), row.worstSessions(), row.notes())
		}
	}
	w.Flush()
	return b.String()
}

// Summary is the verdict lines of one role.
func (r *Result) Summary() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.Passed() {
		verdict = "FAIL"
	}
	if r.Role.String() != "fabricd" {
		verdict += " (baseline: reported, not asserted)"
	}
	rate := 0.0
	if d := (r.End.Sub(r.T0) - r.Flood.Timeout).Seconds(); d > 0 && len(r.Flood.FlowList) > 0 {
		rate = float64(r.Flood.Total()) / d / float64(len(r.Flood.FlowList))
	}
	fmt.Fprintf(&b, "%v: %s — %d faults, %d requests sent (%.0f/s per flow; %v apart planned), %d lost beyond the rule, took %v\n",
		r.Role, verdict, len(r.Events), r.Flood.Total(), rate, floodInterval, r.lostBeyondRule(), r.Took.Round(time.Second))
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "  - %s\n", f)
	}
	return b.String()
}

func (r *Result) lostBeyondRule() int {
	n := 0
	for _, row := range r.Rows {
		n += row.Lost
	}
	return n
}

// Markdown is the full report: the table, then per role the verdict, the
// checks, the daemons' descriptors and goroutines, every fault with what it
// did, and the losses.
func Markdown(results []*Result, command string) string {
	var b strings.Builder
	b.WriteString("# Chaos soak\n\n")
	if command != "" {
		fmt.Fprintf(&b, "Command: `%s`\n\n", command)
	}
	if len(results) > 0 {
		r := results[0]
		fmt.Fprintf(&b, "Seed %d, nominal duration %v, %d servers (%s) with one pod each, 2 FRR ToRs (`%s`; tor1 and tor2 are testenv's `tor` and `tor2`).\n",
			r.Seed, r.Duration, len(r.Servers), strings.Join(r.Servers, ", "), torGracefulRestart)
		fmt.Fprintf(&b, "Flood: an ICMP echo every %v on each of %d flows (every ordered pair of loopbacks and of pods); a reply later than %v is a loss. ",
			floodInterval, len(r.Flood.FlowList), replyTimeout)
		fmt.Fprintf(&b, "In flight: losses of a server's flows sent from %v before to %v after its own link lost carrier (a flap, a burst, all ports of its ToR), which the rule allows.\n\n",
			inFlightBefore, inFlightAfter)
	}
	b.WriteString("```\n" + Table(results) + "```\n\n")
	b.WriteString("`via disturbed`: share of the flood packets the ToRs received that went into the disturbed element (the ToR; for a flap that link, both ways; for a deleted gateway entry what the server sent up that link; for server faults that server's links, both ways), counted on the ToR ports before routing, in the second before the fault and in the second after full ECMP returned. `*`: another fault began before this one had recovered.\n\n")
	for _, r := range results {
		r.markdownRole(&b)
	}
	return b.String()
}

func (r *Result) markdownRole(b *strings.Builder) {
	fmt.Fprintf(b, "## %v\n\n", r.Role)
	fmt.Fprintf(b, "```\n%s```\n\n", r.Summary())
	fmt.Fprintf(b, "Lab %s (logs in %s), started %s, took %v. ECMP hash seeds per server: %v.\n",
		r.LabPrefix, r.LabDir, r.T0.Format("15:04:05"), r.Took.Round(time.Second), r.HashSeeds)
	if len(r.WarmupShare) == 2 {
		fmt.Fprintf(b, "During the warm-up tor1 forwarded %.1f%% of the flood and tor2 %.1f%%.\n", 100*r.WarmupShare[0], 100*r.WarmupShare[1])
	}
	b.WriteString("\n### Checks at the end\n\n")
	for _, c := range r.Checks {
		mark := "ok"
		if !c.OK {
			mark = "FAILED"
		}
		fmt.Fprintf(b, "- %s: %s", c.Name, mark)
		if c.Detail != "" {
			fmt.Fprintf(b, " (%s)", c.Detail)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n### Server daemons: file descriptors and goroutines\n\n")
	b.WriteString("| server | daemon | pid | baseline fds | final fds | baseline goroutines | final goroutines | verdict |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.Procs {
		g := func(s *ProcSample) string {
			if s == nil {
				return "-"
			}
			if s.Goroutines < 0 {
				return "n/a"
			}
			return fmt.Sprint(s.Goroutines)
		}
		fd := func(s *ProcSample) string {
			if s == nil {
				return "-"
			}
			return fmt.Sprint(s.FDs)
		}
		verdict := "flat"
		switch {
		case p.Err != "":
			verdict = p.Err
		case p.Leak() != "":
			verdict = "LEAK: " + p.Leak()
		case p.Baseline == nil:
			verdict = "too short-lived for a baseline"
		case p.Final == nil:
			verdict = "replaced by a fault"
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %s | %s | %s |\n", p.Server, p.Daemon, p.PID, fd(p.Baseline), fd(p.Final), g(p.Baseline), g(p.Final), verdict)
	}
	fmt.Fprintf(b, "\nTolerance: %d file descriptors, %d goroutines (lowest of several samples each time).\n", fdTolerance, goroutineTolerance)

	b.WriteString("\n### Faults\n\nTimes are seconds after the flood began; `full ECMP again` is from the fault's end to every server routing every other server's loopback and pod block over both uplinks again, `sessions up again` to both ToRs logging every session with the servers up again.\n\n")
	b.WriteString("| # | t | clock | class | fault | lasted | lost | in flight | via disturbed before / after | full ECMP again | sessions up again | notes |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for i, ev := range r.Events {
		o := r.Outcomes[i]
		var notes []string
		if ev.Step.Overlap {
			notes = append(notes, "overlaps the previous fault")
		}
		if o.Overlapped {
			notes = append(notes, "overlapped before recovery")
		}
		if ev.Degraded {
			notes = append(notes, "began on a degraded fabric")
		}
		if o.Shared > 0 {
			notes = append(notes, fmt.Sprintf("%d lost while an earlier fault was also active", o.Shared))
		}
		if ev.Err != "" {
			notes = append(notes, "error: "+ev.Err)
		}
		full, sess := fmtDur(o.ToFull), fmtDur(o.ToSessions)
		if o.Never {
			full = "never"
		}
		if o.SessionsNever {
			sess = "never"
		}
		if ev.Start.IsZero() {
			fmt.Fprintf(b, "| %d | | | %s | %s | | | | | | | %s |\n", ev.Index, ev.Step.Class, ev.What, strings.Join(notes, "; "))
			continue
		}
		fmt.Fprintf(b, "| %d | %.1f | %s | %s | %s | %s | %d | %d | %s / %s | %s | %s | %s |\n",
			ev.Index, ev.Start.Sub(r.T0).Seconds(), ev.Start.Format("15:04:05.000"), ev.Step.Class, ev.What,
			fmtDur(ev.End.Sub(ev.Start)), o.Lost, o.InFlight, fmtShare(o.CrossBefore, o.TotalBefore),
			fmtShare(o.CrossAfter, o.TotalAfter), full, sess, strings.Join(notes, "; "))
	}

	b.WriteString("\n### Losses\n\n")
	listed := false
	for i, ev := range r.Events {
		o := r.Outcomes[i]
		if o.Lost == 0 {
			continue
		}
		listed = true
		fmt.Fprintf(b, "- fault %d (%s, %s): %d lost (%d while it lasted, %d after), sent from %s to %s after the fault began (it ended after %s)",
			ev.Index, ev.Step.Class, ev.What, o.Lost, o.LostDuring, o.Lost-o.LostDuring,
			fmtDur(o.FirstLoss.Sub(ev.Start)), fmtDur(o.LastLoss.Sub(ev.Start)), fmtDur(ev.End.Sub(ev.Start)))
		if o.SendErrors > 0 {
			fmt.Fprintf(b, ", %d of them not sendable (no route at the source)", o.SendErrors)
		}
		b.WriteString(": " + flowCounts(o.LostFlows) + "\n")
	}
	if len(r.Unattributed) > 0 {
		listed = true
		flows := map[string]int{}
		first, last := r.Unattributed[0].Sent, r.Unattributed[0].Sent
		for _, l := range r.Unattributed {
			flows[r.Flood.Describe(l.Flow)]++
			first, last = minTime(first, l.Sent), maxTime(last, l.Sent)
		}
		fmt.Fprintf(b, "- outside every fault's window: %d lost, the first sent at %.3f s, the last at %.3f s: %s\n", len(r.Unattributed),
			first.Sub(r.T0).Seconds(), last.Sub(r.T0).Seconds(), flowCounts(flows))
	}
	if !listed {
		b.WriteString("None beyond the in-flight allowance.\n")
	}
	b.WriteString("\n")
}

// flowCounts lists flows by losses, most first.
func flowCounts(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// WriteLosses writes every lost request as a line of tab-separated fields:
// seconds after the flood began, the flow, the fault it was put down to (its
// index, or -), and "in-flight" or "lost"; a request that could not even be
// sent is marked "no-route".
func (r *Result) WriteLosses(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, "# t\tflow\tfault\tkind")
	for _, l := range r.Losses {
		fault := "-"
		if l.Event >= 0 {
			fault = strconv.Itoa(r.Events[l.Event].Index)
		}
		kind := "lost"
		if l.InFlight {
			kind = "in-flight"
		}
		if l.SendError {
			kind += ",no-route"
		}
		fmt.Fprintf(bw, "%.3f\t%s\t%s\t%s\n", l.Sent.Sub(r.T0).Seconds(), r.Flood.Describe(l.Flow), fault, kind)
	}
	return bw.Flush()
}
