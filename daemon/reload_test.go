package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/fabricd/fabricd/autoannounce"
	"github.com/fabricd/fabricd/config"
)

const baseConfig = `
asn = 65001
router-id = "10.0.0.1"

[[neighbor]]
interface = "eth0"
remote-as = "external"

[[announce]]
prefix = "10.0.0.1/32"
`

func mustParse(t *testing.T, src string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("fabricd.toml", []byte(src))
	if err != nil {
		t.Fatalf("parsing config: %v", err)
	}
	return cfg
}

// restartOnly decides whether a reload is refused, so every setting that
// the running daemon cannot apply must be caught, and every one it can
// must pass.
func TestRestartOnly(t *testing.T) {
	cases := []struct {
		name  string
		extra string // appended to baseConfig (or replacing it when full is set)
		full  string
		want  []string
	}{
		{name: "identical", want: nil},
		{name: "new neighbor", extra: "[[neighbor]]\ninterface = \"eth1\"\nremote-as = 65100\n"},
		{name: "new announcement", extra: "[[announce]]\nprefix = \"10.1.8.192/26\"\nblackhole = true\n"},
		{name: "log level", extra: "[log]\nlevel = \"debug\"\n"},
		{name: "auto-announce", extra: "[[auto-announce]]\npool = \"10.1.0.0/16\"\nblock-size = 26\n"},
		{name: "timers", extra: "[bgp]\nhold-time = 30\nkeepalive = 10\n", want: []string{"bgp"}},
		{name: "api socket", extra: "[api]\nsocket = \"/run/other.sock\"\n", want: []string{"api"}},
		{name: "metrics", extra: "[metrics]\nlisten = \"127.0.0.1:9179\"\n", want: []string{"metrics"}},
		{name: "fib metric", extra: "[fib]\nmetric = 30\n", want: []string{"fib"}},
		{name: "import filter", extra: "[import]\nallow-default = true\n", want: []string{"import"}},
		{
			name: "identity",
			full: "asn = 65002\nrouter-id = \"10.0.0.2\"\n[[neighbor]]\ninterface = \"eth0\"\nremote-as = \"external\"\n",
			want: []string{"asn", "router-id"},
		},
	}
	cur := mustParse(t, baseConfig)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := baseConfig + tc.extra
			if tc.full != "" {
				src = tc.full
			}
			got := restartOnly(cur, mustParse(t, src))
			if !slices.Equal(got, tc.want) {
				t.Errorf("restartOnly = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDesiredAnnouncementsConfigWins(t *testing.T) {
	cfg := mustParse(t, baseConfig+"[[announce]]\nprefix = \"10.1.8.192/26\"\nblackhole = true\n")
	auto := []autoannounce.Announcement{
		{Prefix: netip.MustParsePrefix("10.1.8.192/26"), Blackhole: false, Source: "pool 10.1.0.0/16"},
		{Prefix: netip.MustParsePrefix("10.1.9.0/26"), Blackhole: true, Source: "pool 10.1.0.0/16"},
	}
	got := desiredAnnouncements(cfg, auto)
	want := map[netip.Prefix]announcement{
		netip.MustParsePrefix("10.0.0.1/32"):   {blackhole: false, source: "config"},
		netip.MustParsePrefix("10.1.8.192/26"): {blackhole: true, source: "config"},
		netip.MustParsePrefix("10.1.9.0/26"):   {blackhole: true, source: "pool 10.1.0.0/16"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d announcements %v, want %v", len(got), got, want)
	}
	for p, w := range want {
		if g, ok := got[p]; !ok || g != w {
			t.Errorf("%s: got %+v (present %v), want %+v", p, g, ok, w)
		}
	}
}

func TestAutoConfig(t *testing.T) {
	if _, ok := autoConfig(mustParse(t, baseConfig)); ok {
		t.Error("a config without auto-announce or announce-addresses starts the kernel watcher")
	}
	cfg := mustParse(t, baseConfig+
		"[[auto-announce]]\npool = \"10.1.0.0/16\"\nblock-size = 26\nblackhole = true\n"+
		"[[announce-addresses]]\ninterfaces = \"lo\"\nexclude = [\"127.0.0.0/8\"]\n")
	c, ok := autoConfig(cfg)
	if !ok {
		t.Fatal("auto-announce configured but the watcher would not run")
	}
	if len(c.Pools) != 1 || c.Pools[0].Pool != netip.MustParsePrefix("10.1.0.0/16") || c.Pools[0].BlockSize != 26 || !c.Pools[0].Blackhole {
		t.Errorf("pools = %+v", c.Pools)
	}
	if len(c.Addresses) != 1 || c.Addresses[0].Interfaces != "lo" || len(c.Addresses[0].Exclude) != 1 {
		t.Errorf("addresses = %+v", c.Addresses)
	}
}
