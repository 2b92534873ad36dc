package daemon

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fabricd/fabricd/api/fabricdpb"
	"github.com/fabricd/fabricd/rib"
	"github.com/fabricd/fabricd/uplink"
)

// apiServer answers fabricctl. Queries read live state from the speaker,
// the RIB, the FIB writer and discovery; nothing is cached.
type apiServer struct {
	fabricdpb.UnimplementedFabricdServer
	d *Daemon
}

func (a *apiServer) GetSummary(ctx context.Context, _ *fabricdpb.GetSummaryRequest) (*fabricdpb.Summary, error) {
	d := a.d
	cfg := d.config()
	peers, err := d.speaker.Peers(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if err := d.fib.Sync(ctx); err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	inSync := d.rib.Pending() == 0
	out := &fabricdpb.Summary{
		RouterId:       cfg.RouterID.String(),
		As:             cfg.ASN,
		RibCount:       uint64(d.rib.Len()),
		InstalledCount: uint64(d.fib.Stats().Routes.Load() + d.fib.Stats().Blackholes.Load()),
		FibInSync:      inSync,
		Online:         inSync && d.allForwarding(),
		Identity:       cfg.IdentityDerived(),
	}
	now := time.Now()
	for _, u := range d.uplinkStatuses() {
		m := u.machine
		p := &fabricdpb.Peer{
			Interface:   u.neighbor.Interface,
			State:       "Idle",
			PfxFiltered: d.filtered[u.id].Load(),
			PfxRefused:  d.refused[u.id][0].Load() + d.refused[u.id][1].Load(),
			EndOfRib:    m.EndOfRIB[uplink.IPv4],
		}
		if m.ToR.IsValid() {
			p.TorSource = m.ToRSource.String()
		}
		if ps, ok := peers[u.neighbor.Interface]; ok {
			p.PeerAddress = ps.Addr.String()
			p.Passive = ps.Passive
			p.RemoteAs = ps.RemoteAS
			p.RemoteRouterId = ps.RouterID
			p.State = ps.State
			p.MsgRcvd, p.MsgSent = ps.MsgRcvd, ps.MsgSent
			p.Outq, p.Inq = ps.OutQ, ps.InQ
			p.PfxRcd = uint64(d.rib.CountFrom(u.id, false))
			if ps.State == "Established" {
				// Every peer gets exactly fabricd's own IPv4 announcements.
				p.PfxSnt = uint64(d.announcedCount(false))
			}
			p.LastReset = ps.LastReset
			if !ps.Since.IsZero() {
				p.EverUp = true
				p.PeerUptimeMsec = now.Sub(ps.Since).Milliseconds()
			}
		}
		out.Peers = append(out.Peers, p)
	}
	return out, nil
}

func (a *apiServer) GetBGPTable(ctx context.Context, req *fabricdpb.GetBGPTableRequest) (*fabricdpb.BGPTable, error) {
	d := a.d
	cfg := d.config()
	family := 4
	switch req.GetAfi() {
	case 0, 4:
	case 6:
		family = 6
	default:
		return nil, status.Errorf(codes.InvalidArgument, "afi %d: want 4 or 6", req.GetAfi())
	}
	routes, err := d.speaker.Table(ctx, family)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	via, err := d.fib.Via(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &fabricdpb.BGPTable{RouterId: cfg.RouterID.String(), As: cfg.ASN}
	for _, r := range routes {
		// fabricd's own selection: the uplinks in best are installed;
		// the first is shown as best (>), the others as multipath (=).
		// Received paths the RIB does not hold were refused (the import
		// filter, or our own AS in the path) and are not shown.
		offers, stale := d.rib.Offers(r.Prefix), d.rib.Stale(r.Prefix)
		installed := via[rib.KeyOf(r.Prefix)]
		br := &fabricdpb.BGPRoute{Prefix: r.Prefix.String()}
		shownBest := false
		var seen rib.NexthopSet
		for _, p := range r.Paths {
			bp := &fabricdpb.BGPPath{
				Valid:  true,
				Stale:  p.Stale,
				AsPath: p.ASPath,
				Origin: p.Origin,
				Med:    p.MED,
				HasMed: p.HasMED,
			}
			if p.PeerID < 0 {
				bp.NextHop, bp.Source, bp.Weight, bp.Best = "0.0.0.0", d.announcementSource(r.Prefix), 32768, p.Best
			} else {
				u := rib.Uplink(p.PeerID)
				if !offers.Has(u) {
					continue
				}
				seen |= rib.Of(u)
				bp.NextHop, bp.Peer, bp.Source = p.Interface, p.Interface, "bgp"
				bp.Stale = bp.Stale || stale.Has(u)
				if installed.Has(u) {
					bp.Best, bp.Multipath = !shownBest, shownBest
					shownBest = true
				}
			}
			br.Paths = append(br.Paths, bp)
		}
		// Paths kept from an ended session, which GoBGP no longer lists.
		for _, u := range (stale &^ seen).Uplinks() {
			name := d.uplinkName(u)
			bp := &fabricdpb.BGPPath{Valid: true, Stale: true, NextHop: name, Peer: name, Source: "bgp (kept from the ended session)", Origin: "?"}
			if installed.Has(u) {
				bp.Best, bp.Multipath = !shownBest, shownBest
				shownBest = true
			}
			br.Paths = append(br.Paths, bp)
		}
		if len(br.Paths) > 0 {
			out.Routes = append(out.Routes, br)
		}
	}
	return out, nil
}

func (a *apiServer) GetInstalledRoutes(ctx context.Context, _ *fabricdpb.GetInstalledRoutesRequest) (*fabricdpb.InstalledRoutes, error) {
	routes, err := a.d.fib.Installed(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &fabricdpb.InstalledRoutes{}
	for _, r := range routes {
		ir := &fabricdpb.InstalledRoute{Prefix: r.Prefix.String(), Blackhole: r.Blackhole, Metric: r.Metric}
		for _, v := range r.Via {
			ir.Nexthops = append(ir.Nexthops, &fabricdpb.InstalledNexthop{Interface: interfaceName(v.Ifindex), Gateway: v.Gateway.String()})
		}
		out.Routes = append(out.Routes, ir)
	}
	return out, nil
}

func interfaceName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return ifi.Name
	}
	return "ifindex " + strconv.Itoa(ifindex)
}

func (a *apiServer) GetInterfaces(ctx context.Context, _ *fabricdpb.GetInterfacesRequest) (*fabricdpb.Interfaces, error) {
	d := a.d
	peers, err := d.speaker.Peers(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	out := &fabricdpb.Interfaces{}
	now := time.Now()
	for _, u := range d.uplinkStatuses() {
		st := u.link.Status()
		m := u.machine
		v4, v6, err := d.fib.Usable(ctx, u.id)
		if err != nil {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		fi := &fabricdpb.Interface{
			Name:           u.neighbor.Interface,
			LinkUp:         m.Carrier,
			LastRaAgeMsec:  -1,
			SessionState:   "Idle",
			RasReceived:    st.RAsReceived,
			RasIgnored:     st.RAsIgnored,
			RasSent:        st.RAsSent,
			RssSent:        st.RSsSent,
			PfxFiltered:    d.filtered[u.id].Load(),
			Phase:          m.Phase.String(),
			PhaseAgeMsec:   now.Sub(m.Since).Milliseconds(),
			Ipv4:           v4.String(),
			Ipv6:           v6.String(),
			RefusedLoop:    d.refused[u.id][0].Load(),
			RefusedNexthop: d.refused[u.id][1].Load(),
			StaleMsec:      -1,
		}
		if m.ToR.IsValid() {
			fi.PeerAddress = m.ToR.String()
			fi.TorSource = m.ToRSource.String()
		}
		if m.MAC != nil {
			fi.PeerMac = m.MAC.String()
			fi.MacSource = m.MACSource.String()
		}
		if n := st.Neighbor; n != nil && !n.LastRA.IsZero() {
			fi.LastRaAgeMsec = now.Sub(n.LastRA).Milliseconds()
		}
		if !m.StaleUntil.IsZero() {
			fi.StaleMsec = max(m.StaleUntil.Sub(now).Milliseconds(), 0)
		}
		if ps, ok := peers[u.neighbor.Interface]; ok {
			fi.SessionState = ps.State
		}
		out.Interfaces = append(out.Interfaces, fi)
	}
	return out, nil
}

// uplinkName names uplink u.
func (d *Daemon) uplinkName(u rib.Uplink) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r := d.ids[u]; r != nil {
		return r.neighbor.Interface
	}
	return fmt.Sprintf("uplink %d", u)
}

func (a *apiServer) Reload(ctx context.Context, _ *fabricdpb.ReloadRequest) (*fabricdpb.ReloadResponse, error) {
	changes, err := a.d.Reload(ctx)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &fabricdpb.ReloadResponse{Changes: changes}, nil
}
