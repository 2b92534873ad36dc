package frrconf

import (
	"bytes"
	"strings"
)

// translator holds what the configuration says, with the line each part
// came from, until resolve decides what fabricd makes of it.
type translator struct {
	srcs    []Source
	texts   map[ref]string // the lines that got a remark, for the comments
	remarks map[ref]*remark
	general []remark // about the configuration as a whole

	stack []*node

	profile     set[string] // frr defaults datacenter|traditional
	asn         set[uint32]
	asnText     string
	routerID    set[string]
	bgpSeen     bool
	defaultOn   [2]set[bool] // bgp default ipv4-unicast / ipv6-unicast
	importCheck set[bool]
	gr          set[bool]
	restartTime set[int]
	stalePath   set[int]
	timers      set[[2]int] // timers bgp KEEPALIVE HOLD
	logLevel    set[string]
	nexthopObjs set[bool]

	peers     map[string]*peer
	peerOrder []*peer // interface neighbors, in definition order

	networks  [2][]network
	statics   [2][]static
	redistSta [2]set[bool]

	plists      map[plistKey]*prefixList
	aspaths     map[string]*aspathList
	bfdProfiles map[string]*bfdProfile
	// deferred lines whose verdict depends on what uses them
	bfdOptions []deferred

	o *out // what resolve makes of it
}

type deferred struct {
	at      ref
	profile string
	why     string
}

// node is a configuration node (FRR's CLI node): what a line means
// depends on the block it is in.
type node struct {
	kind    nodeKind
	indent  int
	family  family      // nodeAF
	profile *bfdProfile // nodeBFDProfile
	// nodeBlock: every line of a block fabricd has no use for gets the
	// same remark.
	untranslated bool
	why          string
}

type nodeKind int

const (
	nodeTop nodeKind = iota
	nodeBGP
	nodeAF
	nodeInterface
	nodeBFD
	nodeBFDProfile
	nodeBlock
)

func newTranslator(srcs []Source) *translator {
	return &translator{
		srcs:        srcs,
		texts:       map[ref]string{},
		remarks:     map[ref]*remark{},
		peers:       map[string]*peer{},
		plists:      map[plistKey]*prefixList{},
		aspaths:     map[string]*aspathList{},
		bfdProfiles: map[string]*bfdProfile{},
	}
}

// parse reads one file. Like FRR's own reader, a line that the current
// node does not know is tried in the enclosing nodes, so blocks need no
// `exit`; unknown blocks are recognised by their indentation.
func (t *translator) parse(src int, text []byte) {
	t.stack = []*node{{kind: nodeTop, indent: -1}}
	text = bytes.TrimPrefix(text, []byte("\xef\xbb\xbf")) // a byte-order mark from an editor
	for i, raw := range bytes.Split(text, []byte("\n")) {
		s := strings.TrimRight(string(raw), "\r")
		trimmed := strings.TrimLeft(s, " \t")
		if trimmed == "" || trimmed[0] == '!' || trimmed[0] == '#' {
			continue
		}
		l := &line{at: ref{src, i + 1}, indent: len(s) - len(trimmed), words: strings.Fields(trimmed)}
		if len(l.words) == 0 {
			continue
		}
		t.texts[l.at] = strings.TrimSpace(s)
		if l.words[0] == "no" {
			l.neg, l.words = true, l.words[1:]
			if len(l.words) == 0 {
				t.fail(l.at, "incomplete command")
				continue
			}
		}
		t.dispatch(l)
	}
}

func (t *translator) dispatch(l *line) {
	for {
		n := t.stack[len(t.stack)-1]
		var owned bool
		switch n.kind {
		case nodeTop:
			owned = t.top(l)
			if !owned {
				// An unknown command may open an unknown block: its
				// indented lines belong to it.
				t.fail(l.at, "unknown or unsupported command")
				t.push(&node{kind: nodeBlock, indent: l.indent, untranslated: true, why: "inside an untranslated block"})
			}
			return
		case nodeBGP:
			owned = t.bgp(l)
		case nodeAF:
			owned = t.af(l, n.family)
		case nodeInterface:
			owned = t.iface(l)
		case nodeBFD:
			owned = t.bfd(l)
		case nodeBFDProfile:
			owned = t.bfdProfileLine(l, n.profile)
		case nodeBlock:
			owned = t.block(l, n)
		}
		if owned {
			return
		}
		t.pop()
	}
}

func (t *translator) push(n *node) { t.stack = append(t.stack, n) }

func (t *translator) pop() {
	if len(t.stack) > 1 {
		t.stack = t.stack[:len(t.stack)-1]
	}
}

// block handles the lines of a block fabricd does not translate: its
// indented lines and its `exit`.
func (t *translator) block(l *line, n *node) bool {
	switch {
	case !l.neg && len(l.words) == 1 && (l.words[0] == "exit" || l.words[0] == "exit-address-family" || l.words[0] == "exit-vrf"):
		t.pop()
		return true
	case l.indent > n.indent:
		if n.untranslated {
			t.fail(l.at, n.why)
		} else {
			t.note(l.at, n.why)
		}
		return true
	}
	return false
}

// openBlock makes l the head of a block whose lines all get why.
func (t *translator) openBlock(l *line, untranslated bool, why string) {
	if untranslated {
		t.fail(l.at, why)
	} else {
		t.note(l.at, why)
	}
	t.push(&node{kind: nodeBlock, indent: l.indent, untranslated: untranslated, why: why})
}

// top handles global commands.
func (t *translator) top(l *line) bool {
	w0, w1 := l.word(0), l.word(1)
	switch {
	case w0 == "end" || w0 == "exit":
		// Leaving configuration mode, as vtysh transcripts have it.
	case w0 == "frr" && w1 == "version":
		t.note(l.at, "the FRR version")
	case w0 == "frr" && w1 == "defaults":
		t.frrDefaults(l)
	case w0 == "hostname" || w0 == "domainname":
		t.note(l.at, "fabricd uses the system's host name")
	case w0 == "log":
		t.logLine(l)
	case w0 == "service" || w0 == "password" || w0 == "enable" || w0 == "banner" || w0 == "username" || w0 == "agentx" || w0 == "debug":
		t.note(l.at, "vtysh and daemon settings; fabricctl talks to fabricd over its API socket, guarded by file permissions")
	case w0 == "line":
		t.openBlock(l, false, "vty settings; fabricctl talks to fabricd over its API socket, guarded by file permissions")
	case w0 == "router" && w1 == "bgp":
		t.routerBGP(l)
	case w0 == "router":
		t.openBlock(l, true, "fabricd speaks only BGP")
	case (w0 == "ip" || w0 == "ipv6") && w1 == "route":
		t.staticRoute(l)
	case (w0 == "ip" || w0 == "ipv6") && w1 == "prefix-list":
		t.prefixListLine(l)
	case w0 == "bgp" && w1 == "as-path" && l.word(2) == "access-list":
		t.aspathLine(l)
	case (w0 == "ip" || w0 == "ipv6") && w1 == "forwarding":
		t.note(l.at, "fabricd does not change forwarding; set the sysctl (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding) with the system's configuration")
	case w0 == "zebra" && w1 == "nexthop" && l.word(2) == "kernel" && l.word(3) == "enable" && len(l.words) == 4:
		t.nexthopObjs.put(!l.neg, l.at)
	case w0 == "interface" && len(l.words) == 2 && !l.neg:
		t.push(&node{kind: nodeInterface, indent: l.indent})
	case w0 == "interface" && len(l.words) == 1:
		t.fail(l.at, "incomplete command")
	case w0 == "interface":
		t.openBlock(l, true, "interfaces in a VRF are not translated")
	case w0 == "bfd" && len(l.words) == 1 && !l.neg:
		t.push(&node{kind: nodeBFD, indent: l.indent})
	case w0 == "route-map":
		t.openBlock(l, true, "route-maps are not translated")
	case w0 == "vrf":
		t.openBlock(l, true, "VRFs are not translated")
	default:
		return false
	}
	return true
}

func (t *translator) frrDefaults(l *line) {
	switch p := l.word(2); {
	case l.neg || len(l.words) != 3:
		t.fail(l.at, "unknown frr defaults profile")
	case p == "datacenter":
		t.profile.put(p, l.at)
	case p == "traditional":
		t.profile.put(p, l.at)
		t.note(l.at, traditionalNote)
	default:
		t.fail(l.at, "unknown frr defaults profile")
	}
}

const traditionalNote = "FRR's traditional profile uses keepalive 60 s, hold time 180 s and connect retry 120 s where they are not configured; fabricd's defaults are the data-centre profile's 3, 9 and 10 s (a session uses the lower hold time of its two ends anyway)"

// logLevels maps FRR's syslog levels to fabricd's.
var logLevels = map[string]string{
	"emergencies": "error", "alerts": "error", "critical": "error", "errors": "error",
	"warnings": "warn", "notifications": "info", "informational": "info", "debugging": "debug",
}

// verbosity orders fabricd's levels, most verbose first.
var verbosity = map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3}

func (t *translator) logLine(l *line) {
	const dest = "fabricd logs to stderr, which systemd passes to the journal"
	var level string
	switch l.word(1) {
	case "syslog", "stdout":
		level = l.word(2)
	case "file":
		level = l.word(3)
	}
	fl, ok := logLevels[level]
	if l.neg || !ok {
		t.note(l.at, dest)
		return
	}
	if !t.logLevel.ok || verbosity[fl] < verbosity[t.logLevel.v] {
		t.logLevel.put(fl, l.at)
	}
	t.note(l.at, dest+"; the level is [log] level")
}

// iface handles the lines of an `interface` block. FRR's zebra only sends
// router advertisements there, which fabricd does by itself.
func (t *translator) iface(l *line) bool {
	w0, w1 := l.word(0), l.word(1)
	switch {
	case w0 == "exit" && len(l.words) == 1:
		t.pop()
	case w0 == "ipv6" && w1 == "nd":
		t.note(l.at, "fabricd sends router advertisements on its uplinks by itself (FRR learns an unnumbered peer from them)")
	case w0 == "description" || w0 == "link-detect":
		t.note(l.at, "no effect on routing")
	case (w0 == "ip" || w0 == "ipv6") && w1 == "address":
		t.fail(l.at, "fabricd does not configure addresses: keep them in the system's network configuration ([[announce-addresses]] can announce them)")
	case w0 == "ip" || w0 == "ipv6":
		if topIPCommands[w1] {
			return false
		}
		t.fail(l.at, "unsupported interface setting")
	case interfaceCommands[w0]:
		t.fail(l.at, "unsupported interface setting")
	default:
		return false
	}
	return true
}

// topIPCommands are "ip X" commands that exist only outside an interface.
var topIPCommands = map[string]bool{"route": true, "prefix-list": true, "forwarding": true, "nht": true,
	"protocol": true, "import-table": true, "as-path": true, "community-list": true, "extcommunity-list": true,
	"access-list": true, "mroute": true, "multicast": true, "table": true, "router-id": true}

var interfaceCommands = map[string]bool{"shutdown": true, "bandwidth": true, "multicast": true, "mpls": true,
	"link-params": true, "evpn": true, "isis": true, "openfabric": true, "pbr-policy": true, "mtu": true}

// bfd handles the `bfd` block: only profiles are translated.
func (t *translator) bfd(l *line) bool {
	switch w0 := l.word(0); {
	case w0 == "exit" && len(l.words) == 1:
		t.pop()
	case w0 == "profile" && len(l.words) == 2 && !l.neg:
		p := t.bfdProfiles[l.words[1]]
		if p == nil {
			p = &bfdProfile{name: l.words[1], at: l.at}
			t.bfdProfiles[p.name] = p
		}
		t.push(&node{kind: nodeBFDProfile, indent: l.indent, profile: p})
	case w0 == "peer":
		t.openBlock(l, true, "BFD sessions outside BGP are not translated")
	default:
		return false
	}
	return true
}

func (t *translator) bfdProfileLine(l *line, p *bfdProfile) bool {
	w0 := l.word(0)
	var dst *set[int]
	lo, hi := 10, 60000
	switch w0 {
	case "exit":
		t.pop()
		return true
	case "transmit-interval":
		dst = &p.tx
	case "receive-interval":
		dst = &p.rx
	case "detect-multiplier":
		dst, lo, hi = &p.mult, 2, 255
	case "echo-mode", "echo", "echo-interval", "passive-mode", "minimum-ttl", "shutdown":
		t.bfdOptions = append(t.bfdOptions, deferred{at: l.at, profile: p.name, why: "fabricd's BFD has no " + w0})
		return true
	default:
		return false
	}
	if l.neg {
		*dst = set[int]{}
		return true
	}
	n, err := number(l.word(1), lo, hi)
	if err != nil || len(l.words) != 2 {
		t.fail(l.at, "expected "+w0+" and a number")
		return true
	}
	dst.put(n, l.at)
	return true
}
