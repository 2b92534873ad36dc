package autoannounce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeSource hands the test's events to the Watcher.
type fakeSource struct {
	setupErr error
	events   chan event
}

func newFakeSource() *fakeSource { return &fakeSource{events: make(chan event)} }

func (f *fakeSource) run(ctx context.Context, out chan<- event, _ *slog.Logger, _ time.Duration) error {
	if f.setupErr != nil {
		return f.setupErr
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-f.events:
			select {
			case out <- ev:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// push hands events to the running Watcher, failing the test if it stops
// taking them.
func (f *fakeSource) push(t *testing.T, evs ...event) {
	t.Helper()
	for _, ev := range evs {
		select {
		case f.events <- ev:
		case <-time.After(5 * time.Second):
			t.Fatal("watcher does not take events")
		}
	}
}

// startWatcher runs a Watcher on src until the test ends, and checks that
// Run returns nil promptly once cancelled.
func startWatcher(t *testing.T, cfg Config, src source, updates chan []Announcement) *Watcher {
	t.Helper()
	cfg.Logger = quiet
	w := newWatcher(cfg, src)
	runWatcher(t, w, updates)
	return w
}

// runWatcher runs w until stop is called or the test ends (cleanups run
// last first, so before anything registered earlier goes), and checks
// that Run returns nil within 5 s of being cancelled.
func runWatcher(t *testing.T, w *Watcher, updates chan []Announcement) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, updates) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Run did not return within 5 s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func recv(t *testing.T, updates <-chan []Announcement) []Announcement {
	t.Helper()
	select {
	case set := <-updates:
		return set
	case <-time.After(5 * time.Second):
		t.Fatal("no update")
		return nil
	}
}

func noUpdate(t *testing.T, updates <-chan []Announcement, d time.Duration) {
	t.Helper()
	select {
	case set := <-updates:
		t.Fatalf("unexpected update %v", set)
	case <-time.After(d):
	}
}

func emptySnapshot() event {
	return event{kind: evSnapshot, snap: &snapshot{links: []link{{Index: 1, Name: "lo", Up: true}}}}
}

func TestRunInitialSetEvenIfEmpty(t *testing.T) {
	src := newFakeSource()
	updates := make(chan []Announcement)
	w := startWatcher(t, testConfig, src, updates)

	// Events before the snapshot are not reported.
	src.push(t, linkUp(10, "calia"))
	noUpdate(t, updates, 50*time.Millisecond)

	src.push(t, emptySnapshot())
	if set := recv(t, updates); len(set) != 0 {
		t.Fatalf("initial set %v, want empty", set)
	}
	if cur := w.Current(); len(cur) != 0 {
		t.Fatalf("Current() = %v, want empty", cur)
	}
	// A change that changes nothing is not reported.
	src.push(t, linkUp(11, "calib"))
	noUpdate(t, updates, 100*time.Millisecond)
}

func TestRunInitialSetFromSnapshot(t *testing.T) {
	src := newFakeSource()
	updates := make(chan []Announcement)
	startWatcher(t, testConfig, src, updates)
	src.push(t, event{kind: evSnapshot, snap: &snapshot{
		links:  []link{{Index: 1, Name: "lo", Up: true}, {Index: 10, Name: "calia", Up: true}},
		routes: []route{podRt("10.1.8.195", 10)},
		addrs:  []address{{Link: 1, Prefix: mustPrefix("192.0.2.1/32")}},
	}})
	want := []Announcement{pod("10.1.8.192/26", true, calicoSrc), addr("192.0.2.1/32", "lo")}
	if set := recv(t, updates); !slices.Equal(set, want) {
		t.Fatalf("initial set %v, want %v", set, want)
	}
}

func TestRunCoalescesBursts(t *testing.T) {
	src := newFakeSource()
	updates := make(chan []Announcement, 100) // a consumer that never falls behind
	startWatcher(t, testConfig, src, updates)
	src.push(t, emptySnapshot())
	recv(t, updates)

	// 100 pods in 4 blocks, as from scaling a deployment.
	evs := []event{}
	for i := range 100 {
		evs = append(evs, linkUp(100+i, fmt.Sprintf("cali%011x", i)), routeAdd(fmt.Sprintf("10.1.8.%d", i+2), 100+i))
	}
	start := time.Now()
	src.push(t, evs...)
	last := time.Now()

	var sends [][]Announcement
	var lastAt time.Time
	for {
		select {
		case set := <-updates:
			sends = append(sends, set)
			lastAt = time.Now()
			continue
		case <-time.After(300 * time.Millisecond):
		}
		break
	}
	if len(sends) == 0 {
		t.Fatal("no update")
	}
	want := []Announcement{
		pod("10.1.8.0/26", true, calicoSrc), pod("10.1.8.64/26", true, calicoSrc),
	}
	if got := sends[len(sends)-1]; !slices.Equal(got, want) {
		t.Fatalf("final set %v, want %v", got, want)
	}
	t.Logf("%d events in %v gave %d sends; last %v after the last event", len(evs), last.Sub(start), len(sends), lastAt.Sub(last))
	if len(sends) > 3 {
		t.Errorf("%d sends for one burst, want at most 3", len(sends))
	}
	if d := lastAt.Sub(last); d > 150*time.Millisecond {
		t.Errorf("last send %v after the last change, want about 20 ms", d)
	}
}

// A consumer that is not reading gets only the latest set once it is.
func TestRunSlowConsumerGetsLatest(t *testing.T) {
	src := newFakeSource()
	updates := make(chan []Announcement)
	w := startWatcher(t, testConfig, src, updates)
	src.push(t, emptySnapshot(), linkUp(10, "calia"))
	// Not reading: the initial set waits in the sender.
	for i := range 5 {
		src.push(t, routeAdd(fmt.Sprintf("10.1.%d.1", i), 10))
		time.Sleep(40 * time.Millisecond) // each its own update
	}
	want := []Announcement{}
	for i := range 5 {
		want = append(want, pod(fmt.Sprintf("10.1.%d.0/26", i), true, calicoSrc))
	}
	waitCurrent(t, w, want)
	if set := recv(t, updates); !slices.Equal(set, want) {
		t.Fatalf("first read %v, want the latest %v", set, want)
	}
	noUpdate(t, updates, 100*time.Millisecond)
}

func waitCurrent(t *testing.T, w *Watcher, want []Announcement) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(w.Current(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("Current() = %v, want %v", w.Current(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunHoldDown(t *testing.T) {
	src := newFakeSource()
	updates := make(chan []Announcement, 10)
	cfg := testConfig
	cfg.HoldDown = 150 * time.Millisecond
	startWatcher(t, cfg, src, updates)
	src.push(t, emptySnapshot())
	recv(t, updates)
	src.push(t, linkUp(10, "calia"), routeAdd("10.1.8.195", 10))
	block := []Announcement{pod("10.1.8.192/26", true, calicoSrc)}
	if set := recv(t, updates); !slices.Equal(set, block) {
		t.Fatalf("set %v, want %v", set, block)
	}

	// Gone and back within the hold-down: nothing to report.
	src.push(t, routeDel("10.1.8.195", 10))
	time.Sleep(50 * time.Millisecond)
	src.push(t, routeAdd("10.1.8.196", 10))
	noUpdate(t, updates, 300*time.Millisecond)

	// Gone for good: withdrawn after the hold-down.
	src.push(t, linkDel(10, "calia"))
	gone := time.Now()
	if set := recv(t, updates); len(set) != 0 {
		t.Fatalf("set %v, want empty", set)
	}
	if d := time.Since(gone); d < cfg.HoldDown || d > cfg.HoldDown+200*time.Millisecond {
		t.Errorf("withdrawn %v after the last pod, want %v (+ settle)", d, cfg.HoldDown)
	}
}

func TestRunSetConfig(t *testing.T) {
	src := newFakeSource()
	updates := make(chan []Announcement, 10)
	w := startWatcher(t, testConfig, src, updates)
	src.push(t, event{kind: evSnapshot, snap: &snapshot{
		links:  []link{{Index: 1, Name: "lo", Up: true}, {Index: 10, Name: "calia", Up: true}},
		routes: []route{podRt("10.1.8.195", 10)},
	}})
	recv(t, updates)

	cfg := testConfig
	cfg.Pools = slices.Clone(cfg.Pools)
	cfg.Pools[0].Blackhole = false
	w.SetConfig(cfg)
	want := []Announcement{pod("10.1.8.192/26", false, calicoSrc)}
	if set := recv(t, updates); !slices.Equal(set, want) {
		t.Fatalf("after reload %v, want %v", set, want)
	}
	// The caller's slices are not ours: changing them changes nothing.
	cfg.Pools[0].Blackhole = true
	w.SetConfig(Config{Addresses: []AddressSource{{Interfaces: "lo"}}})
	if set := recv(t, updates); len(set) != 0 {
		t.Fatalf("after removing the pools %v, want empty at once", set)
	}
}

// SetConfig before Run is the configuration Run starts with.
func TestSetConfigBeforeRun(t *testing.T) {
	src := newFakeSource()
	updates := make(chan []Announcement, 10)
	w := newWatcher(Config{Logger: quiet}, src)
	w.SetConfig(testConfig)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, updates) }()
	src.push(t, event{kind: evSnapshot, snap: &snapshot{
		links:  []link{{Index: 10, Name: "calia", Up: true}},
		routes: []route{podRt("10.1.8.195", 10)},
	}})
	if set := recv(t, updates); len(set) != 1 {
		t.Fatalf("set %v, want the block", set)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRunSetupError(t *testing.T) {
	errNope := errors.New("no netlink here")
	w := newWatcher(Config{Logger: quiet}, &fakeSource{setupErr: errNope})
	err := w.Run(context.Background(), make(chan []Announcement))
	if !errors.Is(err, errNope) {
		t.Fatalf("Run = %v, want %v", err, errNope)
	}
}

func TestRunTwice(t *testing.T) {
	src := newFakeSource()
	w := startWatcher(t, testConfig, src, nil)
	for !w.running.Load() {
		time.Sleep(time.Millisecond)
	}
	if err := w.Run(context.Background(), nil); !errors.Is(err, errRunning) {
		t.Fatalf("second Run = %v, want %v", err, errRunning)
	}
}

// Cancelling while the consumer is not reading still returns: the sender
// must not block forever.
func TestRunCancelWithBlockedConsumer(t *testing.T) {
	src := newFakeSource()
	w := newWatcher(Config{Logger: quiet}, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, make(chan []Announcement)) }()
	src.push(t, emptySnapshot())
	waitVersion(t, w)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run blocked on an unread updates channel")
	}

	// A second Run does not resend what the first one published before
	// its own first picture is complete.
	updates := make(chan []Announcement, 1)
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	go func() { done <- w.Run(ctx2, updates) }()
	noUpdate(t, updates, 50*time.Millisecond)
	src.push(t, event{kind: evSnapshot, snap: &snapshot{
		links:  []link{{Index: 10, Name: "calia", Up: true}},
		routes: []route{podRt("10.1.8.195", 10)},
	}})
	_ = recv(t, updates)
	cancel2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func waitVersion(t *testing.T, w *Watcher) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, v := w.latest(); v > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing published")
		}
		time.Sleep(time.Millisecond)
	}
}

// Current and the sent slices are copies.
func TestCurrentIsACopy(t *testing.T) {
	src := newFakeSource()
	updates := make(chan []Announcement, 1)
	w := startWatcher(t, testConfig, src, updates)
	src.push(t, event{kind: evSnapshot, snap: &snapshot{
		links:  []link{{Index: 10, Name: "calia", Up: true}},
		routes: []route{podRt("10.1.8.195", 10)},
	}})
	sent := recv(t, updates)
	sent[0].Prefix = netip.MustParsePrefix("0.0.0.0/0")
	cur := w.Current()
	cur[0].Source = "changed"
	want := []Announcement{pod("10.1.8.192/26", true, calicoSrc)}
	if got := w.Current(); !slices.Equal(got, want) {
		t.Fatalf("Current() = %v after the caller changed copies, want %v", got, want)
	}
}
