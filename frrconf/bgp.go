package frrconf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// peer is an interface neighbor or a peer-group, with the settings FRR
// would apply to its session.
type peer struct {
	name    string
	group   bool
	lines   []ref // every line that configures it
	member  set[string]
	remote  set[string] // "external", "internal" or an AS number
	pass    set[string]
	ttlSec  set[bool]
	bfd     set[bfdSetting]
	timers  set[[2]int]
	connect set[int]
	af      [2]afPeer
}

// afPeer holds a neighbor's settings in one address family.
type afPeer struct {
	activate  set[bool]
	plistIn   set[string]
	plistOut  set[string]
	maxPrefix set[maxPrefix]
	filterOut set[string]
}

type maxPrefix struct {
	n           int
	warningOnly bool
	threshold   bool
	force       bool
	restartMin  int // 0: FRR keeps the session down until cleared by hand
}

type bfdSetting struct {
	profile      string
	legacy       bool // neighbor X bfd MULT RX TX
	mult, rx, tx int
}

type bfdProfile struct {
	name         string
	at           ref
	used         bool
	tx, rx, mult set[int]
}

type network struct {
	pfx netip.Prefix
	at  ref
}

type static struct {
	pfx  netip.Prefix
	at   ref
	used bool
}

type plistKey struct {
	fam  family
	name string
}

type prefixList struct {
	name    string
	fam     family
	entries []plEntry
	lines   []ref // every line, entries and descriptions
	usedIn  bool  // translated into [import]
	usedOut bool  // checked as an outbound filter
}

type plEntry struct {
	seq    int
	permit bool
	rng    prefixRange
	at     ref
}

type aspathList struct {
	lines    []ref
	onlyHome bool // every entry is "permit ^$": routes we originate
	used     bool
}

func (t *translator) routerBGP(l *line) {
	if l.neg {
		t.fail(l.at, "removing the BGP instance is not translated")
		return
	}
	if len(l.words) != 3 {
		t.openBlock(l, true, "BGP views and VRFs are not translated")
		return
	}
	asn, err := parseASN(l.words[2])
	switch {
	case err != nil:
		t.openBlock(l, true, err.Error())
		return
	case t.bgpSeen && l.words[2] != t.asnText:
		t.openBlock(l, true, "a second BGP instance is not translated")
		return
	}
	t.bgpSeen, t.asnText = true, l.words[2]
	if !t.asn.ok {
		t.asn.put(asn, l.at)
	}
	t.push(&node{kind: nodeBGP, indent: l.indent})
}

// bgp handles a line inside `router bgp`.
func (t *translator) bgp(l *line) bool {
	w0, w1 := l.word(0), l.word(1)
	switch {
	case w0 == "exit" && len(l.words) == 1:
		t.pop()
	case w0 == "bgp":
		if globalBGPLists[w1] {
			return false // bgp as-path access-list and friends are global
		}
		t.bgpKnob(l)
	case w0 == "neighbor":
		if afNeighborOptions[l.word(2)] || l.word(2) == "capability" && l.word(3) == "orf" {
			// FRR's older syntax: IPv4 unicast settings outside
			// address-family.
			return t.af(l, ipv4)
		}
		t.neighbor(l)
	case w0 == "timers" && w1 == "bgp":
		t.timersLine(l, &t.timers)
	case w0 == "address-family":
		t.addressFamily(l)
	case afCommands[w0]:
		return t.af(l, ipv4)
	case w0 == "coalesce-time" || w0 == "write-quanta" || w0 == "read-quanta" || w0 == "update-delay":
		t.note(l.at, "update pacing; fabricd sends its few prefixes at once")
	default:
		return false
	}
	return true
}

// globalBGPLists are `bgp ...` commands of the global node.
var globalBGPLists = map[string]bool{"as-path": true, "community-list": true, "extcommunity-list": true, "large-community-list": true}

func (t *translator) bgpKnob(l *line) {
	w := strings.Join(l.words[1:], " ")
	switch {
	case w == "router-id "+l.word(2) && len(l.words) == 3 && !l.neg:
		t.routerID.put(l.words[2], l.at)
	case w == "default ipv4-unicast":
		t.defaultOn[ipv4].put(!l.neg, l.at)
	case w == "default ipv6-unicast":
		t.defaultOn[ipv6].put(!l.neg, l.at)
	case strings.HasPrefix(w, "bestpath as-path multipath-relax") && !l.neg:
		t.note(l.at, "fabricd always balances across uplinks whose AS paths are equally long, whatever their ASes")
	case w == "bestpath compare-routerid" || w == "deterministic-med" || w == "log-neighbor-changes" ||
		w == "suppress-duplicates" || w == "always-compare-med" || w == "bestpath med missing-as-worst":
		t.note(l.at, "no effect on what fabricd installs: it prefers the shortest AS path and balances over every uplink offering it")
	case w == "ebgp-requires-policy":
		if l.neg {
			t.note(l.at, "fabricd needs no policy on its eBGP sessions")
		} else {
			t.fail(l.at, "with it and without route-maps FRR exchanges no routes; fabricd would")
		}
	case w == "network import-check":
		t.importCheck.put(!l.neg, l.at)
	case w == "graceful-restart":
		t.gr.put(!l.neg, l.at)
	case w == "graceful-restart-disable":
		t.gr.put(l.neg, l.at)
	case w == "graceful-restart preserve-fw-state":
		t.note(l.at, "fabricd always leaves its routes in the kernel while it restarts")
	case strings.HasPrefix(w, "graceful-restart restart-time ") && len(l.words) == 4 && !l.neg:
		if n, err := number(l.words[3], 1, 4095); err == nil {
			t.restartTime.put(n, l.at)
		} else {
			t.fail(l.at, "fabricd's restart-time is 1-4095 s: "+err.Error())
		}
	case strings.HasPrefix(w, "graceful-restart stalepath-time ") && len(l.words) == 4 && !l.neg:
		if n, err := number(l.words[3], 1, 4095); err == nil {
			t.stalePath.put(n, l.at)
		} else {
			t.fail(l.at, "fabricd keeps stale routes for restart-time, 1-4095 s: "+err.Error())
		}
	default:
		t.fail(l.at, "no equivalent in fabricd")
	}
}

// timersLine reads `timers bgp K H` (or a neighbor's `timers K H`, whose
// words start two later).
func (t *translator) timersLine(l *line, dst *set[[2]int]) {
	k, h := l.word(len(l.words)-2), l.word(len(l.words)-1)
	if l.neg {
		*dst = set[[2]int]{}
		return
	}
	ka, err1 := number(k, 0, 65535)
	hold, err2 := number(h, 0, 65535)
	if err1 != nil || err2 != nil {
		t.fail(l.at, "expected a keepalive and a hold time in seconds")
		return
	}
	dst.put([2]int{ka, hold}, l.at)
}

func (t *translator) addressFamily(l *line) {
	switch strings.Join(l.words[1:], " ") {
	case "ipv4", "ipv4 unicast":
		if !l.neg {
			t.push(&node{kind: nodeAF, indent: l.indent, family: ipv4})
			return
		}
	case "ipv6", "ipv6 unicast":
		if !l.neg {
			t.push(&node{kind: nodeAF, indent: l.indent, family: ipv6})
			return
		}
	}
	t.openBlock(l, true, "fabricd exchanges only IPv4 and IPv6 unicast")
}

// afCommands are commands of an address-family block (and, for IPv4,
// FRR's older syntax directly under router bgp).
var afCommands = map[string]bool{"network": true, "redistribute": true, "maximum-paths": true,
	"aggregate-address": true, "distance": true, "table-map": true, "import": true, "export": true,
	"rd": true, "rt": true, "label": true, "nexthop": true, "bgp": true}

// afNeighborOptions are a neighbor's per-family settings.
var afNeighborOptions = map[string]bool{"activate": true, "soft-reconfiguration": true, "prefix-list": true,
	"maximum-prefix": true, "maximum-prefix-out": true, "filter-list": true, "route-map": true,
	"next-hop-self": true, "allowas-in": true, "send-community": true, "remove-private-AS": true,
	"route-reflector-client": true, "route-server-client": true, "default-originate": true,
	"distribute-list": true, "unsuppress-map": true, "weight": true, "addpath-tx-all-paths": true,
	"addpath-tx-bestpath-per-AS": true, "addpath-rx-paths-limit": true, "addpath-tx-best-selected": true,
	"as-override": true, "attribute-unchanged": true, "soo": true, "orf": true}

// af handles a line of an address-family block.
func (t *translator) af(l *line, f family) bool {
	w0 := l.word(0)
	switch {
	case w0 == "exit-address-family" || w0 == "exit":
		if t.stack[len(t.stack)-1].kind != nodeAF {
			return false // `exit` under router bgp itself
		}
		t.pop()
	case w0 == "neighbor":
		if !afNeighborOptions[l.word(2)] && !(l.word(2) == "capability" && l.word(3) == "orf") {
			return false // a session setting: FRR leaves the address family
		}
		t.afNeighbor(l, f)
	case w0 == "network":
		t.networkLine(l, f)
	case w0 == "redistribute":
		if l.word(1) == "static" && len(l.words) == 2 {
			t.redistSta[f].put(!l.neg, l.at)
			return true
		}
		hint := ""
		if l.word(1) == "connected" {
			hint = "; [[announce-addresses]] announces interface addresses, [[announce]] fixed prefixes"
		}
		t.fail(l.at, "fabricd announces only the prefixes it is given"+hint)
	case w0 == "maximum-paths":
		n, err := number(l.word(len(l.words)-1), 1, 1<<16)
		if l.neg || err != nil || n > 1 {
			t.note(l.at, "fabricd installs every uplink with an equally short AS path (ECMP)")
		} else {
			t.fail(l.at, "fabricd always balances over every equal uplink")
		}
	case afCommands[w0]:
		t.fail(l.at, "no equivalent in fabricd")
	default:
		return false
	}
	return true
}

func (t *translator) networkLine(l *line, f family) {
	if l.neg {
		t.fail(l.at, "removing a network is not translated")
		return
	}
	if len(l.words) != 2 {
		t.fail(l.at, "network options (route-map, backdoor, label-index) are not translated")
		return
	}
	p, masked, err := parsePrefix(l.words[1], f)
	if err != nil {
		t.fail(l.at, err.Error())
		return
	}
	if masked {
		t.note(l.at, "FRR ignores the host bits: "+p.String())
	}
	t.networks[f] = append(t.networks[f], network{pfx: p, at: l.at})
}

// staticRoute handles `ip route` and `ipv6 route`: blackholes become the
// blackhole of an announced prefix.
func (t *translator) staticRoute(l *line) {
	f := ipv4
	if l.word(0) == "ipv6" {
		f = ipv6
	}
	if l.neg {
		t.fail(l.at, "removing a route is not translated")
		return
	}
	p, masked, err := parsePrefix(l.word(2), f)
	if err != nil {
		t.fail(l.at, err.Error())
		return
	}
	switch {
	case len(l.words) == 4 && (l.words[3] == "blackhole" || strings.EqualFold(l.words[3], "Null0")):
	case len(l.words) == 4 && l.words[3] == "reject":
		t.fail(l.at, "a reject route answers with ICMP unreachable; fabricd installs only blackholes")
		return
	case len(l.words) > 4 && (l.words[3] == "blackhole" || strings.EqualFold(l.words[3], "Null0")):
		t.fail(l.at, "options of a blackhole route (distance, tag, table, VRF) are not translated")
		return
	default:
		t.fail(l.at, "fabricd installs no static routes but blackholes for announced prefixes")
		return
	}
	if masked {
		t.note(l.at, "FRR ignores the host bits: "+p.String())
	}
	t.statics[f] = append(t.statics[f], static{pfx: p, at: l.at})
}

// prefixListLine handles `ip prefix-list NAME [seq N] permit|deny PREFIX
// [ge X] [le Y]` (and `any`), and descriptions.
func (t *translator) prefixListLine(l *line) {
	f := ipv4
	if l.word(0) == "ipv6" {
		f = ipv6
	}
	name := l.word(2)
	if name == "" || l.neg {
		t.fail(l.at, "not translated")
		return
	}
	key := plistKey{f, name}
	pl := t.plists[key]
	if pl == nil {
		pl = &prefixList{name: name, fam: f}
		t.plists[key] = pl
	}
	pl.lines = append(pl.lines, l.at)
	rest := l.words[3:]
	if len(rest) > 0 && rest[0] == "description" {
		return
	}
	// Without seq, FRR numbers an entry after the highest so far, in
	// steps of 5.
	seq := 5
	if len(pl.entries) > 0 {
		seq = pl.entries[len(pl.entries)-1].seq/5*5 + 5
	}
	if len(rest) >= 2 && rest[0] == "seq" {
		n, err := number(rest[1], 1, 1<<31-1)
		if err != nil {
			t.fail(l.at, "bad sequence number: "+err.Error())
			return
		}
		seq, rest = n, rest[2:]
	}
	e, err := parsePLEntry(rest, f)
	if err != "" {
		t.fail(l.at, err)
		return
	}
	e.seq, e.at = seq, l.at
	if e.masked {
		t.note(l.at, "FRR ignores the host bits: "+e.rng.pfx.String())
	}
	// Entries are kept in sequence order; a repeated sequence number
	// replaces the entry, as in FRR.
	for i := range pl.entries {
		if pl.entries[i].seq == seq {
			t.note(pl.entries[i].at, fmt.Sprintf("replaced by line %d (same sequence number)", l.at.line))
			pl.entries[i] = e.plEntry
			return
		}
	}
	i := 0
	for i < len(pl.entries) && pl.entries[i].seq < seq {
		i++
	}
	pl.entries = append(pl.entries[:i], append([]plEntry{e.plEntry}, pl.entries[i:]...)...)
}

type parsedEntry struct {
	plEntry
	masked bool
}

// parsePLEntry reads "permit|deny PREFIX [ge X] [le Y]" or "permit|deny
// any" with FRR's rules: len < ge <= le <= the address length.
func parsePLEntry(words []string, f family) (parsedEntry, string) {
	var e parsedEntry
	if len(words) < 2 || words[0] != "permit" && words[0] != "deny" {
		return e, "expected permit or deny and a prefix"
	}
	e.permit = words[0] == "permit"
	if words[1] == "any" {
		if len(words) != 2 {
			return e, "nothing may follow any"
		}
		all := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if f == ipv6 {
			all = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		e.rng = prefixRange{pfx: all, ge: 0, le: f.maxBits()}
		return e, ""
	}
	p, masked, err := parsePrefix(words[1], f)
	if err != nil {
		return e, err.Error()
	}
	e.masked = masked
	e.rng = prefixRange{pfx: p, ge: p.Bits(), le: p.Bits()}
	var ge, le int
	rest := words[2:]
	for len(rest) >= 2 {
		n, err := strconv.Atoi(rest[1])
		if err != nil || n < 0 || n > f.maxBits() {
			return e, "bad " + rest[0] + " value " + rest[1]
		}
		switch {
		case rest[0] == "ge" && ge == 0 && le == 0:
			ge = n
		case rest[0] == "le" && le == 0:
			le = n
		default:
			return e, "expected [ge N] [le N]"
		}
		rest = rest[2:]
	}
	if len(rest) > 0 {
		return e, "expected [ge N] [le N]"
	}
	if ge != 0 && ge <= p.Bits() || le != 0 && le <= p.Bits() || ge != 0 && le != 0 && ge > le {
		return e, "FRR refuses this range: it needs len < ge <= le"
	}
	if ge != 0 {
		e.rng.ge, e.rng.le = ge, f.maxBits()
	}
	if le != 0 {
		e.rng.le = le
	}
	return e, ""
}

// aspathLine records `bgp as-path access-list NAME [seq N] permit|deny RE`.
// fabricd has no AS-path filters, but the one idiom servers use, an
// outbound filter that passes only `^$` (routes we originate), is what
// fabricd always does.
func (t *translator) aspathLine(l *line) {
	name := l.word(3)
	if name == "" || l.neg {
		t.fail(l.at, "not translated")
		return
	}
	a := t.aspaths[name]
	if a == nil {
		a = &aspathList{onlyHome: true}
		t.aspaths[name] = a
	}
	a.lines = append(a.lines, l.at)
	rest := l.words[4:]
	if len(rest) >= 2 && rest[0] == "seq" {
		rest = rest[2:]
	}
	if len(rest) != 2 || rest[0] != "permit" || rest[1] != "^$" {
		a.onlyHome = false
	}
}
