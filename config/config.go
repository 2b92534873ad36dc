// Package config loads and validates fabricd's TOML configuration.
//
// Loading happens in two steps, as in corerad: the file is decoded into raw
// structures whose leaves are untyped, then every leaf is validated into the
// typed Config. Every problem is reported as "PATH:LINE: key: what is wrong",
// and all problems are reported at once so an operator can fix a file in one
// pass. Nothing outside this package acts on a config that failed to load.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where fabricd looks for its configuration.
const DefaultPath = "/etc/fabricd/fabricd.toml"

// DefaultSocket is the API socket's path when [api] socket is not set.
const DefaultSocket = "/run/fabricd/fabricd.sock"

// Config is a validated fabricd configuration.
type Config struct {
	// Path is the file the configuration was read from.
	Path string

	ASN      uint32
	RouterID netip.Addr
	// ASNAuto and RouterIDAuto mean "derive it on this host": see
	// ResolveIdentity. Until then ASN and RouterID are zero.
	ASNAuto      bool
	RouterIDAuto bool

	BGP       BGP
	Neighbors []Neighbor
	Announce  []Announce
	// AutoAnnounce derives pod blocks from the kernel's pod routes.
	AutoAnnounce []AutoAnnounce
	// AnnounceAddresses announces the addresses of matching interfaces.
	AnnounceAddresses []AnnounceAddresses
	Import            Import
	API               API
	Log               Log
	Metrics           Metrics
	FIB               FIB

	loc *locator // for errors found after parsing (ResolveIdentity)
}

// BGP holds session timers shared by all neighbors.
type BGP struct {
	// ListenPort is the TCP port GoBGP accepts sessions on.
	ListenPort int
	HoldTime   time.Duration
	Keepalive  time.Duration
	// ConnectRetry is how often an idle session retries its TCP connection.
	ConnectRetry time.Duration
	// GracefulRestart (RFC 4724) lets fabricd restart without the peers
	// dropping its routes, and keeps theirs while they restart.
	GracefulRestart bool
	// RestartTime is how long peers keep fabricd's routes while it is
	// away; also how long it keeps theirs without End-of-RIB.
	RestartTime time.Duration
}

// RemoteASKind says how a neighbor's AS number is checked.
type RemoteASKind int

const (
	// RemoteExternal accepts any AS but our own (FRR's "remote-as external").
	RemoteExternal RemoteASKind = iota + 1
	// RemoteInternal accepts only our own AS.
	RemoteInternal
	// RemoteNumber accepts exactly RemoteAS.ASN.
	RemoteNumber
)

// RemoteAS is a neighbor's "remote-as" setting.
type RemoteAS struct {
	Kind RemoteASKind
	ASN  uint32 // only for RemoteNumber
}

func (r RemoteAS) String() string {
	switch r.Kind {
	case RemoteExternal:
		return "external"
	case RemoteInternal:
		return "internal"
	default:
		return fmt.Sprint(r.ASN)
	}
}

// Neighbor is an unnumbered BGP neighbor: whatever router advertises itself
// on Interface.
type Neighbor struct {
	Interface string
	// Address pins the ToR's link-local address (zone = Interface), for a
	// ToR that sends no router advertisements; invalid when not set, and
	// the ToR is then found by its RAs or in the neighbour table.
	Address  netip.Addr
	RemoteAS RemoteAS
	// Password enables TCP MD5 signatures (RFC 2385) on the session.
	Password string
	// TTLSecurity (GTSM, RFC 5082) accepts only packets sent with TTL 255,
	// i.e. from the directly connected ToR. The ToR must send 255 (FRR:
	// `neighbor X ttl-security hops 1`).
	TTLSecurity bool
	// BFD runs single-hop BFD (RFC 5881) on the session: the session and
	// its routes go within BFDInterval × BFDMultiplier when the ToR stops
	// forwarding, even with the link up.
	BFD           bool
	BFDInterval   time.Duration
	BFDMultiplier int
	// MaxPrefixes tears the session down when the ToR sends more prefixes
	// than this (0: no limit); it is retried after MaxPrefixesRestart.
	MaxPrefixes        int
	MaxPrefixesRestart time.Duration
}

// Announce is a prefix fabricd originates.
type Announce struct {
	Prefix netip.Prefix
	// Blackhole also installs "blackhole PREFIX" in the kernel, so traffic for
	// addresses of the block that no pod holds is dropped here instead of
	// bouncing back to the ToR.
	Blackhole bool
}

// AutoAnnounce announces the blocks of an IP pool that hold pods of this
// server: Calico's per-pod /32 routes on cali* interfaces, no datastore.
type AutoAnnounce struct {
	Pool       netip.Prefix
	BlockSize  int
	Interfaces string // glob
	Blackhole  bool
}

// AnnounceAddresses announces the host addresses (/32, /128) found on
// interfaces matching Interfaces, such as lo or kube-ipvs0.
type AnnounceAddresses struct {
	Interfaces string // glob
	Exclude    []netip.Prefix
}

// Import says which received prefixes fabricd accepts.
type Import struct {
	// Allow lists the accepted ranges; empty accepts every prefix.
	Allow []PrefixRange
	// AllowDefault accepts a default route (0.0.0.0/0, ::/0); refused
	// otherwise, so a ToR can never quietly become this server's default
	// gateway.
	AllowDefault bool
}

// PrefixRange matches prefixes inside Prefix whose length is in [GE, LE],
// as FRR's prefix lists do: without ge/le only Prefix itself, with le from
// Prefix's length up to le, with ge from ge up to the address length.
type PrefixRange struct {
	Prefix netip.Prefix
	GE, LE int
}

// Contains reports whether p is in the range.
func (r PrefixRange) Contains(p netip.Prefix) bool {
	return p.Addr().Is4() == r.Prefix.Addr().Is4() && p.Bits() >= r.GE && p.Bits() <= r.LE &&
		r.Prefix.Bits() <= p.Bits() && r.Prefix.Contains(p.Addr())
}

// Accepts reports whether the import filter lets p in.
func (im Import) Accepts(p netip.Prefix) bool {
	if p.Bits() == 0 && !im.AllowDefault {
		return false
	}
	if len(im.Allow) == 0 {
		return true
	}
	for _, r := range im.Allow {
		if r.Contains(p) {
			return true
		}
	}
	return false
}

// API configures the gRPC socket.
type API struct {
	Socket string
	// Group, when set, makes the socket 0660 and owned by this group;
	// otherwise it is 0600 (owner only).
	Group string
}

// Log configures logging.
type Log struct {
	Level slog.Level
}

// Metrics configures the optional Prometheus endpoint.
type Metrics struct {
	// Listen is a host:port; empty disables the endpoint.
	Listen string
}

// FIB configures how routes are written to the kernel.
type FIB struct {
	// Metric is the kernel route priority of installed routes.
	Metric uint32
	// NexthopObjects makes routes point at kernel nexthop objects (one
	// per uplink set) where the kernel has them, as FRR 8 does.
	NexthopObjects bool
}

// MaxNeighbors is how many uplinks one fabricd serves.
const MaxNeighbors = 16

// Load reads and validates the configuration at path.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, src)
}

// Parse validates src as if it had been read from path.
func Parse(path string, src []byte) (*Config, error) {
	var raw rawConfig
	md, err := toml.Decode(string(src), &raw)
	if err != nil {
		return nil, decodeError(path, err)
	}
	v := &validator{path: path, loc: newLocator(src)}
	for _, k := range md.Undecoded() {
		v.errorf(keyPath(k), "unknown key")
	}
	cfg := v.config(&raw)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	cfg.Path = path
	cfg.loc = v.loc
	return cfg, nil
}

// Error is one located configuration problem.
type Error struct {
	Path string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d: %s: %s", e.Path, e.Line, e.Key, e.Msg)
}

// decodeError turns a TOML syntax error into the located form.
func decodeError(path string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		key := pe.LastKey
		if key == "" {
			key = "(syntax)"
		}
		return &Error{Path: path, Line: pe.Position.Line, Key: key, Msg: pe.Message}
	}
	// Structural mismatches (e.g. "neighbor = 1" where a table array is
	// expected) come back as plain errors that already name line and key.
	return fmt.Errorf("%s: %w", path, err)
}

// keyPath renders a toml.Key as located by locator, e.g. "neighbor.interface".
func keyPath(k toml.Key) string { return strings.Join(k, ".") }

// The raw structures mirror the file. Leaves are untyped so that the
// validator, not the decoder, phrases every complaint about a value.
type rawConfig struct {
	ASN               any                    `toml:"asn"`
	RouterID          any                    `toml:"router-id"`
	BGP               rawBGP                 `toml:"bgp"`
	Neighbor          []rawNeighbor          `toml:"neighbor"`
	Announce          []rawAnnounce          `toml:"announce"`
	AutoAnnounce      []rawAutoAnnounce      `toml:"auto-announce"`
	AnnounceAddresses []rawAnnounceAddresses `toml:"announce-addresses"`
	Import            rawImport              `toml:"import"`
	API               rawAPI                 `toml:"api"`
	Log               rawLog                 `toml:"log"`
	Metrics           rawMetrics             `toml:"metrics"`
	FIB               rawFIB                 `toml:"fib"`
}

type rawBGP struct {
	ListenPort      any `toml:"listen-port"`
	HoldTime        any `toml:"hold-time"`
	Keepalive       any `toml:"keepalive"`
	ConnectRetry    any `toml:"connect-retry"`
	GracefulRestart any `toml:"graceful-restart"`
	RestartTime     any `toml:"restart-time"`
}

type rawNeighbor struct {
	Interface          any `toml:"interface"`
	Address            any `toml:"address"`
	RemoteAS           any `toml:"remote-as"`
	Password           any `toml:"password"`
	TTLSecurity        any `toml:"ttl-security"`
	BFD                any `toml:"bfd"`
	BFDInterval        any `toml:"bfd-interval"`
	BFDMultiplier      any `toml:"bfd-multiplier"`
	MaxPrefixes        any `toml:"max-prefixes"`
	MaxPrefixesRestart any `toml:"max-prefixes-restart"`
}

type rawAnnounce struct {
	Prefix    any `toml:"prefix"`
	Blackhole any `toml:"blackhole"`
}

type rawAutoAnnounce struct {
	Pool       any `toml:"pool"`
	BlockSize  any `toml:"block-size"`
	Interfaces any `toml:"interfaces"`
	Blackhole  any `toml:"blackhole"`
}

type rawAnnounceAddresses struct {
	Interfaces any `toml:"interfaces"`
	Exclude    any `toml:"exclude"`
}

type rawImport struct {
	Allow        []rawPrefixRange `toml:"allow"`
	AllowDefault any              `toml:"allow-default"`
}

type rawPrefixRange struct {
	Prefix any `toml:"prefix"`
	GE     any `toml:"ge"`
	LE     any `toml:"le"`
}

type rawAPI struct {
	Socket any `toml:"socket"`
	Group  any `toml:"group"`
}

type rawLog struct {
	Level any `toml:"level"`
}

type rawMetrics struct {
	Listen any `toml:"listen"`
}

type rawFIB struct {
	Metric         any `toml:"metric"`
	NexthopObjects any `toml:"nexthop-objects"`
}

type validator struct {
	path string
	loc  *locator
	errs []error
	auto bool // the identity is derived later
}

func (v *validator) errorf(key string, format string, args ...any) {
	v.errs = append(v.errs, &Error{Path: v.path, Line: v.loc.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) config(raw *rawConfig) *Config {
	cfg := &Config{}

	switch {
	case raw.ASN == nil:
		v.errorf("asn", `required, e.g. asn = 65001, or asn = "auto"`)
	case raw.ASN == "auto":
		cfg.ASNAuto = true
	default:
		if asn, ok := v.asn("asn", raw.ASN); ok {
			cfg.ASN = asn
		}
	}

	switch {
	case raw.RouterID == nil:
		v.errorf("router-id", `required, e.g. router-id = "1.1.1.1", or router-id = "auto"`)
	case raw.RouterID == "auto":
		cfg.RouterIDAuto = true
	default:
		s, ok := v.str("router-id", raw.RouterID)
		if !ok {
			break
		}
		addr, err := netip.ParseAddr(s)
		switch {
		case err != nil || !addr.Is4():
			v.errorf("router-id", "%q is not an IPv4 address", s)
		case addr.IsUnspecified():
			v.errorf("router-id", "0.0.0.0 is not a valid router ID")
		default:
			cfg.RouterID = addr
		}
	}
	v.auto = cfg.ASNAuto || cfg.RouterIDAuto

	cfg.BGP = v.bgp(&raw.BGP)

	if len(raw.Neighbor) > MaxNeighbors {
		v.errorf(indexed("neighbor", MaxNeighbors, "interface"), "at most %d neighbors are supported", MaxNeighbors)
		raw.Neighbor = raw.Neighbor[:MaxNeighbors]
	}
	seen := map[string]int{}
	for i, rn := range raw.Neighbor {
		n := v.neighbor(i, &rn)
		if n.Interface != "" {
			if first, dup := seen[n.Interface]; dup {
				v.errorf(indexed("neighbor", i, "interface"), "interface %q is already a neighbor (neighbor #%d)", n.Interface, first+1)
				continue
			}
			seen[n.Interface] = i
		}
		cfg.Neighbors = append(cfg.Neighbors, n)
	}

	prefixes := map[netip.Prefix]int{}
	for i, ra := range raw.Announce {
		a, ok := v.announce(i, &ra)
		if !ok {
			continue
		}
		if first, dup := prefixes[a.Prefix]; dup {
			v.errorf(indexed("announce", i, "prefix"), "%s is already announced (announce #%d)", a.Prefix, first+1)
			continue
		}
		prefixes[a.Prefix] = i
		cfg.Announce = append(cfg.Announce, a)
	}

	for i := range raw.AutoAnnounce {
		if a, ok := v.autoAnnounce(i, &raw.AutoAnnounce[i]); ok {
			cfg.AutoAnnounce = append(cfg.AutoAnnounce, a)
		}
	}
	for i := range raw.AnnounceAddresses {
		if a, ok := v.announceAddresses(i, &raw.AnnounceAddresses[i]); ok {
			cfg.AnnounceAddresses = append(cfg.AnnounceAddresses, a)
		}
	}

	for i := range raw.Import.Allow {
		if r, ok := v.prefixRange(i, &raw.Import.Allow[i]); ok {
			cfg.Import.Allow = append(cfg.Import.Allow, r)
		}
	}
	cfg.Import.AllowDefault = v.optBool("import.allow-default", raw.Import.AllowDefault, false)

	cfg.API = API{Socket: DefaultSocket}
	if s, ok := v.optStr("api.socket", raw.API.Socket); ok {
		if !strings.HasPrefix(s, "/") {
			v.errorf("api.socket", "%q must be an absolute path", s)
		} else {
			cfg.API.Socket = s
		}
	}
	if s, ok := v.optStr("api.group", raw.API.Group); ok {
		cfg.API.Group = s
	}

	cfg.Log.Level = slog.LevelInfo
	if s, ok := v.optStr("log.level", raw.Log.Level); ok {
		if err := cfg.Log.Level.UnmarshalText([]byte(s)); err != nil {
			v.errorf("log.level", "%q is not one of debug, info, warn, error", s)
		}
	}

	if s, ok := v.optStr("metrics.listen", raw.Metrics.Listen); ok {
		if _, err := netip.ParseAddrPort(s); err != nil {
			v.errorf("metrics.listen", "%q is not an IP:port, e.g. \"127.0.0.1:9179\"", s)
		} else {
			cfg.Metrics.Listen = s
		}
	}

	cfg.FIB.Metric = 20
	if raw.FIB.Metric != nil {
		if n, ok := v.integer("fib.metric", raw.FIB.Metric, 0, 1<<32-1); ok {
			cfg.FIB.Metric = uint32(n)
		}
	}
	cfg.FIB.NexthopObjects = v.optBool("fib.nexthop-objects", raw.FIB.NexthopObjects, true)
	return cfg
}

func (v *validator) bgp(raw *rawBGP) BGP {
	b := BGP{ListenPort: 179, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: 10 * time.Second,
		GracefulRestart: true, RestartTime: 120 * time.Second}
	if raw.ListenPort != nil {
		if n, ok := v.integer("bgp.listen-port", raw.ListenPort, 1, 65535); ok {
			b.ListenPort = int(n)
		}
	}
	seconds := func(key string, val any, min int64, dst *time.Duration) {
		if val == nil {
			return
		}
		if n, ok := v.integer(key, val, min, 65535); ok {
			*dst = time.Duration(n) * time.Second
		}
	}
	// Timers are whole seconds as in BGP itself and in FRR's "timers bgp".
	seconds("bgp.hold-time", raw.HoldTime, 3, &b.HoldTime)
	seconds("bgp.keepalive", raw.Keepalive, 1, &b.Keepalive)
	seconds("bgp.connect-retry", raw.ConnectRetry, 1, &b.ConnectRetry)
	seconds("bgp.restart-time", raw.RestartTime, 1, &b.RestartTime)
	if b.RestartTime > 4095*time.Second {
		v.errorf("bgp.restart-time", "at most 4095 seconds (a 12-bit field in BGP)")
	}
	b.GracefulRestart = v.optBool("bgp.graceful-restart", raw.GracefulRestart, true)
	if b.Keepalive >= b.HoldTime {
		v.errorf("bgp.keepalive", "keepalive (%s) must be shorter than hold-time (%s)", b.Keepalive, b.HoldTime)
	}
	return b
}

func (v *validator) neighbor(i int, raw *rawNeighbor) Neighbor {
	var n Neighbor
	key := indexed("neighbor", i, "interface")
	if raw.Interface == nil {
		v.errorf(key, `required, e.g. interface = "ens3"`)
	} else if s, ok := v.str(key, raw.Interface); ok {
		if err := validInterfaceName(s); err != nil {
			v.errorf(key, "%v", err)
		} else {
			n.Interface = s
		}
	}

	if addr, ok := v.optStr(indexed("neighbor", i, "address"), raw.Address); ok {
		a, err := netip.ParseAddr(addr)
		switch {
		case err != nil:
			v.errorf(indexed("neighbor", i, "address"), "%q is not an IPv6 address", addr)
		case !a.Is6() || !a.IsLinkLocalUnicast() || a.Zone() != "":
			v.errorf(indexed("neighbor", i, "address"), "%q is not an IPv6 link-local address (fe80::/10, without %%zone: the interface is the zone)", addr)
		case n.Interface != "":
			n.Address = a.WithZone(n.Interface)
		}
	}

	key = indexed("neighbor", i, "remote-as")
	n.RemoteAS = RemoteAS{Kind: RemoteExternal}
	switch val := raw.RemoteAS.(type) {
	case nil:
		// FRR's data-centre idiom: any external AS.
	case string:
		switch val {
		case "external":
		case "internal":
			n.RemoteAS = RemoteAS{Kind: RemoteInternal}
		default:
			v.errorf(key, `%q is not "external", "internal" or an AS number`, val)
		}
	default:
		if asn, ok := v.asn(key, val); ok {
			n.RemoteAS = RemoteAS{Kind: RemoteNumber, ASN: asn}
		}
	}

	if pw, ok := v.optStr(indexed("neighbor", i, "password"), raw.Password); ok {
		if pw == "" || len(pw) > 80 {
			// TCP_MD5SIG keys are at most 80 bytes.
			v.errorf(indexed("neighbor", i, "password"), "must be 1-80 characters")
		}
		n.Password = pw
	}
	n.TTLSecurity = v.optBool(indexed("neighbor", i, "ttl-security"), raw.TTLSecurity, false)
	n.BFD = v.optBool(indexed("neighbor", i, "bfd"), raw.BFD, false)
	n.BFDInterval = 100 * time.Millisecond
	if raw.BFDInterval != nil {
		if ms, ok := v.integer(indexed("neighbor", i, "bfd-interval"), raw.BFDInterval, 10, 10000); ok {
			n.BFDInterval = time.Duration(ms) * time.Millisecond
		}
	}
	n.BFDMultiplier = 3
	if raw.BFDMultiplier != nil {
		if m, ok := v.integer(indexed("neighbor", i, "bfd-multiplier"), raw.BFDMultiplier, 2, 255); ok {
			n.BFDMultiplier = int(m)
		}
	}
	if raw.MaxPrefixes != nil {
		if m, ok := v.integer(indexed("neighbor", i, "max-prefixes"), raw.MaxPrefixes, 0, 1<<32-1); ok {
			n.MaxPrefixes = int(m)
		}
	}
	n.MaxPrefixesRestart = 30 * time.Second
	if raw.MaxPrefixesRestart != nil {
		if sec, ok := v.integer(indexed("neighbor", i, "max-prefixes-restart"), raw.MaxPrefixesRestart, 1, 86400); ok {
			n.MaxPrefixesRestart = time.Duration(sec) * time.Second
		}
	}
	return n
}

func (v *validator) announce(i int, raw *rawAnnounce) (Announce, bool) {
	var a Announce
	key := indexed("announce", i, "prefix")
	if raw.Prefix == nil {
		v.errorf(key, `required, e.g. prefix = "10.1.8.192/26"`)
		return a, false
	}
	p, ok := v.prefix(key, raw.Prefix)
	if !ok {
		return a, false
	}
	a.Prefix = p
	a.Blackhole = v.optBool(indexed("announce", i, "blackhole"), raw.Blackhole, false)
	return a, true
}

// prefix validates a network prefix: parseable, host bits zero, not an
// IPv4-mapped IPv6 prefix.
func (v *validator) prefix(key string, val any) (netip.Prefix, bool) {
	s, ok := v.str(key, val)
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		v.errorf(key, "%q is not a prefix (address/length)", s)
	case p.Addr().Is4In6():
		v.errorf(key, "%s: write IPv4 prefixes in IPv4 notation", p)
	case p.Addr().Zone() != "":
		v.errorf(key, "%s: a prefix has no zone", p)
	case p != p.Masked():
		v.errorf(key, "%s has host bits set; did you mean %s?", p, p.Masked())
	default:
		return p, true
	}
	return netip.Prefix{}, false
}

func (v *validator) autoAnnounce(i int, raw *rawAutoAnnounce) (AutoAnnounce, bool) {
	var a AutoAnnounce
	ok := true
	if raw.Pool == nil {
		v.errorf(indexed("auto-announce", i, "pool"), `required, e.g. pool = "10.1.0.0/16"`)
		ok = false
	} else if p, good := v.prefix(indexed("auto-announce", i, "pool"), raw.Pool); good {
		a.Pool = p
	} else {
		ok = false
	}
	maxBits := int64(32)
	if a.Pool.Addr().Is6() {
		maxBits = 128
	}
	key := indexed("auto-announce", i, "block-size")
	if raw.BlockSize == nil {
		v.errorf(key, "required: the IPAM block size, e.g. block-size = 26")
		ok = false
	} else if n, good := v.integer(key, raw.BlockSize, 0, maxBits); good {
		if a.Pool.IsValid() && int(n) < a.Pool.Bits() {
			v.errorf(key, "a /%d block cannot be inside the /%d pool", n, a.Pool.Bits())
			ok = false
		}
		a.BlockSize = int(n)
	} else {
		ok = false
	}
	a.Interfaces = "cali*"
	if g, good := v.glob(indexed("auto-announce", i, "interfaces"), raw.Interfaces); good {
		a.Interfaces = g
	} else if raw.Interfaces != nil {
		ok = false
	}
	a.Blackhole = v.optBool(indexed("auto-announce", i, "blackhole"), raw.Blackhole, false)
	return a, ok
}

func (v *validator) announceAddresses(i int, raw *rawAnnounceAddresses) (AnnounceAddresses, bool) {
	var a AnnounceAddresses
	key := indexed("announce-addresses", i, "interfaces")
	if raw.Interfaces == nil {
		v.errorf(key, `required, e.g. interfaces = "lo"`)
		return a, false
	}
	g, ok := v.glob(key, raw.Interfaces)
	if !ok {
		return a, false
	}
	a.Interfaces = g
	if raw.Exclude != nil {
		key := indexed("announce-addresses", i, "exclude")
		list, isList := raw.Exclude.([]any)
		if !isList {
			v.errorf(key, "must be a list of prefixes, not %s", describe(raw.Exclude))
			return a, false
		}
		for _, e := range list {
			p, good := v.prefix(key, e)
			if !good {
				return a, false
			}
			a.Exclude = append(a.Exclude, p)
		}
	}
	return a, true
}

func (v *validator) prefixRange(i int, raw *rawPrefixRange) (PrefixRange, bool) {
	var r PrefixRange
	key := indexed("import.allow", i, "prefix")
	if raw.Prefix == nil {
		v.errorf(key, `required, e.g. { prefix = "10.0.0.0/8", le = 32 }`)
		return r, false
	}
	p, ok := v.prefix(key, raw.Prefix)
	if !ok {
		return r, false
	}
	r.Prefix = p
	maxBits := int64(p.Addr().BitLen())
	r.GE, r.LE = p.Bits(), p.Bits()
	if raw.LE != nil {
		le, ok := v.integer(indexed("import.allow", i, "le"), raw.LE, int64(p.Bits()), maxBits)
		if !ok {
			return r, false
		}
		r.LE = int(le)
	}
	if raw.GE != nil {
		ge, ok := v.integer(indexed("import.allow", i, "ge"), raw.GE, int64(p.Bits()), maxBits)
		if !ok {
			return r, false
		}
		r.GE = int(ge)
		if raw.LE == nil {
			r.LE = int(maxBits)
		}
	}
	if r.GE > r.LE {
		v.errorf(indexed("import.allow", i, "ge"), "ge %d is above le %d", r.GE, r.LE)
		return r, false
	}
	return r, true
}

// glob validates an optional interface name pattern (path.Match syntax).
func (v *validator) glob(key string, val any) (string, bool) {
	s, ok := v.optStr(key, val)
	if !ok {
		return "", false
	}
	if _, err := path.Match(s, "x"); err != nil || s == "" || len(s) > 64 {
		v.errorf(key, "%q is not an interface name pattern (e.g. \"cali*\")", s)
		return "", false
	}
	return s, true
}

// asn accepts an integer or a decimal string ("65001", "4200000001", also
// asdot "1.10" as vendors print it).
func (v *validator) asn(key string, val any) (uint32, bool) {
	var n int64
	switch t := val.(type) {
	case int64:
		n = t
	case string:
		var err error
		n, err = parseASN(t)
		if err != nil {
			v.errorf(key, "%q is not an AS number: %v", t, err)
			return 0, false
		}
	default:
		v.errorf(key, "must be an AS number, not %s", describe(val))
		return 0, false
	}
	// 0 and 4294967295 are reserved (RFC 7607, RFC 7300); 23456 is AS_TRANS.
	if n < 1 || n > 4294967294 || n == 23456 {
		v.errorf(key, "%d is not a usable AS number (1-4294967294, not 23456)", n)
		return 0, false
	}
	return uint32(n), true
}

func parseASN(s string) (int64, error) {
	var hi, lo int64
	if _, err := fmt.Sscanf(s, "%d.%d", &hi, &lo); err == nil && strings.Count(s, ".") == 1 {
		if hi < 0 || hi > 65535 || lo < 0 || lo > 65535 {
			return 0, errors.New("asdot halves must be 0-65535")
		}
		return hi<<16 | lo, nil
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || fmt.Sprint(n) != s {
		return 0, errors.New("expected digits")
	}
	return n, nil
}

func (v *validator) integer(key string, val any, min, max int64) (int64, bool) {
	n, ok := val.(int64)
	if !ok {
		v.errorf(key, "must be an integer, not %s", describe(val))
		return 0, false
	}
	if n < min || n > max {
		v.errorf(key, "%d is out of range %d-%d", n, min, max)
		return 0, false
	}
	return n, true
}

func (v *validator) str(key string, val any) (string, bool) {
	s, ok := val.(string)
	if !ok {
		v.errorf(key, "must be a string, not %s", describe(val))
		return "", false
	}
	return s, true
}

// optBool validates an optional boolean, returning def when absent or bad.
func (v *validator) optBool(key string, val any, def bool) bool {
	if val == nil {
		return def
	}
	b, ok := val.(bool)
	if !ok {
		v.errorf(key, "must be true or false, not %s", describe(val))
		return def
	}
	return b
}

// optStr validates an optional string; ok is false when it is absent or bad.
func (v *validator) optStr(key string, val any) (string, bool) {
	if val == nil {
		return "", false
	}
	return v.str(key, val)
}

func validInterfaceName(s string) error {
	// The kernel's rules (dev_valid_name): 1-15 bytes, no '/', ':' or space.
	if s == "" || len(s) > 15 || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n") {
		return fmt.Errorf("%q is not a valid interface name", s)
	}
	return nil
}

// describe names a TOML value's type for error messages.
func describe(val any) string {
	switch t := val.(type) {
	case string:
		return fmt.Sprintf("the string %q", t)
	case int64:
		return fmt.Sprintf("the integer %d", t)
	case float64:
		return fmt.Sprintf("the number %v", t)
	case bool:
		return fmt.Sprintf("%v", t)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date"
	default:
		return fmt.Sprintf("%T", val)
	}
}

// indexed names a key inside the i-th element of an array of tables. The
// locator understands the "#N" element marker.
func indexed(table string, i int, key string) string {
	return fmt.Sprintf("%s#%d.%s", table, i+1, key)
}

// SocketMode is the permission of the API socket.
func (a API) SocketMode() os.FileMode {
	if a.Group != "" {
		return 0o660
	}
	return 0o600
}

// NeighborInterfaces lists the configured uplinks in file order.
func (c *Config) NeighborInterfaces() []string {
	names := make([]string, len(c.Neighbors))
	for i, n := range c.Neighbors {
		names[i] = n.Interface
	}
	return names
}

// Neighbor returns the neighbor on iface.
func (c *Config) Neighbor(iface string) (Neighbor, bool) {
	i := slices.IndexFunc(c.Neighbors, func(n Neighbor) bool { return n.Interface == iface })
	if i < 0 {
		return Neighbor{}, false
	}
	return c.Neighbors[i], true
}
