package daemon

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/config"
)

// LoadConfig reads path and resolves a derived identity (asn or
// router-id "auto") on this host. Errors are configuration errors: the
// operator must fix the file (or the host's loopback).
func LoadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.ResolveIdentity(loopbackAddrs); err != nil {
		return nil, err
	}
	return cfg, nil
}

// loopbackAddrs lists the IPv4 addresses on lo.
func loopbackAddrs() ([]netip.Prefix, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("finding lo: %w", err)
	}
	addrs, err := netlink.AddrList(lo, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("listing addresses of lo: %w", err)
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	addr, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(addr.Unmap(), ones), true
}
