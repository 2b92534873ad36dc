package testenv

import (
	"strings"
	"testing"
)

func TestToRFlavorNames(t *testing.T) {
	for _, f := range ToRFlavors() {
		got, err := ParseToRFlavor(f.String())
		if err != nil || got != f {
			t.Errorf("ParseToRFlavor(%q) = %v, %v; want %v", f.String(), got, err, f)
		}
	}
	if _, err := ParseToRFlavor("junos"); err == nil || !strings.Contains(err.Error(), "frr-no-ra") {
		t.Errorf("ParseToRFlavor(junos): %v, want an error listing the flavors", err)
	}
}

func TestFlavorValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"more flavors than ToRs", Options{Role: RoleFRR, ToRFlavors: []ToRFlavor{ToRFRR, ToRBIRD}}, "2 ToRFlavors for 1 ToRs"},
		{"unknown flavor", Options{Role: RoleFRR, ToRFlavors: []ToRFlavor{42}}, "unknown flavor"},
		{"BIRD with an originated table", Options{Role: RoleFRR, ToRFlavors: []ToRFlavor{ToRBIRD}, ToRPrefixes: 10}, "ToRPrefixes needs an FRR ToR"},
	} {
		if _, err := newLab(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	l := testLab(t, Options{Role: RoleFRR, ToRs: 2, ToRFlavors: []ToRFlavor{ToRBIRD}})
	if l.ToR(0).Flavor() != ToRBIRD || l.ToR(1).Flavor() != ToRFRR {
		t.Errorf("flavors %v, %v; want bird, then the default frr", l.ToR(0).Flavor(), l.ToR(1).Flavor())
	}
}

// TestFRRFlavorConfigs checks each FRR variant's lines, and that everything
// else is the seed's config.
func TestFRRFlavorConfigs(t *testing.T) {
	seed := testLab(t, Options{Role: RoleFRR}).ToR(0)
	for _, tc := range []struct {
		flavor          ToRFlavor
		zebra, bgpd     string // lines the variant has
		notZebra, notBG string // seed lines it must not have
	}{
		{ToRFRRV6Only, "", " neighbor swp2 interface v6only peer-group COMPUTE\n", "", " neighbor swp2 interface peer-group COMPUTE\n"},
		{ToRFRRRALifetime0, "interface swp1\n ipv6 nd ra-interval 5\n ipv6 nd ra-lifetime 0\n no ipv6 nd suppress-ra\nexit\n", "", " ipv6 nd ra-lifetime 15\n", ""},
		{ToRFRRNoRA, "interface swp3\n ipv6 nd suppress-ra\nexit\n", "", "no ipv6 nd suppress-ra", ""},
		{ToRFRRGlobal, "", "", "", ""},
	} {
		tor := testLab(t, Options{Role: RoleFRR, ToRFlavors: []ToRFlavor{tc.flavor}}).ToR(0)
		zebra, bgpd := tor.zebraConf(), tor.bgpdConf()
		if tc.zebra != "" && !strings.Contains(zebra, tc.zebra) {
			t.Errorf("%v: zebra config lacks %q:\n%s", tc.flavor, tc.zebra, zebra)
		}
		if tc.notZebra != "" && strings.Contains(zebra, tc.notZebra) {
			t.Errorf("%v: zebra config has %q:\n%s", tc.flavor, tc.notZebra, zebra)
		}
		if tc.bgpd != "" && !strings.Contains(bgpd, tc.bgpd) {
			t.Errorf("%v: bgpd config lacks %q:\n%s", tc.flavor, tc.bgpd, bgpd)
		}
		if tc.notBG != "" && strings.Contains(bgpd, tc.notBG) {
			t.Errorf("%v: bgpd config has %q:\n%s", tc.flavor, tc.notBG, bgpd)
		}
		if tc.zebra == "" && zebra != seed.zebraConf() {
			t.Errorf("%v: zebra config differs from the seed's:\n%s", tc.flavor, zebra)
		}
		if tc.bgpd == "" && bgpd != seed.bgpdConf() {
			t.Errorf("%v: bgpd config differs from the seed's:\n%s", tc.flavor, bgpd)
		}
	}
	l := testLab(t, Options{Role: RoleFRR, ToRs: 2, ToRFlavors: []ToRFlavor{ToRFRRGlobal, ToRFRRGlobal}})
	if got := l.ToR(1).GlobalAddr(2).String(); got != "2001:db8:2:3::1/64" {
		t.Errorf("tor2 swp3 global address %s", got)
	}
}

func TestBIRDConfig(t *testing.T) {
	l := testLab(t, Options{Role: RoleFRR, ToRs: 2, ToRFlavors: []ToRFlavor{ToRFRR, ToRBIRD}})
	conf := l.ToR(1).birdConf()
	for _, want := range []string{
		"log \"/lab/tor2/bird.log\" all;\n",
		"router id 5.5.5.5;\n",
		"\tipv4 { import where net != 127.0.0.0/8; };\n",
		"protocol kernel {\n\tipv4 { export where source = RTS_BGP; };\n}\n",
		"protocol radv {\n\tinterface \"swp*\" {\n\t\tmin ra interval 3;\n\t\tmax ra interval 5;\n\t\tdefault lifetime 15;\n",
		"template bgp COMPUTE {\n\tlocal as 65005;\n\tneighbor range fe80::/10 external;\n",
		"\tipv4 { extended next hop on; import all; export all; };\n",
		"protocol bgp swp1 from COMPUTE {\n\tinterface \"swp1\";\n\tdynamic name \"swp1_\";\n}\n",
		"protocol bgp swp3 from COMPUTE {\n\tinterface \"swp3\";\n\tdynamic name \"swp3_\";\n}\n",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("BIRD config lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "swp4") {
		t.Errorf("BIRD config has a port for a fourth server:\n%s", conf)
	}
}

// birdProtocolsAll is `birdc show protocols all` of a BIRD ToR (2.0.12), cut
// down: swp1 with an established session, swp2 with a session that is
// reconnecting next to a newer established one, swp3 with no session yet.
const birdProtocolsAll = `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     2026-12-01 21:42:23.856652  

direct1    Direct     ---        up     2026-12-01 21:42:23.856652  
  Channel ipv4
    State:          UP
    Table:          master4
    Preference:     240
    Input filter:   (unnamed)
    Output filter:  REJECT
    Routes:         1 imported, 0 exported, 1 preferred

swp1       BGP        ---        start  2026-12-01 21:42:23.856652  Passive       
  BGP state:          Passive
    Neighbor range:   fe80::/10
    Neighbor AS:      0
    Local AS:         65004
  Channel ipv4
    State:          DOWN
    Table:          master4
    Preference:     100
    Input filter:   ACCEPT
    Output filter:  ACCEPT

swp3       BGP        ---        start  2026-12-01 21:42:23.856652  Passive       
  BGP state:          Passive
    Neighbor range:   fe80::/10
    Neighbor AS:      0
    Local AS:         65004

swp1_1     BGP        ---        up     2026-12-01 21:42:29.778881  Established   
  BGP state:          Established
    Neighbor address: fe80::3ce8:aeff:fef0:c598%swp1
    Neighbor AS:      65001
    Local AS:         65004
    Neighbor ID:      1.1.1.1
    Local capabilities
      Multiprotocol
        AF announced: ipv4 ipv6
      Extended next hop
        IPv6 nexthop: ipv4
    Session:          external AS4
    Source address:   fe80::ace5:1aff:fe01:ae23
    Hold timer:       5.953/9
    Keepalive timer:  0.613/3
  Channel ipv4
    State:          UP
    Table:          master4
    Preference:     100
    Input filter:   ACCEPT
    Output filter:  ACCEPT
    Routes:         2 imported, 5 exported, 2 preferred
    Route change stats:     received   rejected   filtered    ignored   accepted
      Import updates:              2          0          0          0          2
    BGP Next hop:   :: fe80::ace5:1aff:fe01:ae23
  Channel ipv6
    State:          UP
    Table:          master6
    Preference:     100
    Input filter:   ACCEPT
    Output filter:  ACCEPT
    Routes:         7 imported, 9 exported, 0 preferred

swp2_1     BGP        ---        start  2026-12-01 21:42:30.472736  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: fe80::4800:e2ff:fec5:8dfe%swp2
    Neighbor AS:      65002
    Local AS:         65004
    Connect delay:    2.431/5
    Last error:       Socket: Connection refused
  Channel ipv4
    State:          DOWN
    Table:          master4

swp2_2     BGP        ---        up     2026-12-01 21:42:31.472736  Established   
  BGP state:          Established
    Neighbor address: fe80::1%swp2
    Neighbor AS:      65002
    Local AS:         65004
  Channel ipv4
    State:          UP
    Routes:         1 imported, 1 filtered, 4 exported, 1 preferred
`

func TestParseBirdProtocols(t *testing.T) {
	got := parseBirdProtocols(birdProtocolsAll)
	want := map[string]BGPPeer{
		"swp1": {RemoteAS: 65001, State: "Established", PfxRcd: 2, PfxSnt: 5},
		"swp2": {RemoteAS: 65002, State: "Established", PfxRcd: 1, PfxSnt: 4},
		"swp3": {State: "Passive"},
	}
	if len(got) != len(want) {
		t.Errorf("got %d ports, want %d: %+v", len(got), len(want), got)
	}
	for port, w := range want {
		if got[port] != w {
			t.Errorf("%s: %+v, want %+v", port, got[port], w)
		}
	}
	if got := parseBirdProtocols("BIRD 2.0.12 ready.\n"); len(got) != 0 {
		t.Errorf("no protocols: %+v", got)
	}
}
