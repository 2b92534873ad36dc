package scale

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// fmtMs formats a time in milliseconds: "0.4 ms", "228 ms", "12.4 s",
// "never", or "–" for nothing measured.
func fmtMs(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.IsInf(v, 1):
		return "never"
	case v < 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
	case v < 1000:
		return strconv.FormatFloat(v, 'f', 0, 64) + " ms"
	case v < 100_000:
		return strconv.FormatFloat(v/1000, 'f', 1, 64) + " s"
	default:
		return strconv.FormatFloat(v/1000, 'f', 0, 64) + " s"
	}
}

// fmtNum formats a plain figure with the given decimals; "–" for NaN.
func fmtNum(v float64, decimals int) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

// thousands formats n with comma separators: 12,000.
func thousands(n int) string {
	if n < 0 {
		return "-" + thousands(-n)
	}
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtLoss formats a loss: "lost 3 of 2,400" (and how many never left).
func fmtLoss(l Loss) string {
	s := fmt.Sprintf("lost %s of %s", thousands(l.Lost), thousands(l.Sent))
	if l.Unsent > 0 {
		s += fmt.Sprintf(" (%s unsent: no route)", thousands(l.Unsent))
	}
	return s
}

// medianLoss is the run-by-run median of each count of a loss.
func medianLoss(ls []Loss) Loss {
	var lost, sent, unsent []float64
	for _, l := range ls {
		lost, sent, unsent = append(lost, float64(l.Lost)), append(sent, float64(l.Sent)), append(unsent, float64(l.Unsent))
	}
	if len(ls) == 0 {
		return Loss{}
	}
	return Loss{Lost: int(math.Round(median(lost))), Sent: int(math.Round(median(sent))), Unsent: int(math.Round(median(unsent)))}
}

// perServer is a figure with one value per server (or per session) in each run.
type perServer func(*Sample) []float64

// distCell renders a per-server figure over runs: the median across runs of
// each run's median and of each run's maximum ("median / max"), with how many
// were "never" if any were. format renders one value.
func distCell(runs []*Sample, f perServer, format func(float64) string) string {
	var meds, maxes, nevers []float64
	n := 0
	for _, s := range runs {
		vals := f(s)
		if vals == nil {
			continue
		}
		d := summarize(vals)
		meds, maxes, nevers = append(meds, d.Median), append(maxes, d.Max), append(nevers, float64(d.Never))
		n = max(n, d.N)
	}
	if len(meds) == 0 || n == 0 {
		return "–"
	}
	out := format(median(meds)) + " / " + format(median(maxes))
	if k := int(math.Round(median(nevers))); k > 0 {
		out += fmt.Sprintf(" (never: %d of %d)", k, n)
	}
	return out
}

// scalarCell renders a figure with one value per run: its median across runs.
func scalarCell(runs []*Sample, f func(*Sample) float64, format func(float64) string) string {
	var vals []float64
	for _, s := range runs {
		vals = append(vals, f(s))
	}
	if len(vals) == 0 {
		return "–"
	}
	return format(median(vals))
}

// lossCell renders the run-by-run median of a loss.
func lossCell(runs []*Sample, f func(*Sample) (Loss, bool)) string {
	var ls []Loss
	for _, s := range runs {
		if l, ok := f(s); ok {
			ls = append(ls, l)
		}
	}
	if len(ls) == 0 {
		return "–"
	}
	return fmtLoss(medianLoss(ls))
}

// disturbanceOf returns a figure of one disturbance, nil when the run has none.
func disturbanceOf(k Kind, f func(*Disturbance) []float64) perServer {
	return func(s *Sample) []float64 {
		if d := s.disturbance(k); d != nil {
			return f(d)
		}
		return nil
	}
}

func lossOf(k Kind, f func(*Disturbance) Loss) func(*Sample) (Loss, bool) {
	return func(s *Sample) (Loss, bool) {
		if d := s.disturbance(k); d != nil {
			return f(d), true
		}
		return Loss{}, false
	}
}

func mb(v float64) string  { return fmtNum(v, 1) }
func pct(v float64) string { return fmtNum(v, 2) + "%" }
func rate(v float64) string {
	return fmtNum(v, 0)
}

// row is one line of a table: its name and its cell for a role's runs.
type row struct {
	name string
	cell func(runs []*Sample) string
}

// mainRows are the figures of issue 13's table.
func mainRows(t Timing) []row {
	return []row{
		{"bring-up: first daemon start → full ECMP, median server / last server", func(r []*Sample) string {
			return distCell(r, func(s *Sample) []float64 { return s.BringUp }, fmtMs)
		}},
		{"  launching the daemons took", func(r []*Sample) string {
			return scalarCell(r, func(s *Sample) float64 { return ms(s.Launch) }, fmtMs)
		}},
		{"idle RSS per server, median / max (MB)", func(r []*Sample) string {
			return distCell(r, func(s *Sample) []float64 { return s.RSS }, mb)
		}},
		{"idle PSS per server, median / max (MB)", func(r []*Sample) string {
			return distCell(r, func(s *Sample) []float64 { return s.PSS }, mb)
		}},
		{fmt.Sprintf("idle CPU, all servers together over %v (%% of one CPU)", t.Idle), func(r []*Sample) string {
			return scalarCell(r, func(s *Sample) float64 { return s.CPU }, pct)
		}},
		{"wakeups (context switches) per server per minute, median / max", func(r []*Sample) string {
			return distCell(r, func(s *Sample) []float64 { return s.Wakeups }, rate)
		}},
		{"ToR BGP killed (kill -9, links up): traffic off it, median / max · flood", func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRKill, func(d *Disturbance) []float64 { return d.Failover }), fmtMs) +
				" · " + lossCell(r, lossOf(ToRKill, func(d *Disturbance) Loss { return d.During }))
		}},
		{fmt.Sprintf("ToR frozen (SIGSTOP %v, links up): traffic off it, median / max · flood", t.Freeze), func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRFreeze, func(d *Disturbance) []float64 { return d.Failover }), fmtMs) +
				" · " + lossCell(r, lossOf(ToRFreeze, func(d *Disturbance) Loss { return d.During }))
		}},
		{"killed ToR back: its bgpd listening → full ECMP, median / last · flood", func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRKill, func(d *Disturbance) []float64 { return d.Recovery }), fmtMs) +
				" · " + lossCell(r, lossOf(ToRKill, func(d *Disturbance) Loss { return d.After }))
		}},
		{fmt.Sprintf("ToR ports down %v, then up: ports up → full ECMP, median / last · flood (down + after)", t.PortsDown), func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRPortsDown, func(d *Disturbance) []float64 { return d.Recovery }), fmtMs) +
				" · " + lossCell(r, lossOf(ToRPortsDown, func(d *Disturbance) Loss {
				return Loss{Lost: d.During.Lost + d.After.Lost, Sent: d.During.Sent + d.After.Sent, Unsent: d.During.Unsent + d.After.Unsent}
			}))
		}},
	}
}

// detailRows are the figures behind the main ones.
func detailRows(t Timing) []row {
	count := func(f func(*Sample) float64) func([]*Sample) string {
		return func(r []*Sample) string { return scalarCell(r, f, func(v float64) string { return fmtNum(v, 0) }) }
	}
	return []row{
		{"bring-up: first daemon start → \"fabricd is up\" (its log), median / last", func(r []*Sample) string {
			return distCell(r, func(s *Sample) []float64 { return s.DaemonUp }, fmtMs)
		}},
		{"bring-up: first daemon start → the ToRs' sessions Established (ToR logs), median / last", func(r []*Sample) string {
			return distCell(r, func(s *Sample) []float64 { return s.SessionsUp }, fmtMs)
		}},
		{"bring-up: CPU time per server until the last server's full ECMP, median / max (all servers)", func(r []*Sample) string {
			sec := func(v float64) string { return fmtNum(v, 2) + " s" }
			return distCell(r, func(s *Sample) []float64 { return s.BringUpCPU }, sec) + " (" +
				scalarCell(r, func(s *Sample) float64 {
					if s.BringUpCPU == nil {
						return math.NaN()
					}
					sum := 0.0
					for _, v := range s.BringUpCPU {
						sum += v
					}
					return sum
				}, sec) + ")"
		}},
		{"bring-up: times a server lost full ECMP again before the idle window", count(func(s *Sample) float64 { return float64(s.BringUpFlaps) })},
		{"idle RSS per server by daemon, median (MB)", daemonRSSCell},
		{"idle CPU per server, median / max (% of one CPU)", func(r []*Sample) string {
			return distCell(r, func(s *Sample) []float64 { return s.CPUPerServer }, func(v float64) string { return fmtNum(v, 3) + "%" })
		}},
		{"the two ToRs' FRR over the idle window (% of one CPU)", func(r []*Sample) string {
			return scalarCell(r, func(s *Sample) float64 { return s.ToRCPU }, pct)
		}},
		{"killed ToR: restart → its bgpd listening", func(r []*Sample) string {
			return scalarCell(r, func(s *Sample) float64 {
				if d := s.disturbance(ToRKill); d != nil {
					return d.Listen
				}
				return math.NaN()
			}, fmtMs)
		}},
		{"killed ToR back: bgpd listening → its sessions Established (ToR log), median / last", func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRKill, func(d *Disturbance) []float64 { return d.Sessions }), fmtMs)
		}},
		{"killed ToR back: servers that lost full ECMP again before the next disturbance", count(func(s *Sample) float64 {
			return lostAgainOf(s, ToRKill)
		})},
		{"frozen ToR: SIGCONT → full ECMP, median / last · flood after SIGCONT", func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRFreeze, func(d *Disturbance) []float64 { return d.Recovery }), fmtMs) +
				" · " + lossCell(r, lossOf(ToRFreeze, func(d *Disturbance) Loss { return d.After }))
		}},
		{"frozen ToR: SIGCONT → its sessions Established, median / last", func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRFreeze, func(d *Disturbance) []float64 { return d.Sessions }), fmtMs)
		}},
		{"ports down: the server's carrier lost → traffic off the ToR, median / max · flood while down", func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRPortsDown, func(d *Disturbance) []float64 { return d.Failover }), fmtMs) +
				" · " + lossCell(r, lossOf(ToRPortsDown, func(d *Disturbance) Loss { return d.During }))
		}},
		{"ports up → the ToR's sessions Established, median / last", func(r []*Sample) string {
			return distCell(r, disturbanceOf(ToRPortsDown, func(d *Disturbance) []float64 { return d.Sessions }), fmtMs)
		}},
		{"ports up: servers that lost full ECMP again before the end", count(func(s *Sample) float64 {
			return lostAgainOf(s, ToRPortsDown)
		})},
		{"flood before the first disturbance", func(r []*Sample) string {
			return lossCell(r, func(s *Sample) (Loss, bool) { return s.Baseline, len(s.Flows) > 0 })
		}},
	}
}

// daemonRSSCell renders each daemon's median RSS across servers (median over
// runs): "zebra 9.1, staticd 7.0, bgpd 11.2".
func daemonRSSCell(runs []*Sample) string {
	var parts []string
	for _, name := range []string{"fabricd", "zebra", "staticd", "bgpd"} {
		var meds []float64
		for _, s := range runs {
			if xs, ok := s.RSSByDaemon[name]; ok {
				meds = append(meds, summarize(xs).Median)
			}
		}
		if len(meds) > 0 {
			parts = append(parts, name+" "+mb(median(meds)))
		}
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

func lostAgainOf(s *Sample, k Kind) float64 {
	if d := s.disturbance(k); d != nil {
		return float64(d.LostAgain)
	}
	return math.NaN()
}

// roleOrder puts FRR, the baseline, first, as issue 13's table does.
func roleOrder(roles []testenv.Role) []testenv.Role {
	out := slices.Clone(roles)
	slices.SortStableFunc(out, func(a, b testenv.Role) int {
		rank := func(r testenv.Role) int {
			if r == testenv.RoleFRR {
				return 0
			}
			return 1
		}
		return rank(a) - rank(b)
	})
	return out
}

func roleTitle(r testenv.Role) string {
	if r == testenv.RoleFRR {
		return "FRR servers (zebra+staticd+bgpd)"
	}
	return "fabricd servers"
}

// samplesOf returns the completed runs of one size and role, in run order.
func (r *Results) samplesOf(n int, role testenv.Role) []*Sample {
	var out []*Sample
	for _, s := range r.Samples {
		if s.N == n && s.Role == role {
			out = append(out, s)
		}
	}
	return out
}

// renderTable writes one table of rows with a column per role.
func renderTable(b *strings.Builder, first string, rows []row, roles []testenv.Role, runs map[testenv.Role][]*Sample) {
	b.WriteString("| " + first + " |")
	for _, role := range roles {
		fmt.Fprintf(b, " %s (%d run%s) |", roleTitle(role), len(runs[role]), map[bool]string{true: "", false: "s"}[len(runs[role]) == 1])
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(roles)) + "\n")
	for _, rw := range rows {
		b.WriteString("| " + rw.name + " |")
		for _, role := range roles {
			b.WriteString(" " + rw.cell(runs[role]) + " |")
		}
		b.WriteString("\n")
	}
}

// SizeTable renders the main table and the details of one size.
func (r *Results) SizeTable(n int) string {
	var b strings.Builder
	roles := roleOrder(r.Roles)
	runs := map[testenv.Role][]*Sample{}
	for _, role := range roles {
		runs[role] = r.samplesOf(n, role)
	}
	fmt.Fprintf(&b, "### N = %d servers\n\n", n)
	fmt.Fprintf(&b, "2 FRR ToRs (leaf pair), %d dual-homed servers, each announcing 2 prefixes and learning %d over both ToRs. ", n, 2*(n-1))
	if r.Runs > 1 {
		fmt.Fprintf(&b, "Each cell is the median over %d runs of each run's figure (its median and maximum across servers). ", r.Runs)
	} else {
		b.WriteString("Medians and maxima across servers. ")
	}
	fmt.Fprintf(&b, "\"flood\": echo requests of %d flows every 10 ms, lost = no reply within 1 s.\n\n", r.Flows)
	renderTable(&b, fmt.Sprintf("figure at N=%d", n), mainRows(r.Timing), roles, runs)
	b.WriteString("\n")
	renderTable(&b, "details", detailRows(r.Timing), roles, runs)
	return b.String()
}

// Markdown renders the whole report: how it was run, a table per size, and
// every sample.
func (r *Results) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Command: `%s`  \n", r.Command)
	fmt.Fprintf(&b, "Run: %s, took %v; %d run(s) per size and role, each in a fresh lab; fabricd's log level %q.  \n",
		r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Took.Round(time.Second), r.Runs, r.LogLevel)
	fmt.Fprintf(&b, "Machine: %s, kernel %s, %d × %s, %d MB RAM; load average %s at the start, %s at the end. FRR: %s.  \n",
		m.OS, m.Kernel, m.CPUs, m.CPU, m.MemoryMB, r.LoadStart, r.LoadEnd, m.FRR)
	if m.Fabricd != "" {
		fmt.Fprintf(&b, "fabricd: %s.\n", m.Fabricd)
	}
	b.WriteString("\n")
	for _, n := range r.Sizes {
		b.WriteString(r.SizeTable(n))
		b.WriteString("\n")
	}
	b.WriteString(r.samplesMarkdown())
	if len(r.Failures) > 0 {
		b.WriteString("\nRuns that could not be completed (missing above):\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(f, "\n", " / "))
		}
	}
	return b.String()
}

// stamp is a moment as the daemons' logs write it (UTC, milliseconds), to
// find it in them; "–" for none.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("15:04:05.000")
}

// joinMs lists per-server times.
func joinMs(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		switch {
		case math.IsNaN(x):
			parts[i] = "–"
		case math.IsInf(x, 1):
			parts[i] = "never"
		default:
			parts[i] = strconv.FormatFloat(x, 'f', 0, 64)
		}
	}
	return strings.Join(parts, " ")
}

func joinNum(xs []float64, decimals int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmtNum(x, decimals)
	}
	return strings.Join(parts, " ")
}

// samplesMarkdown lists every run's per-server values, in server order.
func (r *Results) samplesMarkdown() string {
	var b strings.Builder
	b.WriteString("<details><summary>Every run, server by server (times in ms, servers c1, c2, ... in order)</summary>\n\n")
	for _, s := range r.Samples {
		fmt.Fprintf(&b, "**N=%d, %v, run %d** (lab %s, built in %v):\n\n", s.N, s.Role, s.Run, s.LabPrefix, s.Build.Round(time.Second))
		fmt.Fprintf(&b, "- bring-up (from %s): %s\n", stamp(s.Start), joinMs(s.BringUp))
		if s.Role == testenv.RoleFabricd {
			fmt.Fprintf(&b, "- \"fabricd is up\": %s\n", joinMs(s.DaemonUp))
		}
		fmt.Fprintf(&b, "- sessions Established at bring-up (tor, then tor2): %s\n", joinMs(s.SessionsUp))
		fmt.Fprintf(&b, "- bring-up CPU (s): %s\n", joinNum(s.BringUpCPU, 2))
		fmt.Fprintf(&b, "- RSS (MB): %s\n- PSS (MB): %s\n", joinNum(s.RSS, 1), joinNum(s.PSS, 1))
		fmt.Fprintf(&b, "- idle CPU (%% of one CPU, over %v): %s\n", s.Idle.Round(time.Millisecond), joinNum(s.CPUPerServer, 3))
		fmt.Fprintf(&b, "- wakeups per minute: %s\n", joinNum(s.Wakeups, 0))
		fmt.Fprintf(&b, "- flood flows: %s; %s before the first disturbance\n", strings.Join(s.Flows, ", "), fmtLoss(s.Baseline))
		for _, d := range s.Disturbances {
			fmt.Fprintf(&b, "- %v (%s; %s → %s, recovery from %s)%s: failover %s; recovery %s; sessions %s; flood during %s, after %s",
				d.Kind, d.ToR, stamp(d.Start), stamp(d.End), stamp(d.Ref), map[bool]string{true: " on a degraded fabric", false: ""}[d.Degraded],
				joinMs(d.Failover), joinMs(d.Recovery), joinMs(d.Sessions), fmtLoss(d.During), fmtLoss(d.After))
			if d.Kind == ToRKill {
				fmt.Fprintf(&b, "; restart → listening %s", fmtMs(d.Listen))
			}
			if d.Err != "" {
				fmt.Fprintf(&b, "; error: %s", d.Err)
			}
			b.WriteString("\n")
		}
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "- note: %s\n", strings.ReplaceAll(n, "\n", " / "))
		}
		b.WriteString("\n")
	}
	b.WriteString("</details>\n")
	return b.String()
}
