package fib

import (
	"encoding/binary"
	"net"

	"golang.org/x/sys/unix"
)

// The encoders append whole netlink messages to a buffer without per-field
// allocations: they sit on the route-install hot path.

// appendRouteMsg appends the RTM_NEWROUTE or RTM_DELROUTE message for op.
func appendRouteMsg(b []byte, op Op, seq uint32, flags int) []byte {
	r := op.Route
	typ := uint16(unix.RTM_NEWROUTE)
	switch op.Kind {
	case OpAdd:
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	case OpReplace:
		flags |= unix.NLM_F_CREATE | unix.NLM_F_REPLACE
	case OpDelete:
		typ = unix.RTM_DELROUTE
	}
	start := len(b)
	b = appendNlMsghdr(b, typ, flags, seq)

	// struct rtmsg
	rtType, scope := byte(unix.RTN_UNICAST), byte(unix.RT_SCOPE_UNIVERSE)
	var rtFlags uint32
	switch {
	case op.Kind == OpDelete:
		// Match any type and scope, but only our protocol and metric.
		rtType, scope = unix.RTN_UNSPEC, unix.RT_SCOPE_NOWHERE
	case r.Blackhole:
		rtType = unix.RTN_BLACKHOLE
	case len(r.Ifindexes) == 1:
		rtFlags = unix.RTNH_F_ONLINK
	}
	b = append(b, unix.AF_INET, byte(r.Prefix.Bits()), 0, 0,
		unix.RT_TABLE_MAIN, ProtoBGP, scope, rtType)
	b = binary.NativeEndian.AppendUint32(b, rtFlags)

	dst := r.Prefix.Addr().As4()
	b = appendAttr(b, unix.RTA_DST, dst[:])
	b = appendAttrU32(b, unix.RTA_PRIORITY, r.Metric)

	if op.Kind != OpDelete && !r.Blackhole {
		gw := Gateway.As4()
		if len(r.Ifindexes) == 1 {
			b = appendAttr(b, unix.RTA_GATEWAY, gw[:])
			b = appendAttrU32(b, unix.RTA_OIF, uint32(r.Ifindexes[0]))
		} else {
			// RTA_MULTIPATH: a struct rtnexthop per hop, each followed by
			// its own RTA_GATEWAY.
			const hopLen = unix.SizeofRtNexthop + 8
			b = appendAttrHeader(b, unix.RTA_MULTIPATH, len(r.Ifindexes)*hopLen)
			for _, ifi := range r.Ifindexes {
				b = binary.NativeEndian.AppendUint16(b, hopLen)
				b = append(b, unix.RTNH_F_ONLINK, 0)
				b = binary.NativeEndian.AppendUint32(b, uint32(ifi))
				b = appendAttr(b, unix.RTA_GATEWAY, gw[:])
			}
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

func appendAttrU32(b []byte, typ uint16, v uint32) []byte {
	b = appendAttrHeader(b, typ, 4)
	return binary.NativeEndian.AppendUint32(b, v)
}
