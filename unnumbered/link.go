package unnumbered

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/ndp"

	"github.com/fabricd/fabricd/internal/backoff"
)

const (
	// addrRetry is how often we look again for a usable link-local
	// address during the first addrWait after link-up. The kernel adds
	// the address just after the link comes up and DAD ends at an unknown
	// moment 1-2 s later; the session waits for it, so poll fast. It is
	// one netlink dump per try, for a bounded time. After addrWait the
	// interface is probably configured without one (addr_gen_mode none,
	// disable_ipv6) and we back off.
	addrRetry = 50 * time.Millisecond
	addrWait  = 10 * time.Second

	// minRAGap limits how often an RS from the peer makes us send an RA,
	// so that a peer (or a loop) soliciting in a burst cannot make us
	// flood the link. RFC 4861 asks routers for 3 s; we are not a router
	// and the peer is waiting for our address, so answer faster.
	minRAGap = time.Second

	// minRSGap limits the router solicitations that an RS from the peer
	// prompts (see onRS). It bounds any RS ping-pong between two hosts
	// that both have not found their neighbor yet.
	minRSGap = 200 * time.Millisecond

	// raJitter is the relative jitter of our periodic RAs, so that servers
	// started together do not advertise in lockstep.
	raJitter = 0.1
)

// Link runs discovery on one uplink.
type Link struct {
	cfg     Config
	log     *slog.Logger
	sys     system
	solicit chan struct{}
	// advertise releases deferred RAs (Config.DeferAdvertisements).
	advertise chan struct{}
	running   atomic.Bool
	// raInterval is the period of our RAs now (SetRAInterval).
	raInterval atomic.Int64

	mu     sync.Mutex
	status Status
}

// NewLink returns a Link for cfg.Interface. Nothing happens until Run.
func NewLink(cfg Config) *Link {
	if cfg.RAInterval <= 0 {
		cfg.RAInterval = DefaultRAInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default().With("interface", cfg.Interface)
	}
	l := &Link{
		cfg:       cfg,
		log:       log,
		sys:       netlinkSystem{},
		solicit:   make(chan struct{}, 1),
		advertise: make(chan struct{}, 1),
		status:    Status{Interface: cfg.Interface},
	}
	l.raInterval.Store(int64(cfg.RAInterval))
	return l
}

// SetRAInterval changes the period of our RAs from the next one on
// (Config.RAInterval until then).
func (l *Link) SetRAInterval(d time.Duration) {
	if d > 0 {
		l.raInterval.Store(int64(d))
	}
}

// Solicit asks Run to send a router solicitation now (non-blocking).
// Requests made while one is pending are merged.
func (l *Link) Solicit() {
	select {
	case l.solicit <- struct{}{}:
	default:
	}
}

// Advertise sends our router advertisement now, or as soon as the link
// can (once it has carrier and a usable link-local address, and at most
// one a second), and periodically from then on until the link goes down
// (non-blocking; calls made while one is pending are merged).
func (l *Link) Advertise() {
	select {
	case l.advertise <- struct{}{}:
	default:
	}
}

// Status is a snapshot for the CLI's `show interface`.
func (l *Link) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	s.MAC = cloneMAC(s.MAC)
	if s.Neighbor != nil {
		n := s.Neighbor.clone()
		s.Neighbor = &n
	}
	return s
}

func (l *Link) updateStatus(f func(*Status)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.status)
}

// Run blocks until ctx is cancelled, then returns nil. It sends events on
// the channel, blocking while the channel is full but never after ctx is
// cancelled. It tolerates the interface not existing yet, being down, or
// having only a tentative link-local address: it waits for netlink updates
// and retries.
//
// Run starts from the assumption that the link is down: it sends LinkUp if
// the link is up, but no LinkDown for a link that is down or missing at
// start. Nothing is sent when Run returns. Only one Run at a time may use
// a Link.
func (l *Link) Run(ctx context.Context, events chan<- Event) error {
	if l.cfg.Interface == "" {
		return errors.New("unnumbered: no interface configured")
	}
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("unnumbered: Run is already running for interface " + l.cfg.Interface)
	}
	defer l.running.Store(false)

	ctx, cancel := context.WithCancel(ctx)
	states := make(chan linkState)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.sys.watch(ctx, l.cfg.Interface, states, l.log)
	}()

	r := &runner{
		ctx:         ctx,
		l:           l,
		events:      events,
		log:         l.log,
		openBackoff: backoff.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second},
		rsBackoff:   backoff.Backoff{Min: time.Second, Max: 16 * time.Second},
		warnIgnored: rateLimiter{every: 30 * time.Second},
		warnOpen:    rateLimiter{every: 30 * time.Second},
	}
	defer func() {
		r.closeConn()
		cancel()
		wg.Wait()
		l.updateStatus(func(s *Status) {
			s.LinkUp = false
			s.Neighbor = nil
		})
	}()
	l.log.Debug("unnumbered discovery starting", "ra_interval", l.cfg.RAInterval)
	r.loop(ctx, states)
	return nil
}

// runner is the state of one Run. Only Run's goroutine touches it.
type runner struct {
	ctx    context.Context // Run's, for events from deep in the loop
	l      *Link
	events chan<- Event
	log    *slog.Logger

	st      linkState // last state from watch
	up      bool      // we have announced LinkUp
	upSince time.Time
	conn    *openConn // nil while closed
	tr      tracker

	// Deadlines of pending work; zero when none.
	openDue, raDue, rsDue time.Time
	lastRA, lastRS        time.Time

	openBackoff, rsBackoff backoff.Backoff
	warnIgnored, warnOpen  rateLimiter

	// advertising: our RAs go out (Advertise was called since link-up);
	// requested: the next one is reported (Advertised).
	advertising, requested bool
}

func (r *runner) loop(ctx context.Context, states <-chan linkState) {
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		r.armTimer(wake)
		var pkts <-chan packet
		if r.conn != nil {
			pkts = r.conn.pkts
		}
		select {
		case <-ctx.Done():
			return
		case st := <-states:
			r.onLinkState(ctx, st, time.Now())
		case p := <-pkts:
			r.onPacket(ctx, p)
		case <-r.l.solicit:
			// Without a socket there is nothing to do: opening one
			// solicits anyway.
			r.sendRS(time.Now())
		case <-r.l.advertise:
			r.advertising, r.requested = true, true
			r.advertiseNow(time.Now())
		case now := <-wake.C:
			r.onTimer(ctx, now)
		}
	}
}

// armTimer sets wake for the earliest pending deadline. The timer channel
// is synchronous (Go 1.23+), so Reset never leaves a stale tick behind.
func (r *runner) armTimer(wake *time.Timer) {
	var next time.Time
	for _, t := range []time.Time{r.openDue, r.raDue, r.rsDue, r.tr.deadline()} {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		wake.Stop()
		return
	}
	wake.Reset(max(time.Until(next), 0))
}

func due(t, now time.Time) bool { return !t.IsZero() && !now.Before(t) }

func (r *runner) onTimer(ctx context.Context, now time.Time) {
	if due(r.openDue, now) {
		r.openDue = time.Time{}
		r.tryOpen(now)
	}
	if n, ok := r.tr.expire(now); ok {
		r.log.Info("neighbor lost: no router advertisement within its hold time",
			"addr", n.Addr, "mac", n.MAC.String(), "last_ra", n.LastRA)
		r.neighborDown(ctx, n)
		// Perhaps only RAs got lost: ask right away.
		r.rsBackoff.Reset()
		r.rsDue = now
	}
	if due(r.rsDue, now) {
		r.sendRS(now)
	}
	if due(r.raDue, now) {
		r.sendRA(now)
	}
}

func (r *runner) onLinkState(ctx context.Context, st linkState, now time.Time) {
	prev := r.st
	r.st = st
	switch {
	case r.up && (!st.Up || st.Index != prev.Index):
		// Carrier lost, deleted, or replaced by a new interface of the
		// same name (the index changes): in every case the neighbor is
		// unreachable.
		r.linkDown(ctx, st)
		if st.Up {
			r.linkUp(ctx, now)
		}
	case !r.up && st.Up:
		r.linkUp(ctx, now)
	case r.up && !bytes.Equal(st.MAC, prev.MAC):
		// Our own MAC changed: tell the peer now rather than letting it
		// use the old one until our next periodic RA.
		r.log.Info("interface MAC changed", "old", prev.MAC.String(), "new", st.MAC.String())
		r.sendRA(now)
	}
}

func (r *runner) linkUp(ctx context.Context, now time.Time) {
	r.up = true
	r.upSince = now
	r.tr.setLink(r.st.Name, r.st.Index)
	mac := cloneMAC(r.st.MAC)
	r.l.updateStatus(func(s *Status) { s.LinkUp, s.MAC = true, mac })
	r.log.Info("link up", "ifindex", r.st.Index)
	r.emit(ctx, Event{Kind: LinkUp, Interface: r.l.cfg.Interface, Index: r.st.Index})
	r.openBackoff.Reset()
	r.tryOpen(now)
}

func (r *runner) linkDown(ctx context.Context, st linkState) {
	r.up = false
	r.advertising = false // until asked again: the peer may not be there
	r.openDue, r.raDue, r.rsDue = time.Time{}, time.Time{}, time.Time{}
	n, hadNeighbor := r.tr.reset()
	r.l.updateStatus(func(s *Status) {
		s.LinkUp = false
		s.Neighbor = nil
	})
	r.log.Info("link down", "exists", st.Index != 0)
	// Events first: the consumer is waiting to withdraw routes, and
	// closing the socket can wait a few microseconds.
	r.emit(ctx, Event{Kind: LinkDown, Interface: r.l.cfg.Interface})
	if hadNeighbor {
		r.neighborDown(ctx, n)
	}
	r.closeConn()
}

func (r *runner) neighborDown(ctx context.Context, n Neighbor) {
	r.l.updateStatus(func(s *Status) { s.Neighbor = nil })
	r.emit(ctx, Event{Kind: NeighborDown, Interface: r.l.cfg.Interface, Neighbor: n})
}

// emit sends ev unless ctx is cancelled first. The loop notices the
// cancellation right after.
func (r *runner) emit(ctx context.Context, ev Event) {
	select {
	case r.events <- ev:
	case <-ctx.Done():
	}
}

func (r *runner) tryOpen(now time.Time) {
	if !r.up || r.conn != nil {
		return
	}
	c, addr, err := r.l.sys.open(r.st.Index)
	if err != nil {
		if errors.Is(err, errAddrNotReady) && now.Sub(r.upSince) < addrWait {
			r.log.Debug("waiting for link-local address", "err", err)
			r.openDue = now.Add(addrRetry)
			return
		}
		d := r.openBackoff.Next()
		if ok, n := r.warnOpen.allow(now); ok {
			r.log.Warn("cannot open ND socket, retrying", "err", err, "retry_in", d, "suppressed", n)
		}
		r.openDue = now.Add(d)
		return
	}
	r.conn = startConn(c, addr)
	r.openBackoff.Reset()
	r.rsBackoff.Reset()
	r.log.Debug("ND socket open", "addr", addr)
	// RS first: the ToR answers it at once, which is what finds the
	// neighbor quickly. Our RA then lets the ToR learn us.
	r.sendRS(now)
	r.sendRA(now)
}

func (r *runner) closeConn() {
	if r.conn == nil {
		return
	}
	if err := r.conn.close(); err != nil {
		r.log.Debug("closing ND socket", "err", err)
	}
	r.conn = nil
}

// connFailed closes a socket that cannot be used any more and schedules
// reopening it.
func (r *runner) connFailed(now time.Time, what string, err error) {
	r.closeConn()
	r.raDue, r.rsDue = time.Time{}, time.Time{}
	d := r.openBackoff.Next()
	r.log.Warn(what+" failed, reopening ND socket", "err", err, "retry_in", d)
	r.openDue = now.Add(d)
}

func (r *runner) sendRS(now time.Time) {
	if r.conn == nil {
		// Opening the socket solicits; a deadline left here would only
		// make the loop spin.
		r.rsDue = time.Time{}
		return
	}
	if err := r.conn.c.WriteTo(ourRS(r.st.MAC), nil, allRouters); err != nil {
		r.connFailed(now, "sending router solicitation", err)
		return
	}
	r.l.updateStatus(func(s *Status) { s.RSsSent++ })
	r.log.Debug("sent router solicitation")
	r.lastRS = now
	r.rsDue = time.Time{}
	if _, ok := r.tr.current(); !ok {
		// RSs can get lost too; keep asking, ever less often, until a
		// router answers. Its periodic RAs would find it as well.
		r.rsDue = now.Add(r.rsBackoff.Next())
	}
}

func (r *runner) sendRA(now time.Time) {
	if r.conn == nil || !r.advertising {
		r.raDue = time.Time{} // as in sendRS; Advertise sends the first
		return
	}
	if err := r.conn.c.WriteTo(ourRA(r.st.MAC), nil, allNodes); err != nil {
		r.connFailed(now, "sending router advertisement", err)
		return
	}
	r.l.updateStatus(func(s *Status) { s.RAsSent++ })
	r.log.Debug("sent router advertisement")
	if r.requested {
		r.requested = false
		r.emit(r.ctx, Event{Kind: Advertised, Interface: r.l.cfg.Interface, Index: r.st.Index})
	}
	r.lastRA = now
	iv := time.Duration(r.l.raInterval.Load())
	r.raDue = now.Add(time.Duration(float64(iv) * (1 - raJitter + 2*raJitter*rand.Float64())))
}

func (r *runner) onPacket(ctx context.Context, p packet) {
	if p.err != nil {
		r.connFailed(time.Now(), "reading ND socket", p.err)
		return
	}
	if p.src.WithZone("") == r.conn.addr.WithZone("") {
		return // our own multicast, looped back
	}
	if p.cm != nil && p.cm.IfIndex != 0 && p.cm.IfIndex != r.st.Index {
		// Another link's packet: a socket can see some while it is being
		// set up. Not garbage from this link, so not counted.
		r.log.Debug("ND packet of another interface", "src", p.src, "ifindex", p.cm.IfIndex)
		return
	}
	m, err := parseND(p.b, p.cm, p.src, r.st.Index)
	if err != nil {
		r.ignore(p.at, "ignoring invalid ND packet", "src", p.src, "err", err)
		return
	}
	switch m := m.(type) {
	case *ndp.RouterAdvertisement:
		r.onRA(ctx, p, m)
	case *ndp.RouterSolicitation:
		r.onRS(p)
	}
}

func (r *runner) onRA(ctx context.Context, p packet, ra *ndp.RouterAdvertisement) {
	r.l.updateStatus(func(s *Status) { s.RAsReceived++ })
	mac := sourceLLA(ra.Options)
	switch v := r.tr.observe(p.at, p.src, mac, ra.RouterLifetime); v {
	case raSecondRouter:
		cur, _ := r.tr.current()
		r.ignore(p.at, "ignoring router advertisement from a second router",
			"src", p.src, "mac", mac.String(), "current", cur.Addr, "current_mac", cur.MAC.String())
	case raRefresh:
		n := r.setNeighborStatus()
		// Every RA of the ToR: a ToR heard again after its BGP restarted
		// may need ours before it connects.
		r.emit(ctx, Event{Kind: NeighborUp, Interface: r.l.cfg.Interface, Index: r.st.Index, Neighbor: n})
	case raUp:
		n := r.setNeighborStatus()
		r.log.Info("neighbor up", "addr", n.Addr, "mac", n.MAC.String(), "router_lifetime", n.RouterLifetime)
		r.rsDue = time.Time{}
		r.rsBackoff.Reset()
		r.emit(ctx, Event{Kind: NeighborUp, Interface: r.l.cfg.Interface, Index: r.st.Index, Neighbor: n})
	}
}

func (r *runner) setNeighborStatus() Neighbor {
	n, _ := r.tr.current()
	sn := n.clone()
	r.l.updateStatus(func(s *Status) { s.Neighbor = &sn })
	return n
}

func (r *runner) onRS(p packet) {
	r.log.Debug("router solicitation from peer", "src", p.src)
	now := time.Now()
	if _, ok := r.tr.current(); !ok && now.Sub(r.lastRS) >= minRSGap {
		// A soliciting peer is up and has a usable address: a Linux
		// kernel solicits right after DAD, which is also when the peer
		// can first answer us. Ask now instead of at our next retry.
		r.sendRS(now)
	}
	r.advertiseNow(now)
}

// advertiseNow sends our RA now, or when minRAGap since the last one has
// passed.
func (r *runner) advertiseNow(now time.Time) {
	if next := r.lastRA.Add(minRAGap); now.Before(next) {
		if r.raDue.IsZero() || next.Before(r.raDue) {
			r.raDue = next
		}
		return
	}
	r.sendRA(now)
}

// ignore counts an ignored packet and logs it, at warning level at most
// every 30 s and at debug level otherwise.
func (r *runner) ignore(now time.Time, msg string, args ...any) {
	r.l.updateStatus(func(s *Status) { s.RAsIgnored++ })
	if ok, n := r.warnIgnored.allow(now); ok {
		r.log.Warn(msg, append(args, "suppressed", n)...)
		return
	}
	r.log.Debug(msg, args...)
}

// openConn is an open ND socket and the goroutine reading it.
type openConn struct {
	c    conn
	addr netip.Addr
	pkts chan packet
	stop chan struct{}
	done chan struct{}
}

func startConn(c conn, addr netip.Addr) *openConn {
	oc := &openConn{
		c:    c,
		addr: addr,
		pkts: make(chan packet, 16),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go oc.read()
	return oc
}

// read passes packets to the loop until the socket fails or is closed.
func (oc *openConn) read() {
	defer close(oc.done)
	// Room for the largest IPv6 payload: a shorter buffer would silently
	// truncate a big (valid) RA and make it look malformed.
	buf := make([]byte, 1<<16)
	for {
		n, cm, src, err := oc.c.ReadRaw(buf)
		p := packet{err: err}
		if err == nil {
			p = packet{b: bytes.Clone(buf[:n]), cm: cm, src: src, at: time.Now()}
		}
		select {
		case oc.pkts <- p:
		case <-oc.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// close closes the socket and waits for the reader to finish.
func (oc *openConn) close() error {
	close(oc.stop)
	err := oc.c.Close()
	<-oc.done
	return err
}

// rateLimiter allows one event per period and counts the rest.
type rateLimiter struct {
	every      time.Duration
	last       time.Time
	suppressed int
}

// allow reports whether an event at now may be logged, and how many were
// suppressed since the last one that was.
func (l *rateLimiter) allow(now time.Time) (bool, int) {
	if !l.last.IsZero() && now.Sub(l.last) < l.every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}
