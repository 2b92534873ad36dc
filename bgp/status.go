package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// PeerStatus is one neighbor's session as `show bgp summary` shows it.
type PeerStatus struct {
	ID        int
	Interface string
	Addr      netip.Addr
	RemoteAS  uint32
	RouterID  string
	State     string // FRR's names: Idle, Connect, Active, OpenSent, OpenConfirm, Established
	// Passive: the peer waits for the ToR to connect.
	Passive bool
	// Since is when the session entered Established (State ==
	// "Established") or last left it; zero if it never came up.
	Since     time.Time
	MsgRcvd   uint64
	MsgSent   uint64
	OutQ      uint32
	InQ       uint32
	LastReset string
}

// Peers returns the state of every configured peer, by interface.
func (s *Speaker) Peers(ctx context.Context) (map[string]PeerStatus, error) {
	s.mu.Lock()
	byAddr := make(map[netip.Addr]wantedPeer, len(s.byAddr))
	for a, w := range s.byAddr {
		byAddr[a] = *w
	}
	s.mu.Unlock()

	out := make(map[string]PeerStatus, len(byAddr))
	// Not EnableAdvertised: it walks the whole table on every call (12
	// MiB of garbage per call at 100,000 prefixes), and what fabricd
	// advertises is its own announcements, which the daemon counts.
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		peer, ok := byAddr[addr]
		if !ok {
			return
		}
		st := p.GetState()
		ps := PeerStatus{
			ID:        peer.id,
			Interface: peer.nb.Interface,
			Passive:   peer.peer.Passive,
			Addr:      addr,
			RemoteAS:  st.GetPeerAsn(),
			RouterID:  st.GetRouterId(),
			State:     stateName(st.GetSessionState()),
			MsgRcvd:   st.GetMessages().GetReceived().GetTotal(),
			MsgSent:   st.GetMessages().GetSent().GetTotal(),
			OutQ:      st.GetQueues().GetOutput(),
			InQ:       st.GetQueues().GetInput(),
			LastReset: st.GetDisconnectMessage(),
		}
		timers := p.GetTimers().GetState()
		if ps.State == "Established" {
			ps.Since = timers.GetUptime().AsTime()
		} else if d := timers.GetDowntime(); d != nil && d.GetSeconds() > 0 {
			ps.Since = d.AsTime()
		}
		out[peer.nb.Interface] = ps
	})
	if err != nil {
		return nil, fmt.Errorf("listing BGP peers: %w", err)
	}
	return out, nil
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return "Idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "Connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "Active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "OpenSent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "Established"
	}
	return "Idle"
}

// Path is one path of the BGP table.
type Path struct {
	// PeerID is the uplink the path came from, or -1 for a local route.
	PeerID    int
	Interface string
	Best      bool
	Stale     bool
	ASPath    []uint32
	Origin    string
	MED       uint32
	HasMED    bool
}

// Route is a prefix of the BGP table with all its paths.
type Route struct {
	Prefix netip.Prefix
	Paths  []Path
}

// Table returns the IPv4 (family 4) or IPv6 (6) unicast paths sorted by
// prefix: fabricd's own (from GoBGP's RIB, where only they are) and every
// peer's Adj-RIB-In. Received paths come with Best unset: fabricd, not
// GoBGP, selects among them.
func (s *Speaker) Table(ctx context.Context, family int) ([]Route, error) {
	rf := gobgp.RF_IPv4_UC
	if family == 6 {
		rf = gobgp.RF_IPv6_UC
	}
	s.mu.Lock()
	peers := make([]wantedPeer, 0, len(s.byAddr))
	for _, w := range s.byAddr {
		peers = append(peers, *w)
	}
	s.mu.Unlock()

	byPrefix := map[netip.Prefix]*Route{}
	collect := func(peerID int, iface string) func(gobgp.NLRI, []*apiutil.Path) {
		return func(nlri gobgp.NLRI, paths []*apiutil.Path) {
			prefix, ok := nlriPrefix(nlri)
			if !ok {
				return
			}
			r := byPrefix[prefix]
			if r == nil {
				r = &Route{Prefix: prefix}
				byPrefix[prefix] = r
			}
			for _, p := range paths {
				path := Path{PeerID: peerID, Interface: iface, Best: p.Best && peerID < 0, Stale: p.Stale, ASPath: asPath(p.Attrs), Origin: "?"}
				for _, a := range p.Attrs {
					switch v := a.(type) {
					case *gobgp.PathAttributeOrigin:
						path.Origin = originCode(v.Value)
					case *gobgp.PathAttributeMultiExitDisc:
						path.MED, path.HasMED = v.Value, true
					}
				}
				r.Paths = append(r.Paths, path)
			}
		}
	}
	if err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: rf}, collect(-1, "")); err != nil {
		return nil, fmt.Errorf("listing BGP table: %w", err)
	}
	for _, p := range peers {
		req := apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN, Name: p.peer.Addr.String(), Family: rf}
		if err := s.srv.ListPath(req, collect(p.id, p.nb.Interface)); err != nil {
			return nil, fmt.Errorf("listing the routes of %s: %w", p.nb.Interface, err)
		}
	}
	routes := make([]Route, 0, len(byPrefix))
	for _, r := range byPrefix {
		routes = append(routes, *r)
	}
	slices.SortFunc(routes, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return routes, nil
}

func asPath(attrs []gobgp.PathAttributeInterface) []uint32 {
	for _, a := range attrs {
		if ap, ok := a.(*gobgp.PathAttributeAsPath); ok {
			var out []uint32
			for _, seg := range ap.Value {
				out = append(out, seg.GetAS()...)
			}
			return out
		}
	}
	return nil
}

func originCode(v uint8) string {
	switch v {
	case gobgp.BGP_ORIGIN_ATTR_TYPE_IGP:
		return "i"
	case gobgp.BGP_ORIGIN_ATTR_TYPE_EGP:
		return "e"
	}
	return "?"
}
