//go:build linux

package autoannounce

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func ipNet(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

func TestPrefixOf(t *testing.T) {
	v4in16 := ipNet("10.1.8.195/32")
	v4in16.IP = v4in16.IP.To16()
	v4in4 := ipNet("10.1.8.195/32")
	v4in4.IP = v4in4.IP.To4()
	tests := []struct {
		name string
		in   net.IPNet
		want string // "" for not ok
	}{
		{"v4 in 16 bytes", v4in16, "10.1.8.195/32"},
		{"v4 in 4 bytes", v4in4, "10.1.8.195/32"},
		{"v4 with length", ipNet("192.0.2.1/24"), "192.0.2.1/24"},
		{"v6", ipNet("fd00:10::1:5/128"), "fd00:10::1:5/128"},
		{"v6 mask on v4", net.IPNet{IP: net.ParseIP("10.0.0.1").To4(), Mask: net.CIDRMask(64, 128)}, ""},
		{"v4 mask on v6", net.IPNet{IP: net.ParseIP("fd00::1"), Mask: net.CIDRMask(24, 32)}, ""},
		{"non-canonical mask", net.IPNet{IP: net.ParseIP("10.0.0.1").To4(), Mask: net.IPMask{255, 0, 255, 0}}, ""},
		{"no address", net.IPNet{}, ""},
	}
	for _, tt := range tests {
		got, ok := prefixOf(tt.in)
		if tt.want == "" {
			if ok {
				t.Errorf("%s: prefixOf = %s, want not ok", tt.name, got)
			}
			continue
		}
		if !ok || got != netip.MustParsePrefix(tt.want) {
			t.Errorf("%s: prefixOf = %s, %v, want %s", tt.name, got, ok, tt.want)
		}
	}
}

func TestRouteEvent(t *testing.T) {
	dst := ipNet("10.1.8.195/32")
	nr := netlink.Route{Dst: &dst, LinkIndex: 7, Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_BOOT,
		Type: unix.RTN_UNICAST, Scope: netlink.SCOPE_LINK}
	want := route{Dst: netip.MustParsePrefix("10.1.8.195/32"), Link: 7, Table: rtTableMain, Protocol: rtprotBoot, Type: rtnUnicast}

	ev, ok := routeEvent(netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: nr})
	if !ok || ev.kind != evRoute || ev.del || ev.replace || ev.route != want {
		t.Errorf("new route: %+v, %v", ev, ok)
	}
	ev, ok = routeEvent(netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, NlFlags: unix.NLM_F_REPLACE, Route: nr})
	if !ok || !ev.replace {
		t.Errorf("replacing route: %+v, %v", ev, ok)
	}
	ev, ok = routeEvent(netlink.RouteUpdate{Type: unix.RTM_DELROUTE, Route: nr})
	if !ok || !ev.del || ev.route != want {
		t.Errorf("deleted route: %+v, %v", ev, ok)
	}

	// Dropped early: default route, not a host route, another table.
	nodst := nr
	nodst.Dst = nil
	block := nr
	b := ipNet("10.1.8.192/26")
	block.Dst = &b
	local := nr
	local.Table = unix.RT_TABLE_LOCAL
	for name, r := range map[string]netlink.Route{"default": nodst, "block": block, "local table": local} {
		if ev, ok := routeEvent(netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: r}); ok {
			t.Errorf("%s: passed on as %+v", name, ev)
		}
	}
}

func TestLinkEvent(t *testing.T) {
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 9, Name: "calib7851807e18", RawFlags: unix.IFF_UP | unix.IFF_LOWER_UP}}
	ev, ok := linkEvent(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: l})
	if !ok || ev.del || ev.link != (link{Index: 9, Name: "calib7851807e18", Up: true}) {
		t.Errorf("new link: %+v, %v", ev, ok)
	}
	ev, ok = linkEvent(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_DELLINK}, Link: l})
	if !ok || !ev.del {
		t.Errorf("deleted link: %+v, %v", ev, ok)
	}
	down := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Index: 9, Name: "x", RawFlags: unix.IFF_LOWER_UP}}
	if ev, _ := linkEvent(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: down}); ev.link.Up {
		t.Errorf("carrier without IFF_UP counted as up")
	}
	br := netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_DELLINK}, Link: l}
	br.Family = unix.AF_BRIDGE
	if ev, ok := linkEvent(br); ok {
		t.Errorf("bridge port message passed on as %+v", ev)
	}
}

func TestAddrEvent(t *testing.T) {
	ev, ok := addrEvent(netlink.AddrUpdate{LinkAddress: ipNet("10.96.0.10/32"), LinkIndex: 4, NewAddr: true, Flags: unix.IFA_F_PERMANENT})
	want := address{Link: 4, Prefix: netip.MustParsePrefix("10.96.0.10/32"), Flags: unix.IFA_F_PERMANENT}
	if !ok || ev.del || ev.addr != want {
		t.Errorf("new address: %+v, %v", ev, ok)
	}
	ev, ok = addrEvent(netlink.AddrUpdate{LinkAddress: ipNet("fd00:96::1/64"), LinkIndex: 4, Flags: unix.IFA_F_TENTATIVE})
	if !ok || !ev.del || ev.addr.Flags != ifaTentative {
		t.Errorf("deleted address: %+v, %v", ev, ok)
	}
	if ifaTentative != unix.IFA_F_TENTATIVE || ifaDADFailed != unix.IFA_F_DADFAILED ||
		rtTableMain != unix.RT_TABLE_MAIN || rtnUnicast != unix.RTN_UNICAST || rtprotBGP != unix.RTPROT_BGP {
		t.Error("the pure logic's kernel constants differ from x/sys/unix")
	}
}
