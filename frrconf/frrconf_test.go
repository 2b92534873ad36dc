package frrconf

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fabricd/fabricd/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// readCase reads testdata/NAME/*.conf in FRR's start order (zebra,
// staticd, bgpd, bfdd; an integrated frr.conf alone).
func readCase(t testing.TB, name string) []Source {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", name, "*.conf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no inputs for %s: %v", name, err)
	}
	order := []string{"frr.conf", "zebra.conf", "staticd.conf", "bgpd.conf", "bfdd.conf"}
	slices.SortFunc(files, func(a, b string) int {
		return slices.Index(order, filepath.Base(a)) - slices.Index(order, filepath.Base(b))
	})
	var srcs []Source
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, Source{Name: filepath.Base(f), Text: text})
	}
	return srcs
}

// parse runs fabricd's own validation over a translation, as
// `fabricd --check` would.
func parse(t testing.TB, res Result) *config.Config {
	t.Helper()
	cfg, err := config.Parse("imported.toml", res.TOML)
	if err != nil {
		t.Fatalf("the translation does not pass fabricd's validation: %v\n%s", err, res.TOML)
	}
	return cfg
}

// TestGolden translates each testdata case and compares the whole output
// with testdata/NAME.toml (go test -run TestGolden -update rewrites them).
func TestGolden(t *testing.T) {
	for _, tc := range []struct {
		name         string
		untranslated int
	}{
		{"seed-c1", 0},         // the seed article's server config, as FRR 7.1 saved it
		{"lab-c1-two-tors", 0}, // testenv's RoleFRR server (split zebra/staticd/bgpd)
		{"full", 0},            // everything the translator knows, all translatable
		{"untranslatable", 35}, // what fabricd cannot do, one reason per line
		{"nasty", 45},          // malformed and hostile input
		{"no-router-bgp", 2},   // zebra.conf alone
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Translate(readCase(t, tc.name))
			parse(t, res)
			if res.Untranslated != tc.untranslated {
				t.Errorf("%d lines not translated, want %d:\n%s", res.Untranslated, tc.untranslated, res.TOML)
			}
			if got := bytes.Count(res.TOML, []byte("\n# not translated")); got != res.Untranslated {
				t.Errorf("%d \"not translated\" comments, but Untranslated is %d", got, res.Untranslated)
			}
			golden := filepath.Join("testdata", tc.name+".toml")
			if *update {
				if err := os.WriteFile(golden, res.TOML, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.TOML, want) {
				t.Errorf("translation differs from %s (-update rewrites it):\n%s", golden, res.TOML)
			}
		})
	}
}

// The seed's server config gives exactly testenv's hand-written
// equivalent, minus the blackhole the seed added outside FRR (which the
// translation points out).
func TestSeedTranslation(t *testing.T) {
	cfg := parse(t, Translate(readCase(t, "seed-c1")))
	if cfg.ASN != 65001 || cfg.RouterID != netip.MustParseAddr("1.1.1.1") {
		t.Errorf("identity %d %s", cfg.ASN, cfg.RouterID)
	}
	if len(cfg.Neighbors) != 1 || cfg.Neighbors[0].Interface != "ens3" || cfg.Neighbors[0].RemoteAS.Kind != config.RemoteExternal {
		t.Errorf("neighbors %+v", cfg.Neighbors)
	}
	want := []config.Announce{{Prefix: netip.MustParsePrefix("1.1.1.1/32")}, {Prefix: netip.MustParsePrefix("10.1.8.192/26")}}
	if !slices.Equal(cfg.Announce, want) {
		t.Errorf("announce %+v, want %+v", cfg.Announce, want)
	}
	if cfg.Log.Level.String() != "INFO" {
		t.Errorf("log level %v", cfg.Log.Level)
	}
}

// Each translated setting lands where fabricd reads it.
func TestFullTranslation(t *testing.T) {
	cfg := parse(t, Translate(readCase(t, "full")))
	if cfg.ASN != 4200000001 || cfg.BGP.Keepalive.Seconds() != 1 || cfg.BGP.HoldTime.Seconds() != 3 ||
		!cfg.BGP.GracefulRestart || cfg.BGP.RestartTime.Seconds() != 300 || cfg.FIB.NexthopObjects {
		t.Errorf("globals: %+v %+v %+v", cfg.ASN, cfg.BGP, cfg.FIB)
	}
	if len(cfg.Neighbors) != 3 {
		t.Fatalf("neighbors %+v", cfg.Neighbors)
	}
	for _, n := range cfg.Neighbors[:2] { // members of peer-group TOR
		if n.RemoteAS.Kind != config.RemoteExternal || n.Password != `s3cr"et\x` || !n.TTLSecurity || !n.BFD ||
			n.BFDInterval.Milliseconds() != 150 || n.BFDMultiplier != 4 || n.MaxPrefixes != 12000 || n.MaxPrefixesRestart.Seconds() != 300 {
			t.Errorf("peer-group member %+v", n)
		}
	}
	if n := cfg.Neighbors[2]; n.Interface != "ens5" || n.RemoteAS != (config.RemoteAS{Kind: config.RemoteNumber, ASN: 65100}) ||
		n.Password != "other" || n.TTLSecurity || n.BFDInterval.Milliseconds() != 300 || n.BFDMultiplier != 3 {
		t.Errorf("ens5 %+v", n)
	}
	var blackholes []string
	for _, a := range cfg.Announce {
		if a.Blackhole {
			blackholes = append(blackholes, a.Prefix.String())
		}
	}
	// network + ip route, redistribute static + Null0, ipv6 network + route.
	if want := []string{"10.1.8.192/26", "10.1.9.0/26", "2001:db8:100::/64"}; !slices.Equal(blackholes, want) {
		t.Errorf("blackholes %v, want %v", blackholes, want)
	}
	for p, want := range map[string]bool{
		"10.1.71.192/26": true, "10.1.0.0/16": true, "10.2.0.0/16": false, "10.255.0.7/32": true, "10.255.0.0/24": false,
		"192.0.2.64/26": true, "192.0.2.0/25": false, "192.0.2.16/28": true, "192.0.2.0/29": false,
		"198.51.100.7/32": true, "0.0.0.0/0": false, "2001:db8:5::/48": true, "2001:db8::1/128": false,
	} {
		if got := cfg.Import.Accepts(netip.MustParsePrefix(p)); got != want {
			t.Errorf("import accepts %s: %v, want %v", p, got, want)
		}
	}
}

// frrEntry is a prefix-list entry as FRR reads it; the reference below
// applies it with FRR's documented semantics, independently of the
// translator.
type frrEntry struct {
	permit bool
	pfx    netip.Prefix
	ge, le int // 0: not given
}

func (e frrEntry) String() string {
	action := "deny"
	if e.permit {
		action = "permit"
	}
	s := fmt.Sprintf("%s %s", action, e.pfx)
	if e.ge != 0 {
		s += fmt.Sprintf(" ge %d", e.ge)
	}
	if e.le != 0 {
		s += fmt.Sprintf(" le %d", e.le)
	}
	return s
}

func (e frrEntry) matches(p netip.Prefix) bool {
	lo, hi := e.pfx.Bits(), e.pfx.Bits()
	switch {
	case e.ge != 0 && e.le != 0:
		lo, hi = e.ge, e.le
	case e.ge != 0:
		lo, hi = e.ge, 32
	case e.le != 0:
		hi = e.le
	}
	return p.Bits() >= lo && p.Bits() <= hi && e.pfx.Bits() <= p.Bits() && e.pfx.Contains(p.Addr())
}

func frrPermits(entries []frrEntry, p netip.Prefix) bool {
	for _, e := range entries {
		if e.matches(p) {
			return e.permit
		}
	}
	return false
}

// Whenever the translator translates an inbound prefix-list, fabricd's
// [import] accepts exactly what FRR's list did, default route included;
// otherwise it says so. Random lists over a small address space, so that
// entries overlap often.
func TestImportMatchesFRR(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randPrefix := func() netip.Prefix {
		bits := rng.IntN(33)
		a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4) << 6), byte(rng.IntN(256))})
		if bits < 8 {
			a = netip.IPv4Unspecified()
		}
		return netip.PrefixFrom(a, bits).Masked()
	}
	translated := 0
	for range 3000 {
		var entries []frrEntry
		for range 1 + rng.IntN(4) {
			e := frrEntry{permit: rng.IntN(3) > 0, pfx: randPrefix()}
			if rng.IntN(2) == 0 && e.pfx.Bits() < 32 {
				e.ge = e.pfx.Bits() + 1 + rng.IntN(32-e.pfx.Bits())
			}
			if rng.IntN(2) == 0 && e.pfx.Bits() < 32 {
				e.le = max(e.ge, e.pfx.Bits()+1) + rng.IntN(33-max(e.ge, e.pfx.Bits()+1))
			}
			entries = append(entries, e)
		}
		var b strings.Builder
		b.WriteString("frr defaults datacenter\n")
		for i, e := range entries {
			fmt.Fprintf(&b, "ip prefix-list IN seq %d %s\n", (i+1)*5, e)
		}
		b.WriteString("router bgp 65001\n bgp router-id 1.1.1.1\n bgp graceful-restart\n neighbor ens3 interface remote-as external\n" +
			" address-family ipv4 unicast\n  neighbor ens3 prefix-list IN in\n exit-address-family\n")
		res := Translate([]Source{{Name: "frr.conf", Text: []byte(b.String())}})
		cfg := parse(t, res)
		if res.Untranslated > 0 {
			if len(cfg.Import.Allow) != 0 {
				t.Fatalf("a list that was not translated still made [import]:\n%s", res.TOML)
			}
			continue
		}
		translated++
		for range 200 {
			p := randPrefix()
			if got, want := cfg.Import.Accepts(p), frrPermits(entries, p); got != want {
				t.Fatalf("%s: fabricd accepts %v, FRR %v\nFRR:\n%s\nfabricd:\n%s", p, got, want, b.String(), res.TOML)
			}
		}
	}
	t.Logf("%d of 3000 lists translated", translated)
	if translated < 1000 {
		t.Errorf("only %d of 3000 lists were translated: the test proves little", translated)
	}
}

// Neighbors inherit from their peer-group and override it, FRR's way.
func TestPeerGroupInheritance(t *testing.T) {
	res := Translate([]Source{{Text: []byte(`frr defaults datacenter
router bgp 65001
 bgp router-id 1.1.1.1
 neighbor PG peer-group
 neighbor PG remote-as 65004
 neighbor PG password group
 neighbor PG bfd
 neighbor ens3 interface peer-group PG
 neighbor ens4 interface
 neighbor ens4 peer-group PG
 neighbor ens4 remote-as internal
 neighbor ens4 password own
 neighbor ens4 bfd 5 50 50
`)}})
	cfg := parse(t, res)
	if res.Untranslated != 0 || len(cfg.Neighbors) != 2 {
		t.Fatalf("%d untranslated:\n%s", res.Untranslated, res.TOML)
	}
	a, b := cfg.Neighbors[0], cfg.Neighbors[1]
	if a.RemoteAS.ASN != 65004 || a.Password != "group" || !a.BFD || a.BFDInterval.Milliseconds() != 300 {
		t.Errorf("ens3 does not inherit: %+v", a)
	}
	if b.RemoteAS.Kind != config.RemoteInternal || b.Password != "own" || b.BFDInterval.Milliseconds() != 50 || b.BFDMultiplier != 5 {
		t.Errorf("ens4 does not override: %+v", b)
	}
}

// Timers: one [bgp] set, from `timers bgp` or from neighbors that agree;
// neighbors that disagree are reported.
func TestTimers(t *testing.T) {
	for _, tc := range []struct {
		lines        string
		ka, hold     float64
		untranslated int
	}{
		{" timers bgp 10 30\n", 10, 30, 0},
		{" neighbor ens3 timers 1 3\n neighbor ens4 timers 1 3\n", 1, 3, 0},
		{" neighbor ens3 timers 1 3\n", 3, 9, 1},                  // ens4 keeps the datacenter 3/9
		{" timers bgp 3 9\n neighbor ens3 timers 1 3\n", 3, 9, 1}, // fabricd takes timers bgp
		{" timers bgp 0 0\n", 3, 9, 1},                            // no keepalives: not in fabricd
	} {
		res := Translate([]Source{{Text: []byte("frr defaults datacenter\nrouter bgp 65001\n bgp router-id 1.1.1.1\n bgp graceful-restart\n" +
			" neighbor ens3 interface remote-as external\n neighbor ens4 interface remote-as external\n" + tc.lines)}})
		cfg := parse(t, res)
		if cfg.BGP.Keepalive.Seconds() != tc.ka || cfg.BGP.HoldTime.Seconds() != tc.hold || res.Untranslated != tc.untranslated {
			t.Errorf("%q: keepalive %v hold %v, %d untranslated; want %v %v %d\n%s", tc.lines, cfg.BGP.Keepalive, cfg.BGP.HoldTime,
				res.Untranslated, tc.ka, tc.hold, tc.untranslated, res.TOML)
		}
	}
}

// FuzzTranslate feeds the parser arbitrary input: it never panics, its
// output always passes fabricd's validation, and its count of untranslated
// lines matches the comments.
func FuzzTranslate(f *testing.F) {
	for _, name := range []string{"seed-c1", "full", "untranslatable", "nasty"} {
		for _, src := range readCase(f, name) {
			f.Add(src.Text)
		}
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		res := Translate([]Source{{Name: "frr.conf", Text: text}})
		if _, err := config.Parse("fuzz.toml", res.TOML); err != nil {
			t.Fatalf("invalid output: %v\n%s", err, res.TOML)
		}
		if got := bytes.Count(res.TOML, []byte("\n# not translated")); got != res.Untranslated {
			t.Fatalf("%d comments, Untranslated %d", got, res.Untranslated)
		}
	})
}
