package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// monitorRcvBuf is the monitor's socket receive buffer. A 100,000-route burst is
// 100,000 notifications of about 1 KiB of kernel memory each; should the monitor
// fall behind by all of them, it must still lose none (it would then report an error
// rather than a wrong time).
const monitorRcvBuf = 256 << 20

// Monitor follows the routes, nexthop objects and links of one network namespace
// over rtnetlink, the way `ip -timestamp monitor` does, but in process: every
// message is timestamped the moment it is read, and conditions on the resulting
// FIB are checked after every message, so a Watch reports when the FIB first met
// its condition.
type Monitor struct {
	ns string
	fd int

	mu      sync.Mutex
	model   *fibModel
	watches []*Watch
	err     error // set once messages were lost; every later wait fails with it

	stop chan struct{}
	done chan struct{}
}

// OpenMonitor subscribes to namespace ns's link, IPv4 route and nexthop events,
// loads the current state, and follows the bgp-protocol routes inside watch.
func OpenMonitor(ns string, watch netip.Prefix) (*Monitor, error) {
	var fd int
	err := inNamespace(ns, func() error {
		var err error
		fd, err = openRouteSocket(monitorRcvBuf,
			1<<(unix.RTNLGRP_LINK-1)|1<<(unix.RTNLGRP_IPV4_ROUTE-1), unix.RTNLGRP_NEXTHOP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("monitor for %s: %w", ns, err)
	}
	m := &Monitor{ns: ns, fd: fd, stop: make(chan struct{}), done: make(chan struct{})}
	// Subscribed first, then dumped: nothing that happens in between is missed. The
	// labs are quiet at this point, so a message that is both dumped and received is
	// just applied twice, which the model tolerates.
	m.model, err = dumpModel(ns, watch)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("monitor for %s: %w", ns, err)
	}
	go m.read()
	return m, nil
}

// Close stops the monitor.
func (m *Monitor) Close() error {
	select {
	case <-m.stop:
		return nil
	default:
	}
	close(m.stop)
	<-m.done
	return unix.Close(m.fd)
}

// idlePoll is how long the reader sleeps when the socket is empty. It polls rather
// than blocks: a reader asleep in recvmsg must be woken for every notification, and
// on this 2-CPU machine those wakeups made a 100,000-route `ip -batch` 25% slower
// (an idle or polling listener costs next to nothing). Timestamps are therefore
// late by up to about a millisecond.
const idlePoll = 200 * time.Microsecond

func (m *Monitor) read() {
	defer close(m.done)
	buf := make([]byte, 1<<20)
	for {
		select {
		case <-m.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(m.fd, buf, unix.MSG_DONTWAIT)
		now := time.Now()
		switch {
		case errors.Is(err, unix.EAGAIN):
			time.Sleep(idlePoll)
			continue
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			m.fail(fmt.Errorf("monitor of %s lost netlink messages (receive buffer overflow)", m.ns))
			continue
		case err != nil:
			m.fail(fmt.Errorf("monitor of %s: reading: %w", m.ns, err))
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			m.fail(fmt.Errorf("monitor of %s: parsing: %w", m.ns, err))
			continue
		}
		m.mu.Lock()
		for _, msg := range msgs {
			m.model.apply(msg.Header.Type, msg.Data, now)
		}
		m.checkLocked(now)
		m.mu.Unlock()
	}
}

func (m *Monitor) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err == nil {
		m.err = err
	}
	for _, w := range m.watches {
		w.finish(time.Time{}, m.err)
	}
	m.watches = nil
}

func (m *Monitor) checkLocked(now time.Time) {
	kept := m.watches[:0]
	for _, w := range m.watches {
		if w.cond(m.model) {
			w.finish(now, nil)
			continue
		}
		kept = append(kept, w)
	}
	clear(m.watches[len(kept):])
	m.watches = kept
}

// Watch is a condition on the namespace's FIB that a Monitor checks after every
// message it reads.
type Watch struct {
	what string
	cond func(*fibModel) bool

	once sync.Once
	ch   chan struct{}
	at   time.Time
	err  error
}

func (w *Watch) finish(at time.Time, err error) {
	w.once.Do(func() {
		w.at, w.err = at, err
		close(w.ch)
	})
}

// Watch starts watching for cond. If cond already holds, the watch is met at once,
// with the current time. Register before the action being timed.
func (m *Monitor) Watch(what string, cond func(*fibModel) bool) *Watch {
	w := &Watch{what: what, cond: cond, ch: make(chan struct{})}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.err != nil:
		w.finish(time.Time{}, m.err)
	case cond(m.model):
		w.finish(time.Now(), nil)
	default:
		m.watches = append(m.watches, w)
	}
	return w
}

// Wait returns when the condition was first met, or an error after timeout.
func (w *Watch) Wait(ctx context.Context, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.ch:
		if w.err != nil {
			return time.Time{}, fmt.Errorf("waiting for %s: %w", w.what, w.err)
		}
		return w.at, nil
	case <-t.C:
		return time.Time{}, fmt.Errorf("waiting for %s: %w after %v", w.what, context.DeadlineExceeded, timeout)
	case <-ctx.Done():
		return time.Time{}, fmt.Errorf("waiting for %s: %w", w.what, ctx.Err())
	}
}

// Read runs f on the current model.
func (m *Monitor) Read(f func(*fibModel)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(m.model)
}

// Verify dumps the kernel's state and compares the watched routes, resolved to
// interfaces, with the monitor's model. A difference means the timing the model
// gave cannot be trusted (a notification the model does not understand, or a
// silent kernel change it does not copy).
func (m *Monitor) Verify() error {
	m.mu.Lock()
	err := m.err
	watch := m.model.watch
	m.mu.Unlock()
	if err != nil {
		return err
	}
	kernel, err := dumpModel(m.ns, watch)
	if err != nil {
		return err
	}
	m.mu.Lock()
	diff := m.model.diff(kernel)
	m.mu.Unlock()
	if len(diff) > 0 {
		return fmt.Errorf("monitor of %s disagrees with the kernel: %v", m.ns, diff)
	}
	return nil
}

// openRouteSocket opens an rtnetlink socket in the calling thread's namespace,
// subscribed to the groups in mask and to extra (groups above 32 need a setsockopt).
func openRouteSocket(rcvbuf int, mask uint32, extra ...int) (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return -1, fmt.Errorf("opening rtnetlink socket: %w", err)
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("setting receive buffer: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: mask}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("binding rtnetlink socket: %w", err)
	}
	for _, g := range extra {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, g); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("joining rtnetlink group %d: %w", g, err)
		}
	}
	return fd, nil
}

// request builds a netlink request of type typ with the given family header.
func request(typ, flags uint16, seq uint32, hdr []byte, attrs ...[]byte) []byte {
	b := make([]byte, unix.SizeofNlMsghdr, 64)
	b = append(b, hdr...)
	for _, a := range attrs {
		b = append(b, a...)
	}
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags|unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	return b
}

// rtattr encodes one attribute, padded.
func rtattr(typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b := make([]byte, (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1))
	binary.NativeEndian.PutUint16(b[0:2], uint16(l))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	copy(b[unix.SizeofRtAttr:], data)
	return b
}

// dumpModel builds a model of namespace ns from dumps of its links, nexthop
// objects and IPv4 routes.
func dumpModel(ns string, watch netip.Prefix) (*fibModel, error) {
	model := newFIBModel(watch)
	err := inNamespace(ns, func() error {
		fd, err := openRouteSocket(8<<20, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		now := time.Now()
		dumps := []struct {
			typ uint16
			hdr []byte
		}{
			{unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg)},
			{unix.RTM_GETNEXTHOP, make([]byte, sizeofNhmsg)},
			{unix.RTM_GETROUTE, append([]byte{unix.AF_INET}, make([]byte, unix.SizeofRtMsg-1)...)},
		}
		for i, d := range dumps {
			err := dump(fd, request(d.typ, unix.NLM_F_DUMP, uint32(i+1), d.hdr), func(typ uint16, data []byte) {
				model.apply(typ, data, now)
			})
			// A kernel without nexthop objects refuses that dump; then there are none.
			if err != nil && !(d.typ == unix.RTM_GETNEXTHOP && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL))) {
				return fmt.Errorf("dumping (message type %d): %w", d.typ, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the FIB of %s: %w", ns, err)
	}
	model.first = time.Time{} // the dump says nothing about when routes appeared
	return model, nil
}

// dump sends a dump request and passes every reply message to f.
func dump(fd int, req []byte, f func(typ uint16, data []byte)) error {
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	seq := binary.NativeEndian.Uint32(req[8:12])
	buf := make([]byte, 1<<20)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, msg := range msgs {
			if msg.Header.Seq != seq {
				continue
			}
			switch msg.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if e := nlError(msg.Data); e != nil {
					return e
				}
				return nil
			default:
				f(msg.Header.Type, msg.Data)
			}
		}
	}
}

// nlError decodes the error code of an NLMSG_ERROR message; nil for an ack.
func nlError(data []byte) error {
	if len(data) < 4 {
		return errors.New("short netlink error message")
	}
	if code := int32(binary.NativeEndian.Uint32(data[0:4])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}

// SetLink sets interface name in namespace ns administratively up or down, over
// rtnetlink rather than by running ip(8), and returns the moment the request was
// sent: the trigger of a carrier change on the veth's peer.
func SetLink(ns, name string, up bool) (time.Time, error) {
	var sent time.Time
	err := inNamespace(ns, func() error {
		fd, err := openRouteSocket(0, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var flags uint32
		if up {
			flags = unix.IFF_UP
		}
		ifi := make([]byte, unix.SizeofIfInfomsg)
		binary.NativeEndian.PutUint32(ifi[8:12], flags)
		binary.NativeEndian.PutUint32(ifi[12:16], unix.IFF_UP) // ifi_change: only IFF_UP
		req := request(unix.RTM_NEWLINK, unix.NLM_F_ACK, 1, ifi, rtattr(unix.IFLA_IFNAME, append([]byte(name), 0)))
		sent = time.Now()
		return dump(fd, req, func(uint16, []byte) {})
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("setting %s in %s %s: %w", name, ns, map[bool]string{true: "up", false: "down"}[up], err)
	}
	return sent, nil
}
