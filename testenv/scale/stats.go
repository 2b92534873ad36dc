package scale

import (
	"math"
	"slices"
	"time"

	"github.com/fabricd/fabricd/testenv/nlmon"
)

// never is the value of a time that did not come within its bound.
var never = math.Inf(1)

// dist summarises one figure across servers (or sessions): the median and the
// maximum, and how many were "never". NaN samples (nothing measured) are left
// out; +Inf ("never") counts, so one server that never recovered makes the
// maximum "never".
type dist struct {
	N      int
	Median float64
	Max    float64
	Never  int
}

func summarize(xs []float64) dist {
	s := slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(s) == 0 {
		return dist{Median: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(s)
	d := dist{N: len(s), Median: s[len(s)/2], Max: s[len(s)-1]}
	if len(s)%2 == 0 {
		d.Median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	for _, x := range s {
		if math.IsInf(x, 1) {
			d.Never++
		}
	}
	return d
}

// median is the median of xs without NaNs (NaN if there is none): how a
// figure of several runs is reported.
func median(xs []float64) float64 { return summarize(xs).Median }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// since is t-from in milliseconds, or never for a zero t.
func since(from, t time.Time) float64 {
	if t.IsZero() {
		return never
	}
	return ms(t.Sub(from))
}

// becameTrue returns when a tracked condition was (next) true at or after t:
// t itself if it already held then, otherwise its first transition to true
// after t; zero if it never did. history is a Tracker's, oldest first, its
// first entry the value when tracking began (before t).
func becameTrue(history []nlmon.Transition, t time.Time) time.Time {
	on := false
	for _, tr := range history {
		if !tr.At.After(t) {
			on = tr.On // the value at t is that of the last change up to t
			continue
		}
		if on {
			return t
		}
		if tr.On {
			return tr.At
		}
	}
	if on {
		return t
	}
	return time.Time{}
}

// becameFalse returns when a tracked condition was first false at or after t.
func becameFalse(history []nlmon.Transition, t time.Time) time.Time {
	inverted := make([]nlmon.Transition, len(history))
	for i, tr := range history {
		inverted[i] = nlmon.Transition{At: tr.At, On: !tr.On}
	}
	return becameTrue(inverted, t)
}

// lastBecameTrue returns when a condition that holds at the end of history
// last became true (not before t); zero if it does not hold at the end. It is
// the time a server reached full ECMP for good during bring-up.
func lastBecameTrue(history []nlmon.Transition, t time.Time) time.Time {
	if len(history) == 0 || !history[len(history)-1].On {
		return time.Time{}
	}
	at := history[len(history)-1].At
	if at.Before(t) {
		return t
	}
	return at
}

// lostAgain counts how often a condition turned false in (from, to] after
// having been true: a server that reached full ECMP and lost it again.
func lostAgain(history []nlmon.Transition, from, to time.Time) int {
	n, on := 0, false
	for _, tr := range history {
		if tr.At.After(from) && !tr.At.After(to) && on && !tr.On {
			n++
		}
		on = tr.On
	}
	return n
}
