package testenv

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testLab lays out a lab without building it, for the config generators.
func testLab(t *testing.T, opts Options) *Lab {
	t.Helper()
	l, err := newLab(opts)
	if err != nil {
		t.Fatal(err)
	}
	l.prefix, l.dir = "fd0000", "/lab"
	return l
}

func TestDefaultConfigSeed(t *testing.T) {
	l := testLab(t, Options{Role: RoleFRR})
	want := `asn = 65001
router-id = "1.1.1.1"

[[neighbor]]
interface = "ens3"
remote-as = "external"

[[announce]]
prefix = "1.1.1.1/32"

[[announce]]
prefix = "10.1.8.192/26"
blackhole = true

[api]
socket = "/lab/c1/fabricd.sock"

[log]
level = "debug"
`
	if got := l.Server("c1").DefaultConfig(); got != want {
		t.Errorf("c1 config:\n%s\nwant:\n%s", got, want)
	}
}

func TestDefaultConfigTwoToRs(t *testing.T) {
	l := testLab(t, Options{Role: RoleFRR, ToRs: 2})
	c3 := l.Server("c3")
	got := c3.DefaultConfig()
	for _, want := range []string{
		"asn = 65003\nrouter-id = \"3.3.3.3\"\n",
		"[[neighbor]]\ninterface = \"ens3\"\nremote-as = \"external\"\n\n[[neighbor]]\ninterface = \"ens4\"\nremote-as = \"external\"\n",
		"prefix = \"10.1.240.0/26\"\nblackhole = true\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("c3 config lacks %q:\n%s", want, got)
		}
	}
	if ups := c3.Uplinks(); len(ups) != 2 || ups[0] != "ens3" || ups[1] != "ens4" {
		t.Errorf("uplinks %v", ups)
	}
}

func TestNames(t *testing.T) {
	l := testLab(t, Options{Role: RoleFRR, ToRs: 2})
	c2 := l.Server("c2")
	for _, c := range [][2]string{
		{l.ToR(0).Namespace(), "fd0000-tor"},
		{l.ToR(1).Namespace(), "fd0000-tor2"},
		{c2.Namespace(), "fd0000-c2"},
		{c2.Pod(0).Namespace(), "fd0000-c2-pod0"},
		{l.ToR(1).PortFor("c2"), "swp2"},
		{l.ToR(0).PortFor("c9"), ""},
		{c2.ConfigPath(), "/lab/c2/fabricd.toml"},
		{c2.Pod(0).Addr().String(), "10.1.71.195"},
	} {
		if c[0] != c[1] {
			t.Errorf("got %q, want %q", c[0], c[1])
		}
	}
	cali := c2.Pod(0).HostInterface()
	if len(cali) != 15 || !strings.HasPrefix(cali, "cali") || cali != caliName("c2", netip.MustParseAddr("10.1.71.195")) {
		t.Errorf("host interface %q", cali)
	}
	if l.ToR(2) != nil || l.Server("nope") != nil || c2.Pod(1) != nil {
		t.Error("lookups of missing nodes must return nil")
	}
}

func TestToRConfig(t *testing.T) {
	l := testLab(t, Options{Role: RoleFRR, ToRExtraConfig: "bgp graceful-restart\n  neighbor COMPUTE bfd\n"})
	tor := l.ToR(0)
	bgpd := tor.bgpdConf()
	for _, want := range []string{
		"frr defaults datacenter\nhostname tor\nlog file /lab/tor/frr.log\nlog timestamp precision 6\n",
		"router bgp 65004\n bgp router-id 4.4.4.4\n bgp bestpath as-path multipath-relax\n",
		" neighbor COMPUTE peer-group\n neighbor COMPUTE remote-as external\n",
		" neighbor swp1 interface peer-group COMPUTE\n neighbor swp2 interface peer-group COMPUTE\n neighbor swp3 interface peer-group COMPUTE\n",
		" address-family ipv4 unicast\n  redistribute connected\n  neighbor COMPUTE soft-reconfiguration inbound\n exit-address-family\n",
		" bgp graceful-restart\n neighbor COMPUTE bfd\nexit\n",
	} {
		if !strings.Contains(bgpd, want) {
			t.Errorf("ToR bgpd config lacks %q:\n%s", want, bgpd)
		}
	}
	if want := "interface swp3\n ipv6 nd ra-interval 5\n ipv6 nd ra-lifetime 15\n no ipv6 nd suppress-ra\n"; !strings.Contains(tor.zebraConf(), want) {
		t.Errorf("ToR zebra config lacks %q:\n%s", want, tor.zebraConf())
	}
}

func TestServerFRRConfig(t *testing.T) {
	l := testLab(t, Options{Role: RoleFRR, ToRs: 2})
	c1 := l.Server("c1")
	bgpd := c1.bgpdConf()
	for _, want := range []string{
		"router bgp 65001\n bgp router-id 1.1.1.1\n",
		" neighbor TOR peer-group\n neighbor TOR remote-as external\n neighbor ens3 interface peer-group TOR\n neighbor ens4 interface peer-group TOR\n",
		"  network 1.1.1.1/32\n  network 10.1.8.192/26\n",
		"  neighbor TOR filter-list LOCAL out\n",
	} {
		if !strings.Contains(bgpd, want) {
			t.Errorf("server bgpd config lacks %q:\n%s", want, bgpd)
		}
	}
	if want := "ip route 10.1.8.192/26 blackhole\n"; !strings.Contains(c1.staticdConf(), want) {
		t.Errorf("staticd config lacks %q", want)
	}
	if want := "interface ens4\n ipv6 nd ra-interval 5\n no ipv6 nd suppress-ra\n"; !strings.Contains(c1.zebraConf(), want) {
		t.Errorf("server zebra config lacks %q", want)
	}
}

func TestOptionsValidation(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "fabricd")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	seed := SeedServers()
	dup := append(SeedServers(), seed[0])
	badName := SeedServers()
	badName[1].Name = "C-2"
	badBlock := SeedServers()
	badBlock[2].Block = netip.MustParsePrefix("10.1.240.1/26")
	v6lo := SeedServers()
	v6lo[0].Loopback = netip.MustParsePrefix("2001:db8::1/128")
	for name, opts := range map[string]Options{
		"no fabricd binary": {Role: RoleFabricd},
		"missing binary":    {Role: RoleFabricd, FabricdBinary: "/nonexistent/fabricd"},
		"FRR's OpenFabric":  {Role: RoleFabricd, FabricdBinary: "/usr/lib/frr/fabricd"},
		"not executable":    {Role: RoleFabricd, FabricdBinary: notExec},
		"three ToRs":        {Role: RoleFRR, ToRs: 3},
		"no servers":        {Role: RoleFRR, Servers: []ServerSpec{}},
		"duplicate server":  {Role: RoleFRR, Servers: dup},
		"bad name":          {Role: RoleFRR, Servers: badName},
		"unmasked block":    {Role: RoleFRR, Servers: badBlock},
		"IPv6 loopback":     {Role: RoleFRR, Servers: v6lo},
		"unknown role":      {Role: Role(7)},
	} {
		// New must fail on these before it touches anything, root or not.
		if _, err := New(context.Background(), opts); err == nil {
			t.Errorf("%s: New succeeded", name)
		} else if strings.Contains(err.Error(), "building lab") {
			t.Errorf("%s: failed only while building: %v", name, err)
		}
	}
}

func TestWaitFor(t *testing.T) {
	ctx := context.Background()
	n := 0
	if err := WaitFor(ctx, time.Second, "three calls", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Errorf("WaitFor: %v after %d calls", err, n)
	}

	errLast := errors.New("still down")
	err := WaitFor(ctx, 120*time.Millisecond, "never", func() error { return errLast })
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errLast) || !strings.Contains(err.Error(), "waiting for never") {
		t.Errorf("timeout error: %v", err)
	}

	begin := time.Now()
	err = WaitFor(ctx, 10*time.Second, "a dead daemon", func() error { return Permanent(errLast) })
	if !errors.Is(err, errLast) || time.Since(begin) > time.Second {
		t.Errorf("permanent error: %v after %v", err, time.Since(begin))
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := WaitFor(cctx, 10*time.Second, "cancelled", func() error { return errLast }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestParseRoutes(t *testing.T) {
	out := `[{"dst":"2.2.2.2","nhid":14,"via":{"family":"inet6","host":"fe80::1"},"dev":"ens3","protocol":"bgp","metric":20,"flags":[]},` +
		`{"type":"blackhole","dst":"10.1.8.192/26","protocol":"static","metric":20,"flags":[]},` +
		`{"dst":"3.3.3.3","nhid":21,"protocol":"bgp","metric":20,"flags":[],"nexthops":[{"via":{"family":"inet6","host":"fe80::1"},"dev":"ens3","weight":1,"flags":[]},{"via":{"family":"inet6","host":"fe80::2"},"dev":"ens4","weight":1,"flags":[]}]},` +
		`{"dst":"default","gateway":"169.254.0.1","dev":"ens3","flags":["onlink"]}]`
	routes, err := parseRoutes(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkRoute(routes, netip.MustParsePrefix("2.2.2.2/32"), []string{"ens3"}); err != nil {
		t.Error(err)
	}
	if err := checkRoute(routes, netip.MustParsePrefix("3.3.3.3/32"), []string{"ens3", "ens4"}); err != nil {
		t.Error(err)
	}
	if err := checkRoute(routes, netip.MustParsePrefix("2.2.2.2/32"), []string{"ens3", "ens4"}); err == nil {
		t.Error("single-path route passed as ECMP")
	}
	if err := checkRoute(routes, netip.MustParsePrefix("10.1.8.192/26"), []string{""}); err == nil {
		t.Error("blackhole passed as unicast")
	}
	if _, ok := routes[netip.MustParsePrefix("0.0.0.0/0")]; !ok {
		t.Error("default route not parsed")
	}
}

func TestTOMLString(t *testing.T) {
	if got, want := tomlString(`/a "b"\c`+"\n"), `"/a \"b\"\\c\u000A"`; got != want {
		t.Errorf("tomlString = %s, want %s", got, want)
	}
}

func TestToRPrefixes(t *testing.T) {
	l := testLab(t, Options{Role: RoleFRR, ToRs: 2, ToRPrefixes: 3})
	want := []netip.Prefix{
		netip.MustParsePrefix("100.64.0.0/32"), netip.MustParsePrefix("100.64.0.1/32"), netip.MustParsePrefix("100.64.0.2/32"),
	}
	if got := l.ToRPrefixes(); !slices.Equal(got, want) {
		t.Errorf("ToRPrefixes() = %v, want %v", got, want)
	}
	for i := range 2 {
		bgpd := l.ToR(i).bgpdConf()
		for _, want := range []string{
			" neighbor swp3 interface peer-group COMPUTE\n no bgp network import-check\n",
			"  neighbor COMPUTE soft-reconfiguration inbound\n  network 100.64.0.0/32\n  network 100.64.0.1/32\n  network 100.64.0.2/32\n exit-address-family\n",
		} {
			if !strings.Contains(bgpd, want) {
				t.Errorf("%s bgpd config lacks %q:\n%s", l.ToR(i).Name(), want, bgpd)
			}
		}
	}
	if got := testLab(t, Options{Role: RoleFRR}).ToR(0).bgpdConf(); strings.Contains(got, "network") {
		t.Errorf("without ToRPrefixes the ToR config has network statements:\n%s", got)
	}
	other := testLab(t, Options{Role: RoleFRR, ToRPrefixes: 2, ToRPrefixBase: netip.MustParsePrefix("198.18.0.0/15")})
	if got := other.ToRPrefixes(); len(got) != 2 || got[1] != netip.MustParsePrefix("198.18.0.1/32") {
		t.Errorf("ToRPrefixes() with a base = %v", got)
	}

	for name, opts := range map[string]Options{
		"negative":                  {Role: RoleFRR, ToRPrefixes: -1},
		"too many for the base":     {Role: RoleFRR, ToRPrefixes: 5, ToRPrefixBase: netip.MustParsePrefix("198.18.0.0/30")},
		"unmasked base":             {Role: RoleFRR, ToRPrefixes: 1, ToRPrefixBase: netip.MustParsePrefix("198.18.0.1/15")},
		"IPv6 base":                 {Role: RoleFRR, ToRPrefixes: 1, ToRPrefixBase: netip.MustParsePrefix("2001:db8::/64")},
		"covers a loopback":         {Role: RoleFRR, ToRPrefixes: 1, ToRPrefixBase: netip.MustParsePrefix("0.0.0.0/1")},
		"covers a pod block":        {Role: RoleFRR, ToRPrefixes: 1, ToRPrefixBase: netip.MustParsePrefix("10.1.0.0/16")},
		"covers the Calico gateway": {Role: RoleFRR, ToRPrefixes: 1, ToRPrefixBase: netip.MustParsePrefix("169.254.0.0/16")},
	} {
		if _, err := New(context.Background(), opts); err == nil {
			t.Errorf("%s: New succeeded", name)
		} else if strings.Contains(err.Error(), "building lab") {
			t.Errorf("%s: failed only while building: %v", name, err)
		}
	}
}
