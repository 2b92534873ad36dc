package bgp

import (
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/uplink"
)

// session is what GoBGP's events have said about the peer at one address.
// GoBGP delivers every event of one watch on one goroutine, in order, so
// a peer's paths, its state changes and its removal arrive as they
// happened.
type session struct {
	id    int // the uplink
	iface string
	addr  netip.Addr
	state gobgp.FSMState
	// epoch is the uplink's session number while it is Established and
	// accepted; zero otherwise. Paths are taken only then.
	epoch   uint64
	refused bool // the session was refused (remote AS) and reset
}

func sessionState(s gobgp.FSMState) uplink.SessionState {
	switch s {
	case gobgp.BGP_FSM_CONNECT:
		return uplink.SessionConnect
	case gobgp.BGP_FSM_ACTIVE:
		return uplink.SessionActive
	case gobgp.BGP_FSM_OPENSENT:
		return uplink.SessionOpenSent
	case gobgp.BGP_FSM_OPENCONFIRM:
		return uplink.SessionOpenConfirm
	case gobgp.BGP_FSM_ESTABLISHED:
		return uplink.SessionEstablished
	}
	return uplink.SessionIdle
}

func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	addr := st.NeighborAddress
	w, wanted := s.wantedAt(addr)
	se := s.sessions[addr]
	if se == nil {
		if !wanted {
			return // not a peer of ours, or gone before it did anything
		}
		se = &session{id: w.id, iface: w.nb.Interface, addr: addr}
		s.sessions[addr] = se
	}
	current := wanted && w.id == se.id
	prev := se.state
	se.state = st.SessionState
	// GoBGP announces a peer's removal as Idle with no reason at all.
	removed := st.SessionState == gobgp.BGP_FSM_IDLE && st.DisconnectReason == api.PeerState_DISCONNECT_REASON_UNSPECIFIED && st.DisconnectMessage == ""
	if removed {
		delete(s.sessions, addr)
	}
	reason := uplink.ReasonOther
	switch {
	case se.refused:
		reason = uplink.ReasonRefused
	case st.AdminState == api.PeerState_ADMIN_STATE_PFX_CT:
		reason = uplink.ReasonMaxPrefixes
	case prev == gobgp.BGP_FSM_OPENSENT || prev == gobgp.BGP_FSM_OPENCONFIRM:
		reason = uplink.ReasonCollision
	}

	switch {
	case st.SessionState == gobgp.BGP_FSM_ESTABLISHED && se.epoch == 0 && current:
		if why := s.refusal(w.nb, st.PeerASN); why != "" {
			se.refused = true
			s.log.Error("refusing BGP session", "interface", se.iface, "reason", why)
			select {
			case s.resets <- reset{addr: addr, why: why}:
			default:
			}
			s.handler.Session(se.id, uplink.Event{Kind: uplink.Session, State: uplink.SessionIdle, Reason: uplink.ReasonRefused, Detail: why})
			return
		}
		se.refused = false
		s.epochs[se.id]++
		se.epoch = s.epochs[se.id]
		preserves, restart := gracefulRestartOf(st.RemoteCap)
		incoming := ev.Peer.Transport.LocalPort == uint32(s.cfg.ListenPort)
		s.log.Info("BGP session established", "interface", se.iface, "peer", addr, "remote_as", st.PeerASN,
			"router_id", st.RouterID, "opened_by", map[bool]string{true: "ToR", false: "fabricd"}[incoming],
			"preserves_forwarding", preserves[uplink.IPv4], "restart_time", restart)
		s.handler.Session(se.id, uplink.Event{Kind: uplink.Session, State: uplink.SessionEstablished, Epoch: se.epoch,
			PreservesForwarding: preserves, RestartTime: restart, Families: familiesOf(st.RemoteCap)})
		if s.cfg.GracefulRestart {
			select {
			case s.established <- addr:
			default: // one per uplink fits; Run is behind, and GoBGP sends them later anyway
			}
		}
	case se.epoch != 0 && st.SessionState != gobgp.BGP_FSM_ESTABLISHED:
		epoch := se.epoch
		se.epoch = 0
		// In order with the session's last paths: kept as stale, used or
		// not as the uplink's machine decides.
		s.handler.Stale(se.id)
		graceful := st.DisconnectReason == api.PeerState_DISCONNECT_REASON_GRACEFUL_RESTART
		detail := st.DisconnectMessage
		switch {
		case removed:
			detail = "peer removed"
		case graceful:
			// GoBGP reports any loss without a NOTIFICATION this way when
			// graceful restart was negotiated: a crash, a restart, a
			// hold-timer expiry, a lost connection alike.
			detail = "connection lost without a NOTIFICATION (the ToR crashed or restarts, or the hold timer expired)"
		}
		s.log.Warn("BGP session down", "interface", se.iface, "peer", addr, "reason", detail, "graceful", graceful)
		if reason == uplink.ReasonMaxPrefixes {
			s.log.Error("the ToR sent more prefixes than max-prefixes; session torn down", "interface", se.iface)
		}
		s.handler.Session(se.id, uplink.Event{Kind: uplink.Session, State: sessionState(st.SessionState), Epoch: epoch,
			Graceful: graceful, Reason: reason, Detail: detail})
	case !current || removed:
		// A peer fabricd itself replaced or removed: nothing to report.
	case st.SessionState == gobgp.BGP_FSM_IDLE:
		if reason == uplink.ReasonCollision {
			s.log.Info("BGP session failed while opening", "interface", se.iface, "reason", st.DisconnectMessage)
		}
		s.handler.Session(se.id, uplink.Event{Kind: uplink.Session, State: uplink.SessionIdle, Reason: reason, Detail: st.DisconnectMessage})
	default:
		s.handler.Session(se.id, uplink.Event{Kind: uplink.Session, State: sessionState(st.SessionState)})
	}
}

// refusal says why a session must not be accepted, if it must not.
func (s *Speaker) refusal(n config.Neighbor, remoteAS uint32) string {
	if n.RemoteAS.Kind == config.RemoteExternal && remoteAS == s.cfg.ASN {
		return fmt.Sprintf("peer AS %d is our own, but remote-as is external", remoteAS)
	}
	return ""
}

// gracefulRestartOf reads the ToR's graceful restart capability: whether
// it preserves forwarding (the F bit) per family, and its restart time.
func gracefulRestartOf(caps []gobgp.ParameterCapabilityInterface) (preserves [2]bool, restart time.Duration) {
	for _, c := range caps {
		gr, ok := c.(*gobgp.CapGracefulRestart)
		if !ok {
			continue
		}
		restart = time.Duration(gr.Time) * time.Second
		for _, t := range gr.Tuples {
			if t.Flags&0x80 == 0 {
				continue
			}
			switch gobgp.NewFamily(t.AFI, t.SAFI) {
			case gobgp.RF_IPv4_UC:
				preserves[uplink.IPv4] = true
			case gobgp.RF_IPv6_UC:
				preserves[uplink.IPv6] = true
			}
		}
	}
	return preserves, restart
}

// familiesOf reads which of IPv4 and IPv6 unicast the ToR's OPEN
// announced (we announce both). Without any multiprotocol capability a
// session carries IPv4 unicast (RFC 4760).
func familiesOf(caps []gobgp.ParameterCapabilityInterface) (fams [2]bool) {
	mp := false
	for _, c := range caps {
		m, ok := c.(*gobgp.CapMultiProtocol)
		if !ok {
			continue
		}
		mp = true
		switch m.CapValue {
		case gobgp.RF_IPv4_UC:
			fams[uplink.IPv4] = true
		case gobgp.RF_IPv6_UC:
			fams[uplink.IPv6] = true
		}
	}
	if !mp {
		fams[uplink.IPv4] = true
	}
	return fams
}

// onPaths is GoBGP's update callback: keep it cheap.
func (s *Speaker) onPaths(paths []*apiutil.Path, _ time.Time) {
	if len(paths) == 0 {
		return
	}
	se := s.sessions[paths[0].PeerAddress]
	if se == nil || se.epoch == 0 {
		return
	}
	for _, p := range paths {
		if p.Family != gobgp.RF_IPv4_UC && p.Family != gobgp.RF_IPv6_UC {
			continue
		}
		// Every path of one event comes from the same peer, but check:
		// GoBGP does not promise it.
		if p.PeerAddress != se.addr {
			continue
		}
		prefix, ok := nlriPrefix(p.Nlri)
		if !ok {
			continue
		}
		if p.Withdrawal {
			s.handler.Route(se.id, prefix, 0, true)
			continue
		}
		if why := s.judge(se, p.Attrs); why != 0 {
			// Not usable, so not a path: it replaces (withdraws) whatever
			// the ToR announced for the prefix before.
			s.handler.Refused(se.id, why)
			s.handler.Route(se.id, prefix, 0, true)
			continue
		}
		s.handler.Route(se.id, prefix, asPathLen(p.Attrs), false)
	}
}

// judge refuses a path whose AS path holds our AS (GoBGP, told to let
// them through, no longer drops them) or whose next hop is another router
// on the link. fabricd forwards through the ToR the session is with, so
// it accepts every form a ToR gives its own address in: its link-local
// address alone, `::` or its global address before its link-local one
// (the 32-byte form of RFC 2545), or a global or IPv4 address that the
// kernel does not know as another router's.
func (s *Speaker) judge(se *session, attrs []gobgp.PathAttributeInterface) Refusal {
	for _, a := range attrs {
		switch v := a.(type) {
		case *gobgp.PathAttributeAsPath:
			for _, seg := range v.Value {
				for _, as := range seg.GetAS() {
					if as == s.cfg.ASN {
						return RefusedLoop
					}
				}
			}
		case *gobgp.PathAttributeMpReachNLRI:
			if !s.ownNextHop(se, v.Nexthop, v.LinkLocalNexthop) {
				return RefusedNextHop
			}
		case *gobgp.PathAttributeNextHop:
			if !s.ownNextHop(se, v.Value, netip.Addr{}) {
				return RefusedNextHop
			}
		}
	}
	return 0
}

func (s *Speaker) ownNextHop(se *session, nh, linkLocal netip.Addr) bool {
	tor := se.addr.WithZone("")
	if linkLocal.IsValid() && !linkLocal.IsUnspecified() {
		return linkLocal.WithZone("") == tor
	}
	switch {
	case !nh.IsValid() || nh.IsUnspecified():
		return true
	case nh.IsLinkLocalUnicast():
		return nh.WithZone("") == tor
	case s.cfg.ThirdParty != nil:
		return !s.cfg.ThirdParty(se.iface, nh)
	}
	return true
}

func (s *Speaker) onEOR(p *apiutil.Path, _ time.Time) {
	family := uplink.IPv4
	switch p.Family {
	case gobgp.RF_IPv4_UC:
	case gobgp.RF_IPv6_UC:
		family = uplink.IPv6
	default:
		return
	}
	se := s.sessions[p.PeerAddress]
	if se == nil || se.epoch == 0 {
		return
	}
	// In order with the paths: every path the ToR resent is fresh by now.
	s.handler.Sweep(se.id, family)
	s.handler.Session(se.id, uplink.Event{Kind: uplink.EndOfRIB, Epoch: se.epoch, Family: family})
}

func nlriPrefix(n gobgp.NLRI) (netip.Prefix, bool) {
	switch v := n.(type) {
	case *gobgp.IPAddrPrefix:
		return v.Prefix, true
	}
	return netip.Prefix{}, false
}

// asPathLen counts the AS path as best-path selection does: every AS of a
// sequence, one for a set.
func asPathLen(attrs []gobgp.PathAttributeInterface) int {
	for _, a := range attrs {
		if ap, ok := a.(*gobgp.PathAttributeAsPath); ok {
			n := 0
			for _, seg := range ap.Value {
				n += seg.ASLen()
			}
			return n
		}
	}
	return 0
}
