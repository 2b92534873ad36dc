package fib

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The encoders append whole netlink messages to a buffer without per-field
// allocations: they sit on the route-install hot path.

// rtaNHID is RTA_NH_ID (Linux 5.3), which x/sys/unix lacks.
const rtaNHID = 30

// appendMsg appends the netlink message for op.
func appendMsg(b []byte, op Op, seq uint32, flags int) []byte {
	if op.Nexthop != nil {
		return appendNexthopMsg(b, op, seq, flags)
	}
	return appendRouteMsg(b, op, seq, flags)
}

// opFlags returns the netlink message type and flags for op.
func opFlags(kind OpKind, newType, delType uint16, flags int) (uint16, int) {
	switch kind {
	case OpAdd:
		return newType, flags | unix.NLM_F_CREATE | unix.NLM_F_EXCL
	case OpReplace:
		return newType, flags | unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	}
	return delType, flags
}

// appendRouteMsg appends the RTM_NEWROUTE or RTM_DELROUTE message for op.
func appendRouteMsg(b []byte, op Op, seq uint32, flags int) []byte {
	r := op.Route
	typ, flags := opFlags(op.Kind, unix.RTM_NEWROUTE, unix.RTM_DELROUTE, flags)
	start := len(b)
	b = appendNlMsghdr(b, typ, flags, seq)

	v4 := r.Prefix.Addr().Is4()
	family := byte(unix.AF_INET6)
	if v4 {
		family = unix.AF_INET
	}
	// struct rtmsg
	rtType, scope := byte(unix.RTN_UNICAST), byte(unix.RT_SCOPE_UNIVERSE)
	var rtFlags uint32
	switch {
	case op.Kind == OpDelete:
		// Match any type and scope, but only our protocol and metric.
		rtType, scope = unix.RTN_UNSPEC, unix.RT_SCOPE_NOWHERE
	case r.Blackhole:
		rtType = unix.RTN_BLACKHOLE
	case r.NexthopID == 0 && len(r.Via) == 1 && v4:
		rtFlags = unix.RTNH_F_ONLINK
	}
	b = append(b, family, byte(r.Prefix.Bits()), 0, 0,
		unix.RT_TABLE_MAIN, ProtoBGP, scope, rtType)
	b = binary.NativeEndian.AppendUint32(b, rtFlags)

	b = appendAddrAttr(b, unix.RTA_DST, r.Prefix.Addr())
	b = appendAttrU32(b, unix.RTA_PRIORITY, r.Metric)

	switch {
	case op.Kind == OpDelete || r.Blackhole:
	case r.NexthopID != 0:
		b = appendAttrU32(b, rtaNHID, r.NexthopID)
	case len(r.Via) == 1:
		b = appendAddrAttr(b, unix.RTA_GATEWAY, r.Via[0].Gateway)
		b = appendAttrU32(b, unix.RTA_OIF, uint32(r.Via[0].Ifindex))
	default:
		// RTA_MULTIPATH: a struct rtnexthop per hop, each followed by its
		// own RTA_GATEWAY.
		hopFlags := byte(0)
		if v4 {
			hopFlags = unix.RTNH_F_ONLINK
		}
		gwLen := 4
		if !v4 {
			gwLen = 16
		}
		hopLen := unix.SizeofRtNexthop + unix.SizeofRtAttr + gwLen
		b = appendAttrHeader(b, unix.RTA_MULTIPATH, len(r.Via)*hopLen)
		for _, v := range r.Via {
			b = binary.NativeEndian.AppendUint16(b, uint16(hopLen))
			b = append(b, hopFlags, 0)
			b = binary.NativeEndian.AppendUint32(b, uint32(v.Ifindex))
			b = appendAddrAttr(b, unix.RTA_GATEWAY, v.Gateway)
		}
	}
	return finishMsg(b, start)
}

// appendNexthopMsg appends an RTM_NEWNEXTHOP/RTM_DELNEXTHOP message: a
// single next hop ("via 169.254.0.1 dev IF onlink", or "via fe80::… dev
// IF"), or a multipath group.
func appendNexthopMsg(b []byte, op Op, seq uint32, flags int) []byte {
	nh := op.Nexthop
	typ, flags := opFlags(op.Kind, unix.RTM_NEWNEXTHOP, unix.RTM_DELNEXTHOP, flags)
	start := len(b)
	b = appendNlMsghdr(b, typ, flags, seq)
	// struct nhmsg: family, scope, protocol, reserved, flags. A delete
	// must leave protocol and flags zero: the kernel refuses "invalid
	// values in header" otherwise.
	family, proto, nhFlags := byte(unix.AF_UNSPEC), byte(0), uint32(0)
	if op.Kind != OpDelete {
		proto = ProtoBGP
		switch {
		case nh.Group != nil:
		case nh.Via.Gateway.Is4():
			family, nhFlags = unix.AF_INET, unix.RTNH_F_ONLINK
		default:
			family = unix.AF_INET6
		}
	}
	b = append(b, family, 0, proto, 0)
	b = binary.NativeEndian.AppendUint32(b, nhFlags)
	b = appendAttrU32(b, unix.NHA_ID, nh.ID)
	if op.Kind != OpDelete {
		if nh.Group != nil {
			// struct nexthop_grp: id, weight-1, reserved x3
			b = appendAttrHeader(b, unix.NHA_GROUP, 8*len(nh.Group))
			for _, id := range nh.Group {
				b = binary.NativeEndian.AppendUint32(b, id)
				b = append(b, 0, 0, 0, 0)
			}
		} else {
			b = appendAttrU32(b, unix.NHA_OIF, uint32(nh.Via.Ifindex))
			b = appendAddrAttr(b, unix.NHA_GATEWAY, nh.Via.Gateway)
		}
	}
	return finishMsg(b, start)
}

// appendNeighMsg appends an RTM_NEWNEIGH/RTM_DELNEIGH message for Gateway.
func appendNeighMsg(b []byte, typ uint16, flags int, ifindex int, mac net.HardwareAddr) []byte {
	start := len(b)
	b = appendNlMsghdr(b, typ, flags, 0)
	// struct ndmsg: family, pad x3, ifindex, state, flags, type
	b = append(b, unix.AF_INET, 0, 0, 0)
	b = binary.NativeEndian.AppendUint32(b, uint32(ifindex))
	state := uint16(0)
	if typ == unix.RTM_NEWNEIGH {
		state = unix.NUD_PERMANENT
	}
	b = binary.NativeEndian.AppendUint16(b, state)
	b = append(b, 0, 0)
	gw := Gateway.As4()
	b = appendAttr(b, unix.NDA_DST, gw[:])
	if typ == unix.RTM_NEWNEIGH {
		b = appendAttr(b, unix.NDA_LLADDR, mac)
		b = appendAttr(b, ndaProtocol, []byte{ProtoBGP})
	}
	return finishMsg(b, start)
}

func appendNlMsghdr(b []byte, typ uint16, flags int, seq uint32) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0) // length, set by finishMsg
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.NLM_F_REQUEST|flags))
	b = binary.NativeEndian.AppendUint32(b, seq)
	return binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel fills it
}

func finishMsg(b []byte, start int) []byte {
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

func appendAttrHeader(b []byte, typ uint16, payload int) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+payload))
	return binary.NativeEndian.AppendUint16(b, typ)
}

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	b = appendAttrHeader(b, typ, len(data))
	b = append(b, data...)
	for len(b)%unix.RTA_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// appendAddrAttr appends an address attribute without allocating (the hot
// path encodes one per route).
func appendAddrAttr(b []byte, typ uint16, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return appendAttr(b, typ, v[:])
	}
	v := a.As16()
	return appendAttr(b, typ, v[:])
}

func appendAttrU32(b []byte, typ uint16, v uint32) []byte {
	b = appendAttrHeader(b, typ, 4)
	return binary.NativeEndian.AppendUint32(b, v)
}

// parseRoute decodes an RTM_NEWROUTE payload; ok is false for routes that
// are not main-table routes of protocol ProtoBGP, and for garbage.
func parseRoute(data []byte) (r Route, ok bool) {
	if len(data) < unix.SizeofRtMsg {
		return r, false
	}
	family, dstLen, table, proto, typ := data[0], int(data[1]), data[4], data[5], data[7]
	addrLen := 4
	switch family {
	case unix.AF_INET:
	case unix.AF_INET6:
		addrLen = 16
	default:
		return r, false
	}
	if proto != ProtoBGP || dstLen > 8*addrLen {
		return r, false
	}
	r.Blackhole = typ == unix.RTN_BLACKHOLE
	dst := make([]byte, addrLen) // the default route has no RTA_DST
	tableID := uint32(table)
	var oif int
	var gw netip.Addr
	for attr := range attrs(data[unix.SizeofRtMsg:]) {
		switch attr.typ {
		case unix.RTA_DST:
			if len(attr.data) != addrLen {
				return r, false
			}
			copy(dst, attr.data)
		case unix.RTA_TABLE:
			if len(attr.data) == 4 {
				tableID = binary.NativeEndian.Uint32(attr.data)
			}
		case unix.RTA_PRIORITY:
			if len(attr.data) == 4 {
				r.Metric = binary.NativeEndian.Uint32(attr.data)
			}
		case rtaNHID:
			if len(attr.data) == 4 {
				r.NexthopID = binary.NativeEndian.Uint32(attr.data)
			}
		case unix.RTA_OIF:
			if len(attr.data) == 4 {
				oif = int(binary.NativeEndian.Uint32(attr.data))
			}
		case unix.RTA_GATEWAY:
			gw, _ = netip.AddrFromSlice(attr.data)
		case unix.RTA_MULTIPATH:
			r.Via = append(r.Via, parseMultipath(attr.data)...)
		}
	}
	if tableID != unix.RT_TABLE_MAIN {
		return r, false
	}
	if oif != 0 {
		r.Via = append(r.Via, Via{Ifindex: oif, Gateway: gw})
	}
	addr, _ := netip.AddrFromSlice(dst)
	r.Prefix = netip.PrefixFrom(addr, dstLen)
	return r, true
}

// parseMultipath decodes the struct rtnexthop list of RTA_MULTIPATH.
func parseMultipath(b []byte) []Via {
	var vias []Via
	for len(b) >= unix.SizeofRtNexthop {
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.SizeofRtNexthop || l > len(b) {
			break
		}
		v := Via{Ifindex: int(int32(binary.NativeEndian.Uint32(b[4:])))}
		for attr := range attrs(b[unix.SizeofRtNexthop:l]) {
			if attr.typ == unix.RTA_GATEWAY {
				v.Gateway, _ = netip.AddrFromSlice(attr.data)
			}
		}
		vias = append(vias, v)
		if rtaAlign(l) >= len(b) {
			break
		}
		b = b[rtaAlign(l):]
	}
	return vias
}

// parseNexthop decodes an RTM_NEWNEXTHOP payload.
func parseNexthop(data []byte) (nh Nexthop, ok bool) {
	const sizeofNhmsg = 8
	if len(data) < sizeofNhmsg {
		return nh, false
	}
	for attr := range attrs(data[sizeofNhmsg:]) {
		switch attr.typ {
		case unix.NHA_ID:
			if len(attr.data) == 4 {
				nh.ID = binary.NativeEndian.Uint32(attr.data)
			}
		case unix.NHA_OIF:
			if len(attr.data) == 4 {
				nh.Via.Ifindex = int(binary.NativeEndian.Uint32(attr.data))
			}
		case unix.NHA_GATEWAY:
			nh.Via.Gateway, _ = netip.AddrFromSlice(attr.data)
		case unix.NHA_GROUP:
			for b := attr.data; len(b) >= 8; b = b[8:] {
				nh.Group = append(nh.Group, binary.NativeEndian.Uint32(b))
			}
		}
	}
	return nh, nh.ID != 0
}

type rtattr struct {
	typ  uint16
	data []byte
}

// attrs iterates over netlink attributes, stopping at the first malformed one.
func attrs(b []byte) func(func(rtattr) bool) {
	return func(yield func(rtattr) bool) {
		for len(b) >= unix.SizeofRtAttr {
			l := int(binary.NativeEndian.Uint16(b))
			if l < unix.SizeofRtAttr || l > len(b) {
				return
			}
			// The top bits of the type are flags (nested, byte order).
			if !yield(rtattr{typ: binary.NativeEndian.Uint16(b[2:]) & 0x3fff, data: b[unix.SizeofRtAttr:l]}) {
				return
			}
			if rtaAlign(l) >= len(b) {
				return
			}
			b = b[rtaAlign(l):]
		}
	}
}
