// Package neighbors follows the kernel's neighbour table (ARP and ND) of
// the network namespace it runs in, and asks the kernel to resolve an
// address. fabricd reads the ToR's MAC and, for a ToR that sends no router
// advertisements, its address from the table, and watches its own
// 169.254.0.1 entries there.
package neighbors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/internal/backoff"
)

// Update is a neighbour entry as it is now, or its removal.
type Update struct {
	Ifindex int
	Addr    netip.Addr // without zone
	// MAC is nil while the entry is unresolved (INCOMPLETE, FAILED).
	MAC net.HardwareAddr
	// Router: the neighbour said it is a router (the NA's R flag).
	Router    bool
	Permanent bool
	Deleted   bool
}

// resolved states carry a usable link-layer address.
const resolved = unix.NUD_REACHABLE | unix.NUD_STALE | unix.NUD_DELAY | unix.NUD_PROBE | unix.NUD_PERMANENT | unix.NUD_NOARP

func updateOf(n netlink.Neigh, deleted bool) (Update, bool) {
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return Update{}, false
	}
	u := Update{
		Ifindex:   n.LinkIndex,
		Addr:      addr.Unmap(),
		Router:    n.Flags&netlink.NTF_ROUTER != 0,
		Permanent: n.State&unix.NUD_PERMANENT != 0,
		Deleted:   deleted,
	}
	if !deleted && n.State&resolved != 0 && len(n.HardwareAddr) > 0 {
		u.MAC = append(net.HardwareAddr(nil), n.HardwareAddr...)
	}
	return u, true
}

// Watch calls fn with every entry of the table and then with every change,
// until ctx is done. It subscribes again when the subscription fails (the
// kernel drops it with ENOBUFS when we fall behind), and every
// subscription starts with the whole table, so no change is ever missed
// for long. fn runs on Watch's goroutine.
func Watch(ctx context.Context, log *slog.Logger, fn func(Update)) {
	bo := backoff.Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}
	for {
		start := time.Now()
		err := watchOnce(ctx, fn)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			bo.Reset() // it worked for a while: a new failure, not a retry
		}
		d := bo.Next()
		log.Warn("neighbour table subscription failed, subscribing again", "err", err, "retry_in", d)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

func watchOnce(ctx context.Context, fn func(Update)) error {
	updates := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	failed := make(chan error, 1)
	err := netlink.NeighSubscribeWithOptions(updates, done, netlink.NeighSubscribeOptions{
		ListExisting:      true,
		ReceiveBufferSize: 1 << 20,
		ErrorCallback: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
	})
	if err != nil {
		close(done)
		return fmt.Errorf("subscribing to neighbour changes: %w", err)
	}
	defer func() {
		// Closing done closes the socket; the receiving goroutine then
		// closes updates. It may be blocked sending, so drain until it
		// is closed: that is also how we know it has ended.
		close(done)
		for range updates {
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return err
		case u, ok := <-updates:
			if !ok {
				return errors.New("neighbour subscription closed")
			}
			if up, ok := updateOf(u.Neigh, u.Type == unix.RTM_DELNEIGH); ok {
				fn(up)
			}
		}
	}
}

// Resolve asks the kernel to resolve addr on interface ifindex, as it
// would before sending there: for an IPv6 address it sends a neighbour
// solicitation, and the answer shows up in Watch. An entry that already
// exists is only refreshed.
func Resolve(ifindex int, addr netip.Addr) error {
	fam := netlink.FAMILY_V6
	if addr.Is4() {
		fam = netlink.FAMILY_V4
	}
	err := netlink.NeighSet(&netlink.Neigh{
		LinkIndex: ifindex,
		Family:    fam,
		IP:        addr.WithZone("").AsSlice(),
		Flags:     netlink.NTF_USE,
	})
	if err != nil {
		return fmt.Errorf("resolving %s on interface %d: %w", addr, ifindex, err)
	}
	return nil
}

// Lookup returns the MAC of addr's entry on ifindex, nil when the kernel
// has none or has not resolved it.
func Lookup(ifindex int, addr netip.Addr) (net.HardwareAddr, error) {
	fam := netlink.FAMILY_V6
	if addr.Is4() {
		fam = netlink.FAMILY_V4
	}
	list, err := netlink.NeighList(ifindex, fam)
	if err != nil {
		return nil, fmt.Errorf("listing neighbours of interface %d: %w", ifindex, err)
	}
	want := addr.WithZone("")
	for _, n := range list {
		if u, ok := updateOf(n, false); ok && u.Addr == want {
			return u.MAC, nil
		}
	}
	return nil, nil
}
