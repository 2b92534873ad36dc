package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fabricd/fabricd/api/fabricdpb"
)

// writeSummary prints `show bgp summary` in FRR's layout.
func writeSummary(w io.Writer, s *fabricdpb.Summary) {
	fmt.Fprintln(w, "IPv4 Unicast Summary:")
	fmt.Fprintf(w, "BGP router identifier %s, local AS number %d\n", s.GetRouterId(), s.GetAs())
	if id := s.GetIdentity(); id != "" {
		fmt.Fprintf(w, "Derived identity: %s\n", id)
	}
	fmt.Fprintf(w, "RIB entries %d, installed routes %d\n", s.GetRibCount(), s.GetInstalledCount())
	fmt.Fprintf(w, "Peers %d\n\n", len(s.GetPeers()))
	fmt.Fprintln(w, "Neighbor        V         AS   MsgRcvd   MsgSent   TblVer  InQ OutQ  Up/Down State/PfxRcd   PfxSnt")
	found := false
	for _, p := range s.GetPeers() {
		name := p.GetInterface()
		if p.GetTorSource() == "kernel" {
			// Like FRR's dynamic neighbors: accepted from its connection.
			name, found = "*"+name, true
		}
		upDown := "never"
		if p.GetEverUp() {
			upDown = formatUptime(time.Duration(p.GetPeerUptimeMsec()) * time.Millisecond)
		}
		state := p.GetState()
		if state == "Established" {
			state = fmt.Sprint(p.GetPfxRcd())
		}
		fmt.Fprintf(w, "%-15s %1d %10d %9d %9d %8d %4d %4d %8s %12s %8d\n",
			name, 4, p.GetRemoteAs(), p.GetMsgRcvd(), p.GetMsgSent(), 0, p.GetInq(), p.GetOutq(), upDown, state, p.GetPfxSnt())
	}
	fmt.Fprintf(w, "\nTotal number of neighbors %d\n", len(s.GetPeers()))
	if found {
		fmt.Fprintln(w, "* - ToR that sent no router advertisement, found when it connected")
	}
}

// formatUptime prints a duration as FRR's peer_uptime does: hh:mm:ss
// under a day, 1d02h03m under a week, 01w2d03h beyond.
func formatUptime(d time.Duration) string {
	sec := int64(d / time.Second)
	const day, week = 86400, 7 * 86400
	switch {
	case sec < day:
		return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec%3600/60, sec%60)
	case sec < week:
		return fmt.Sprintf("%dd%02dh%02dm", sec/day, sec%day/3600, sec%3600/60)
	default:
		return fmt.Sprintf("%02dw%dd%02dh", sec/week, sec%week/day, sec%day/3600)
	}
}

// writeBGPTable prints `show bgp ipv4 unicast` in FRR's layout. Locally
// originated prefixes also say where they come from (config, pods, an
// interface address).
func writeBGPTable(w io.Writer, t *fabricdpb.BGPTable) {
	fmt.Fprintf(w, "BGP table version is 0, local router ID is %s\n", t.GetRouterId())
	fmt.Fprintf(w, "Default local pref 100, local AS %d\n", t.GetAs())
	fmt.Fprintln(w, "Status codes:  * valid, > best, = multipath (also installed), S Stale")
	fmt.Fprintln(w, "Origin codes:  i - IGP, e - EGP, ? - incomplete")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "   Network          Next Hop            Metric LocPrf Weight Path")
	paths := 0
	for _, r := range t.GetRoutes() {
		for i, p := range r.GetPaths() {
			paths++
			network := ""
			if i == 0 {
				network = r.GetPrefix()
			}
			code := " "
			if p.GetStale() {
				code = "S"
			} else if p.GetValid() {
				code = "*"
			}
			switch {
			case p.GetBest():
				code += ">"
			case p.GetMultipath():
				code += "="
			default:
				code += " "
			}
			metric := ""
			if p.GetHasMed() || p.GetSource() == "config" {
				metric = fmt.Sprint(p.GetMed())
			}
			path := strings.TrimSpace(formatASPath(p.GetAsPath()) + " " + p.GetOrigin())
			if src := p.GetSource(); src != "" && src != "bgp" {
				path += "    (" + src + ")"
			}
			line := fmt.Sprintf("%-3s%-17s%-20s%6s %6s %6d %s", code, network, p.GetNextHop(), metric, "", p.GetWeight(), path)
			if len(network) > 16 {
				// FRR moves the rest of a long prefix's line to the next.
				line = fmt.Sprintf("%-3s%s\n%20s%-20s%6s %6s %6d %s", code, network, "", p.GetNextHop(), metric, "", p.GetWeight(), path)
			}
			fmt.Fprintln(w, strings.TrimRight(line, " "))
		}
	}
	fmt.Fprintf(w, "\nDisplayed  %d routes and %d total paths\n", len(t.GetRoutes()), paths)
}

func formatASPath(p []uint32) string {
	parts := make([]string, len(p))
	for i, as := range p {
		parts[i] = fmt.Sprint(as)
	}
	return strings.Join(parts, " ")
}

// writeRoutes prints `show ip route` (or `show ipv6 route`) for fabricd's
// kernel routes of one family, as FRR prints its BGP routes.
func writeRoutes(w io.Writer, r *fabricdpb.InstalledRoutes, v6 bool) {
	fmt.Fprintln(w, "Codes: B - BGP, > - selected route, * - FIB route")
	fmt.Fprintln(w)
	for _, rt := range r.GetRoutes() {
		if strings.Contains(rt.GetPrefix(), ":") != v6 {
			continue
		}
		head := fmt.Sprintf("B>* %s [20/0]", rt.GetPrefix())
		if rt.GetBlackhole() {
			fmt.Fprintf(w, "%s unreachable (blackhole)\n", head)
			continue
		}
		onlink := " onlink"
		if v6 {
			onlink = ""
		}
		for i, nh := range rt.GetNexthops() {
			if i == 0 {
				fmt.Fprintf(w, "%s via %s, %s%s, weight 1\n", head, nh.GetGateway(), nh.GetInterface(), onlink)
			} else {
				fmt.Fprintf(w, "  *%s via %s, %s%s, weight 1\n", strings.Repeat(" ", len(head)-3), nh.GetGateway(), nh.GetInterface(), onlink)
			}
		}
	}
}

// writeInterfaces prints `show interface`: each uplink's phase (see
// README, "Uplink states"), its ToR and where fabricd learned of it, the
// session, and the counters of discovery and of refused announcements.
func writeInterfaces(w io.Writer, ifs *fabricdpb.Interfaces) {
	for n, i := range ifs.GetInterfaces() {
		if n > 0 {
			fmt.Fprintln(w)
		}
		link := "no carrier"
		if i.GetLinkUp() {
			link = "carrier"
		}
		since := (time.Duration(i.GetPhaseAgeMsec()) * time.Millisecond).Round(time.Second)
		fmt.Fprintf(w, "%s: %s, %s for %s\n", i.GetName(), link, i.GetPhase(), since)
		fmt.Fprintf(w, "  ToR %s (from %s), MAC %s (from %s)\n", dash(i.GetPeerAddress()), dash(i.GetTorSource()),
			dash(i.GetPeerMac()), dash(i.GetMacSource()))
		age := "never"
		if i.GetLastRaAgeMsec() >= 0 {
			age = (time.Duration(i.GetLastRaAgeMsec()) * time.Millisecond).Round(100*time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(w, "  Session %s; carries IPv4: %s, IPv6: %s", i.GetSessionState(), i.GetIpv4(), i.GetIpv6())
		if ms := i.GetStaleMsec(); ms >= 0 {
			fmt.Fprintf(w, "; paths of the last session kept %s more", (time.Duration(ms) * time.Millisecond).Round(time.Second))
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "  RAs received %d (ignored %d, last %s), sent %d; RSs sent %d\n", i.GetRasReceived(), i.GetRasIgnored(), age,
			i.GetRasSent(), i.GetRssSent())
		fmt.Fprintf(w, "  Announcements refused: %d by [import], %d AS-path loops, %d third-party next hops\n",
			i.GetPfxFiltered(), i.GetRefusedLoop(), i.GetRefusedNexthop())
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
