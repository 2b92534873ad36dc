//go:build linux

package autoannounce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/internal/backoff"
)

// netlinkSource is the real source: three netlink subscriptions (links,
// addresses, routes) and dumps of the same.
type netlinkSource struct {
	// ns is the network namespace to watch. A closed handle (netns.None)
	// means the namespace the process runs in, without any setns (which
	// would need CAP_SYS_ADMIN; fabricd runs with CAP_NET_ADMIN only).
	// Tests watch a namespace of their own.
	ns netns.NsHandle
}

func defaultSource() source { return netlinkSource{ns: netns.None()} }

// Every subscription gets a larger receive buffer than the default:
// creating 100 pods at once is a burst of several hundred link, address and
// route messages, and fabricd's own route installs land on the route socket
// too. Without CAP_NET_ADMIN's forcing, the kernel caps it at
// net.core.rmem_max; an overflow costs a resubscription and re-dump, not
// correctness.
const receiveBuffer = 1 << 20

func (k netlinkSource) run(ctx context.Context, out chan<- event, log *slog.Logger, resync time.Duration) error {
	bo := backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	for first := true; ; first = false {
		start := time.Now()
		started, err := k.session(ctx, out, log, resync)
		if ctx.Err() != nil {
			return nil
		}
		if first && !started {
			return err
		}
		if time.Since(start) > time.Minute {
			bo.Reset() // it worked for a while: a new failure, not a retry
		}
		d := bo.Next()
		// Typically ENOBUFS after a burst: some change may have been lost,
		// so the state is rebuilt from a fresh dump.
		log.Warn("netlink watch failed, resubscribing", "err", err, "retry_in", d)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// session subscribes, sends a snapshot and forwards changes until ctx is
// done or a subscription fails. started reports whether the snapshot was
// sent.
func (k netlinkSource) session(ctx context.Context, out chan<- event, log *slog.Logger, resync time.Duration) (started bool, err error) {
	// The library reports through ErrorCallback also the error from
	// closing the socket ourselves; closing silences that.
	var closing atomic.Bool
	var stops []func()
	defer func() {
		closing.Store(true)
		for _, stop := range stops {
			stop()
		}
	}()
	onError := func(kind string) func(error) {
		return func(err error) {
			if !closing.Load() {
				log.Debug("netlink subscription", "kind", kind, "err", err)
			}
		}
	}
	var nsp *netns.NsHandle
	if k.ns.IsOpen() {
		nsp = &k.ns
	}

	// Subscribe before dumping, so that no change falls between the two.
	links, stop, err := subscribe(func(ch chan<- netlink.LinkUpdate, done <-chan struct{}) error {
		return netlink.LinkSubscribeWithOptions(ch, done, netlink.LinkSubscribeOptions{
			Namespace: nsp, ErrorCallback: onError("link"), ReceiveBufferSize: receiveBuffer,
		})
	})
	if err != nil {
		return false, fmt.Errorf("subscribing to netlink link changes: %w", err)
	}
	stops = append(stops, stop)
	addrs, stop, err := subscribe(func(ch chan<- netlink.AddrUpdate, done <-chan struct{}) error {
		return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
			Namespace: nsp, ErrorCallback: onError("address"), ReceiveBufferSize: receiveBuffer,
		})
	})
	if err != nil {
		return false, fmt.Errorf("subscribing to netlink address changes: %w", err)
	}
	stops = append(stops, stop)
	routes, stop, err := subscribe(func(ch chan<- netlink.RouteUpdate, done <-chan struct{}) error {
		return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
			Namespace: nsp, ErrorCallback: onError("route"), ReceiveBufferSize: receiveBuffer,
		})
	})
	if err != nil {
		return false, fmt.Errorf("subscribing to netlink route changes: %w", err)
	}
	stops = append(stops, stop)

	// Dumps through a handle of our own rather than the subscriptions'
	// ListExisting: a dump's end (NLMSG_DONE) is not passed on by the
	// subscription, and the first update must wait for the complete picture.
	var h *netlink.Handle
	if k.ns.IsOpen() {
		h, err = netlink.NewHandleAt(k.ns, unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return false, fmt.Errorf("opening netlink socket: %w", err)
	}
	defer h.Close()

	snap, err := dump(h, log)
	if err != nil {
		return false, err
	}
	if !send(ctx, out, event{kind: evSnapshot, snap: snap}) {
		return true, nil
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		var ev event
		var ok bool
		select {
		case <-ctx.Done():
			return true, nil
		case u, open := <-links:
			if !open {
				return true, errors.New("netlink link subscription closed")
			}
			ev, ok = linkEvent(u)
		case u, open := <-addrs:
			if !open {
				return true, errors.New("netlink address subscription closed")
			}
			ev, ok = addrEvent(u)
		case u, open := <-routes:
			if !open {
				return true, errors.New("netlink route subscription closed")
			}
			ev, ok = routeEvent(u)
		case <-tick.C:
			snap, err := dump(h, log)
			if err != nil {
				return true, err
			}
			ev, ok = event{kind: evSnapshot, snap: snap}, true
		}
		if ok && !send(ctx, out, ev) {
			return true, nil
		}
	}
}

// subscribe starts a subscription and returns its channel and a function
// that ends it.
func subscribe[T any](sub func(chan<- T, <-chan struct{}) error) (<-chan T, func(), error) {
	ch := make(chan T, 256)
	done := make(chan struct{})
	if err := sub(ch, done); err != nil {
		// The library may have started the goroutine that closes the
		// socket on done; the receiving one it has not.
		close(done)
		return nil, nil, err
	}
	return ch, func() {
		// Closing done closes the socket; the library's receive goroutine
		// then closes ch. It may be blocked sending on ch, so drain until
		// it is closed: that is also how we know it has ended.
		close(done)
		for range ch {
		}
	}, nil
}

func send(ctx context.Context, out chan<- event, ev event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// dump reads the links, addresses and main-table host routes. A dump the
// kernel marks interrupted (the table changed while it was read) is
// retried; if that keeps happening the last one is used, since the events
// that interrupted it follow on the subscriptions anyway.
func dump(h *netlink.Handle, log *slog.Logger) (*snapshot, error) {
	const attempts = 5
	for i := 1; ; i++ {
		snap, err := dumpOnce(h)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			if i < attempts {
				continue
			}
			log.Warn("netlink dump interrupted repeatedly, using it anyway", "attempts", attempts)
			err = nil
		}
		return snap, err
	}
}

func dumpOnce(h *netlink.Handle) (*snapshot, error) {
	var snap snapshot
	var interrupted error
	note := func(err error) error {
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			interrupted = err
			return nil
		}
		return err
	}

	ls, err := h.LinkList()
	if err := note(err); err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	for _, l := range ls {
		snap.links = append(snap.links, linkOf(l.Attrs()))
	}

	as, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err := note(err); err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	for _, a := range as {
		if a.IPNet == nil {
			continue
		}
		if ad, ok := addrOf(*a.IPNet, a.LinkIndex, a.Flags); ok {
			snap.addrs = append(snap.addrs, ad)
		}
	}

	// The library reads the main table only unless asked otherwise; that
	// is the table Calico uses, and the one the state considers.
	err = h.RouteListFilteredIter(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE,
		func(nr netlink.Route) bool {
			if r, ok := routeOf(nr); ok && candidateRoute(r) {
				snap.routes = append(snap.routes, r)
			}
			return true
		})
	if err := note(err); err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	return &snap, interrupted
}

func linkEvent(u netlink.LinkUpdate) (event, bool) {
	// AF_BRIDGE messages are about an interface's bridge port, not the
	// interface; an RTM_DELLINK among them means "left the bridge".
	if u.Link == nil || u.Family == unix.AF_BRIDGE {
		return event{}, false
	}
	return event{kind: evLink, del: u.Header.Type == unix.RTM_DELLINK, link: linkOf(u.Link.Attrs())}, true
}

func linkOf(a *netlink.LinkAttrs) link {
	return link{Index: a.Index, Name: a.Name, Up: a.RawFlags&unix.IFF_UP != 0}
}

func addrEvent(u netlink.AddrUpdate) (event, bool) {
	a, ok := addrOf(u.LinkAddress, u.LinkIndex, u.Flags)
	if !ok {
		return event{}, false
	}
	return event{kind: evAddr, del: !u.NewAddr, addr: a}, true
}

func addrOf(n net.IPNet, index, flags int) (address, bool) {
	p, ok := prefixOf(n)
	if !ok {
		return address{}, false
	}
	return address{Link: index, Prefix: p, Flags: flags}, true
}

func routeEvent(u netlink.RouteUpdate) (event, bool) {
	r, ok := routeOf(u.Route)
	if !ok || !candidateRoute(r) {
		return event{}, false
	}
	switch u.Type {
	case unix.RTM_NEWROUTE:
		return event{kind: evRoute, route: r, replace: u.NlFlags&unix.NLM_F_REPLACE != 0}, true
	case unix.RTM_DELROUTE:
		return event{kind: evRoute, route: r, del: true}, true
	}
	return event{}, false
}

func routeOf(nr netlink.Route) (route, bool) {
	if nr.Dst == nil {
		return route{}, false // a default route
	}
	dst, ok := prefixOf(*nr.Dst)
	if !ok {
		return route{}, false
	}
	return route{
		Dst:      dst,
		Link:     nr.LinkIndex,
		Table:    nr.Table,
		Priority: nr.Priority,
		Tos:      nr.Tos,
		Protocol: int(nr.Protocol),
		Type:     nr.Type,
	}, true
}

// prefixOf converts a netlink address. The family comes from the mask:
// the library hands out IPv4 addresses in 4- or 16-byte form.
func prefixOf(n net.IPNet) (netip.Prefix, bool) {
	ones, bits := n.Mask.Size()
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok || bits == 0 {
		return netip.Prefix{}, false
	}
	if bits == 32 {
		ip = ip.Unmap()
	}
	if ip.BitLen() != bits {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones), true
}
