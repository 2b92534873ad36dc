package unnumbered

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/internal/backoff"
)

// conn is the part of *ndp.Conn a Link uses. Tests substitute a fake.
type conn interface {
	// ReadRaw rather than ReadFrom: ReadFrom silently drops messages it
	// cannot parse, and we want to count and log them.
	ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error)
	WriteTo(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error
	Close() error
}

// linkState is what a Link needs to know about its interface at one instant.
type linkState struct {
	Name  string
	Index int              // 0 when the interface does not exist
	Up    bool             // IFF_UP and IFF_LOWER_UP: administratively up and carrier present
	MAC   net.HardwareAddr // our own MAC, for the source link-layer address option
}

// system is the OS-facing side of a Link: netlink and the ICMPv6 socket.
type system interface {
	// watch sends the state of interface name to out: first the current
	// state, then on every change, until ctx is done. It returns only then,
	// with all its goroutines finished.
	watch(ctx context.Context, name string, out chan<- linkState, log *slog.Logger)
	// open opens an ND socket on the interface with the given index and
	// returns it with the link-local address it is bound to (zone set).
	// It fails with errAddrNotReady while the interface has no usable
	// link-local address.
	open(index int) (conn, netip.Addr, error)
}

// errAddrNotReady means the interface has no usable link-local address.
// Right after link-up that is normal: the kernel adds the address a moment
// after the link comes up and then runs duplicate address detection on it
// for 1-2 s.
var errAddrNotReady = errors.New("no usable link-local address")

// netlinkSystem is the real system.
type netlinkSystem struct{}

func (netlinkSystem) watch(ctx context.Context, name string, out chan<- linkState, log *slog.Logger) {
	// The subscription fails typically with ENOBUFS, when we fell behind a
	// burst of link changes; resubscribing also resynchronises the state.
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for {
		start := time.Now()
		err := watchOnce(ctx, name, out, log)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			bo.Reset() // it worked for a while: this is a new failure, not a retry
		}
		d := bo.Next()
		log.Warn("netlink link subscription failed, resubscribing", "err", err, "retry_in", d)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// watchOnce runs one netlink subscription until it fails or ctx is done.
func watchOnce(ctx context.Context, name string, out chan<- linkState, log *slog.Logger) error {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		// Every link change in the namespace reaches us, and a host with
		// containers has bursts of them: a larger buffer (capped by
		// net.core.rmem_max) makes ENOBUFS less likely.
		ReceiveBufferSize: 1 << 20,
		// Called from netlink's receive goroutine, for fatal errors (the
		// channel is closed next) and for single bad messages alike.
		ErrorCallback: func(err error) {
			if ctx.Err() == nil {
				log.Debug("netlink link subscription", "err", err)
			}
		},
	})
	if err != nil {
		close(done)
		return fmt.Errorf("subscribing to netlink link updates: %w", err)
	}
	defer func() {
		// Closing done closes the socket; netlink's receive goroutine then
		// closes updates. It may be blocked sending to updates, so drain
		// until it is closed: that is also how we know it has ended.
		close(done)
		for range updates {
		}
	}()

	// Look the interface up after subscribing so that no change falls
	// between the two.
	cur, err := lookupLink(name)
	if err != nil {
		return err
	}
	if !send(ctx, out, cur) {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				return errors.New("netlink link subscription closed")
			}
			st, ok := stateFromUpdate(u, name, cur.Index)
			if !ok {
				continue
			}
			cur = st
			if !send(ctx, out, st) {
				return nil
			}
		}
	}
}

func send[T any](ctx context.Context, out chan<- T, v T) bool {
	select {
	case out <- v:
		return true
	case <-ctx.Done():
		return false
	}
}

func lookupLink(name string) (linkState, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return linkState{Name: name}, nil
		}
		return linkState{}, fmt.Errorf("looking up interface %s: %w", name, err)
	}
	return stateOf(l.Attrs()), nil
}

// stateFromUpdate maps a netlink update to our interface's new state. ok is
// false for updates about other interfaces.
func stateFromUpdate(u netlink.LinkUpdate, name string, index int) (st linkState, ok bool) {
	if u.Link == nil {
		return linkState{}, false
	}
	a := u.Link.Attrs()
	switch {
	case a.Name == name:
		if u.Header.Type == unix.RTM_DELLINK {
			return linkState{Name: name}, true
		}
		return stateOf(a), true
	case index != 0 && a.Index == index:
		// Renamed away, or deleted under another name: either way it is
		// no longer the uplink.
		return linkState{Name: name}, true
	}
	return linkState{}, false
}

func stateOf(a *netlink.LinkAttrs) linkState {
	const up = unix.IFF_UP | unix.IFF_LOWER_UP
	return linkState{
		Name:  a.Name,
		Index: a.Index,
		Up:    a.RawFlags&up == up,
		MAC:   cloneMAC(a.HardwareAddr),
	}
}

func (netlinkSystem) open(index int) (conn, netip.Addr, error) {
	ll, err := usableLinkLocal(index)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("interface %d: %w", index, err)
	}
	// Bind to the address we checked: ndp.LinkLocal would take the first
	// one, tentative or not.
	c, addr, err := ndp.Listen(ifi, ndp.Addr(ll.String()))
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("opening ND socket on %s: %w", ifi.Name, err)
	}
	if err := setupConn(c); err != nil {
		_ = c.Close()
		return nil, netip.Addr{}, fmt.Errorf("setting up ND socket on %s: %w", ifi.Name, err)
	}
	return c, addr, nil
}

func setupConn(c *ndp.Conn) error {
	// Let the kernel drop everything but RS and RA, rather than waking us
	// for every NS/NA and ping on the link.
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		return fmt.Errorf("setting ICMPv6 filter: %w", err)
	}
	// The hop limit is needed for RFC 4861 validation, the interface as a
	// second check that the packet came in on the uplink.
	if err := c.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true); err != nil {
		return fmt.Errorf("enabling control messages: %w", err)
	}
	// A server is not a member of all-routers; without joining, the peer's
	// router solicitations never reach us.
	if err := c.JoinGroup(allRouters); err != nil {
		return fmt.Errorf("joining %v: %w", allRouters, err)
	}
	return nil
}

// usableLinkLocal returns the interface's first link-local address that
// has passed duplicate address detection. Packets from a tentative address
// are refused by the kernel (and binding to one fails).
func usableLinkLocal(index int) (netip.Addr, error) {
	addrs, err := netlink.AddrList(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: index}}, netlink.FAMILY_V6)
	interrupted := errors.Is(err, netlink.ErrDumpInterrupted)
	if err != nil && !interrupted {
		return netip.Addr{}, fmt.Errorf("listing addresses of interface %d: %w", index, err)
	}
	tentative := false
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.Is6() || !ip.IsLinkLocalUnicast() {
			continue
		}
		switch {
		case a.Flags&unix.IFA_F_DADFAILED != 0:
			continue
		case a.Flags&unix.IFA_F_TENTATIVE != 0 && a.Flags&unix.IFA_F_OPTIMISTIC == 0:
			tentative = true
			continue
		}
		return ip, nil
	}
	switch {
	case tentative:
		return netip.Addr{}, fmt.Errorf("%w: tentative (duplicate address detection)", errAddrNotReady)
	case interrupted:
		return netip.Addr{}, fmt.Errorf("%w: address dump interrupted", errAddrNotReady)
	}
	return netip.Addr{}, fmt.Errorf("%w: none on interface %d", errAddrNotReady, index)
}
