package fib

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink attribute numbers x/sys/unix does not define.
const (
	ndaProtocol     = 12 // NDA_PROTOCOL, Linux 5.2
	nlmsgerrAttrMsg = 1  // NLMSGERR_ATTR_MSG
)

// batchBytes bounds one sendmsg. The kernel refuses a netlink write larger
// than the socket's send buffer; 64 KiB is about 800 routes.
const batchBytes = 64 << 10

// NetlinkKernel writes routes with raw rtnetlink messages. Route changes are
// pipelined: a whole batch goes out in one sendmsg with only its last
// message asking for an acknowledgement, so the kernel answers once per
// batch plus once per failure instead of once per route. That is what
// `ip -batch` cannot do (it waits for every acknowledgement).
//
// Dumps and single lookups use vishvananda/netlink, which does them well.
type NetlinkKernel struct {
	mu   sync.Mutex
	fd   int
	seq  uint32
	buf  []byte
	rbuf []byte
}

// NewNetlinkKernel opens a route netlink socket in the current namespace.
func NewNetlinkKernel() (*NetlinkKernel, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening rtnetlink socket: %w", err)
	}
	k := &NetlinkKernel{fd: fd, rbuf: make([]byte, 1<<16)}
	if err := k.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return k, nil
}

func (k *NetlinkKernel) setup() error {
	if err := unix.Bind(k.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("binding rtnetlink socket: %w", err)
	}
	// Acknowledgements without the echoed request keep replies small;
	// extended acks give the kernel's reason for a refusal.
	for _, opt := range []int{unix.NETLINK_CAP_ACK, unix.NETLINK_EXT_ACK} {
		if err := unix.SetsockoptInt(k.fd, unix.SOL_NETLINK, opt, 1); err != nil {
			return fmt.Errorf("setting netlink option %d: %w", opt, err)
		}
	}
	if err := unix.SetsockoptInt(k.fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 2*batchBytes); err != nil {
		return fmt.Errorf("setting send buffer: %w", err)
	}
	// Room for the error replies of a batch in which every route fails.
	if err := unix.SetsockoptInt(k.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		// Without CAP_NET_ADMIN over the limit, take what is allowed.
		_ = unix.SetsockoptInt(k.fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	// A kernel that never answers must not wedge the writer forever.
	tv := unix.Timeval{Sec: 10}
	if err := unix.SetsockoptTimeval(k.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("setting receive timeout: %w", err)
	}
	return nil
}

// Close closes the socket.
func (k *NetlinkKernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return unix.Close(k.fd)
}

// Routes lists the IPv4 and IPv6 routes of protocol ProtoBGP in the main
// table.
func (k *NetlinkKernel) Routes() ([]Route, error) {
	var routes []Route
	for _, family := range []byte{unix.AF_INET, unix.AF_INET6} {
		// struct rtmsg with only the family set: dump every route.
		req := appendNlMsghdr(nil, unix.RTM_GETROUTE, unix.NLM_F_DUMP, 0)
		req = append(req, family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		req = finishMsg(req, 0)
		err := k.dump(req, unix.RTM_NEWROUTE, func(data []byte) {
			if r, ok := parseRoute(data); ok {
				routes = append(routes, r)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("dumping routes: %w", err)
		}
	}
	return routes, nil
}

// Nexthops lists the nexthop objects in fabricd's ID range.
func (k *NetlinkKernel) Nexthops() ([]Nexthop, bool, error) {
	req := appendNlMsghdr(nil, unix.RTM_GETNEXTHOP, unix.NLM_F_DUMP, 0)
	req = append(req, unix.AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0) // struct nhmsg
	req = finishMsg(req, 0)
	var nhs []Nexthop
	err := k.dump(req, unix.RTM_NEWNEXTHOP, func(data []byte) {
		if nh, ok := parseNexthop(data); ok && IsOurNexthopID(nh.ID) {
			nhs = append(nhs, nh)
		}
	})
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
		return nil, false, nil // a kernel without nexthop objects
	}
	if err != nil {
		return nil, false, fmt.Errorf("dumping nexthop objects: %w", err)
	}
	return nhs, true, nil
}

// dump sends a dump request and calls fn with the payload of every reply
// of type typ until the kernel says done.
func (k *NetlinkKernel) dump(req []byte, typ uint16, fn func([]byte)) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seq++
	seq := k.seq
	binary.NativeEndian.PutUint32(req[8:], seq)
	if err := unix.Sendto(k.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sending dump request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(k.fd, k.rbuf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("reading dump: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(k.rbuf[:n])
		if err != nil {
			return fmt.Errorf("parsing dump: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue // a late reply to something earlier
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if err := nlmsgError(m); err != nil {
					return err
				}
			case typ:
				fn(m.Data)
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				return errors.New("dump interrupted by a concurrent change; retry")
			}
		}
	}
}

// Apply writes ops in batches of one sendmsg each.
func (k *NetlinkKernel) Apply(ops []Op) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var errs []error
	for start := 0; start < len(ops); {
		k.buf = k.buf[:0]
		first := k.seq + 1
		end := start
		for end < len(ops) && len(k.buf) < batchBytes-512 {
			k.seq++
			k.buf = appendMsg(k.buf, ops[end], k.seq, 0)
			end++
		}
		// Only the batch's last message is acknowledged: the kernel handles
		// a write's messages in order, so its ack means all are done, and
		// a failure of any earlier one arrives as its own error reply.
		setAckFlag(k.buf, k.seq)
		batchErrs, err := k.sendBatch(k.seq)
		if err != nil {
			// The batch's fate is unknown; report all of it.
			for i := start; i < end; i++ {
				errs = append(errs, &OpError{Index: i, Op: ops[i], Err: err})
			}
		} else {
			for seq, e := range batchErrs {
				if i := start + int(seq-first); i >= start && i < end {
					errs = append(errs, &OpError{Index: i, Op: ops[i], Err: e})
				}
			}
		}
		start = end
	}
	return errors.Join(errs...)
}

// setAckFlag sets NLM_F_ACK on the message with sequence seq in buf.
func setAckFlag(buf []byte, seq uint32) {
	for off := 0; off+unix.SizeofNlMsghdr <= len(buf); {
		l := int(binary.NativeEndian.Uint32(buf[off:]))
		if binary.NativeEndian.Uint32(buf[off+8:]) == seq {
			f := binary.NativeEndian.Uint16(buf[off+6:])
			binary.NativeEndian.PutUint16(buf[off+6:], f|unix.NLM_F_ACK)
			return
		}
		off += nlmAlign(l)
	}
}

// sendBatch writes k.buf and collects the replies up to the ack of lastSeq.
func (k *NetlinkKernel) sendBatch(lastSeq uint32) (map[uint32]error, error) {
	if err := unix.Sendto(k.fd, k.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sending netlink batch: %w", err)
	}
	var errs map[uint32]error
	for {
		n, _, err := unix.Recvfrom(k.fd, k.rbuf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return errs, fmt.Errorf("reading netlink replies: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(k.rbuf[:n])
		if err != nil {
			return errs, fmt.Errorf("parsing netlink reply: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if e := nlmsgError(m); e != nil {
				if errs == nil {
					errs = map[uint32]error{}
				}
				errs[m.Header.Seq] = e
			}
			if m.Header.Seq == lastSeq {
				return errs, nil
			}
		}
	}
}

// request sends one message and waits for its acknowledgement.
func (k *NetlinkKernel) request(msg []byte) error {
	errs, err := k.sendOne(msg)
	if err != nil {
		return err
	}
	for _, e := range errs {
		return e
	}
	return nil
}

func (k *NetlinkKernel) sendOne(msg []byte) (map[uint32]error, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seq++
	binary.NativeEndian.PutUint32(msg[8:], k.seq)
	k.buf = append(k.buf[:0], msg...)
	setAckFlag(k.buf, k.seq)
	return k.sendBatch(k.seq)
}

// nlmsgError decodes an NLMSG_ERROR reply; nil for an acknowledgement.
func nlmsgError(m syscall.NetlinkMessage) error {
	if len(m.Data) < 4 {
		return errors.New("short netlink error message")
	}
	code := int32(binary.NativeEndian.Uint32(m.Data))
	if code == 0 {
		return nil
	}
	err := error(syscall.Errno(-code))
	// With NETLINK_CAP_ACK the echoed header is bare; extended-ack
	// attributes follow it.
	if m.Header.Flags&unix.NLM_F_ACK_TLVS != 0 && len(m.Data) >= 4+unix.SizeofNlMsghdr {
		if msg := extAckMessage(m.Data[4+unix.SizeofNlMsghdr:]); msg != "" {
			err = fmt.Errorf("%w (%s)", err, msg)
		}
	}
	return err
}

func extAckMessage(b []byte) string {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		t := binary.NativeEndian.Uint16(b[2:])
		if l < 4 || l > len(b) {
			return ""
		}
		if t == nlmsgerrAttrMsg {
			s := b[4:l]
			for len(s) > 0 && s[len(s)-1] == 0 {
				s = s[:len(s)-1]
			}
			return string(s)
		}
		b = b[rtaAlign(l):]
	}
	return ""
}

// SetNeighbor installs Gateway's permanent entry on the uplink, marked with
// fabricd's protocol so `ip neigh show proto bgp` lists it.
func (k *NetlinkKernel) SetNeighbor(n Neighbor) error {
	msg := appendNeighMsg(nil, unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, n.Ifindex, n.MAC)
	if err := k.request(msg); err != nil {
		return fmt.Errorf("setting neighbour %s lladdr %s on ifindex %d: %w", Gateway, n.MAC, n.Ifindex, err)
	}
	return nil
}

// DeleteNeighbor removes Gateway's entry on ifindex.
func (k *NetlinkKernel) DeleteNeighbor(ifindex int) error {
	msg := appendNeighMsg(nil, unix.RTM_DELNEIGH, 0, ifindex, nil)
	if err := k.request(msg); err != nil {
		return fmt.Errorf("deleting neighbour %s on ifindex %d: %w", Gateway, ifindex, err)
	}
	return nil
}

// LookupNeighbor reads Gateway's entry on ifindex.
func (k *NetlinkKernel) LookupNeighbor(ifindex int) (net.HardwareAddr, bool, bool, error) {
	neighs, err := netlink.NeighList(ifindex, unix.AF_INET)
	if err != nil {
		return nil, false, false, fmt.Errorf("listing neighbours: %w", err)
	}
	gw := Gateway.AsSlice()
	for _, n := range neighs {
		if n.IP.Equal(gw) {
			return n.HardwareAddr, n.State&unix.NUD_PERMANENT != 0, true, nil
		}
	}
	return nil, false, false, nil
}

// HasCarrier reports whether interface ifindex is up with carrier.
func (k *NetlinkKernel) HasCarrier(ifindex int) bool {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return false
	}
	const up = unix.IFF_UP | unix.IFF_LOWER_UP
	return l.Attrs().RawFlags&up == up
}

func nlmAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }
func rtaAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }
