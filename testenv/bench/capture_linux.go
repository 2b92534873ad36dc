package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/testenv/netns"
)

const (
	bgpPort      = 179
	bgpHeaderLen = 19
	bgpUpdate    = 2
	// An UPDATE that carries nothing, End-of-RIB for IPv4 unicast, is 23 bytes.
	bgpEndOfRIBLen = 23
)

// Capture timestamps the BGP segments a server receives on one interface, to tell
// the ToR's share of a convergence time from the server's: when the ToR sent its
// first UPDATE after a session came up, and when its last data arrived. It reads
// an AF_PACKET socket in the server's namespace; the kernel's veth hands every
// segment to it as the ToR sends it.
type Capture struct {
	fd   int
	mu   sync.Mutex
	segs []segment

	stop chan struct{}
	done chan struct{}
}

type segment struct {
	at      time.Time
	payload int  // TCP payload bytes
	update  bool // starts with a BGP header of type UPDATE longer than End-of-RIB
}

// StartCapture starts capturing incoming BGP segments on interface ifname of
// namespace ns.
func StartCapture(ns, ifname string) (*Capture, error) {
	var fd int
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_IPV6)
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("opening packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("binding packet socket to %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("capturing on %s in %s: %w", ifname, ns, err)
	}
	for _, opt := range []struct {
		name string
		set  func() error
	}{
		{"receive buffer", func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20) }},
		// The kernel's receive timestamps: the reader polls (see monitorPoll), so its own
		// clock would be late by up to a millisecond.
		{"timestamps", func() error { return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) }},
	} {
		if err := opt.set(); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("capturing on %s in %s: %s: %w", ifname, ns, opt.name, err)
		}
	}
	c := &Capture{fd: fd, stop: make(chan struct{}), done: make(chan struct{})}
	go c.read()
	return c, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// rxTime returns the kernel's receive timestamp from a packet's control messages,
// or the current time if there is none.
func rxTime(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= 16 {
				sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
				nsec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
				return time.Unix(sec, nsec)
			}
		}
	}
	return time.Now()
}

// Close stops the capture.
func (c *Capture) Close() error {
	select {
	case <-c.stop:
		return nil
	default:
	}
	close(c.stop)
	<-c.done
	return unix.Close(c.fd)
}

func (c *Capture) read() {
	defer close(c.done)
	buf := make([]byte, 1<<17) // a GSO super-segment on a veth is up to 64 KiB
	oob := make([]byte, unix.CmsgSpace(16))
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, unix.MSG_DONTWAIT)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				time.Sleep(monitorPoll)
				continue
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype != unix.PACKET_HOST {
			continue // our own segments
		}
		if seg, ok := parseBGPSegment(buf[:n]); ok {
			seg.at = rxTime(oob[:oobn])
			c.mu.Lock()
			c.segs = append(c.segs, seg)
			c.mu.Unlock()
		}
	}
}

// parseBGPSegment decodes an IPv6 packet carrying a TCP segment to or from port 179
// with a payload.
func parseBGPSegment(pkt []byte) (segment, bool) {
	const ipv6Len = 40
	if len(pkt) < ipv6Len+20 || pkt[0]>>4 != 6 || pkt[6] != unix.IPPROTO_TCP {
		return segment{}, false
	}
	plen := int(binary.BigEndian.Uint16(pkt[4:6]))
	tcp := pkt[ipv6Len:]
	if plen > len(tcp) {
		plen = len(tcp) // only ever shorter if truncated; the length still counts
	}
	src, dst := binary.BigEndian.Uint16(tcp[0:2]), binary.BigEndian.Uint16(tcp[2:4])
	if src != bgpPort && dst != bgpPort {
		return segment{}, false
	}
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > plen {
		return segment{}, false
	}
	payload := tcp[off:plen]
	if len(payload) == 0 {
		return segment{}, false
	}
	seg := segment{payload: len(payload)}
	// A segment that starts a message starts with the 16-byte all-ones marker.
	if len(payload) >= bgpHeaderLen && bytes.Count(payload[:16], []byte{0xff}) == 16 {
		msgLen := int(binary.BigEndian.Uint16(payload[16:18]))
		seg.update = payload[18] == bgpUpdate && msgLen > bgpEndOfRIBLen
	}
	return seg, true
}

// FirstUpdate returns when the first segment that starts an UPDATE with routes
// arrived after t, or the zero time.
func (c *Capture) FirstUpdate(after time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.segs {
		if s.update && s.at.After(after) {
			return s.at
		}
	}
	return time.Time{}
}

// LastData returns when the last segment with more than End-of-RIB's worth of
// payload arrived between after and before (keepalives are 19 bytes and are left
// out), or the zero time: when the ToR finished sending its table.
func (c *Capture) LastData(after, before time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last time.Time
	for _, s := range c.segs {
		if s.payload > bgpEndOfRIBLen && s.at.After(after) && !s.at.After(before) {
			last = s.at
		}
	}
	return last
}
