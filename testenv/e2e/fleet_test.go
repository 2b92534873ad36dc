package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/testenv"
)

// fleetConfig is one file for every server: identity from the loopback,
// pod blocks from the kernel, the loopback from lo. Only the API socket
// differs per server in the lab (all namespaces share one /run), and that
// is a command-line flag.
const fleetConfig = `asn = "auto"
router-id = "auto"

[[neighbor]]
interface = "ens3"

[[auto-announce]]
pool = "10.1.0.0/16"
block-size = 26
interfaces = "cali*"
blackhole = true

[[announce-addresses]]
interfaces = "lo"
exclude = ["127.0.0.0/8"]

[log]
level = "debug"
`

func TestIdenticalConfigOnEveryServer(t *testing.T) {
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	ctx := ctxFor(t, 3*time.Minute)
	lab, err := testenv.New(ctx, testenv.Options{
		Role:          testenv.RoleFabricd,
		FabricdBinary: bin("fabricd"),
		Logf:          func(f string, a ...any) { fmt.Printf("fleet lab: "+f+"\n", a...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lab.Close()
	logOnFailure(t, lab)
	for _, s := range lab.Servers() {
		if err := s.WriteConfig(fleetConfig); err != nil {
			t.Fatal(err)
		}
	}
	start := func(s *testenv.Server) {
		t.Helper()
		if err := s.Start(ctx, "--socket", s.SocketPath()); err != nil {
			t.Fatal(err)
		}
	}
	waitOnline := func(s *testenv.Server, timeout string) (string, error) {
		return fabricctl(ctx, s, "wait-online", "--timeout", timeout)
	}

	// Without its ToR, a server does not come online: wait-online gives
	// up with a non-zero exit.
	tor := lab.ToR(0)
	if err := tor.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c1 := lab.Server("c1")
	start(c1)
	began := time.Now()
	out, err := waitOnline(c1, "3s")
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "not online after 3s") {
		t.Fatalf("wait-online without a ToR: %v\n%s", err, out)
	}
	if took := time.Since(began); took > 6*time.Second {
		t.Errorf("wait-online took %v to time out after 3s", took)
	}

	// With the ToR, every server comes online.
	if err := tor.Start(ctx); err != nil {
		t.Fatal(err)
	}
	start(lab.Server("c2"))
	start(lab.Server("c3"))
	for _, s := range lab.Servers() {
		out, err := waitOnline(s, "60s")
		if err != nil {
			t.Fatalf("%s: wait-online: %v\n%s", s.Name(), err, out)
		}
		t.Logf("%s: %s", s.Name(), strings.TrimSpace(out))
	}
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// The same result as the seed's hand-written configs.
	peers, err := tor.BGPPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range lab.Servers() {
		p := peers[tor.PortFor(s.Name())]
		wantAS := config.DeriveASN(s.Spec().Loopback.Addr())
		if p.State != "Established" || p.PfxRcd != 2 || p.RemoteAS != wantAS {
			t.Errorf("ToR's session with %s: %+v, want Established, 2 prefixes, AS %d", s.Name(), p, wantAS)
		}
		waitKernel(ctx, t, lab, s, wantKernel(lab, s))
		sum, err := fabricctl(ctx, s, "show", "bgp", "summary")
		if err != nil {
			t.Fatal(err)
		}
		wantLine := fmt.Sprintf("BGP router identifier %s, local AS number %d", s.Spec().Loopback.Addr(), wantAS)
		if !strings.Contains(sum, wantLine) || !strings.Contains(sum, "Derived identity: router ID from lo, AS from the router ID") {
			t.Errorf("%s: show bgp summary:\n%s\nwant %q and the derived identity", s.Name(), sum, wantLine)
		}
	}
	for _, pair := range [][2]string{{"c1", "c2"}, {"c2", "c3"}, {"c3", "c1"}} {
		from, to := lab.Server(pair[0]), lab.Server(pair[1])
		if out, err := from.Exec(ctx, "ping", "-c", "1", "-W", "2", "-I", from.Spec().Loopback.Addr().String(), to.Spec().Loopback.Addr().String()); err != nil {
			t.Errorf("ping %s -> %s: %v\n%s", pair[0], pair[1], err, out)
		}
		if out, err := from.Pod(0).Exec(ctx, "ping", "-c", "1", "-W", "2", to.Pod(0).Addr().String()); err != nil {
			t.Errorf("pod %s -> pod %s: %v\n%s", pair[0], pair[1], err, out)
		}
	}
}
