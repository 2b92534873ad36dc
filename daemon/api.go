package daemon

import (
	"context"
	"net"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fabricd/fabricd/api/fabricdpb"
	"github.com/fabricd/fabricd/rib"
)

// apiServer answers fabricctl. Queries read live state from the speaker,
// the RIB, the FIB writer and discovery; nothing is cached.
type apiServer struct {
	fabricdpb.UnimplementedFabricdServer
	d *Daemon
}

// uplinkSnapshot is a consistent copy of the uplink table for queries.
func (d *Daemon) uplinkSnapshot() []*uplink {
	d.mu.Lock()
	defer d.mu.Unlock()
	ups := make([]*uplink, 0, len(d.uplinks))
	for _, u := range d.uplinks {
		ups = append(ups, u)
	}
	slices.SortFunc(ups, func(a, b *uplink) int { return int(a.id) - int(b.id) })
	return ups
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
	out := &fabricdpb.Summary{
		RouterId:       cfg.RouterID.String(),
		As:             cfg.ASN,
		RibCount:       uint64(d.rib.Len()),
		InstalledCount: uint64(d.fib.Stats().Routes.Load() + d.fib.Stats().Blackholes.Load()),
		FibInSync:      d.rib.Pending() == 0,
		Identity:       cfg.IdentityDerived(),
	}
	now := time.Now()
	eor := d.endOfRIBs()
	for _, u := range d.uplinkSnapshot() {
		p := &fabricdpb.Peer{Interface: u.neighbor.Interface, State: "Idle", PfxFiltered: d.filtered[u.id].Load(), EndOfRib: eor[u.id]}
		if ps, ok := peers[u.neighbor.Interface]; ok {
			p.PeerAddress = ps.Addr.String()
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
	out := &fabricdpb.BGPTable{RouterId: cfg.RouterID.String(), As: cfg.ASN}
	for _, r := range routes {
		// fabricd's own selection: the uplinks in best are installed;
		// the first is shown as best (>), the others as multipath (=).
		// Received paths the RIB does not hold were refused (the import
		// filter, or our own AS in the path) and are not shown.
		best, offers := d.rib.Best(r.Prefix), d.rib.Offers(r.Prefix)
		br := &fabricdpb.BGPRoute{Prefix: r.Prefix.String()}
		shownBest := false
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
				bp.NextHop, bp.Peer, bp.Source = p.Interface, p.Interface, "bgp"
				if best.Has(u) {
					bp.Best, bp.Multipath = !shownBest, shownBest
					shownBest = true
				}
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
	for _, u := range d.uplinkSnapshot() {
		st := u.link.Status()
		fi := &fabricdpb.Interface{
			Name:          st.Interface,
			LinkUp:        st.LinkUp,
			LastRaAgeMsec: -1,
			SessionState:  "Idle",
			RasReceived:   st.RAsReceived,
			RasIgnored:    st.RAsIgnored,
			RasSent:       st.RAsSent,
			RssSent:       st.RSsSent,
			PfxFiltered:   d.filtered[u.id].Load(),
		}
		if n := st.Neighbor; n != nil {
			fi.PeerAddress = n.Addr.String()
			fi.PeerMac = n.MAC.String()
			if !n.LastRA.IsZero() {
				fi.LastRaAgeMsec = now.Sub(n.LastRA).Milliseconds()
			}
		}
		if ps, ok := peers[st.Interface]; ok {
			fi.SessionState = ps.State
		}
		out.Interfaces = append(out.Interfaces, fi)
	}
	return out, nil
}

func (a *apiServer) Reload(ctx context.Context, _ *fabricdpb.ReloadRequest) (*fabricdpb.ReloadResponse, error) {
	changes, err := a.d.Reload(ctx)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return &fabricdpb.ReloadResponse{Changes: changes}, nil
}
