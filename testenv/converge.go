package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// BGPPeer is one neighbor line of FRR's `show bgp summary json`. From a BIRD ToR
// only RemoteAS, State, PfxRcd and PfxSnt are filled in.
type BGPPeer struct {
	RemoteAS               uint32 `json:"remoteAs"`
	Hostname               string `json:"hostname"`
	State                  string `json:"state"` // "Established" when up
	PfxRcd                 int    `json:"pfxRcd"`
	PfxSnt                 int    `json:"pfxSnt"`
	UptimeMsec             int64  `json:"peerUptimeMsec"`
	ConnectionsEstablished int    `json:"connectionsEstablished"`
	ConnectionsDropped     int    `json:"connectionsDropped"`
}

// BGPPeers returns the ToR's IPv4 unicast neighbors, keyed by port ("swp1", ...).
// For a BIRD ToR they come from `birdc show protocols all` (see birdPeers).
func (r *Router) BGPPeers(ctx context.Context) (map[string]BGPPeer, error) {
	if !r.flavor.IsFRR() {
		return r.birdPeers(ctx)
	}
	var sum struct {
		IPv4Unicast struct {
			Peers map[string]BGPPeer `json:"peers"`
		} `json:"ipv4Unicast"`
	}
	if err := r.VtyshJSON(ctx, "show bgp summary json", &sum); err != nil {
		return nil, err
	}
	return sum.IPv4Unicast.Peers, nil
}

// kernelRoute is one entry of `ip -j route`; only what the checks need.
type kernelRoute struct {
	Dst      string `json:"dst"`
	Type     string `json:"type"` // empty for unicast
	Dev      string `json:"dev"`
	Protocol string `json:"protocol"`
	Nexthops []struct {
		Dev string `json:"dev"`
	} `json:"nexthops"`
}

// devs returns the interfaces the route leaves through, one per ECMP next hop.
func (k kernelRoute) devs() []string {
	if len(k.Nexthops) == 0 {
		return []string{k.Dev}
	}
	var devs []string
	for _, nh := range k.Nexthops {
		devs = append(devs, nh.Dev)
	}
	return devs
}

// kernelRoutes reads the IPv4 main table of namespace ns, keyed by destination.
func kernelRoutes(ctx context.Context, ns string) (map[netip.Prefix]kernelRoute, error) {
	out, err := ipn(ctx, ns, "-j", "-4", "route", "show")
	if err != nil {
		return nil, err
	}
	return parseRoutes(out)
}

func parseRoutes(out string) (map[netip.Prefix]kernelRoute, error) {
	var routes []kernelRoute
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return nil, fmt.Errorf("parsing `ip -j route`: %w", err)
	}
	m := map[netip.Prefix]kernelRoute{}
	for _, rt := range routes {
		dst := rt.Dst
		switch {
		case dst == "default":
			dst = "0.0.0.0/0"
		case !strings.Contains(dst, "/"): // ip prints host routes without their /32
			dst += "/32"
		}
		p, err := netip.ParsePrefix(dst)
		if err != nil {
			return nil, fmt.Errorf("parsing `ip -j route`: %w", err)
		}
		m[p] = rt
	}
	return m, nil
}

// WaitConverged waits until the whole fabric is up with the default configs: every ToR
// has an Established session with every server and has received its 2 prefixes
// (loopback and block), every ToR's kernel routes those out of the right port, and every
// server's kernel routes all other servers' loopbacks and blocks through all of its
// uplinks (ECMP with two ToRs) and each ToR's loopback through the uplink to that ToR. It gives up at once if a server's daemon has exited.
func (l *Lab) WaitConverged(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return WaitFor(ctx, timeout, "the fabric to converge", func() error { return l.converged(ctx) })
}

const announcedPerServer = 2 // loopback and pod block

func (l *Lab) converged(ctx context.Context) error {
	for _, s := range l.servers {
		if err := s.checkAlive(); err != nil {
			return Permanent(err)
		}
	}
	for _, r := range l.tors {
		peers, err := r.BGPPeers(ctx)
		if err != nil {
			return err
		}
		routes, err := kernelRoutes(ctx, r.Namespace())
		if err != nil {
			return err
		}
		for i, s := range l.servers {
			port := r.port(i)
			p, ok := peers[port]
			switch {
			case !ok:
				return fmt.Errorf("%s has no BGP neighbor %s", r.name, port)
			case p.State != "Established":
				return fmt.Errorf("%s: session with %s on %s is %s", r.name, s.spec.Name, port, p.State)
			case p.PfxRcd != announcedPerServer:
				return fmt.Errorf("%s: %d prefixes received from %s on %s, want %d", r.name, p.PfxRcd, s.spec.Name, port, announcedPerServer)
			}
			for _, dst := range []netip.Prefix{s.spec.Loopback, s.spec.Block} {
				if err := checkRoute(routes, dst, []string{port}); err != nil {
					return fmt.Errorf("%s: %w", r.name, err)
				}
			}
		}
	}
	for _, s := range l.servers {
		routes, err := kernelRoutes(ctx, s.Namespace())
		if err != nil {
			return err
		}
		// A ToR's loopback is only reachable through that ToR: the servers do not pass
		// routes between ToRs.
		for i, r := range l.tors {
			if err := checkRoute(routes, r.loopback, s.Uplinks()[i:i+1]); err != nil {
				return fmt.Errorf("%s: %w", s.spec.Name, err)
			}
		}
		for _, o := range l.servers {
			if o == s {
				continue
			}
			for _, dst := range []netip.Prefix{o.spec.Loopback, o.spec.Block} {
				if err := checkRoute(routes, dst, s.Uplinks()); err != nil {
					return fmt.Errorf("%s: %w", s.spec.Name, err)
				}
			}
		}
	}
	return nil
}

// checkRoute requires a unicast route to dst through each of devs.
func checkRoute(routes map[netip.Prefix]kernelRoute, dst netip.Prefix, devs []string) error {
	rt, ok := routes[dst]
	if !ok {
		return fmt.Errorf("no kernel route to %v", dst)
	}
	if rt.Type != "" && rt.Type != "unicast" {
		return fmt.Errorf("kernel route to %v is %s", dst, rt.Type)
	}
	for _, dev := range devs {
		if !slices.Contains(rt.devs(), dev) {
			return fmt.Errorf("kernel route to %v goes through %v, not (also) %s", dst, rt.devs(), dev)
		}
	}
	return nil
}
