package frrconf

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

type remarkKind int

const (
	noteKind remarkKind = iota + 1
	failKind
)

// remark is a comment for a line: a note, or why it is not translated.
type remark struct {
	kind remarkKind
	why  string
}

// note attaches an informational remark to at; a line that is not
// translated keeps that verdict.
func (t *translator) note(at ref, why string) {
	if at.line == 0 {
		t.general = append(t.general, remark{noteKind, why})
		return
	}
	switch r := t.remarks[at]; {
	case r == nil:
		t.remarks[at] = &remark{noteKind, why}
	case r.kind == noteKind && !strings.Contains(r.why, why):
		r.why += "; " + why
	}
}

// fail marks at as not translated, replacing any note.
func (t *translator) fail(at ref, why string) {
	if at.line == 0 {
		t.general = append(t.general, remark{failKind, why})
		return
	}
	switch r := t.remarks[at]; {
	case r == nil || r.kind == noteKind:
		t.remarks[at] = &remark{failKind, why}
	case !strings.Contains(r.why, why):
		r.why += "; " + why
	}
}

// out is the fabricd configuration being built.
type out struct {
	asn       string
	routerID  string
	bgp       []kv
	neighbors [][]kv
	announce  []announce
	allow     []prefixRange
	allowDef  bool
	logLevel  string
	fib       []kv
}

type kv struct{ key, val string }

type announce struct {
	pfx       netip.Prefix
	blackhole bool
}

// kept is a neighbor that makes it into the output, with its peer-group.
type kept struct {
	p, g *peer
	act  [2]bool
}

// resolve decides what the collected configuration means for fabricd.
func (t *translator) resolve() {
	t.o = &out{}
	t.identity()
	ns := t.keptNeighbors()
	t.activation(ns)
	t.announcements(ns)
	t.importFilter(ns)
	for _, n := range ns {
		t.o.neighbors = append(t.o.neighbors, t.neighborKeys(n))
	}
	t.outboundFilters(ns)
	t.timerKeys(ns)
	t.gracefulRestart()
	t.leftovers()
	if t.logLevel.ok {
		t.o.logLevel = t.logLevel.v
	}
	if t.nexthopObjs.ok {
		t.o.fib = append(t.o.fib, kv{"nexthop-objects", strconv.FormatBool(t.nexthopObjs.v)})
	}
}

func (t *translator) identity() {
	t.o.asn, t.o.routerID = `"auto"`, `"auto"`
	if !t.asn.ok {
		t.fail(ref{}, "the input has no `router bgp`: asn and router-id are \"auto\" placeholders")
		return
	}
	t.o.asn = strconv.FormatUint(uint64(t.asn.v), 10)
	if !t.routerID.ok {
		t.note(ref{}, "no `bgp router-id`: FRR took the highest loopback address; router-id = \"auto\" takes the one IPv4 /32 on lo")
		return
	}
	a, err := netip.ParseAddr(t.routerID.v)
	if err != nil || !a.Is4() || a.IsUnspecified() {
		t.fail(t.routerID.at, "not an IPv4 router ID; router-id = \"auto\" stands in for it")
		return
	}
	t.o.routerID = strconv.Quote(a.String())
}

// keptNeighbors returns the interface neighbors fabricd gets, at most
// MaxNeighbors of them, and reports the others with every line that
// configures them.
func (t *translator) keptNeighbors() []*kept {
	const maxNeighbors = 16 // config.MaxNeighbors
	var ns []*kept
	members := map[*peer]int{}
	for _, p := range t.peerOrder {
		var g *peer
		if p.member.ok {
			g = t.peers[p.member.v]
		}
		if g == nil {
			g = &peer{}
		}
		why := ""
		switch {
		case !p.remote.or(g.remote).ok:
			why = "neighbor " + p.name + " has no remote-as, so FRR starts no session on it"
		case len(ns) == maxNeighbors:
			why = fmt.Sprintf("fabricd serves at most %d uplinks", maxNeighbors)
		}
		if why != "" {
			for _, at := range p.lines {
				t.fail(at, why)
			}
			continue
		}
		members[g]++
		ns = append(ns, &kept{p: p, g: g})
	}
	for _, g := range t.peers {
		if g.group && members[g] == 0 {
			for _, at := range g.lines {
				t.note(at, "peer-group "+g.name+" has no translated member")
			}
		}
	}
	return ns
}

// activation works out which families each neighbor exchanges. fabricd
// exchanges both with every uplink, so it can only mirror a family that
// is on or off for all of them.
func (t *translator) activation(ns []*kept) {
	for f := ipv4; f <= ipv6; f++ {
		def := f == ipv4
		if t.defaultOn[f].ok {
			def = t.defaultOn[f].v
		}
		on := 0
		for _, n := range ns {
			a := n.p.af[f].activate.or(n.g.af[f].activate)
			n.act[f] = def
			if a.ok {
				n.act[f] = a.v
			}
			if n.act[f] {
				on++
			}
		}
		if on == 0 || on == len(ns) {
			continue
		}
		for _, n := range ns {
			n.act[f] = true
			if a := n.p.af[f].activate.or(n.g.af[f].activate); a.ok {
				t.fail(a.at, fmt.Sprintf("fabricd exchanges %v with every uplink alike; FRR had it on for %d of %d neighbors", f, on, len(ns)))
			}
		}
	}
}

func active(ns []*kept, f family) bool {
	return len(ns) > 0 && ns[0].act[f]
}

// announcements turns network statements and blackhole routes into
// [[announce]] entries.
func (t *translator) announcements(ns []*kept) {
	var unbacked []string
	for f := ipv4; f <= ipv6; f++ {
		seen := map[netip.Prefix]bool{}
		silent := len(ns) > 0 && !active(ns, f)
		for _, n := range t.networks[f] {
			if silent {
				t.fail(n.at, fmt.Sprintf("no neighbor has %v unicast activated, so FRR did not announce it; fabricd would", f))
				continue
			}
			if seen[n.pfx] {
				continue
			}
			seen[n.pfx] = true
			a := announce{pfx: n.pfx}
			for i := range t.statics[f] {
				if t.statics[f][i].pfx == n.pfx {
					t.statics[f][i].used, a.blackhole = true, true
				}
			}
			if !a.blackhole {
				unbacked = append(unbacked, n.pfx.String())
			}
			t.o.announce = append(t.o.announce, a)
		}
		redist := t.redistSta[f].ok && t.redistSta[f].v && !silent
		for i := range t.statics[f] {
			s := &t.statics[f][i]
			switch {
			case s.used:
			case redist && !seen[s.pfx]:
				seen[s.pfx], s.used = true, true
				t.o.announce = append(t.o.announce, announce{pfx: s.pfx, blackhole: true})
			case redist:
				s.used = true
			default:
				t.fail(s.at, fmt.Sprintf("fabricd installs a blackhole only for a prefix it announces (`network %s` would make it an [[announce]] with blackhole = true)", s.pfx))
			}
		}
	}
	if len(unbacked) > 0 && (!t.importCheck.ok || t.importCheck.v) {
		list := unbacked
		if len(list) > 10 {
			list = append(slices.Clone(list[:10]), fmt.Sprintf("and %d more", len(unbacked)-10))
		}
		t.note(ref{}, "FRR announced a `network` only while a route for it was in its RIB (bgp network import-check); fabricd announces it always. "+
			"No FRR route in this input backs "+strings.Join(list, ", ")+
			": a connected address, or a route made outside FRR (the seed's `ip route add blackhole`): set blackhole = true on an [[announce]] whose route was a blackhole")
	}
}

// importFilter turns the neighbors' inbound prefix-lists into [import].
func (t *translator) importFilter(ns []*kept) {
	type state int
	const (
		all state = iota
		list
		inactive
	)
	var st [2]state
	var ranges [2][]prefixRange
	for f := ipv4; f <= ipv6; f++ {
		if len(ns) == 0 {
			continue
		}
		if !active(ns, f) {
			st[f] = inactive
			continue
		}
		names := map[string][]string{}
		var order []string
		var lines []ref
		for _, n := range ns {
			in := n.p.af[f].plistIn.or(n.g.af[f].plistIn)
			if in.ok {
				lines = append(lines, in.at)
			}
			if _, ok := names[in.v]; !ok {
				order = append(order, in.v)
			}
			names[in.v] = append(names[in.v], n.p.name)
		}
		if len(order) > 1 {
			var parts []string
			for _, name := range order {
				label := name
				if label == "" {
					label = "no list"
				}
				parts = append(parts, strings.Join(names[name], ", ")+": "+label)
			}
			for _, at := range lines {
				t.fail(at, fmt.Sprintf("fabricd's [import] applies to every uplink alike; FRR filtered %v differently (%s)", f, strings.Join(parts, "; ")))
			}
			continue
		}
		if order[0] == "" {
			continue
		}
		pl := t.plists[plistKey{f, order[0]}]
		if pl == nil {
			for _, at := range lines {
				t.fail(at, fmt.Sprintf("no %v prefix-list %s is defined: FRR then refuses every prefix, which [import] cannot say", f, order[0]))
			}
			continue
		}
		rs, why, at := pl.ranges()
		if why != "" {
			for _, l := range lines {
				t.fail(l, fmt.Sprintf("prefix-list %s cannot be translated: %s", pl.name, why))
			}
			if at.line != 0 {
				t.fail(at, why)
			}
			continue
		}
		pl.usedIn = true
		st[f], ranges[f] = list, rs
	}
	if st[ipv4] == list || st[ipv6] == list {
		for f := ipv4; f <= ipv6; f++ {
			switch st[f] {
			case list:
				for _, r := range ranges[f] {
					if r.pfx.Bits() == 0 && r.ge == 0 {
						t.o.allowDef = true
					}
					t.o.allow = append(t.o.allow, r)
				}
			case all:
				zero := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
				if f == ipv6 {
					zero = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
				}
				t.o.allow = append(t.o.allow, prefixRange{pfx: zero, ge: 0, le: f.maxBits()})
			}
		}
	}
	if (st[ipv4] == all && active(ns, ipv4) || st[ipv6] == all && active(ns, ipv6)) && !t.o.allowDef {
		t.note(ref{}, "without an inbound prefix-list FRR accepted a default route from the ToRs; fabricd refuses one unless [import] allow-default = true")
	}
	if st[ipv4] != list && st[ipv6] != list {
		for f := ipv4; f <= ipv6; f++ {
			if st[f] == inactive {
				t.note(ref{}, fmt.Sprintf("%v unicast is not activated for the neighbors, so FRR exchanged no %v routes; fabricd exchanges IPv4 and IPv6 on every session", f, f))
			}
		}
	}
}

// ranges returns the prefix-list's permits as [import] allow ranges. A
// deny entry is harmless when no later permit overlaps it: it then refuses
// only what the implicit deny at the end would.
func (pl *prefixList) ranges() ([]prefixRange, string, ref) {
	var rs []prefixRange
	for i, e := range pl.entries {
		if e.permit {
			rs = append(rs, e.rng)
			continue
		}
		for _, later := range pl.entries[i+1:] {
			if later.permit && later.rng.overlaps(e.rng) {
				return nil, fmt.Sprintf("its deny entry seq %d excludes part of the permit seq %d after it; [import] allow lists only permits", e.seq, later.seq), e.at
			}
		}
	}
	if len(rs) == 0 {
		return nil, "it permits nothing, so FRR refuses every prefix; an empty [import] allow accepts all", ref{}
	}
	return rs, "", ref{}
}

// permits applies the list as FRR does: the first matching entry decides,
// nothing matching is denied.
func (pl *prefixList) permits(p netip.Prefix) bool {
	for _, e := range pl.entries {
		if e.rng.contains(p) {
			return e.permit
		}
	}
	return false
}

// neighborKeys renders a neighbor's [[neighbor]] keys.
func (t *translator) neighborKeys(n *kept) []kv {
	p, g := n.p, n.g
	keys := []kv{{"interface", tomlString(p.name)}}
	remote := p.remote.or(g.remote)
	switch remote.v {
	case "external", "internal":
		keys = append(keys, kv{"remote-as", strconv.Quote(remote.v)})
	default:
		asn, _ := parseASN(remote.v) // checked when read
		keys = append(keys, kv{"remote-as", strconv.FormatUint(uint64(asn), 10)})
	}
	if pw := p.pass.or(g.pass); pw.ok {
		keys = append(keys, kv{"password", tomlString(pw.v)})
	}
	if ttl := p.ttlSec.or(g.ttlSec); ttl.ok {
		keys = append(keys, kv{"ttl-security", "true"})
	}
	if b := p.bfd.or(g.bfd); b.ok {
		keys = append(keys, t.bfdKeys(b)...)
	}
	keys = append(keys, t.maxPrefixKeys(n)...)
	return keys
}

func (t *translator) bfdKeys(b set[bfdSetting]) []kv {
	// FRR's defaults: 300 ms both ways, multiplier 3.
	tx, rx, mult := 300, 300, 3
	switch {
	case b.v.legacy:
		tx, rx, mult = b.v.tx, b.v.rx, b.v.mult
	case b.v.profile != "":
		prof := t.bfdProfiles[b.v.profile]
		if prof == nil {
			t.note(b.at, "BFD profile "+b.v.profile+" is not defined, so FRR uses its defaults, 300 ms × 3")
			break
		}
		prof.used = true
		for _, v := range []struct {
			s   set[int]
			dst *int
		}{{prof.tx, &tx}, {prof.rx, &rx}, {prof.mult, &mult}} {
			if v.s.ok {
				*v.dst = v.s.v
			}
		}
	}
	switch {
	case tx != rx:
		t.fail(b.at, fmt.Sprintf("fabricd has one BFD interval for both directions; FRR transmits every %d ms and receives every %d ms", tx, rx))
		return nil
	case tx > 10000:
		t.fail(b.at, "fabricd's bfd-interval is at most 10000 ms")
		return nil
	}
	return []kv{{"bfd", "true"}, {"bfd-interval", strconv.Itoa(tx)}, {"bfd-multiplier", strconv.Itoa(mult)}}
}

// maxPrefixKeys renders maximum-prefix. fabricd applies one limit to each
// address family of a session.
func (t *translator) maxPrefixKeys(n *kept) []kv {
	var mp [2]set[maxPrefix]
	for f := ipv4; f <= ipv6; f++ {
		mp[f] = n.p.af[f].maxPrefix.or(n.g.af[f].maxPrefix)
	}
	m := mp[ipv4]
	switch {
	case m.ok && mp[ipv6].ok && mp[ipv6].v != m.v:
		t.fail(mp[ipv6].at, "fabricd applies one max-prefixes to each family of a session; IPv4's is used")
	case !m.ok && !mp[ipv6].ok:
		return nil
	case !m.ok:
		m = mp[ipv6]
	}
	other := ipv6
	if m.at == mp[ipv6].at {
		other = ipv4
	}
	if !mp[other].ok && n.act[other] {
		t.note(m.at, "fabricd applies the limit to "+other.String()+" too")
	}
	if m.v.warningOnly {
		t.fail(m.at, "fabricd always ends the session at the limit; it has no warning-only")
		return nil
	}
	if m.v.threshold {
		t.note(m.at, "the warning threshold is not translated (FRR only logs at it)")
	}
	if !m.v.force {
		t.note(m.at, "fabricd counts every prefix received, also those [import] refuses (FRR's force)")
	}
	keys := []kv{{"max-prefixes", strconv.Itoa(m.v.n)}}
	switch r := m.v.restartMin * 60; {
	case r == 0:
		t.note(m.at, "FRR kept the session down until `clear bgp`; fabricd tries again after max-prefixes-restart (30 s)")
	case r > 86400:
		t.fail(m.at, "fabricd's max-prefixes-restart is at most 86400 s (1440 minutes)")
		return nil
	default:
		keys = append(keys, kv{"max-prefixes-restart", strconv.Itoa(r)})
	}
	return keys
}

// outboundFilters checks outbound prefix-lists and AS-path filters:
// fabricd announces only its [[announce]] prefixes to every uplink, so
// a filter that lets all of them through changes nothing.
func (t *translator) outboundFilters(ns []*kept) {
	for _, n := range ns {
		for f := ipv4; f <= ipv6; f++ {
			if !n.act[f] {
				continue
			}
			var mine []netip.Prefix
			for _, a := range t.o.announce {
				if a.pfx.Addr().Is4() == (f == ipv4) {
					mine = append(mine, a.pfx)
				}
			}
			if out := n.p.af[f].plistOut.or(n.g.af[f].plistOut); out.ok {
				pl := t.plists[plistKey{f, out.v}]
				var stopped []string
				for _, p := range mine {
					if pl == nil || !pl.permits(p) {
						stopped = append(stopped, p.String())
					}
				}
				if pl != nil {
					pl.usedOut = true
				}
				if len(stopped) > 0 {
					t.fail(out.at, "it keeps "+strings.Join(stopped, ", ")+" from "+n.p.name+"; fabricd announces every [[announce]] to every uplink")
				} else {
					t.note(out.at, "fabricd announces only its [[announce]] prefixes, and this list lets them all through")
				}
			}
			if fl := n.p.af[f].filterOut.or(n.g.af[f].filterOut); fl.ok {
				a := t.aspaths[fl.v]
				switch {
				case a != nil && a.onlyHome:
					a.used = true
					t.note(fl.at, "fabricd announces only prefixes it originates, as this filter (^$) does")
				case a == nil && len(mine) == 0:
					t.note(fl.at, "the AS-path list is not defined, and there is nothing to announce anyway")
				default:
					if a != nil {
						a.used = true
					}
					t.fail(fl.at, "fabricd has no AS-path filters; it announces every [[announce]] and nothing else")
				}
			}
		}
	}
}

// timerKeys renders [bgp] keepalive, hold-time and connect-retry. fabricd
// has one set for all neighbors; FRR's per-neighbor timers translate if
// every neighbor ends up with the same.
func (t *translator) timerKeys(ns []*kept) {
	dc := t.profile.ok && t.profile.v == "datacenter"
	if !dc && !t.profile.ok && len(ns) > 0 {
		t.note(ref{}, "no `frr defaults datacenter`: "+traditionalNote)
	}
	profTimers, profConnect := [2]int{60, 180}, 120
	if dc {
		profTimers, profConnect = [2]int{3, 9}, 10
	}

	var perNeighbor []set[[2]int]
	values := map[[2]int]bool{}
	for _, n := range ns {
		v := n.p.timers.or(n.g.timers)
		if v.ok {
			perNeighbor = append(perNeighbor, v)
		} else {
			v = t.timers
		}
		if v.ok {
			values[v.v] = true
		} else {
			values[profTimers] = true
		}
	}
	timers, fromNeighbors := t.timers, false
	switch {
	case len(values) > 1:
		for _, v := range perNeighbor {
			t.fail(v.at, "fabricd has one keepalive and hold time for all neighbors, and FRR's neighbors had different ones")
		}
	case len(perNeighbor) > 0:
		if t.timers.ok && t.timers.v != perNeighbor[0].v {
			t.note(t.timers.at, "every neighbor has timers of its own")
		}
		timers, fromNeighbors = perNeighbor[0], true
	}
	if timers.ok {
		ka, hold := timers.v[0], timers.v[1]
		if ka >= 1 && hold >= 3 && ka < hold {
			t.o.bgp = append(t.o.bgp, kv{"keepalive", strconv.Itoa(ka)}, kv{"hold-time", strconv.Itoa(hold)})
		} else {
			const why = "fabricd needs a hold time of at least 3 s and a keepalive from 1 s to below it"
			if fromNeighbors {
				for _, v := range perNeighbor {
					t.fail(v.at, why)
				}
			} else {
				t.fail(timers.at, why)
			}
		}
	}

	var connects []set[int]
	cvalues := map[int]bool{}
	for _, n := range ns {
		c := n.p.connect.or(n.g.connect)
		if c.ok {
			connects = append(connects, c)
			cvalues[c.v] = true
		} else {
			cvalues[profConnect] = true
		}
	}
	switch {
	case len(cvalues) > 1:
		for _, c := range connects {
			t.fail(c.at, "fabricd has one connect-retry for all neighbors, and FRR's neighbors had different ones")
		}
	case len(connects) > 0:
		t.o.bgp = append(t.o.bgp, kv{"connect-retry", strconv.Itoa(connects[0].v)})
	}
}

func (t *translator) gracefulRestart() {
	if !t.asn.ok {
		return
	}
	if t.gr.ok {
		t.o.bgp = append(t.o.bgp, kv{"graceful-restart", strconv.FormatBool(t.gr.v)})
	} else {
		t.note(ref{}, "FRR was only a graceful-restart helper (no `bgp graceful-restart`); fabricd also restarts gracefully itself, so `systemctl restart` keeps the fabric's routes (graceful-restart = false turns it off)")
	}
	restart := 120
	if t.restartTime.ok {
		restart = t.restartTime.v
		t.o.bgp = append(t.o.bgp, kv{"restart-time", strconv.Itoa(restart)})
	}
	if t.stalePath.ok && t.stalePath.v != restart {
		t.fail(t.stalePath.at, fmt.Sprintf("fabricd keeps stale routes for restart-time (%d s)", restart))
	}
}

// leftovers gives the lines whose meaning depended on their users a
// remark: unused lists and profiles, unsupported profile options.
func (t *translator) leftovers() {
	for _, d := range t.bfdOptions {
		if p := t.bfdProfiles[d.profile]; p != nil && p.used {
			t.fail(d.at, d.why)
		} else {
			t.note(d.at, "BFD profile "+d.profile+" is not used by any BGP neighbor")
		}
	}
	for _, p := range t.bfdProfiles {
		if !p.used {
			for _, at := range []ref{p.at, p.tx.at, p.rx.at, p.mult.at} {
				if at.line != 0 {
					t.note(at, "BFD profile "+p.name+" is not used by any BGP neighbor")
				}
			}
		}
	}
	for _, pl := range t.plists {
		switch {
		case pl.usedIn:
			for _, e := range pl.entries {
				if !e.permit {
					t.note(e.at, "the implicit deny at the end of the list refuses the same")
				}
			}
		case pl.usedOut:
			for _, at := range pl.lines {
				t.note(at, "used only as an outbound filter (see its neighbor line)")
			}
		default:
			for _, at := range pl.lines {
				t.note(at, "prefix-list "+pl.name+" is not used as an inbound filter of an active family")
			}
		}
	}
	for name, a := range t.aspaths {
		for _, at := range a.lines {
			switch {
			case a.used && a.onlyHome:
				t.note(at, "the `^$` idiom: fabricd announces only what it originates")
			case a.used:
				t.fail(at, "fabricd has no AS-path filters")
			default:
				t.note(at, "AS-path list "+name+" is not used as an outbound filter")
			}
		}
	}
}
