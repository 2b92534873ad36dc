// Command ndpinject sends router advertisements, well-formed or not, on one
// interface. The end-to-end tests run it in a ToR's namespace to check that
// fabricd ignores what it must ignore: RAs from a second router, malformed
// ICMPv6 type 134 packets, RAs with a hop limit other than 255 or a code
// other than 0.
//
//	ndpinject -i swp1 -src fe80::bad -mac 02:00:00:00:0b:ad -send ra,short,zero-option -count 3
//
// Each kind in -send goes out -count times, in order, -gap apart. It prints
// one line per kind with the number of packets sent; a kind that could not
// be sent at all is an error (exit status 1), as is an unknown flag value
// (exit status 2).
//
// The ICMPv6 checksum is always valid (the kernel computes it for raw
// ICMPv6 sockets): malformed here means malformed for NDP, not corrupted
// on the wire, which the receiving kernel would drop before any daemon saw
// it. Multicast loopback is off, so the sender's own routing daemon never
// hears these packets.
package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// kinds maps each -send value to the ICMPv6 message it sends. Every one is
// an ICMPv6 type 134 (router advertisement) packet, so that it passes a
// receiver's ICMPv6 filter for RAs and reaches its parser.
var kinds = map[string]func(o options) ([]byte, error){
	// A valid RA, as a router would send it.
	"ra": func(o options) ([]byte, error) { return validRA(o) },
	// A valid RA body with ICMP code 1 (RFC 4861 6.1.2: must be 0).
	"code1": func(o options) ([]byte, error) {
		b, err := validRA(o)
		if err == nil {
			b[1] = 1
		}
		return b, err
	},
	// Only the ICMPv6 header: 12 bytes short of the RA's fixed part.
	"short": func(o options) ([]byte, error) { return []byte{134, 0, 0, 0}, nil },
	// The fixed part cut in the middle of the reachable time.
	"truncated": func(o options) ([]byte, error) {
		b, err := validRA(o)
		if err != nil {
			return nil, err
		}
		return b[:10], nil
	},
	// An option whose length field is 0, which RFC 4861 4.6 says must be
	// discarded (and which would make a naive parser loop forever).
	"zero-option": func(o options) ([]byte, error) {
		b, err := validRA(o)
		if err != nil {
			return nil, err
		}
		return append(b, 1, 0, 0, 0, 0, 0, 0, 0), nil
	},
	// An option claiming 64 bytes with 8 present: a parser trusting the
	// length would read past the packet.
	"overrun-option": func(o options) ([]byte, error) {
		b, err := validRA(o)
		if err != nil {
			return nil, err
		}
		return append(b, 1, 8, 0xde, 0xad, 0xbe, 0xef, 0, 1), nil
	},
	// A source link-layer address option of 16 bytes where 8 are due, with
	// a bogus address in it.
	"long-lla": func(o options) ([]byte, error) {
		b, err := validRA(o)
		if err != nil {
			return nil, err
		}
		// Strip the valid option validRA added (the last 8 bytes), if any.
		if o.mac != nil {
			b = b[:len(b)-8]
		}
		return append(b, 1, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0), nil
	},
}

type options struct {
	mac      net.HardwareAddr // source link-layer address option; nil: none
	lifetime time.Duration
}

// validRA marshals the RA a router would send: cur hop limit 64 as FRR
// sends, the given router lifetime and source link-layer address option.
func validRA(o options) ([]byte, error) {
	ra := &ndp.RouterAdvertisement{
		CurrentHopLimit:           64,
		RouterSelectionPreference: ndp.Medium,
		RouterLifetime:            o.lifetime,
	}
	if o.mac != nil {
		ra.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: o.mac}}
	}
	return ndp.MarshalMessage(ra)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ndpinject:", err)
		os.Exit(1)
	}
}

func run() error {
	iface := flag.String("i", "", "interface to send on (required)")
	srcFlag := flag.String("src", "", "source address, a link-local address of the interface; default: its first usable one")
	dstFlag := flag.String("dst", "ff02::1", "destination address")
	macFlag := flag.String("mac", "", "source link-layer address option of the RAs; default: the interface's MAC, \"none\" for no option")
	send := flag.String("send", "ra", "comma-separated kinds to send: "+strings.Join(kindNames(), ", "))
	count := flag.Int("count", 1, "packets of each kind")
	hopLimit := flag.Int("hop-limit", ndp.HopLimit, "IPv6 hop limit (NDP requires 255)")
	lifetime := flag.Duration("lifetime", 0, "router lifetime of the RAs (0: not a default router)")
	gap := flag.Duration("gap", 10*time.Millisecond, "pause between packets")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: ndpinject -i IFACE [flags]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *iface == "" || flag.NArg() > 0 || *count < 1 || *hopLimit < 0 || *hopLimit > 255 {
		flag.Usage()
		os.Exit(2)
	}
	var sends []string
	for k := range strings.SplitSeq(*send, ",") {
		if _, ok := kinds[k]; !ok {
			fmt.Fprintf(os.Stderr, "ndpinject: unknown kind %q, want one of %s\n", k, strings.Join(kindNames(), ", "))
			os.Exit(2)
		}
		sends = append(sends, k)
	}

	ifi, err := net.InterfaceByName(*iface)
	if err != nil {
		return err
	}
	o := options{lifetime: *lifetime}
	switch *macFlag {
	case "":
		o.mac = ifi.HardwareAddr
	case "none":
	default:
		if o.mac, err = net.ParseMAC(*macFlag); err != nil {
			return fmt.Errorf("-mac: %w", err)
		}
	}
	src, err := pickSource(ifi, *srcFlag)
	if err != nil {
		return err
	}
	dst, err := netip.ParseAddr(*dstFlag)
	if err != nil {
		return fmt.Errorf("-dst: %w", err)
	}

	c, err := icmp.ListenPacket("ip6:ipv6-icmp", src.WithZone(ifi.Name).String())
	if err != nil {
		return err
	}
	defer c.Close()
	pc := c.IPv6PacketConn()
	// The ToR's own zebra must not hear these: it would learn the fake
	// router as the interface's BGP peer.
	if err := pc.SetMulticastLoopback(false); err != nil {
		return err
	}
	if err := pc.SetMulticastInterface(ifi); err != nil {
		return err
	}
	cm := &ipv6.ControlMessage{HopLimit: *hopLimit, IfIndex: ifi.Index, Src: src.AsSlice()}
	to := &net.IPAddr{IP: dst.AsSlice(), Zone: ifi.Name}

	for _, k := range sends {
		b, err := kinds[k](o)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		sent := 0
		for range *count {
			if sent > 0 && *gap > 0 {
				time.Sleep(*gap)
			}
			if _, err := pc.WriteTo(b, cm, to); err != nil {
				return fmt.Errorf("sending %s from %s: %w", k, src, err)
			}
			sent++
		}
		fmt.Printf("%s: sent %d from %s to %s, hop limit %d, %d bytes\n", k, sent, src, dst, *hopLimit, len(b))
	}
	return nil
}

// pickSource returns want if the interface has it, or else the interface's
// first IPv6 link-local address.
func pickSource(ifi *net.Interface, want string) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	var wantAddr netip.Addr
	if want != "" {
		if wantAddr, err = netip.ParseAddr(want); err != nil {
			return netip.Addr{}, fmt.Errorf("-src: %w", err)
		}
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok || !ip.Is6() || ip.Is4In6() || !ip.IsLinkLocalUnicast() {
			continue
		}
		if !wantAddr.IsValid() || ip == wantAddr {
			return ip, nil
		}
	}
	if wantAddr.IsValid() {
		return netip.Addr{}, fmt.Errorf("%s has no address %s (add it first)", ifi.Name, wantAddr)
	}
	return netip.Addr{}, errors.New(ifi.Name + " has no IPv6 link-local address")
}

func kindNames() []string {
	return slices.Sorted(maps.Keys(kinds))
}
