package config

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const seedC1 = `asn = 65001
router-id = "1.1.1.1"

[[neighbor]]
interface = "ens3"          # unnumbered: the peer is found by IPv6 RA on this link
remote-as = "external"

[[announce]]
prefix = "1.1.1.1/32"

[[announce]]
prefix = "10.1.8.192/26"
blackhole = true

[api]
socket = "/run/fabricd/fabricd.sock"
`

func TestParseSeedConfig(t *testing.T) {
	cfg, err := Parse("c1.toml", []byte(seedC1))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ASN != 65001 || cfg.RouterID != netip.MustParseAddr("1.1.1.1") {
		t.Errorf("identity = %d %s", cfg.ASN, cfg.RouterID)
	}
	if len(cfg.Neighbors) != 1 || cfg.Neighbors[0].Interface != "ens3" || cfg.Neighbors[0].RemoteAS.Kind != RemoteExternal {
		t.Errorf("neighbors = %+v", cfg.Neighbors)
	}
	want := []Announce{
		{Prefix: netip.MustParsePrefix("1.1.1.1/32")},
		{Prefix: netip.MustParsePrefix("10.1.8.192/26"), Blackhole: true},
	}
	if len(cfg.Announce) != 2 || cfg.Announce[0] != want[0] || cfg.Announce[1] != want[1] {
		t.Errorf("announce = %+v", cfg.Announce)
	}
	if cfg.API.Socket != "/run/fabricd/fabricd.sock" || cfg.API.SocketMode() != 0o600 {
		t.Errorf("api = %+v", cfg.API)
	}
	// Defaults an operator relies on.
	if cfg.BGP.HoldTime != 9*time.Second || cfg.BGP.Keepalive != 3*time.Second || cfg.BGP.ListenPort != 179 {
		t.Errorf("bgp defaults = %+v", cfg.BGP)
	}
	if cfg.FIB.Metric != 20 || cfg.Log.Level != slog.LevelInfo || cfg.Metrics.Listen != "" {
		t.Errorf("defaults = %+v %+v %+v", cfg.FIB, cfg.Log, cfg.Metrics)
	}
}

func TestParseOptionalSections(t *testing.T) {
	src := `asn = "4200000001"
router-id = "10.0.0.1"
[bgp]
hold-time = 30
keepalive = 10
[[neighbor]]
interface = "ens3"
remote-as = 65004
[[neighbor]]
interface = "ens4"
remote-as = "internal"
[api]
group = "fabricd"
[log]
level = "debug"
[metrics]
listen = "127.0.0.1:9179"
[fib]
metric = 50
`
	cfg, err := Parse("x.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ASN != 4200000001 {
		t.Errorf("asn = %d", cfg.ASN)
	}
	if got := cfg.Neighbors[0].RemoteAS; got != (RemoteAS{Kind: RemoteNumber, ASN: 65004}) {
		t.Errorf("remote-as = %+v", got)
	}
	if got := cfg.Neighbors[1].RemoteAS.Kind; got != RemoteInternal {
		t.Errorf("remote-as kind = %v", got)
	}
	if cfg.API.Socket != DefaultSocket || cfg.API.SocketMode() != 0o660 {
		t.Errorf("api = %+v", cfg.API)
	}
	if cfg.BGP.HoldTime != 30*time.Second || cfg.Log.Level != slog.LevelDebug || cfg.Metrics.Listen != "127.0.0.1:9179" || cfg.FIB.Metric != 50 {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestParseErrorsAreLocated(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // every one must appear in the error
	}{
		{"missing asn", "router-id = \"1.1.1.1\"\n", []string{"f.toml:1: asn: required"}},
		{"unknown key", seedC1 + "\n[[neighbor]]\ninterface = \"ens4\"\nremote_as = \"external\"\n", []string{"f.toml:20: neighbor.remote_as: unknown key"}},
		{"unknown top-level key", "asn = 65001\nrouter-id = \"1.1.1.1\"\nrouterid = 1\n", []string{"f.toml:3: routerid: unknown key"}},
		{"asn wrong type", "asn = true\nrouter-id = \"1.1.1.1\"\n", []string{"f.toml:1: asn: must be an AS number, not true"}},
		{"asn out of range", "router-id = \"1.1.1.1\"\nasn = 4294967295\n", []string{"f.toml:2: asn: 4294967295 is not a usable AS number"}},
		{"asn zero", "asn = 0\nrouter-id = \"1.1.1.1\"\n", []string{"f.toml:1: asn: 0 is not a usable"}},
		{"asn string junk", "asn = \"65001x\"\nrouter-id = \"1.1.1.1\"\n", []string{"f.toml:1: asn: \"65001x\" is not an AS number"}},
		{"bad router-id", "asn = 1\nrouter-id = \"fe80::1\"\n", []string{"f.toml:2: router-id: \"fe80::1\" is not an IPv4 address"}},
		{"bad prefix", "asn = 1\nrouter-id = \"1.1.1.1\"\n[[announce]]\nprefix = \"10.1.8.300/26\"\n", []string{"f.toml:4: announce#1.prefix: \"10.1.8.300/26\" is not a prefix"}},
		{"host bits", "asn = 1\nrouter-id = \"1.1.1.1\"\n[[announce]]\nprefix = \"10.1.8.195/26\"\n", []string{"f.toml:4: announce#1.prefix: 10.1.8.195/26 has host bits set; did you mean 10.1.8.192/26?"}},
		{"blackhole type", "asn = 1\nrouter-id = \"1.1.1.1\"\n[[announce]]\nprefix = \"10.0.0.0/8\"\nblackhole = \"yes\"\n", []string{"f.toml:5: announce#1.blackhole: must be true or false"}},
		{"duplicate interface", "asn = 1\nrouter-id = \"1.1.1.1\"\n[[neighbor]]\ninterface = \"ens3\"\n[[neighbor]]\ninterface = \"ens3\"\n", []string{"f.toml:6: neighbor#2.interface: interface \"ens3\" is already a neighbor (neighbor #1)"}},
		{"missing interface", "asn = 1\nrouter-id = \"1.1.1.1\"\n[[neighbor]]\nremote-as = \"external\"\n", []string{"f.toml:3: neighbor#1.interface: required"}},
		{"bad remote-as", "asn = 1\nrouter-id = \"1.1.1.1\"\n[[neighbor]]\ninterface = \"ens3\"\nremote-as = \"extrenal\"\n", []string{"f.toml:5: neighbor#1.remote-as: \"extrenal\" is not"}},
		{"duplicate prefix", "asn = 1\nrouter-id = \"1.1.1.1\"\n[[announce]]\nprefix = \"1.1.1.1/32\"\n[[announce]]\nprefix = \"1.1.1.1/32\"\n", []string{"f.toml:6: announce#2.prefix: 1.1.1.1/32 is already announced"}},
		{"syntax", "asn = 1\nrouter-id = \"1.1.1.1\n", []string{"f.toml:2: router-id:"}},
		{"several at once", "asn = -5\nrouter-id = 7\n", []string{"f.toml:1: asn:", "f.toml:2: router-id: must be a string"}},
		{"relative socket", "asn = 1\nrouter-id = \"1.1.1.1\"\n[api]\nsocket = \"x.sock\"\n", []string{"f.toml:4: api.socket: \"x.sock\" must be an absolute path"}},
		{"keepalive vs hold", "asn = 1\nrouter-id = \"1.1.1.1\"\n[bgp]\nhold-time = 3\nkeepalive = 3\n", []string{"f.toml:5: bgp.keepalive: keepalive (3s) must be shorter"}},
		{"log level", "asn = 1\nrouter-id = \"1.1.1.1\"\n[log]\nlevel = \"chatty\"\n", []string{"f.toml:4: log.level:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.toml", []byte(tt.src))
			if err == nil {
				t.Fatal("accepted a broken config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fabricd.toml")
	if err := os.WriteFile(path, []byte("asn = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":1: router-id: required") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml")); err == nil {
		t.Fatal("loaded a missing file")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(seedC1))
	f.Add([]byte("asn = \"1.10\"\nrouter-id = \"1.1.1.1\"\n[[neighbor]]\ninterface = \"a\"\n"))
	f.Add([]byte("[[announce]]\nprefix = 1\n[bgp]\nhold-time = \"x\"\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := Parse("fuzz.toml", src)
		if err == nil && (cfg.ASN == 0 && !cfg.ASNAuto || !cfg.RouterID.Is4() && !cfg.RouterIDAuto) {
			t.Fatalf("accepted config without identity: %+v", cfg)
		}
	})
}

func TestParseAutoAnnounce(t *testing.T) {
	src := `asn = 65001
router-id = "1.1.1.1"
[[auto-announce]]
pool = "10.1.0.0/16"
block-size = 26
interfaces = "cali*"
blackhole = true
[[auto-announce]]
pool = "fd00:10::/48"
block-size = 122
[[announce-addresses]]
interfaces = "lo"
exclude = ["127.0.0.0/8"]
[[announce]]
prefix = "2001:db8:1::/64"
`
	cfg, err := Parse("x.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []AutoAnnounce{
		{Pool: netip.MustParsePrefix("10.1.0.0/16"), BlockSize: 26, Interfaces: "cali*", Blackhole: true},
		{Pool: netip.MustParsePrefix("fd00:10::/48"), BlockSize: 122, Interfaces: "cali*"},
	}
	if len(cfg.AutoAnnounce) != 2 || cfg.AutoAnnounce[0] != want[0] || cfg.AutoAnnounce[1] != want[1] {
		t.Errorf("auto-announce = %+v", cfg.AutoAnnounce)
	}
	if len(cfg.AnnounceAddresses) != 1 || cfg.AnnounceAddresses[0].Interfaces != "lo" ||
		len(cfg.AnnounceAddresses[0].Exclude) != 1 || cfg.AnnounceAddresses[0].Exclude[0] != netip.MustParsePrefix("127.0.0.0/8") {
		t.Errorf("announce-addresses = %+v", cfg.AnnounceAddresses)
	}
	if cfg.Announce[0].Prefix != netip.MustParsePrefix("2001:db8:1::/64") {
		t.Errorf("IPv6 announce = %+v", cfg.Announce)
	}

	bad := []struct{ src, want string }{
		{"[[auto-announce]]\nblock-size = 26\n", "f.toml:3: auto-announce#1.pool: required"},
		{"[[auto-announce]]\npool = \"10.1.0.0/16\"\nblock-size = 8\n", "f.toml:5: auto-announce#1.block-size: a /8 block cannot be inside the /16 pool"},
		{"[[auto-announce]]\npool = \"10.1.0.0/16\"\nblock-size = 33\n", "f.toml:5: auto-announce#1.block-size: 33 is out of range 0-32"},
		{"[[auto-announce]]\npool = \"10.1.0.0/16\"\nblock-size = 26\ninterfaces = \"cali[\"\n", "f.toml:6: auto-announce#1.interfaces: \"cali[\" is not an interface name pattern"},
		{"[[announce-addresses]]\ninterfaces = \"lo\"\nexclude = \"127.0.0.0/8\"\n", "f.toml:5: announce-addresses#1.exclude: must be a list of prefixes"},
		{"[[announce-addresses]]\nexclude = []\n", "f.toml:3: announce-addresses#1.interfaces: required"},
	}
	for _, b := range bad {
		_, err := Parse("f.toml", []byte("asn = 1\nrouter-id = \"1.1.1.1\"\n"+b.src))
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%q: err = %v, want %q", b.src, err, b.want)
		}
	}
}

func TestParseSecurityAndFilters(t *testing.T) {
	src := `asn = 65001
router-id = "1.1.1.1"
[[neighbor]]
interface = "ens3"
password = "s3cret"
ttl-security = true
bfd = true
bfd-interval = 50
max-prefixes = 1000
[import]
allow = [
  { prefix = "10.0.0.0/8", le = 32 },
  { prefix = "1.0.0.0/8", ge = 32 },
  { prefix = "192.0.2.0/24" },
]
`
	cfg, err := Parse("x.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Neighbors[0]
	if n.Password != "s3cret" || !n.TTLSecurity || !n.BFD || n.BFDInterval != 50*time.Millisecond || n.BFDMultiplier != 3 ||
		n.MaxPrefixes != 1000 || n.MaxPrefixesRestart != 30*time.Second {
		t.Errorf("neighbor = %+v", n)
	}
	for p, want := range map[string]bool{
		"10.1.8.192/26":   true,
		"10.0.0.0/8":      true,
		"11.0.0.0/8":      false,
		"1.1.1.1/32":      true,
		"1.1.0.0/16":      false, // ge 32
		"192.0.2.0/24":    true,
		"192.0.2.0/25":    false, // exact match only
		"0.0.0.0/0":       false, // default refused
		"2001:db8::/32":   false,
		"10.0.0.0/7":      false,
		"10.255.255.0/24": true,
	} {
		if got := cfg.Import.Accepts(netip.MustParsePrefix(p)); got != want {
			t.Errorf("Accepts(%s) = %v, want %v", p, got, want)
		}
	}
	// No allow list: everything but the default route.
	open := Import{}
	if !open.Accepts(netip.MustParsePrefix("203.0.113.0/24")) || open.Accepts(netip.MustParsePrefix("::/0")) {
		t.Error("empty import filter")
	}
	if !(Import{AllowDefault: true}).Accepts(netip.MustParsePrefix("0.0.0.0/0")) {
		t.Error("allow-default")
	}

	bad := []struct{ src, want string }{
		{"[import]\nallow = [{ prefix = \"10.0.0.0/8\", le = 7 }]\n", "f.toml:4: import.allow#1.le: 7 is out of range 8-32"},
		{"[import]\nallow = [{ prefix = \"10.0.0.0/8\", ge = 30, le = 20 }]\n", "f.toml:4: import.allow#1.ge: ge 30 is above le 20"},
		{"[[neighbor]]\ninterface = \"ens3\"\nbfd-interval = 5\n", "f.toml:5: neighbor#1.bfd-interval: 5 is out of range 10-10000"},
		{"[[neighbor]]\ninterface = \"ens3\"\npassword = \"\"\n", "f.toml:5: neighbor#1.password: must be 1-80 characters"},
	}
	for _, b := range bad {
		_, err := Parse("f.toml", []byte("asn = 1\nrouter-id = \"1.1.1.1\"\n"+b.src))
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%q: err = %v, want %q", b.src, err, b.want)
		}
	}
}

func TestDerivedIdentity(t *testing.T) {
	src := "asn = \"auto\"\nrouter-id = \"auto\"\n"
	lo := func(addrs ...string) func() ([]netip.Prefix, error) {
		return func() ([]netip.Prefix, error) {
			var out []netip.Prefix
			for _, a := range addrs {
				out = append(out, netip.MustParsePrefix(a))
			}
			return out, nil
		}
	}
	cfg, err := Parse("f.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.ResolveIdentity(lo("127.0.0.1/8", "10.0.0.1/32", "::1/128")); err != nil {
		t.Fatal(err)
	}
	if cfg.RouterID != netip.MustParseAddr("10.0.0.1") || cfg.ASN != 4272804866 {
		t.Errorf("identity = %s AS %d", cfg.RouterID, cfg.ASN)
	}
	// The derived ASN is in the private range and distinct for nearby IDs.
	seen := map[uint32]bool{}
	for _, id := range []string{"0.0.0.1", "1.1.1.1", "2.2.2.2", "10.0.0.1", "10.0.0.2", "255.255.255.255"} {
		asn := DeriveASN(netip.MustParseAddr(id))
		if asn < 4200000000 || asn > 4294967294 || seen[asn] {
			t.Errorf("DeriveASN(%s) = %d", id, asn)
		}
		seen[asn] = true
	}
	for _, tc := range []struct {
		addrs []string
		want  string
	}{
		{nil, `f.toml:2: router-id: "auto" needs an IPv4 /32 on lo, and lo has nothing`},
		{[]string{"127.0.0.1/8"}, `lo has 127.0.0.1/8`},
		{[]string{"1.1.1.1/32", "2.2.2.2/32"}, `"auto" needs exactly one IPv4 /32 on lo, and lo has 1.1.1.1/32, 2.2.2.2/32`},
	} {
		cfg, _ := Parse("f.toml", []byte(src))
		err := cfg.ResolveIdentity(lo(tc.addrs...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.addrs, err, tc.want)
		}
	}
	// Fixed values need no lookup.
	cfg, _ = Parse("f.toml", []byte("asn = 65001\nrouter-id = \"1.1.1.1\"\n"))
	if err := cfg.ResolveIdentity(nil); err != nil || cfg.ASN != 65001 {
		t.Errorf("fixed identity: %v %d", err, cfg.ASN)
	}
	// AS from a fixed router ID.
	cfg, _ = Parse("f.toml", []byte("asn = \"auto\"\nrouter-id = \"1.1.1.1\"\n"))
	if err := cfg.ResolveIdentity(nil); err != nil || cfg.ASN != DeriveASN(netip.MustParseAddr("1.1.1.1")) {
		t.Errorf("derived AS: %v %d", err, cfg.ASN)
	}
}
