package bench

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Series is one measured quantity, with the samples of both server roles (either
// may be empty: the kernel floor has no role).
type Series struct {
	Name    string
	Unit    string // "ms" or "MB"
	FRR     []float64
	Fabricd []float64
	Target  Target
}

// Target is a goal for fabricd's figure. Benchmarks do not fail on it; the report
// only says whether the median (or, for Every targets, the worst run) meets it.
type Target struct {
	Text  string // as the report shows it, e.g. "≤ 0.8× FRR"
	Ratio float64
	Max   float64 // absolute limit in the series' unit, if Ratio is 0
	Every bool    // judge the worst run, not the median
	// Strict makes the limit exclusive (<) rather than inclusive (≤).
	Strict bool
}

// Summary statistics of a sample set.
type Summary struct {
	N                int
	Median, Min, Max float64
}

// Summarize returns the median, minimum and maximum of xs (NaN for no samples).
// NaN samples (nothing to measure in that run) are left out; +Inf ("never") counts.
func Summarize(xs []float64) Summary {
	s := slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(s) == 0 {
		return Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Summary{N: len(s), Median: med, Min: s[0], Max: s[len(s)-1]}
}

// Verdict says whether fabricd's samples meet the target: "yes", "no", or "" when
// there is no target or not enough data.
func (s Series) Verdict() string {
	t := s.Target
	if t.Text == "" || len(s.Fabricd) == 0 {
		return ""
	}
	fab := Summarize(s.Fabricd)
	v := fab.Median
	if t.Every {
		v = fab.Max
	}
	limit := t.Max
	if t.Ratio > 0 {
		if len(s.FRR) == 0 {
			return ""
		}
		frr := Summarize(s.FRR)
		limit = t.Ratio * frr.Median
	}
	ok := v <= limit
	if t.Strict {
		ok = v < limit
	}
	if ok {
		return "yes"
	}
	return "no"
}

// Ratio is fabricd's median over FRR's (NaN if either is missing or FRR's is 0).
func (s Series) Ratio() float64 {
	if len(s.FRR) == 0 || len(s.Fabricd) == 0 {
		return math.NaN()
	}
	f, d := Summarize(s.FRR).Median, Summarize(s.Fabricd).Median
	// No ratio to "never", and none between values under 1 (ms), which are within
	// the timestamps' resolution.
	if f < 1 || d < 1 || math.IsInf(f, 0) || math.IsInf(d, 0) {
		return math.NaN()
	}
	return d / f
}

// Table is a titled set of series, rendered as one Markdown table.
type Table struct {
	Title string
	Note  string
	Rows  []Series
}

func formatValue(v float64, unit string) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.IsInf(v, 1):
		return "never"
	case unit == "MB":
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) < 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
}

func formatCell(xs []float64, unit string) string {
	s := Summarize(xs)
	if s.N == 0 {
		return "–"
	}
	return fmt.Sprintf("**%s** (%s–%s)", formatValue(s.Median, unit), formatValue(s.Min, unit), formatValue(s.Max, unit))
}

func formatRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "–"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// Markdown renders the table: median (min–max) per role, the ratio, the target.
func (t Table) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", t.Title)
	if t.Note != "" {
		fmt.Fprintf(&b, "%s\n\n", t.Note)
	}
	b.WriteString("| metric | FRR (zebra+bgpd) median (min–max) | fabricd median (min–max) | fabricd / FRR | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "| %s (%s) | %s | %s | %s | %s | %s |\n", r.Name, r.Unit,
			formatCell(r.FRR, r.Unit), formatCell(r.Fabricd, r.Unit), formatRatio(r.Ratio()),
			cmp.Or(r.Target.Text, "–"), cmp.Or(r.Verdict(), "–"))
	}
	return b.String()
}

// SamplesMarkdown lists every sample of the table, run by run.
func (t Table) SamplesMarkdown() string {
	var b strings.Builder
	for _, r := range t.Rows {
		fmt.Fprintf(&b, "- %s (%s): FRR %s; fabricd %s\n", r.Name, r.Unit, joinValues(r.FRR, r.Unit), joinValues(r.Fabricd, r.Unit))
	}
	return b.String()
}

func joinValues(xs []float64, unit string) string {
	if len(xs) == 0 {
		return "–"
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = formatValue(x, unit)
	}
	return strings.Join(parts, ", ")
}

// FloorRow is the kernel floor for one size next to fabricd's install time.
type FloorRow struct {
	N       int
	Inline  []float64 // ms, `ip -batch` of `via 169.254.0.1 dev X onlink` routes
	NHID    []float64 // ms, the same through one nexthop object
	Fabricd []float64 // ms, fabricd's first route → all at this size
}

// FloorMarkdown renders the kernel floor table.
func FloorMarkdown(rows []FloorRow) string {
	var b strings.Builder
	b.WriteString("### Kernel floor: the same routes with `ip -batch` into a fresh namespace\n\n")
	b.WriteString("| N | `ip -batch`, `via 169.254.0.1 dev X onlink` (ms) | `ip -batch`, `nhid` (ms) | fabricd first route → all (ms) | fabricd / floor | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		ratio, met := math.NaN(), "–"
		if len(r.Inline) > 0 && len(r.Fabricd) > 0 {
			ratio = Summarize(r.Fabricd).Median / Summarize(r.Inline).Median
			met = map[bool]string{true: "yes", false: "no"}[ratio <= 2]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | ≤ 2× | %s |\n", thousands(r.N), formatCell(r.Inline, "ms"),
			formatCell(r.NHID, "ms"), formatCell(r.Fabricd, "ms"), formatRatio(ratio), met)
	}
	return b.String()
}

// thousands formats n with comma separators: 100,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
