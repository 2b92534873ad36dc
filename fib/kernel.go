package fib

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/fabricd/fabricd/rib"
)

// Gateway is the IPv4 next hop every learned route points at, on the
// uplink, with "onlink": RFC 5549 routes have an IPv6 next hop, and the
// kernel (without nexthop objects) can only express that as a dummy IPv4
// gateway whose neighbour entry carries the ToR's MAC. 169.254.0.1 is the
// address FRR uses for the same purpose, so the kernel looks the same as
// with FRR and operators' muscle memory keeps working.
var Gateway = netip.MustParseAddr("169.254.0.1")

// ProtoBGP is the kernel route protocol fabricd writes and the only one it
// ever deletes (RTPROT_BGP, shown as "proto bgp").
const ProtoBGP = 186

// Route is a kernel route fabricd owns.
type Route struct {
	Prefix    netip.Prefix
	Metric    uint32
	Blackhole bool
	// NexthopID, when set, makes the route point at a kernel nexthop
	// object (`nhid N`) instead of carrying its own next hops.
	NexthopID uint32
	// Via are the next hops through the uplinks; more than one makes the
	// route multipath. Routes with a NexthopID leave it empty when written.
	Via []Via
}

// Via is a next hop: a gateway on an uplink. IPv4 routes use Gateway
// (169.254.0.1) "onlink"; IPv6 routes use the ToR's link-local address.
type Via struct {
	Ifindex int
	Gateway netip.Addr
}

// Nexthop is a kernel nexthop object (`ip nexthop`) of fabricd's:
// either one next hop or a group of them.
type Nexthop struct {
	ID    uint32
	Via   Via      // for a single next hop
	Group []uint32 // member IDs, for a group
}

// Nexthop objects fabricd creates have IDs in [nexthopIDBase,
// nexthopIDBase+0x30000): uplink u's IPv4 next hop is nexthopIDBase+u and
// its IPv6 one nexthopIDBase+0x100+u; the group of uplink set S is
// groupIDBase+S for IPv4 and groupIDBase+0x10000+S for IPv6. The range
// sits far above the IDs FRR's zebra allocates, and the IDs are the same
// in every run, so routes left by an earlier run keep pointing at the
// right objects.
const (
	nexthopIDBase = 0xFAB00000
	v6Offset      = 0x100
	groupIDBase   = nexthopIDBase + 0x10000
	v6GroupOffset = 0x10000
)

// IsOurNexthopID reports whether id is in fabricd's range.
func IsOurNexthopID(id uint32) bool {
	return id >= nexthopIDBase && id < groupIDBase+2*v6GroupOffset
}

// Neighbor is the permanent neighbour entry that resolves Gateway on an uplink.
type Neighbor struct {
	Ifindex int
	MAC     net.HardwareAddr
}

// OpKind says what Apply does with a route.
type OpKind int

const (
	// OpAdd creates a route and fails if one with the same prefix and
	// metric exists: a route fabricd did not install is never overwritten.
	OpAdd OpKind = iota + 1
	// OpReplace overwrites a route fabricd installed (or adopted).
	OpReplace
	// OpDelete removes a route of fabricd's protocol.
	OpDelete
)

func (k OpKind) String() string {
	switch k {
	case OpAdd:
		return "add"
	case OpReplace:
		return "replace"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", int(k))
}

// Op is one change: of a route, or, when Nexthop is set, of a nexthop
// object.
type Op struct {
	Kind    OpKind
	Route   Route
	Nexthop *Nexthop
	// nexthops and key are the Writer's bookkeeping: which uplinks Route
	// uses, and its prefix as a map key. Kernels ignore them.
	nexthops rib.NexthopSet
	key      rib.Key
}

func (o Op) target() string {
	if o.Nexthop != nil {
		return fmt.Sprintf("nexthop %d", o.Nexthop.ID)
	}
	return o.Route.Prefix.String()
}

// OpError reports a failed Op.
type OpError struct {
	Index int // position of Op in the slice given to Apply
	Op    Op
	Err   error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.Op.Kind, e.Op.target(), e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// Kernel is the OS-facing side of the FIB: netlink on Linux, a fake in tests.
type Kernel interface {
	// Routes lists the routes of protocol ProtoBGP in the main table.
	Routes() ([]Route, error)
	// Nexthops lists the nexthop objects in fabricd's ID range; ok is
	// false when the kernel has no nexthop objects (before Linux 5.3).
	Nexthops() (nhs []Nexthop, ok bool, err error)
	// Apply performs ops in order with as few round trips as possible. It
	// returns nil or the *OpError of every op that failed (errors.Join);
	// the other ops took effect.
	Apply(ops []Op) error
	// SetNeighbor installs or replaces the permanent entry for Gateway.
	SetNeighbor(n Neighbor) error
	// DeleteNeighbor removes the entry for Gateway on ifindex, if any.
	DeleteNeighbor(ifindex int) error
	// LookupNeighbor returns the MAC of Gateway's entry on ifindex and
	// whether it is a permanent entry; ok is false when there is none.
	LookupNeighbor(ifindex int) (mac net.HardwareAddr, permanent, ok bool, err error)
	// HasCarrier reports whether interface ifindex is up with carrier.
	HasCarrier(ifindex int) bool
	Close() error
}

// Format renders r as `ip route` prints it, naming interfaces with name.
func (r Route) Format(name func(ifindex int) string) string {
	var b strings.Builder
	if r.Blackhole {
		b.WriteString("blackhole ")
	}
	b.WriteString(prefixString(r.Prefix))
	if r.NexthopID != 0 {
		fmt.Fprintf(&b, " nhid %d", r.NexthopID)
	}
	if len(r.Via) == 1 {
		fmt.Fprintf(&b, " via %s dev %s", r.Via[0].Gateway, name(r.Via[0].Ifindex))
	}
	fmt.Fprintf(&b, " proto bgp metric %d", r.Metric)
	onlink := ""
	if r.Prefix.Addr().Is4() {
		onlink = " onlink"
	}
	switch {
	case len(r.Via) == 1:
		b.WriteString(onlink)
	case len(r.Via) > 1:
		for _, v := range r.Via {
			fmt.Fprintf(&b, "\n\tnexthop via %s dev %s weight 1%s", v.Gateway, name(v.Ifindex), onlink)
		}
	}
	return b.String()
}

// prefixString prints host routes without "/32" or "/128", as iproute2 does.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
