package nlmon

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/testenv/netns"
)

// SetLink sets interface name in namespace ns administratively up or down, over
// rtnetlink rather than by running ip(8), and returns the moment the request was
// sent: the trigger of a carrier change on the veth's peer.
func SetLink(ns, name string, up bool) (time.Time, error) {
	return SetLinks(ns, []string{name}, up)
}

// SetLinks sets several interfaces of namespace ns up or down, one request
// right after the other on one socket (microseconds apart, as when a switch
// reloads), and returns the moment the first request was sent.
func SetLinks(ns string, names []string, up bool) (time.Time, error) {
	var first time.Time
	err := netns.Do(ns, func() error {
		fd, err := openRouteSocket(0, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var flags uint32
		if up {
			flags = unix.IFF_UP
		}
		for i, name := range names {
			ifi := make([]byte, unix.SizeofIfInfomsg)
			binary.NativeEndian.PutUint32(ifi[8:12], flags)
			binary.NativeEndian.PutUint32(ifi[12:16], unix.IFF_UP) // ifi_change: only IFF_UP
			req := request(unix.RTM_NEWLINK, unix.NLM_F_ACK, uint32(i+1), ifi, rtattr(unix.IFLA_IFNAME, append([]byte(name), 0)))
			if i == 0 {
				first = time.Now()
			}
			if err := dump(fd, req, func(uint16, []byte) {}); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("setting links in %s %s: %w", ns, map[bool]string{true: "up", false: "down"}[up], err)
	}
	return first, nil
}

// DeleteNeighbor deletes the neighbour entry for addr on interface dev in
// namespace ns, as `ip neigh del ADDR dev DEV` does, and returns the moment the
// request was sent. No entry is an error (ENOENT).
func DeleteNeighbor(ns, dev string, addr netip.Addr) (time.Time, error) {
	var sent time.Time
	err := netns.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		fd, err := openRouteSocket(0, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		family, raw := byte(unix.AF_INET), addr.AsSlice()
		if addr.Is6() && !addr.Is4In6() {
			family = unix.AF_INET6
		} else {
			a := addr.Unmap().As4()
			raw = a[:]
		}
		// struct ndmsg: family, 3 bytes of padding, ifindex, state, flags, type.
		nd := make([]byte, unix.SizeofNdMsg)
		nd[0] = family
		binary.NativeEndian.PutUint32(nd[4:8], uint32(ifi.Index))
		req := request(unix.RTM_DELNEIGH, unix.NLM_F_ACK, 1, nd, rtattr(unix.NDA_DST, raw))
		sent = time.Now()
		return dump(fd, req, func(uint16, []byte) {})
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("deleting neighbour %v on %s in %s: %w", addr, dev, ns, err)
	}
	return sent, nil
}
