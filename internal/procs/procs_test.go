package procs

import (
	"slices"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu  sync.Mutex
	set []int
}

func (r *recorder) apply(n int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set = append(r.set, n)
	return 0
}

func (r *recorder) got() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.set)
}

func TestGovernor(t *testing.T) {
	var r recorder
	g := New(4, 50*time.Millisecond, r.apply)
	if got := r.got(); !slices.Equal(got, []int{1}) {
		t.Fatalf("at start: %v, want [1]", got)
	}
	// A stream of work keeps it raised, with one change.
	for range 10 {
		g.Busy()
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.got(); !slices.Equal(got, []int{1, 4}) || !g.Raised() {
		t.Fatalf("during work: %v (raised %v), want [1 4]", got, g.Raised())
	}
	deadline := time.Now().Add(2 * time.Second)
	for g.Raised() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := r.got(); !slices.Equal(got, []int{1, 4, 1}) {
		t.Fatalf("after the work: %v, want [1 4 1]", got)
	}
	g.Busy()
	if got := r.got(); !slices.Equal(got, []int{1, 4, 1, 4}) {
		t.Fatalf("new work: %v", got)
	}
}

func TestGovernorSingle(t *testing.T) {
	var r recorder
	g := New(1, time.Millisecond, r.apply)
	g.Busy()
	if got := r.got(); len(got) != 0 || g.Raised() {
		t.Fatalf("with one processor it changed something: %v", got)
	}
}
