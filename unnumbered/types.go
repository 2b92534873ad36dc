// Package unnumbered discovers the router (the ToR switch) at the other end
// of an uplink from its IPv6 Router Advertisements, for BGP unnumbered
// (RFC 5549/8950) sessions over IPv6 link-local addresses.
//
// A Link also advertises this host with its own Router Advertisements,
// because FRR on the ToR learns an interface peer's link-local address only
// from RAs it receives and refuses BGP connections until then.
//
// A Link works in the network namespace of the process: its netlink and
// ICMPv6 sockets are created by whichever OS thread runs it.
package unnumbered

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Neighbor is the router discovered on an uplink from its router advertisements.
type Neighbor struct {
	Interface string
	Index     int              // ifindex
	Addr      netip.Addr       // link-local address WITH zone set to the interface name, e.g. fe80::1%swp1
	MAC       net.HardwareAddr // from the RA's source link-layer address option (fallback: none -> leave nil)
	LastRA    time.Time
	// RouterLifetime is the lifetime from the neighbor's last RA. Zero means
	// the router does not offer itself as a default router; it still counts
	// as the neighbor.
	RouterLifetime time.Duration
}

// clone returns a copy that shares no memory with n, so that values handed
// to callers cannot be changed by later updates.
func (n Neighbor) clone() Neighbor {
	if n.MAC != nil {
		n.MAC = append(net.HardwareAddr(nil), n.MAC...)
	}
	return n
}

// EventKind says what happened on an uplink.
type EventKind int

const (
	LinkUp       EventKind = iota + 1 // carrier came up (IFF_UP and IFF_LOWER_UP)
	LinkDown                          // carrier lost, or interface deleted
	NeighborUp                        // a router advertisement from the neighbor (Event.Neighbor holds it, perhaps new or changed)
	NeighborDown                      // the neighbor is gone (link down, or its RAs stopped for longer than its router lifetime / stale timeout)
	Advertised                        // the RA that Advertise asked for went out
)

// String implements fmt.Stringer.
func (k EventKind) String() string {
	switch k {
	case LinkUp:
		return "LinkUp"
	case LinkDown:
		return "LinkDown"
	case NeighborUp:
		return "NeighborUp"
	case NeighborDown:
		return "NeighborDown"
	case Advertised:
		return "Advertised"
	default:
		return fmt.Sprintf("EventKind(%d)", int(k))
	}
}

// Event is a change on an uplink.
type Event struct {
	Kind      EventKind
	Interface string
	Index     int      // the interface's index (LinkUp, NeighborUp)
	Neighbor  Neighbor // set for NeighborUp (and the last known one for NeighborDown)
}

// Config configures a Link.
type Config struct {
	Interface  string        // uplink name, e.g. "ens3"
	RAInterval time.Duration // period of our own unsolicited RAs; default 10s if zero
	Logger     *slog.Logger  // default slog.Default()
	// Our RAs go out only after Advertise: FRR connects to an interface
	// peer the moment it hears its first RA, and a BGP speaker not yet
	// configured for the ToR would refuse that connection (FRR then waits
	// its connect-retry time, 10 s in its datacenter profile).
}

// DefaultRAInterval is the period of our own RAs when Config.RAInterval is zero.
const DefaultRAInterval = 10 * time.Second

// Status is a snapshot for the CLI's `show interface`.
type Status struct {
	Interface string
	LinkUp    bool
	// MAC is the interface's own: a neighbour entry with it is ourselves.
	MAC      net.HardwareAddr
	Neighbor *Neighbor // nil when none
	// RAsReceived counts valid RAs from any source on this link, including
	// those from a second router that were then ignored.
	RAsReceived uint64
	// RAsIgnored counts RAs from a second router and every ND packet that
	// failed validation: malformed, bad hop limit, bad code, non-link-local
	// source, wrong interface.
	RAsIgnored uint64
	RAsSent    uint64
	RSsSent    uint64
}
