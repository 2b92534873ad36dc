// Package frrconf translates the FRR configuration of a server (frr.conf,
// or the split bgpd.conf, staticd.conf, zebra.conf, bfdd.conf) into an
// equivalent fabricd.toml, for `fabricctl import-frr`.
//
// It understands what a server in a pure-L3 fabric runs, as in the seed
// article: `router bgp`, unnumbered interface neighbors and peer-groups,
// `network` statements backed by blackhole static routes, passwords, BFD,
// timers, GTSM, maximum-prefix, inbound prefix-lists, graceful restart.
// Every other line becomes a comment in the output: a "note" when it has
// no effect that fabricd would need to reproduce (log destinations, vty
// settings, knobs fabricd always applies), "not translated" when fabricd
// would behave differently without it. Translation is pure: no file, no
// kernel, no network.
package frrconf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Source is one FRR configuration file.
type Source struct {
	// Name identifies the file in comments when there are several, e.g.
	// "bgpd.conf"; with a single file comments cite only line numbers.
	Name string
	Text []byte
}

// Result is a translation.
type Result struct {
	// TOML is the fabricd configuration, with the remarks as comments.
	TOML []byte
	// Untranslated counts the "not translated" remarks: lines (or, for a
	// missing `router bgp`, the file) whose effect the TOML lacks.
	Untranslated int
	// Notes counts the informational remarks.
	Notes int
}

// Translate translates srcs, read in order as FRR reads its files.
func Translate(srcs []Source) Result {
	t := newTranslator(srcs)
	for i, src := range srcs {
		t.parse(i, src.Text)
	}
	t.resolve()
	return t.render()
}

// family is an address family: IPv4 or IPv6 unicast.
type family int

const (
	ipv4 family = iota
	ipv6
)

func (f family) String() string {
	if f == ipv6 {
		return "IPv6"
	}
	return "IPv4"
}

func (f family) maxBits() int {
	if f == ipv6 {
		return 128
	}
	return 32
}

// ref is a line of a source: src indexes the sources, line counts from 1.
// The zero ref (line 0) stands for the configuration as a whole.
type ref struct{ src, line int }

// set is a configuration value and the line that set it.
type set[T any] struct {
	v  T
	at ref
	ok bool
}

func (s *set[T]) put(v T, at ref) { *s = set[T]{v: v, at: at, ok: true} }

// or returns s if it is set, otherwise fallback (a peer-group's value).
func (s set[T]) or(fallback set[T]) set[T] {
	if s.ok {
		return s
	}
	return fallback
}

// line is one parsed configuration line.
type line struct {
	at     ref
	indent int
	neg    bool     // began with "no"
	words  []string // without the "no"
}

// word returns the i-th word, or "" past the end.
func (l *line) word(i int) string {
	if i < len(l.words) {
		return l.words[i]
	}
	return ""
}

// prefixRange is a prefix-list entry's range, as fabricd's [import] allow
// holds it: prefixes inside pfx with a length from ge to le.
type prefixRange struct {
	pfx    netip.Prefix
	ge, le int
}

func (r prefixRange) contains(p netip.Prefix) bool {
	return p.Addr().Is4() == r.pfx.Addr().Is4() && p.Bits() >= r.ge && p.Bits() <= r.le &&
		r.pfx.Bits() <= p.Bits() && r.pfx.Contains(p.Addr())
}

// overlaps reports whether some prefix is in both ranges.
func (r prefixRange) overlaps(o prefixRange) bool {
	if r.pfx.Addr().Is4() != o.pfx.Addr().Is4() || !r.pfx.Overlaps(o.pfx) {
		return false
	}
	lo := max(r.ge, o.ge, r.pfx.Bits(), o.pfx.Bits())
	return lo <= min(r.le, o.le)
}

// parsePrefix reads an FRR prefix of family f. FRR masks host bits
// (10.1.8.195/26 is 10.1.8.192/26); masked reports that it had to.
func parsePrefix(s string, f family) (p netip.Prefix, masked bool, err error) {
	p, err = netip.ParsePrefix(s)
	switch {
	case err != nil:
		return p, false, fmt.Errorf("%q is not a prefix", s)
	case p.Addr().Is4In6():
		return p, false, fmt.Errorf("%s: an IPv4-mapped prefix", s)
	case p.Addr().Is4() != (f == ipv4):
		return p, false, fmt.Errorf("%s is not an %v prefix", s, f)
	}
	return p.Masked(), p != p.Masked(), nil
}

// parseASN reads an AS number as FRR writes it: plain, or asdot "1.10".
// fabricd accepts 1-4294967294 except 23456 (AS_TRANS).
func parseASN(s string) (uint32, error) {
	var n uint64
	hi, lo, dot := strings.Cut(s, ".")
	if dot {
		h, err1 := strconv.ParseUint(hi, 10, 16)
		l, err2 := strconv.ParseUint(lo, 10, 16)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("%q is not an AS number", s)
		}
		n = h<<16 | l
	} else {
		var err error
		if n, err = strconv.ParseUint(s, 10, 32); err != nil {
			return 0, fmt.Errorf("%q is not an AS number", s)
		}
	}
	if n == 0 || n == 1<<32-1 || n == 23456 {
		return 0, fmt.Errorf("AS %d is reserved", n)
	}
	return uint32(n), nil
}

// number reads an integer in [lo, hi].
func number(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d is outside %d-%d", n, lo, hi)
	}
	return n, nil
}

// validInterface applies the kernel's rules for interface names
// (dev_valid_name) and keeps the name printable in TOML.
func validInterface(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." || strings.ContainsAny(s, "/:") || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x21 || r == 0x7f {
			return false
		}
	}
	return true
}
