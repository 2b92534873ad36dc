package unnumbered

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

var (
	// allNodes and allRouters are where unsolicited RAs and RSs go.
	allNodes   = netip.MustParseAddr("ff02::1")
	allRouters = netip.MustParseAddr("ff02::2")
)

// packet is one ICMPv6 message read from the socket, or the read error
// that ended the reader.
type packet struct {
	b   []byte
	cm  *ipv6.ControlMessage
	src netip.Addr // with zone
	at  time.Time
	err error
}

// parseND validates an ICMPv6 message with the checks of RFC 4861 sections
// 6.1.1 and 6.1.2 and parses it. Only RS and RA are expected: the socket's
// ICMPv6 filter lets nothing else through. The kernel has already verified
// the ICMPv6 checksum.
func parseND(b []byte, cm *ipv6.ControlMessage, src netip.Addr, ifindex int) (ndp.Message, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("ICMPv6 message of %d bytes is too short", len(b))
	}
	typ := ipv6.ICMPType(b[0])
	if typ != ipv6.ICMPTypeRouterAdvertisement && typ != ipv6.ICMPTypeRouterSolicitation {
		return nil, fmt.Errorf("unexpected ICMPv6 type %d", b[0])
	}
	// A hop limit of 255 proves the packet was not forwarded by a router,
	// that is, it comes from this link. This is the IP header's hop limit,
	// not the RA's Cur Hop Limit field (FRR puts 64 there).
	if cm == nil {
		return nil, errors.New("no control message: cannot check hop limit")
	}
	if cm.HopLimit != ndp.HopLimit {
		return nil, fmt.Errorf("%v with hop limit %d, want %d", typ, cm.HopLimit, ndp.HopLimit)
	}
	if cm.IfIndex != 0 && cm.IfIndex != ifindex {
		return nil, fmt.Errorf("%v arrived on ifindex %d, want %d", typ, cm.IfIndex, ifindex)
	}
	if b[1] != 0 {
		return nil, fmt.Errorf("%v with code %d, want 0", typ, b[1])
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		// ndp's error names the message type and drops the detail.
		return nil, fmt.Errorf("malformed: %w", err)
	}
	switch m := m.(type) {
	case *ndp.RouterAdvertisement:
		if !src.IsLinkLocalUnicast() {
			return nil, fmt.Errorf("router advertisement from %v, which is not link-local", src)
		}
	case *ndp.RouterSolicitation:
		if src.IsUnspecified() && sourceLLA(m.Options) != nil {
			return nil, errors.New("router solicitation from the unspecified address with a source link-layer address option")
		}
	}
	return m, nil
}

// sourceLLA returns the source link-layer address option's address, or nil.
func sourceLLA(opts []ndp.Option) net.HardwareAddr {
	for _, o := range opts {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
			return lla.Addr
		}
	}
	return nil
}

// llaOptions returns the source link-layer address option for mac. Links
// without an Ethernet address (ndp encodes only those) get none: the peer
// then resolves us with neighbor solicitations.
func llaOptions(mac net.HardwareAddr) []ndp.Option {
	if len(mac) != 6 {
		return nil
	}
	return []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}
}

// ourRA is the router advertisement we send. Its only purpose is to make
// the ToR learn our link-local address (FRR learns interface peers only
// from RAs) and, through the option, our MAC.
//
// Router lifetime 0: a server must never become anyone's default router.
// Checked against FRR 8.4: a lifetime-0 RA makes FRR list the sender
// under "Neighbor address(s)" and resolve `neighbor swp1 interface` to it.
// Cur hop limit, reachable time and retransmit timer are 0 (unspecified)
// so that no receiver changes its settings because of us.
func ourRA(mac net.HardwareAddr) *ndp.RouterAdvertisement {
	return &ndp.RouterAdvertisement{
		RouterSelectionPreference: ndp.Medium,
		RouterLifetime:            0,
		Options:                   llaOptions(mac),
	}
}

// ourRS is the router solicitation we send on link-up. The option lets the
// router answer without first resolving our address.
func ourRS(mac net.HardwareAddr) *ndp.RouterSolicitation {
	return &ndp.RouterSolicitation{Options: llaOptions(mac)}
}
