// Package nlmon follows the kernel state of the lab's network namespaces in
// process, over one rtnetlink socket per namespace: routes (resolved through
// nexthop objects to interfaces), links and their carrier. Conditions on that
// state are checked after every notification, so the time a condition became
// true is known to the millisecond without forking a tool per poll. It also
// makes the small netlink changes the tools inject (link up/down, neighbour
// deletion) with exact trigger times.
package nlmon

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/testenv/netns"
)

// monitorRcvBuf is the monitor's socket receive buffer. A 100,000-route burst is
// 100,000 notifications of about 1 KiB of kernel memory each; should the monitor
// fall behind by all of them, it must still lose none (it would then report an error
// rather than a wrong time).
const monitorRcvBuf = 256 << 20

// Options choose what a Monitor follows and how it reads.
type Options struct {
	// Watch is the range of protocol-bgp routes the model follows; a route is
	// followed if it lies inside (0.0.0.0/0: all of them).
	Watch netip.Prefix
	// Poll, if positive, makes the reader poll the socket and sleep this long
	// when it is empty, instead of blocking in the Go runtime's poller. A
	// reader asleep in the poller is woken for every notification, and on a
	// 2-CPU machine those wakeups made a 100,000-route `ip -batch` 25% slower,
	// while a polling reader costs next to nothing during such bursts (its
	// timestamps are late by up to Poll). For long runs with a few changes a
	// second, blocking (0) is the cheaper choice.
	Poll time.Duration
}

// Monitor follows the routes, nexthop objects and links of one network namespace
// over rtnetlink, the way `ip -timestamp monitor` does, but in process: every
// message is timestamped the moment it is read, and conditions on the resulting
// FIB are checked after every message, so a Watch reports when the FIB first met
// its condition and a Tracker every time its condition changed.
type Monitor struct {
	ns   string
	fd   int
	file *os.File // fd, registered with the runtime poller; nil when polling
	poll time.Duration

	mu       sync.Mutex
	model    *FIB
	watches  []*Watch
	trackers []*Tracker
	err      error // set once messages were lost; every later wait fails with it

	stop chan struct{}
	done chan struct{}
}

// Open subscribes to namespace ns's link, IPv4 route and nexthop events, loads
// the current state, and follows the protocol-bgp routes inside opts.Watch.
func Open(ns string, opts Options) (*Monitor, error) {
	var fd int
	err := netns.Do(ns, func() error {
		var err error
		fd, err = openRouteSocket(monitorRcvBuf,
			1<<(unix.RTNLGRP_LINK-1)|1<<(unix.RTNLGRP_IPV4_ROUTE-1), unix.RTNLGRP_NEXTHOP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("monitor for %s: %w", ns, err)
	}
	m := &Monitor{ns: ns, fd: fd, poll: opts.Poll, stop: make(chan struct{}), done: make(chan struct{})}
	// Subscribed first, then dumped: nothing that happens in between is missed. A
	// message that is both dumped and received is just applied twice, which the
	// model tolerates.
	m.model, err = dumpModel(ns, opts.Watch)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("monitor for %s: %w", ns, err)
	}
	if m.poll <= 0 {
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("monitor for %s: %w", ns, err)
		}
		// A non-blocking descriptor is registered with the runtime poller, so the
		// reader below parks its goroutine instead of a thread.
		m.file = os.NewFile(uintptr(fd), "rtnetlink-"+ns)
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
	if m.file != nil {
		err := m.file.Close() // wakes the reader
		<-m.done
		return err
	}
	<-m.done
	return unix.Close(m.fd)
}

// recv reads the next batch of messages into buf. It returns errStopped once
// Close was called.
func (m *Monitor) recv(buf []byte) (int, error) {
	if m.file == nil {
		for {
			select {
			case <-m.stop:
				return 0, errStopped
			default:
			}
			n, _, err := unix.Recvfrom(m.fd, buf, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				time.Sleep(m.poll)
				continue
			}
			return n, err
		}
	}
	rc, err := m.file.SyscallConn()
	if err != nil {
		return 0, errStopped
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err != nil { // the file was closed
		return 0, errStopped
	}
	return n, rerr
}

var errStopped = errors.New("monitor stopped")

func (m *Monitor) read() {
	defer close(m.done)
	buf := make([]byte, 1<<20)
	for {
		n, err := m.recv(buf)
		now := time.Now()
		switch {
		case errors.Is(err, errStopped):
			return
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
	for _, t := range m.trackers {
		t.observe(now, t.cond(m.model))
	}
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
	cond func(*FIB) bool

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
func (m *Monitor) Watch(what string, cond func(*FIB) bool) *Watch {
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

// Tracker records every change of a condition on the namespace's FIB, with the
// time of the message that caused it: a timeline to evaluate after the fact
// ("when did every route have two next hops again after t?").
type Tracker struct {
	what string
	cond func(*FIB) bool

	mu      sync.Mutex
	history []Transition
}

// Transition is a change of a tracked condition: from At on, it is On.
type Transition struct {
	At time.Time
	On bool
}

// Track starts tracking cond. Its first transition is its value now.
func (m *Monitor) Track(what string, cond func(*FIB) bool) *Tracker {
	t := &Tracker{what: what, cond: cond}
	m.mu.Lock()
	defer m.mu.Unlock()
	t.observe(time.Now(), cond(m.model))
	m.trackers = append(m.trackers, t)
	return t
}

func (t *Tracker) observe(at time.Time, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := len(t.history); n > 0 && t.history[n-1].On == on {
		return
	}
	t.history = append(t.history, Transition{At: at, On: on})
}

// State returns the condition's value now and since when it has had it.
func (t *Tracker) State() (on bool, since time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	last := t.history[len(t.history)-1]
	return last.On, last.At
}

// What describes the condition.
func (t *Tracker) What() string { return t.what }

// History returns the transitions so far, oldest first; the first one is the
// value when tracking began.
func (t *Tracker) History() []Transition {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.history)
}

// Err returns the error that made the monitor's model untrustworthy (lost
// netlink messages), or nil.
func (m *Monitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Read runs f on the current model.
func (m *Monitor) Read(f func(*FIB)) {
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
func dumpModel(ns string, watch netip.Prefix) (*FIB, error) {
	model := newFIB(watch)
	err := netns.Do(ns, func() error {
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
