package frrconf

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// lookup returns the neighbor or peer-group name and records l as one of
// its lines, or reports l and returns nil.
func (t *translator) lookup(l *line, name string) *peer {
	p := t.peers[name]
	if p == nil {
		if _, err := netip.ParseAddr(name); err == nil {
			t.fail(l.at, "fabricd peers only over interfaces (BGP unnumbered), not with addresses")
		} else {
			t.fail(l.at, "neighbor "+name+" is not defined (FRR needs `neighbor "+name+" interface` or `peer-group` first)")
		}
		return nil
	}
	p.lines = append(p.lines, l.at)
	return p
}

// neighbor handles the session settings of `neighbor NAME ...` in router bgp.
func (t *translator) neighbor(l *line) {
	name, opt := l.word(1), l.word(2)
	if name == "" || opt == "" {
		t.fail(l.at, "incomplete command")
		return
	}
	if l.neg && opt != "" && opt != "interface" && opt != "peer-group" {
		// `no neighbor X OPTION` only restores a default.
		if p := t.lookup(l, name); p != nil {
			t.clearOption(l, p, opt)
		}
		return
	}
	switch opt {
	case "interface":
		t.interfaceNeighbor(l)
		return
	case "peer-group":
		if len(l.words) == 3 {
			t.definePeerGroup(l, name)
			return
		}
	}
	if l.neg {
		t.fail(l.at, "removing a neighbor is not translated")
		return
	}
	p := t.lookup(l, name)
	if p == nil {
		return
	}
	args := l.words[3:]
	switch opt {
	case "peer-group":
		if len(args) != 1 {
			t.fail(l.at, "expected one peer-group name")
			return
		}
		t.joinGroup(l, p, args[0])
	case "remote-as":
		t.remoteAS(l, p, args)
	case "password":
		switch pw := strings.Join(args, " "); {
		case len(args) != 1:
			t.fail(l.at, "expected one password word")
		case len(pw) > 80:
			t.fail(l.at, "TCP MD5 keys are at most 80 bytes")
		case !printable(pw):
			t.fail(l.at, "the password has control characters or is not UTF-8")
		default:
			p.pass.put(pw, l.at)
		}
	case "bfd":
		t.bfdNeighbor(l, p, args)
	case "timers":
		switch {
		case len(args) == 2 && args[0] == "connect":
			if n, err := number(args[1], 1, 65535); err == nil {
				p.connect.put(n, l.at)
			} else {
				t.fail(l.at, err.Error())
			}
		case len(args) == 2:
			t.timersLine(l, &p.timers)
		default:
			t.fail(l.at, "only `timers KEEPALIVE HOLD` and `timers connect N` are translated")
		}
	case "ttl-security":
		if len(args) == 2 && args[0] == "hops" && args[1] == "1" {
			p.ttlSec.put(true, l.at)
		} else {
			t.fail(l.at, "fabricd's ttl-security accepts only the directly connected ToR (hops 1)")
		}
	case "ebgp-multihop":
		t.note(l.at, "fabricd's sessions are always with the directly connected ToR; the TTL it sends is 1 (255 with ttl-security)")
	case "description":
		t.note(l.at, "no effect on routing")
	case "capability":
		if len(args) == 1 && args[0] == "extended-nexthop" {
			t.note(l.at, "fabricd always uses extended next hops (RFC 8950) with its interface neighbors")
		} else {
			t.fail(l.at, "no equivalent in fabricd")
		}
	case "advertisement-interval", "solo", "disable-connected-check":
		t.note(l.at, "no effect for a server that only announces its own prefixes to a directly connected ToR")
	default:
		t.fail(l.at, "no equivalent in fabricd")
	}
}

// clearOption handles `no neighbor X OPTION`, which FRR writes only to
// turn off an option that is on by default.
func (t *translator) clearOption(l *line, p *peer, opt string) {
	switch opt {
	case "password":
		p.pass = set[string]{}
	case "bfd":
		p.bfd = set[bfdSetting]{}
	case "ttl-security":
		p.ttlSec = set[bool]{}
	case "timers":
		p.timers, p.connect = set[[2]int]{}, set[int]{}
	case "capability", "ebgp-multihop", "description", "advertisement-interval", "solo", "disable-connected-check":
		t.note(l.at, "no effect in fabricd")
	default:
		t.fail(l.at, "no equivalent in fabricd")
	}
}

// interfaceNeighbor handles `neighbor IF interface [v6only] [peer-group PG
// | remote-as X]`.
func (t *translator) interfaceNeighbor(l *line) {
	name := l.words[1]
	if l.neg {
		t.fail(l.at, "removing a neighbor is not translated")
		return
	}
	if !validInterface(name) {
		t.fail(l.at, "not a valid interface name")
		return
	}
	if p := t.peers[name]; p != nil && p.group {
		t.fail(l.at, name+" is a peer-group")
		return
	}
	args := l.words[3:]
	if len(args) > 0 && args[0] == "v6only" {
		// Only says the session is over the link-local address, as every
		// fabricd session is.
		args = args[1:]
	}
	if len(args) != 0 && (len(args) < 2 || args[0] != "peer-group" && args[0] != "remote-as") {
		t.fail(l.at, "expected `neighbor IF interface [v6only] [peer-group PG | remote-as AS]`")
		return
	}
	if len(args) > 0 && args[0] == "peer-group" && len(args) != 2 {
		t.fail(l.at, "expected one peer-group name")
		return
	}
	p := t.peers[name]
	if p == nil {
		p = &peer{name: name}
		t.peers[name] = p
		t.peerOrder = append(t.peerOrder, p)
	}
	p.lines = append(p.lines, l.at)
	if len(args) == 0 {
		return
	}
	if args[0] == "peer-group" {
		t.joinGroup(l, p, args[1])
	} else {
		t.remoteAS(l, p, args[1:])
	}
}

func (t *translator) definePeerGroup(l *line, name string) {
	if l.neg {
		t.fail(l.at, "removing a peer-group is not translated")
		return
	}
	p := t.peers[name]
	switch {
	case p != nil && !p.group:
		t.fail(l.at, name+" is already an interface neighbor")
	case p == nil:
		t.peers[name] = &peer{name: name, group: true, lines: []ref{l.at}}
	}
}

func (t *translator) joinGroup(l *line, p *peer, group string) {
	g := t.peers[group]
	switch {
	case p.group:
		t.fail(l.at, "a peer-group cannot join another")
	case g == nil || !g.group:
		t.fail(l.at, "peer-group "+group+" is not defined")
	default:
		p.member.put(group, l.at)
	}
}

func (t *translator) remoteAS(l *line, p *peer, args []string) {
	if len(args) != 1 {
		t.fail(l.at, "expected external, internal or an AS number")
		return
	}
	switch a := args[0]; a {
	case "external", "internal":
		p.remote.put(a, l.at)
	default:
		if _, err := parseASN(a); err != nil {
			t.fail(l.at, err.Error())
			return
		}
		p.remote.put(a, l.at)
	}
}

// bfdNeighbor handles `neighbor X bfd`, `bfd profile NAME` and the older
// `bfd MULTIPLIER RX TX`.
func (t *translator) bfdNeighbor(l *line, p *peer, args []string) {
	switch {
	case len(args) == 0:
		p.bfd.put(bfdSetting{}, l.at)
	case len(args) == 2 && args[0] == "profile":
		p.bfd.put(bfdSetting{profile: args[1]}, l.at)
	case len(args) == 3:
		mult, err1 := number(args[0], 2, 255)
		rx, err2 := number(args[1], 10, 60000)
		tx, err3 := number(args[2], 10, 60000)
		if err1 != nil || err2 != nil || err3 != nil {
			t.fail(l.at, "expected `bfd MULTIPLIER RX TX`")
			return
		}
		p.bfd.put(bfdSetting{legacy: true, mult: mult, rx: rx, tx: tx}, l.at)
	default:
		t.fail(l.at, "only `bfd`, `bfd profile NAME` and `bfd MULTIPLIER RX TX` are translated")
	}
}

// afNeighbor handles a neighbor's settings in address family f.
func (t *translator) afNeighbor(l *line, f family) {
	name, opt, args := l.word(1), l.word(2), l.words[3:]
	p := t.lookup(l, name)
	if p == nil {
		return
	}
	a := &p.af[f]
	switch opt {
	case "activate":
		if len(args) != 0 {
			t.fail(l.at, "unexpected words after activate")
			return
		}
		a.activate.put(!l.neg, l.at)
	case "prefix-list":
		if len(args) != 2 || args[1] != "in" && args[1] != "out" {
			t.fail(l.at, "expected `prefix-list NAME in|out`")
			return
		}
		dst := &a.plistIn
		if args[1] == "out" {
			dst = &a.plistOut
		}
		if l.neg {
			*dst = set[string]{}
			return
		}
		dst.put(args[0], l.at)
	case "maximum-prefix":
		if l.neg {
			a.maxPrefix = set[maxPrefix]{}
			return
		}
		if mp, ok := parseMaxPrefix(args); ok {
			a.maxPrefix.put(mp, l.at)
		} else {
			t.fail(l.at, "expected `maximum-prefix N [THRESHOLD] [force] [restart MINUTES | warning-only]`")
		}
	case "filter-list":
		if len(args) == 2 && args[1] == "out" && !l.neg {
			a.filterOut.put(args[0], l.at)
		} else {
			t.fail(l.at, "fabricd has no AS-path filters")
		}
	case "soft-reconfiguration":
		t.note(l.at, "fabricd keeps what each ToR sent anyway")
	case "next-hop-self":
		t.note(l.at, "fabricd always sends itself as the next hop")
	case "send-community":
		t.note(l.at, "fabricd originates its prefixes without communities")
	default:
		t.fail(l.at, "no equivalent in fabricd")
	}
}

func parseMaxPrefix(args []string) (maxPrefix, bool) {
	var mp maxPrefix
	if len(args) == 0 {
		return mp, false
	}
	n, err := number(args[0], 1, 1<<32-1)
	if err != nil {
		return mp, false
	}
	mp.n = n
	rest := args[1:]
	if len(rest) > 0 {
		if _, err := number(rest[0], 1, 100); err == nil {
			mp.threshold, rest = true, rest[1:]
		}
	}
	if len(rest) > 0 && rest[0] == "force" {
		mp.force, rest = true, rest[1:]
	}
	switch {
	case len(rest) == 0:
	case len(rest) == 1 && rest[0] == "warning-only":
		mp.warningOnly = true
	case len(rest) == 2 && rest[0] == "restart":
		m, err := number(rest[1], 1, 65535)
		if err != nil {
			return mp, false
		}
		mp.restartMin = m
	default:
		return mp, false
	}
	return mp, true
}

// printable reports whether s can go into a TOML string as it is.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
