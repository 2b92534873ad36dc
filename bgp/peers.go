package bgp

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/uplink"
)

// wantedPeer is the peer an uplink wants.
type wantedPeer struct {
	id   int
	peer uplink.Peer
	nb   config.Neighbor
	// desc is the GoBGP peer description that names exactly this wish:
	// GoBGP's own list says which wish each of its peers fulfils.
	desc string
}

// describe names a wish: the uplink, the peer's generation and mode, and
// a hash of every setting that shapes the session. Two descriptions with
// the same uplink and hash differ only in what a fresh peer would change.
func (s *Speaker) describe(p uplink.Peer, n config.Neighbor) string {
	mode := "active"
	if p.Passive {
		mode = "passive"
	}
	h := fnv.New32a()
	fmt.Fprintf(h, "%v|%s|%v|%v|%v|%v|%v|%d|%v", p.Addr, n.RemoteAS, n.Password, n.TTLSecurity, n.BFD, n.BFDInterval,
		n.BFDMultiplier, n.MaxPrefixes, s.cfg.BGP)
	return fmt.Sprintf("fabricd %s gen %d %s unstick %d cfg %08x", n.Interface, p.Generation, mode, p.Unstick, h.Sum32())
}

// mayKeep: a peer described by have may stay for the wish described by
// want while it is busy: same uplink, same settings, and no unsticking
// asked for.
func mayKeep(have, want string) bool {
	fh, fw := strings.Fields(have), strings.Fields(want)
	return len(fh) == 9 && len(fw) == 9 && fh[1] == fw[1] && fh[8] == fw[8] && fh[6] == fw[6]
}

// SetPeer makes uplink id's peer p, with n's settings (none for the zero
// p), and reconciles GoBGP's peers with it before returning.
func (s *Speaker) SetPeer(ctx context.Context, id int, p uplink.Peer, n config.Neighbor) error {
	s.mu.Lock()
	if old := s.wanted[id]; old != nil {
		delete(s.byAddr, old.peer.Addr)
		delete(s.wanted, id)
	}
	if p.Addr.IsValid() {
		w := &wantedPeer{id: id, peer: p, nb: n, desc: s.describe(p, n)}
		s.wanted[id] = w
		s.byAddr[p.Addr] = w
	}
	s.mu.Unlock()
	return s.reconcile(ctx)
}

// wantedAt returns the wish for addr.
func (s *Speaker) wantedAt(addr netip.Addr) (wantedPeer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, ok := s.byAddr[addr]
	if !ok {
		return wantedPeer{}, false
	}
	return *w, true
}

// gobgpPeer is one of GoBGP's peers as its list shows it.
type gobgpPeer struct {
	desc  string
	state api.PeerState_SessionState
}

// reconcile makes GoBGP's peers the wanted ones. GoBGP's own list is the
// truth: a peer it lacks is added, one nobody wants is deleted, one that
// fulfils an older wish is replaced — but not while a connection is
// opening (collision resolution must be allowed to finish) or its session
// is up with the same settings, since a fresh peer is only wanted to get
// a session that does not exist. Differences from what earlier
// reconciliations left are logged as corrections.
func (s *Speaker) reconcile(ctx context.Context) error {
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	have := map[netip.Addr]gobgpPeer{}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		have[addr] = gobgpPeer{desc: p.GetConf().GetDescription(), state: p.GetState().GetSessionState()}
	})
	if err != nil {
		return fmt.Errorf("listing BGP peers: %w", err)
	}
	for addr, desc := range s.applied {
		if h, ok := have[addr]; !ok || h.desc != desc {
			s.log.Warn("GoBGP's peers differ from what fabricd configured; correcting", "address", addr, "configured", desc, "found", h.desc)
		}
	}
	for addr, h := range have {
		if _, ok := s.applied[addr]; !ok {
			s.log.Warn("GoBGP has a peer fabricd did not configure; correcting", "address", addr, "found", h.desc)
		}
	}
	s.mu.Lock()
	wanted := make(map[netip.Addr]wantedPeer, len(s.byAddr))
	for a, w := range s.byAddr {
		wanted[a] = *w
	}
	s.mu.Unlock()

	var errs []error
	for addr, h := range have {
		w, ok := wanted[addr]
		switch {
		case ok && h.desc == w.desc:
			continue
		case ok && mayKeep(h.desc, w.desc) && busy(h.state):
			// A fresh peer is wanted, but this one is opening a session
			// or has one: keep it. The next reconciliation replaces it
			// if it fails.
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("removing BGP peer %s: %w", addr, err))
			continue
		}
		delete(s.applied, addr)
		delete(have, addr)
		if !ok {
			s.log.Info("BGP peer removed", "address", addr)
		}
	}
	for addr, w := range wanted {
		if _, ok := have[addr]; ok {
			continue
		}
		if err := s.addPeer(ctx, w); err != nil {
			errs = append(errs, err)
			continue
		}
		s.applied[addr] = w.desc
		s.log.Info("BGP peer configured", "interface", w.nb.Interface, "address", addr, "passive", w.peer.Passive,
			"generation", w.peer.Generation, "remote_as", w.nb.RemoteAS, "md5", w.nb.Password != "",
			"ttl_security", w.nb.TTLSecurity, "bfd", w.nb.BFD, "max_prefixes", w.nb.MaxPrefixes)
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Error("configuring BGP peers; retrying", "err", err)
		go func() {
			select {
			case <-time.After(time.Second):
				s.kickReconcile()
			case <-ctx.Done():
			}
		}()
		return err
	}
	return nil
}

// busy: a connection is being opened, or the session is up.
func busy(st api.PeerState_SessionState) bool {
	switch st {
	case api.PeerState_SESSION_STATE_OPENSENT, api.PeerState_SESSION_STATE_OPENCONFIRM, api.PeerState_SESSION_STATE_ESTABLISHED:
		return true
	}
	return false
}

// kickReconcile asks Run to reconcile soon (never blocks).
func (s *Speaker) kickReconcile() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Speaker) addPeer(ctx context.Context, w wantedPeer) error {
	n := w.nb
	peerASN := uint32(0) // "external": accept any AS, checked on Established
	switch n.RemoteAS.Kind {
	case config.RemoteInternal:
		peerASN = s.cfg.ASN
	case config.RemoteNumber:
		peerASN = n.RemoteAS.ASN
	}
	peer := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: w.peer.Addr.String(),
			PeerAsn:         peerASN,
			Description:     w.desc,
			AuthPassword:    n.Password,
			// GoBGP drops a received path whose AS path holds our AS
			// without a word to its watchers, so the path it replaced would
			// stay. Letting such paths through lets fabricd treat them as
			// the withdraws they are (RFC 4271 9.1.2; see events.go).
			AllowOwnAsn: 255,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(s.cfg.HoldTime / time.Second),
			KeepaliveInterval: uint64(s.cfg.Keepalive / time.Second),
			ConnectRetry:      uint64(s.cfg.ConnectRetry / time.Second),
		}},
		Transport:       &api.Transport{PassiveMode: w.peer.Passive},
		AfiSafis:        []*api.AfiSafi{s.afiSafi(api.Family_AFI_IP, n), s.afiSafi(api.Family_AFI_IP6, n)},
		GracefulRestart: s.gracefulRestart(),
	}
	if n.TTLSecurity {
		peer.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: 255}
	}
	if n.BFD {
		us := uint32(n.BFDInterval / time.Microsecond)
		peer.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: us,
			RequiredMinimumReceive:   us,
			DetectionMultiplier:      uint32(n.BFDMultiplier),
		}
	}
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		return fmt.Errorf("adding BGP peer %s on %s: %w", w.peer.Addr, n.Interface, err)
	}
	return nil
}

func (s *Speaker) afiSafi(afi api.Family_Afi, n config.Neighbor) *api.AfiSafi {
	a := &api.AfiSafi{
		Config:            &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
		MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: s.cfg.GracefulRestart}},
	}
	if n.MaxPrefixes > 0 {
		// GoBGP counts the peer's Adj-RIB-In before any policy and ends
		// the session (Cease, maximum prefixes) once it is exceeded, so
		// memory stays bounded whatever the peer sends.
		a.PrefixLimits = &api.PrefixLimit{MaxPrefixes: uint32(n.MaxPrefixes)}
	}
	return a
}

func (s *Speaker) gracefulRestart() *api.GracefulRestart {
	if !s.cfg.GracefulRestart {
		return nil
	}
	return &api.GracefulRestart{
		Enabled:     true,
		RestartTime: uint32(s.cfg.RestartTime / time.Second),
		// After a restart fabricd waits this long at most for every
		// peer's End-of-RIB before it sends its own routes.
		DeferralTime:    uint32(s.cfg.HoldTime / time.Second),
		LocalRestarting: s.restarting.Load(),
	}
}
