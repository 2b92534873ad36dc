package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Derived identity: one config file for a whole fleet.
//
// router-id = "auto" takes the host's one IPv4 /32 on lo (the loopback the
// fabric routes to). asn = "auto" derives a private 4-byte AS number (RFC
// 6996: 4200000000-4294967294) from the router ID, for the "AS per server"
// design:
//
//	asn = 4200000000 + routerID mod 94967295
//
// where routerID is the address as a 32-bit number. Two servers get the
// same AS only if their router IDs differ by a multiple of 94,967,295, so
// router IDs that are all within any /5 (e.g. all in 10.0.0.0/8) never
// collide. A collision would make the ToR see the same AS behind two ports,
// which eBGP tolerates (multipath-relax) but which hides one server's
// routes from the other (AS-path loop): keep loopbacks in one /5.

// First and size of the RFC 6996 private 4-byte AS range (the last value,
// 4294967295, is reserved).
const (
	privateASNFirst = 4200000000
	privateASNCount = 4294967294 - privateASNFirst + 1
)

// DeriveASN is the AS number asn = "auto" gives router ID id.
func DeriveASN(id netip.Addr) uint32 {
	b := id.As4()
	n := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	return uint32(privateASNFirst + n%privateASNCount)
}

// ResolveIdentity fills in ASN and RouterID when they are "auto".
// loopback lists the IPv4 addresses on lo with their prefix lengths.
func (c *Config) ResolveIdentity(loopback func() ([]netip.Prefix, error)) error {
	if c.RouterIDAuto {
		addrs, err := loopback()
		if err != nil {
			return c.identityError("router-id", "auto: reading the addresses of lo: %v", err)
		}
		var hosts, others []string
		for _, p := range addrs {
			if p.Addr().Is4() && p.Bits() == 32 && !p.Addr().IsLoopback() {
				hosts = append(hosts, p.String())
			} else {
				others = append(others, p.String())
			}
		}
		slices.Sort(hosts)
		switch len(hosts) {
		case 0:
			found := "nothing"
			if len(others) > 0 {
				found = strings.Join(others, ", ")
			}
			return c.identityError("router-id", `"auto" needs an IPv4 /32 on lo, and lo has %s; add one or set router-id`, found)
		case 1:
			c.RouterID = netip.MustParsePrefix(hosts[0]).Addr()
		default:
			return c.identityError("router-id", `"auto" needs exactly one IPv4 /32 on lo, and lo has %s; set router-id to one of them`, strings.Join(hosts, ", "))
		}
	}
	if c.ASNAuto {
		c.ASN = DeriveASN(c.RouterID)
	}
	return nil
}

func (c *Config) identityError(key, format string, args ...any) error {
	line := 1
	if c.loc != nil {
		line = c.loc.line(key)
	}
	return &Error{Path: c.Path, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)}
}

// IdentityDerived says what "auto" resolved, for logs and the CLI.
func (c *Config) IdentityDerived() string {
	switch {
	case c.ASNAuto && c.RouterIDAuto:
		return "router ID from lo, AS from the router ID"
	case c.ASNAuto:
		return "AS from the router ID"
	case c.RouterIDAuto:
		return "router ID from lo"
	}
	return ""
}
