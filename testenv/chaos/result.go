package chaos

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
	"github.com/fabricd/fabricd/testenv/probe"
)

// Result is one role's soak: the raw records and what analyse made of them.
type Result struct {
	Role      testenv.Role
	Seed      uint64
	Duration  time.Duration
	Servers   []string
	Ports     []string // each ToR's port to each server, in server order
	HashSeeds []uint32 // per server
	Plan      []Step
	Events    []Event

	T0          time.Time // the flood runs; warm-up begins
	WarmupEnd   time.Time // the first fault may begin
	ScheduleEnd time.Time // the last fault has ended
	End         time.Time // the flood stopped
	Took        time.Duration
	LabDir      string
	LabPrefix   string

	FinalHealthy bool // full ECMP everywhere within finalTimeout after the last fault
	Checks       []Check
	Flood        *probe.Result
	Samples      Samples
	Trackers     Trackers
	Procs        []ProcTrack

	// Filled by analyse.
	Outcomes     []Outcome // per event
	Rows         []Row     // per class, then the "(no event)" row
	Losses       []AttributedLoss
	Unattributed []probe.Loss
	WarmupShare  []float64 // per ToR: its share of the flood during the warm-up
	Failures     []string  // what breaks the pass rule (asserted for fabricd only)
}

// Trackers are the monitors' timelines.
type Trackers struct {
	Full    [][]nlmon.Transition   // per server: full ECMP
	Carrier [][][]nlmon.Transition // per server, per uplink: carrier
	// Sessions: per ToR and server (ToR by ToR), the BGP session as the ToR's
	// log tells it: up or down.
	Sessions [][]nlmon.Transition
}

// AttributedLoss is a lost request and the fault it was put down to.
type AttributedLoss struct {
	probe.Loss
	Event    int  // index into Events; -1 for none
	InFlight bool // within the in-flight allowance of a flap of a server's own link
}

// Outcome is what a fault did.
type Outcome struct {
	Recovered time.Time     // first moment of full ECMP everywhere after End
	ToFull    time.Duration // Recovered - End
	Never     bool          // not within recoveryTimeout
	// SessionsBack is the first moment after End when every ToR had every
	// session up again; ToSessions and SessionsNever as above.
	SessionsBack  time.Time
	ToSessions    time.Duration
	SessionsNever bool
	Overlapped    bool      // another fault began before it had recovered
	WindowEnd     time.Time // losses sent before this are the fault's (see attribute)

	Lost           int // losses attributed to the fault, beyond the rule
	InFlight       int // losses of the flapped server's flows right after its carrier loss
	InFlightLatest time.Duration
	Shared         int            // of Lost: sent within another fault's window too
	LostDuring     int            // of Lost: sent before the fault ended
	LostFlows      map[string]int // per flow: losses beyond the rule
	FirstLoss      time.Time
	LastLoss       time.Time
	SendErrors     int // losses whose request could not even be sent (no route at the source)

	// Flood packets forwarded across the disturbed element, and in all, in the
	// second before the fault and in the second after full ECMP returned.
	CrossBefore, TotalBefore uint64
	CrossAfter, TotalAfter   uint64
}

// Row sums up one class of faults.
type Row struct {
	Class          string
	Events         int
	Lost           int
	Shared         int // of Lost: within an earlier, overlapping fault's window too
	InFlight       int
	InFlightLatest time.Duration
	CrossBefore    uint64
	TotalBefore    uint64
	CrossAfter     uint64
	TotalAfter     uint64
	WorstToFull    time.Duration
	WorstOverlap   bool // the worst time includes another fault's effect
	Never          int
	WorstSessions  time.Duration
	SessionsNever  int
	Degraded       int // faults begun on a fabric an earlier fault had left without full ECMP
	Errors         int // faults that could not be injected
}

// noEvent names the row of losses outside every fault's window.
const noEvent = "(no event)"

// Passed reports whether the run meets the pass rule.
func (r *Result) Passed() bool { return len(r.Failures) == 0 }

type interval struct{ from, to time.Time } // to zero: still open

// allFull returns the intervals during which every timeline (every server's
// full ECMP, every session) was on. With no timeline, that is always.
func allFull(hist [][]nlmon.Transition) []interval {
	if len(hist) == 0 {
		return []interval{{}}
	}
	type change struct {
		at     time.Time
		server int
		on     bool
	}
	var all []change
	for i, h := range hist {
		for _, t := range h {
			all = append(all, change{t.At, i, t.On})
		}
	}
	sort.SliceStable(all, func(a, b int) bool { return all[a].at.Before(all[b].at) })
	state := make([]bool, len(hist))
	on := 0
	var out []interval
	for _, c := range all {
		if state[c.server] == c.on {
			continue
		}
		state[c.server] = c.on
		if c.on {
			on++
			if on == len(hist) {
				out = append(out, interval{from: c.at})
			}
		} else {
			if on == len(hist) {
				out[len(out)-1].to = c.at
			}
			on--
		}
	}
	return out
}

// nextFull returns the first moment at or after t when every server had full
// ECMP, or zero.
func nextFull(ivs []interval, t time.Time) time.Time {
	for _, iv := range ivs {
		if !iv.to.IsZero() && !iv.to.After(t) {
			continue
		}
		if iv.from.After(t) {
			return iv.from
		}
		return t
	}
	return time.Time{}
}

// element returns the flood packets that went into the fault's disturbed
// element, and all flood packets the ToRs received, between two moments. The
// element is the ToR for a ToR fault; the link, both ways, for a flap; the
// server's links, both ways, for a server fault; and for a deleted gateway
// entry what the server sent up that link, the only traffic that needs it.
func (r *Result) element(st Step, from, to time.Time) (cross, total uint64, ok bool) {
	c, ok := r.Samples.between(from, to)
	if !ok {
		return 0, 0, false
	}
	for t, ports := range c {
		for _, n := range ports {
			total += n.In
		}
		switch {
		case st.Class.serverLevel():
			n := ports[r.Ports[st.Server]]
			cross += n.In + n.Out
		case st.Class == GatewayDelete:
			// Only what the server sends up that link needs the entry.
			if t == st.ToR {
				cross += ports[r.Ports[st.Server]].In
			}
		case st.Class.linkLevel():
			if t == st.ToR {
				n := ports[r.Ports[st.Server]]
				cross += n.In + n.Out
			}
		case t == st.ToR:
			for _, n := range ports {
				cross += n.In
			}
		}
	}
	return cross, total, true
}

// analyse attributes losses, measures recoveries and shares, sums up the
// classes and lists what fails the pass rule.
func (r *Result) analyse() { r.analyseWith(r.Flood.Losses()) }

// analyseWith is analyse with the flood's losses given.
func (r *Result) analyseWith(losses []probe.Loss) {
	full := allFull(r.Trackers.Full)
	up := allFull(r.Trackers.Sessions)
	r.Outcomes = make([]Outcome, len(r.Events))
	for i := range r.Events {
		ev := &r.Events[i]
		if ev.Start.IsZero() {
			continue // never began (it failed at once)
		}
		if ev.End.IsZero() {
			ev.End = ev.Start
		}
		o := &r.Outcomes[i]
		o.LostFlows = map[string]int{}
		// The window lasts until both the FIBs and the sessions are back, or
		// to the end of the run if they never were.
		o.WindowEnd = ev.End
		o.Recovered = nextFull(full, ev.End)
		o.ToFull, o.Never = recovery(ev.End, o.Recovered, r.End, &o.WindowEnd)
		o.SessionsBack = nextFull(up, ev.End)
		o.ToSessions, o.SessionsNever = recovery(ev.End, o.SessionsBack, r.End, &o.WindowEnd)
		o.WindowEnd = o.WindowEnd.Add(lossGrace)
		for j, other := range r.Events {
			if j != i && other.Start.After(ev.Start) && other.Start.Before(o.WindowEnd) {
				o.Overlapped = true
			}
		}
		if c, t, ok := r.element(ev.Step, ev.Start.Add(-shareWindow), ev.Start); ok {
			o.CrossBefore, o.TotalBefore = c, t
		}
		if !o.Never {
			if c, t, ok := r.element(ev.Step, o.Recovered, o.Recovered.Add(shareWindow)); ok {
				o.CrossAfter, o.TotalAfter = c, t
			}
		}
	}
	r.attribute(losses)
	r.summarise()
}

// recovery measures from end to back (zero: never). It pushes windowEnd to
// back, or to runEnd if it never came.
func recovery(end, back, runEnd time.Time, windowEnd *time.Time) (time.Duration, bool) {
	if back.IsZero() {
		*windowEnd = maxTime(*windowEnd, runEnd)
		return 0, true
	}
	*windowEnd = maxTime(*windowEnd, back)
	d := back.Sub(end)
	return d, d > recoveryTimeout
}

// carrierLosses returns the moments server srv's uplink lost carrier, seen by
// its kernel, between two moments.
func (r *Result) carrierLosses(srv, uplink int, from, to time.Time) []time.Time {
	var out []time.Time
	for _, t := range r.Trackers.Carrier[srv][uplink] {
		if !t.On && !t.At.Before(from) && !t.At.After(to) {
			out = append(out, t.At)
		}
	}
	return out
}

// attribute assigns every lost request: first to the in-flight allowance of a
// flap of one of its servers' own links (alone, in a burst, or with all the
// ToR's ports at once), else to the latest fault whose
// window [Start, WindowEnd) holds its sending time and that could have cost
// it (a fault of one server's link or daemon only costs that server's flows;
// a ToR fault any flow), else to no event. A loss that several overlapping
// faults could have caused goes to the one that began last and is counted as
// Shared, since which of them caused it cannot be told.
func (r *Result) attribute(losses []probe.Loss) {
	type flapLosses struct {
		event  int
		server string
		at     []time.Time
	}
	var flaps []flapLosses
	for i, ev := range r.Events {
		var servers []int
		switch ev.Step.Class {
		case LinkFlap, LinkFlapBurst:
			servers = []int{ev.Step.Server}
		case ToRPortsDown: // every server's own link flaps at once
			for j := range r.Servers {
				servers = append(servers, j)
			}
		}
		if ev.Start.IsZero() {
			continue
		}
		for _, srv := range servers {
			at := r.carrierLosses(srv, ev.Step.ToR, ev.Start.Add(-inFlightAfter), ev.End.Add(inFlightAfter))
			flaps = append(flaps, flapLosses{event: i, server: r.Servers[srv], at: at})
		}
	}
	r.Losses = make([]AttributedLoss, 0, len(losses))
	for _, l := range losses {
		f := r.Flood.FlowList[l.Flow]
		from, to := r.Flood.Endpoints[f.From].Server, r.Flood.Endpoints[f.To].Server
		inFlight := false
		for _, fl := range flaps {
			if fl.server != from && fl.server != to {
				continue
			}
			for _, c := range fl.at {
				if !l.Sent.Before(c.Add(-inFlightBefore)) && !l.Sent.After(c.Add(inFlightAfter)) {
					o := &r.Outcomes[fl.event]
					o.InFlight++
					o.InFlightLatest = max(o.InFlightLatest, l.Sent.Sub(c))
					inFlight = true
					r.Losses = append(r.Losses, AttributedLoss{Loss: l, Event: fl.event, InFlight: true})
					break
				}
			}
			if inFlight {
				break
			}
		}
		if inFlight {
			continue
		}
		best, windows := -1, 0
		for i, ev := range r.Events {
			o := r.Outcomes[i]
			if ev.Start.IsZero() || l.Sent.Before(ev.Start) || !l.Sent.Before(o.WindowEnd) {
				continue
			}
			// A fault of one server's link or daemon can only cost that
			// server's flows.
			if srv := ev.Step.Server; srv >= 0 && r.Servers[srv] != from && r.Servers[srv] != to {
				continue
			}
			windows++
			if best < 0 || ev.Start.After(r.Events[best].Start) {
				best = i
			}
		}
		r.Losses = append(r.Losses, AttributedLoss{Loss: l, Event: best})
		if best < 0 {
			r.Unattributed = append(r.Unattributed, l)
			continue
		}
		o := &r.Outcomes[best]
		o.Lost++
		if l.Sent.Before(r.Events[best].End) {
			o.LostDuring++
		}
		if windows > 1 {
			o.Shared++
		}
		o.LostFlows[r.Flood.Describe(l.Flow)]++
		if l.SendError {
			o.SendErrors++
		}
		if o.FirstLoss.IsZero() || l.Sent.Before(o.FirstLoss) {
			o.FirstLoss = l.Sent
		}
		if l.Sent.After(o.LastLoss) {
			o.LastLoss = l.Sent
		}
	}
}

// summarise fills Rows, WarmupShare and Failures.
func (r *Result) summarise() {
	r.Rows = nil
	for _, c := range Classes {
		row := Row{Class: string(c)}
		for i, ev := range r.Events {
			if ev.Step.Class != c {
				continue
			}
			o := r.Outcomes[i]
			row.Events++
			if ev.Err != "" {
				row.Errors++
			}
			if ev.Degraded {
				row.Degraded++
			}
			row.Lost += o.Lost
			row.Shared += o.Shared
			row.InFlight += o.InFlight
			row.InFlightLatest = max(row.InFlightLatest, o.InFlightLatest)
			row.CrossBefore += o.CrossBefore
			row.TotalBefore += o.TotalBefore
			row.CrossAfter += o.CrossAfter
			row.TotalAfter += o.TotalAfter
			switch {
			case ev.Start.IsZero():
			case o.Never:
				row.Never++
			case o.ToFull > row.WorstToFull:
				row.WorstToFull, row.WorstOverlap = o.ToFull, o.Overlapped
			}
			switch {
			case ev.Start.IsZero():
			case o.SessionsNever:
				row.SessionsNever++
			default:
				row.WorstSessions = max(row.WorstSessions, o.ToSessions)
			}
		}
		r.Rows = append(r.Rows, row)
	}
	r.Rows = append(r.Rows, Row{Class: noEvent, Lost: len(r.Unattributed)})

	if c, ok := r.Samples.between(r.T0, r.WarmupEnd); ok {
		var per []uint64
		var total uint64
		for _, ports := range c {
			var n uint64
			for _, p := range ports {
				n += p.In
			}
			per = append(per, n)
			total += n
		}
		for _, n := range per {
			r.WarmupShare = append(r.WarmupShare, share(n, total))
		}
	}

	var f []string
	for _, row := range r.Rows {
		switch {
		case row.Class == noEvent:
			if row.Lost > 0 {
				f = append(f, fmt.Sprintf("%d packets lost outside every fault's window", row.Lost))
			}
			continue
		case row.Events == 0:
			continue
		}
		if row.Lost > 0 {
			f = append(f, fmt.Sprintf("%s: %d packets lost", row.Class, row.Lost))
		}
		if row.CrossBefore == 0 {
			f = append(f, fmt.Sprintf("%s: no flood packet crossed the disturbed element in the second before any of its %d faults", row.Class, row.Events))
		}
		if row.Never > 0 {
			f = append(f, fmt.Sprintf("%s: full ECMP did not return within %v after %d of %d faults", row.Class, recoveryTimeout, row.Never, row.Events))
		}
		if row.SessionsNever > 0 {
			f = append(f, fmt.Sprintf("%s: the ToRs' sessions with every server were not all up again within %v after %d of %d faults", row.Class, recoveryTimeout, row.SessionsNever, row.Events))
		}
		if row.Errors > 0 {
			f = append(f, fmt.Sprintf("%s: %d faults could not be injected", row.Class, row.Errors))
		}
	}
	if !r.FinalHealthy {
		f = append(f, fmt.Sprintf("full ECMP or a session still missing %v after the last fault", finalTimeout))
	}
	for _, c := range r.Checks {
		if !c.OK {
			f = append(f, c.Name+": "+c.Detail)
		}
	}
	for _, p := range r.Procs {
		if l := p.Leak(); l != "" {
			f = append(f, fmt.Sprintf("%s %s (pid %d): %s than its baseline", p.Server, p.Daemon, p.PID, l))
		}
		if p.Err != "" {
			f = append(f, fmt.Sprintf("%s %s (pid %d): %s", p.Server, p.Daemon, p.PID, p.Err))
		}
	}
	if len(r.Flood.SocketDrops) > 0 {
		f = append(f, fmt.Sprintf("the probe's own sockets dropped replies: %v (losses are not trustworthy)", r.Flood.SocketDrops))
	}
	if r.Samples.Err != "" {
		f = append(f, "reading the ToRs' counters: "+r.Samples.Err)
	}
	r.Failures = slices.Clip(f)
}

func share(n, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return float64(n) / float64(total)
}
