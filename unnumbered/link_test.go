package unnumbered

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// fakeSystem stands in for netlink and the ND socket.
type fakeSystem struct {
	states    chan linkState // what the test wants watch to report
	conns     chan *fakeConn // every successfully opened conn
	watchDone chan struct{}

	mu       sync.Mutex
	openErrs []error // returned by the next opens, in order
	writeErr error   // given to the next conn
}

func newFakeSystem() *fakeSystem {
	return &fakeSystem{
		states:    make(chan linkState),
		conns:     make(chan *fakeConn, 16),
		watchDone: make(chan struct{}),
	}
}

func (f *fakeSystem) watch(ctx context.Context, _ string, out chan<- linkState, _ *slog.Logger) {
	defer close(f.watchDone)
	for {
		select {
		case <-ctx.Done():
			return
		case st := <-f.states:
			if !send(ctx, out, st) {
				return
			}
		}
	}
}

var ourLL = netip.MustParseAddr("fe80::5%ens3")

func (f *fakeSystem) open(int) (conn, netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.openErrs) > 0 {
		err := f.openErrs[0]
		f.openErrs = f.openErrs[1:]
		return nil, netip.Addr{}, err
	}
	c := &fakeConn{
		in:       make(chan packet),
		closed:   make(chan struct{}),
		writes:   make(chan written, 64),
		writeErr: f.writeErr,
	}
	f.writeErr = nil
	f.conns <- c
	return c, ourLL, nil
}

type written struct {
	m   ndp.Message
	dst netip.Addr
}

type fakeConn struct {
	in       chan packet
	closed   chan struct{}
	once     sync.Once
	writes   chan written
	writeErr error
}

func (c *fakeConn) ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), p.cm, p.src, nil
	case <-c.closed:
		return 0, nil, netip.Addr{}, net.ErrClosed
	}
}

func (c *fakeConn) WriteTo(m ndp.Message, _ *ipv6.ControlMessage, dst netip.Addr) error {
	if c.writeErr != nil {
		return c.writeErr
	}
	c.writes <- written{m: m, dst: dst}
	return nil
}

func (c *fakeConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// inject hands the Link a packet as if read from the socket.
func (c *fakeConn) inject(t *testing.T, b []byte, hopLimit int, src string) {
	t.Helper()
	p := packet{b: b, cm: &ipv6.ControlMessage{HopLimit: hopLimit, IfIndex: 3}, src: netip.MustParseAddr(src).WithZone("ens3")}
	select {
	case c.in <- p:
	case <-time.After(2 * time.Second):
		t.Fatal("Link does not read its socket")
	}
}

// nextWrite returns the next message the Link sent.
func (c *fakeConn) nextWrite(t *testing.T) written {
	t.Helper()
	select {
	case w := <-c.writes:
		return w
	case <-time.After(2 * time.Second):
		t.Fatal("Link sent nothing")
		return written{}
	}
}

func expectRS(t *testing.T, c *fakeConn) {
	t.Helper()
	w := c.nextWrite(t)
	rs, ok := w.m.(*ndp.RouterSolicitation)
	if !ok || w.dst != allRouters {
		t.Fatalf("sent %T to %v, want router solicitation to %v", w.m, w.dst, allRouters)
	}
	if got := sourceLLA(rs.Options); got.String() != ourMAC.String() {
		t.Fatalf("RS source link-layer address %v, want %v", got, ourMAC)
	}
}

func expectRA(t *testing.T, c *fakeConn) {
	t.Helper()
	w := c.nextWrite(t)
	ra, ok := w.m.(*ndp.RouterAdvertisement)
	if !ok || w.dst != allNodes {
		t.Fatalf("sent %T to %v, want router advertisement to %v", w.m, w.dst, allNodes)
	}
	if ra.RouterLifetime != 0 {
		t.Fatalf("our RA has router lifetime %v", ra.RouterLifetime)
	}
	if got := sourceLLA(ra.Options); got.String() != ourMAC.String() {
		t.Fatalf("RA source link-layer address %v, want %v", got, ourMAC)
	}
}

var ourMAC = net.HardwareAddr{2, 0, 0, 0, 0, 5}

func upState(index int) linkState {
	return linkState{Name: "ens3", Index: index, Up: true, MAC: ourMAC}
}

// harness runs a Link on a fakeSystem.
type harness struct {
	t      *testing.T
	l      *Link
	sys    *fakeSystem
	events chan Event
	cancel context.CancelFunc
	done   chan error
	// advertised counts the Advertised events skipped.
	advertised int
}

func start(t *testing.T, cfg Config, sys *fakeSystem, events chan Event) *harness {
	t.Helper()
	cfg.Interface = "ens3"
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l := NewLink(cfg)
	l.sys = sys
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, l: l, sys: sys, events: events, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- l.Run(ctx, events) }()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop cancels Run and checks that it returns nil with its goroutines done.
func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
		h.done <- err // let a later stop see it too
	case <-time.After(2 * time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
	select {
	case <-h.sys.watchDone:
	default:
		h.t.Error("Run returned before its link watcher")
	}
}

func (h *harness) setState(st linkState) {
	h.t.Helper()
	select {
	case h.sys.states <- st:
	case <-time.After(2 * time.Second):
		h.t.Fatal("Link does not take link state")
	}
}

func (h *harness) nextConn() *fakeConn {
	h.t.Helper()
	select {
	case c := <-h.sys.conns:
		return c
	case <-time.After(2 * time.Second):
		h.t.Fatal("Link opened no socket")
		return nil
	}
}

// expectEvent waits for the next event, which must be of kind. Advertised
// events (one after each RA Advertise asked for) are skipped unless asked
// for: most tests are about the other events.
func (h *harness) expectEvent(kind EventKind) Event {
	h.t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case ev := <-h.events:
			if ev.Kind == Advertised && kind != Advertised {
				h.advertised++
				continue
			}
			if ev.Kind != kind || ev.Interface != "ens3" {
				h.t.Fatalf("event %v on %q, want %v on ens3", ev.Kind, ev.Interface, kind)
			}
			return ev
		case <-deadline:
			h.t.Fatalf("no %v event", kind)
			return Event{}
		}
	}
}

func (h *harness) expectNoEvent(d time.Duration) {
	h.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-h.events:
			if ev.Kind == Advertised {
				h.advertised++
				continue
			}
			h.t.Fatalf("unexpected event %v %+v", ev.Kind, ev.Neighbor)
		case <-deadline:
			return
		}
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func raBytes(t *testing.T, m string, lifetime time.Duration) []byte {
	t.Helper()
	var opts []ndp.Option
	if m != "" {
		opts = llaOptions(mac(t, m))
	}
	return marshal(t, &ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: lifetime, Options: opts})
}

func TestRunLifecycle(t *testing.T) {
	sys := newFakeSystem()
	h := start(t, Config{RAInterval: time.Hour}, sys, make(chan Event, 8))

	// Down at start: no event, no socket.
	h.setState(linkState{Name: "ens3", Index: 3, MAC: ourMAC})
	h.expectNoEvent(50 * time.Millisecond)

	h.setState(upState(3))
	h.expectEvent(LinkUp)
	// What the uplink's machine does for a ToR it knows: advertise.
	h.l.Advertise()
	c := h.nextConn()
	expectRS(t, c)
	expectRA(t, c)

	c.inject(t, raBytes(t, mac1, 15*time.Second), 255, tor1)
	ev := h.expectEvent(NeighborUp)
	n := ev.Neighbor
	if n.Addr.String() != "fe80::1%ens3" || n.MAC.String() != mac1 || n.Interface != "ens3" || n.Index != 3 ||
		n.RouterLifetime != 15*time.Second || n.LastRA.IsZero() {
		t.Fatalf("NeighborUp %+v", n)
	}
	// A refresh is an event too: the machine decides what it means.
	c.inject(t, raBytes(t, mac1, 15*time.Second), 255, tor1)
	h.expectEvent(NeighborUp)
	// Hop limit 64 and a different MAC: must not be believed.
	c.inject(t, raBytes(t, mac2, 15*time.Second), 64, tor1)
	// Garbage of the right type.
	c.inject(t, []byte{134, 0, 0, 0, 1, 2}, 255, tor1)
	// Second router.
	c.inject(t, raBytes(t, mac2, 15*time.Second), 255, tor2)
	// Our own RA, looped back: not counted at all.
	c.inject(t, raBytes(t, ourMAC.String(), 0), 255, "fe80::5")
	h.expectNoEvent(50 * time.Millisecond)

	st := h.l.Status()
	if !st.LinkUp || st.Neighbor == nil || st.Neighbor.MAC.String() != mac1 || st.Interface != "ens3" {
		t.Fatalf("status %+v", st)
	}
	if st.RAsReceived != 3 || st.RAsIgnored != 3 || st.RAsSent != 1 || st.RSsSent != 1 {
		t.Fatalf("counters: received %d ignored %d sent %d/%d, want 3 3 1/1",
			st.RAsReceived, st.RAsIgnored, st.RAsSent, st.RSsSent)
	}
	st.Neighbor.MAC[0] = 0xff // must not reach the Link's copy
	if h.l.Status().Neighbor.MAC.String() != mac1 {
		t.Fatal("Status shares memory with the Link")
	}

	// The peer solicits: we answer, at most once a second.
	c.inject(t, marshal(t, ourRS(mac(t, mac1))), 255, tor1)
	expectRA(t, c)

	h.l.Solicit()
	expectRS(t, c)

	// Carrier lost: LinkDown, then NeighborDown with the last neighbor.
	h.setState(linkState{Name: "ens3", Index: 3, MAC: ourMAC})
	h.expectEvent(LinkDown)
	if ev := h.expectEvent(NeighborDown); ev.Neighbor.Addr.String() != "fe80::1%ens3" {
		t.Fatalf("NeighborDown for %+v", ev.Neighbor)
	}
	if st := h.l.Status(); st.LinkUp || st.Neighbor != nil {
		t.Fatalf("status after link down %+v", st)
	}
	if !c.isClosed() {
		t.Fatal("socket left open on link down")
	}

	// Back up: a new socket, solicitation right away; our RAs only once
	// asked for again.
	h.setState(upState(3))
	h.expectEvent(LinkUp)
	c = h.nextConn()
	expectRS(t, c)
	h.l.Advertise()
	expectRA(t, c)
	c.inject(t, raBytes(t, mac1, 15*time.Second), 255, tor1)
	h.expectEvent(NeighborUp)

	h.stop()
	if !c.isClosed() {
		t.Fatal("socket left open after Run returned")
	}
	if st := h.l.Status(); st.LinkUp || st.Neighbor != nil {
		t.Fatalf("status after Run returned %+v", st)
	}
}

func TestRunWaitsForAddress(t *testing.T) {
	sys := newFakeSystem()
	sys.openErrs = []error{errAddrNotReady, errAddrNotReady, errors.New("EPERM or so")}
	h := start(t, Config{RAInterval: time.Hour}, sys, make(chan Event, 8))
	begin := time.Now()
	h.setState(upState(3))
	h.expectEvent(LinkUp) // before the address is ready
	h.l.Advertise()
	c := h.nextConn()
	// Two quick retries while tentative, then one backoff step.
	if d := time.Since(begin); d < 2*addrRetry+100*time.Millisecond {
		t.Fatalf("socket opened after %v, too early", d)
	}
	expectRS(t, c)
	expectRA(t, c)
}

func TestRunNeighborExpires(t *testing.T) {
	sys := newFakeSystem()
	h := start(t, Config{RAInterval: time.Hour}, sys, make(chan Event, 8))
	h.setState(upState(3))
	h.expectEvent(LinkUp)
	h.l.Advertise()
	c := h.nextConn()
	expectRS(t, c)
	expectRA(t, c)

	c.inject(t, raBytes(t, mac1, time.Second), 255, tor1)
	up := h.expectEvent(NeighborUp)
	down := h.expectEvent(NeighborDown)
	if down.Neighbor.Addr != up.Neighbor.Addr {
		t.Fatalf("NeighborDown for %v, want %v", down.Neighbor.Addr, up.Neighbor.Addr)
	}
	if d := time.Since(up.Neighbor.LastRA); d < time.Second || d > 2*time.Second {
		t.Fatalf("neighbor expired %v after its RA, want 1 s", d)
	}
	// And we ask for a router again.
	expectRS(t, c)
}

func TestRunPeriodicRA(t *testing.T) {
	sys := newFakeSystem()
	h := start(t, Config{RAInterval: 50 * time.Millisecond}, sys, make(chan Event, 8))
	h.setState(upState(3))
	h.expectEvent(LinkUp)
	h.l.Advertise()
	c := h.nextConn()
	expectRS(t, c)
	begin := time.Now()
	for range 5 {
		// RS retries (1 s apart) cannot come in this short time.
		expectRA(t, c)
	}
	if d := time.Since(begin); d < 150*time.Millisecond || d > time.Second {
		t.Fatalf("5 RAs at 50 ms took %v", d)
	}
}

func TestRunInterfaceReplaced(t *testing.T) {
	sys := newFakeSystem()
	h := start(t, Config{RAInterval: time.Hour}, sys, make(chan Event, 8))
	h.setState(upState(3))
	h.expectEvent(LinkUp)
	c := h.nextConn()
	c.inject(t, raBytes(t, mac1, 15*time.Second), 255, tor1)
	h.expectEvent(NeighborUp)

	// Deleted and created again under the same name: new ifindex.
	h.setState(upState(4))
	h.expectEvent(LinkDown)
	h.expectEvent(NeighborDown)
	h.expectEvent(LinkUp)
	if !c.isClosed() {
		t.Fatal("old socket left open")
	}
	h.nextConn()
}

func TestRunOwnMACChange(t *testing.T) {
	sys := newFakeSystem()
	h := start(t, Config{RAInterval: time.Hour}, sys, make(chan Event, 8))
	h.setState(upState(3))
	h.expectEvent(LinkUp)
	h.l.Advertise()
	c := h.nextConn()
	expectRS(t, c)
	expectRA(t, c)
	st := upState(3)
	st.MAC = net.HardwareAddr{2, 0, 0, 0, 0, 6}
	h.setState(st)
	w := c.nextWrite(t)
	ra, ok := w.m.(*ndp.RouterAdvertisement)
	if !ok || sourceLLA(ra.Options).String() != st.MAC.String() {
		t.Fatalf("after MAC change sent %#v, want RA with the new MAC", w.m)
	}
	h.expectNoEvent(20 * time.Millisecond)
}

func TestRunWriteErrorReopens(t *testing.T) {
	sys := newFakeSystem()
	sys.writeErr = errors.New("sendmsg: network is down")
	h := start(t, Config{RAInterval: time.Hour}, sys, make(chan Event, 8))
	h.setState(upState(3))
	h.expectEvent(LinkUp)
	h.l.Advertise()
	bad := h.nextConn()
	good := h.nextConn()
	if !bad.isClosed() {
		t.Fatal("failed socket left open")
	}
	expectRS(t, good)
	expectRA(t, good)
}

func TestRunCancelWhileBlocked(t *testing.T) {
	sys := newFakeSystem()
	// Nobody reads events: Run blocks sending LinkUp and must still stop.
	h := start(t, Config{}, sys, make(chan Event))
	h.setState(upState(3))
	time.Sleep(20 * time.Millisecond)
	h.stop()
}

func TestRunErrors(t *testing.T) {
	if err := NewLink(Config{}).Run(context.Background(), nil); err == nil {
		t.Error("Run without interface: no error")
	}
	sys := newFakeSystem()
	h := start(t, Config{}, sys, make(chan Event, 1))
	h.setState(upState(3)) // Run is certainly running now
	if err := h.l.Run(context.Background(), nil); err == nil {
		t.Error("second concurrent Run: no error")
	}
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[EventKind]string{
		LinkUp: "LinkUp", LinkDown: "LinkDown", NeighborUp: "NeighborUp", NeighborDown: "NeighborDown", 9: "EventKind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(k), got, want)
		}
	}
}

func TestRateLimiter(t *testing.T) {
	rl := rateLimiter{every: time.Second}
	t0 := time.Now()
	steps := []struct {
		at             time.Duration
		ok             bool
		wantSuppressed int
	}{
		{0, true, 0},
		{100 * time.Millisecond, false, 0},
		{900 * time.Millisecond, false, 0},
		{time.Second, true, 2},
		{1500 * time.Millisecond, false, 0},
		{3 * time.Second, true, 1},
	}
	for i, s := range steps {
		ok, n := rl.allow(t0.Add(s.at))
		if ok != s.ok || n != s.wantSuppressed {
			t.Fatalf("step %d: allow = %v, %d; want %v, %d", i, ok, n, s.ok, s.wantSuppressed)
		}
	}
}

// TestRunReportsAdvertisements: the RA an Advertise call asked for is
// reported once it went out (the uplink's machine times its patience
// for the ToR from it); periodic RAs are not.
func TestRunReportsAdvertisements(t *testing.T) {
	sys := newFakeSystem()
	h := start(t, Config{RAInterval: 30 * time.Millisecond}, sys, make(chan Event, 8))
	h.setState(upState(3))
	h.expectEvent(LinkUp)
	h.l.Advertise() // before the socket is open: reported when it is
	c := h.nextConn()
	expectRS(t, c)
	expectRA(t, c)
	h.expectEvent(Advertised)
	for range 3 {
		expectRA(t, c) // periodic
	}
	h.l.Advertise()
	h.expectEvent(Advertised)
	h.expectNoEvent(100 * time.Millisecond)
}

func TestRunDeferredAdvertisements(t *testing.T) {
	sys := newFakeSystem()
	h := start(t, Config{RAInterval: 20 * time.Millisecond}, sys, make(chan Event, 8))
	h.setState(upState(3))
	h.expectEvent(LinkUp)
	c := h.nextConn()
	expectRS(t, c)
	// The ToR answers; even its solicitation and several RA intervals
	// later we have advertised nothing.
	c.inject(t, raBytes(t, mac1, 15*time.Second), 255, tor1)
	h.expectEvent(NeighborUp)
	c.inject(t, marshal(t, &ndp.RouterSolicitation{}), 255, tor1)
	select {
	case w := <-c.writes:
		if _, ok := w.m.(*ndp.RouterAdvertisement); ok {
			t.Fatal("sent an RA before Advertise")
		}
	case <-time.After(100 * time.Millisecond):
	}
	h.l.Advertise()
	expectRA(t, c)
	expectRA(t, c) // and periodically from then on
}
