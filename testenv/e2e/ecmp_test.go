package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

var (
	dualOnce sync.Once
	dual     *testenv.Lab
	dualErr  error
)

// dualLab is a second shared lab: every server has two uplinks, ens3 to
// tor (AS 65004) and ens4 to tor2 (AS 65005).
func dualLab(t *testing.T) *testenv.Lab {
	t.Helper()
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	dualOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		dual, dualErr = testenv.New(ctx, testenv.Options{
			Role:          testenv.RoleFabricd,
			FabricdBinary: bin("fabricd"),
			ToRs:          2,
			Logf:          func(f string, a ...any) { fmt.Printf("dual lab: "+f+"\n", a...) },
		})
		if dualErr != nil {
			return
		}
		registerClose(dual)
		if dualErr = dual.StartServers(ctx); dualErr != nil {
			return
		}
		dualErr = dual.WaitConverged(ctx, 30*time.Second)
	})
	if dualErr != nil {
		if dual != nil {
			dumpLogs(t, dual)
		}
		t.Fatalf("dual-ToR lab: %v", dualErr)
	}
	return dual
}

// routeVia waits until c1's route to prefix leaves through exactly devs.
func routeVia(ctx context.Context, t *testing.T, s *testenv.Server, prefix string, devs ...string) time.Duration {
	t.Helper()
	start := time.Now()
	err := testenv.WaitFor(ctx, 15*time.Second, fmt.Sprintf("%s's route to %s via %v", s.Name(), prefix, devs), func() error {
		out, err := s.Exec(ctx, "ip", "route", "show", prefix)
		if err != nil {
			return err
		}
		var got []string
		for _, dev := range []string{"ens3", "ens4"} {
			if strings.Contains(out, "dev "+dev+" ") {
				got = append(got, dev)
			}
		}
		if strings.Join(got, ",") != strings.Join(devs, ",") {
			return fmt.Errorf("route is %q", out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

func TestECMPAcrossTwoToRs(t *testing.T) {
	lab := dualLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	c1 := lab.Server("c1")

	// Equal AS-path length through different ASes: one multipath route
	// on one nexthop group.
	for _, p := range []string{"2.2.2.2", "10.1.71.192/26", "3.3.3.3"} {
		routeVia(ctx, t, c1, p, "ens3", "ens4")
	}
	out, _ := c1.Exec(ctx, "ip", "route", "show", "2.2.2.2")
	if !strings.Contains(out, "nexthop via 169.254.0.1 dev ens3 weight 1 onlink") || !strings.Contains(out, "nexthop via 169.254.0.1 dev ens4 weight 1 onlink") {
		t.Errorf("multipath route:\n%s", out)
	}
	// A ToR's own loopback is one AS hop shorter through it: single path.
	routeVia(ctx, t, c1, "4.4.4.4", "ens3")
	routeVia(ctx, t, c1, "5.5.5.5", "ens4")

	// The '=' mark of the second path in the BGP table.
	table, err := fabricctl(ctx, c1, "show", "bgp", "ipv4", "unicast")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, "*= ") {
		t.Errorf("no multipath path in the BGP table:\n%s", table)
	}

	// Carrier loss on ens3: the group shrinks, the route stays.
	tor := lab.ToR(0)
	port := tor.PortFor("c1")
	if _, err := tor.Exec(ctx, "ip", "link", "set", port, "down"); err != nil {
		t.Fatal(err)
	}
	down := routeVia(ctx, t, c1, "2.2.2.2", "ens4")
	routeVia(ctx, t, c1, "10.1.71.192/26", "ens4")
	if out, _ := c1.Exec(ctx, "ip", "route", "show", "4.4.4.4"); out != "" {
		t.Errorf("route through the lost ToR only is still there: %q", out)
	}
	// Traffic flows again once the far side has also heard (the reply
	// from c2 takes either ToR until tor withdraws c1's routes from it).
	pingStart := time.Now()
	if err := testenv.WaitFor(ctx, 10*time.Second, "ping over the remaining uplink", func() error {
		_, err := c1.Exec(ctx, "ping", "-c", "1", "-W", "1", "-I", "1.1.1.1", "2.2.2.2")
		return err
	}); err != nil {
		t.Error(err)
	}
	t.Logf("ping through the remaining uplink works %v after the route shrank", time.Since(pingStart).Round(time.Millisecond))

	// Carrier back: ECMP returns once the ToR can forward again: its
	// session is back and it has resent its table (End-of-RIB), plus a
	// moment for its own FIB. (This test used to expect ECMP within
	// milliseconds, from the paths of the old session: traffic was then
	// sent to a ToR that might have lost its routes, as after a reload.)
	if _, err := tor.Exec(ctx, "ip", "link", "set", port, "up"); err != nil {
		t.Fatal(err)
	}
	up := routeVia(ctx, t, c1, "2.2.2.2", "ens3", "ens4")
	routeVia(ctx, t, c1, "4.4.4.4", "ens3")
	t.Logf("ToR port down -> group shrunk seen after %v; port up -> ECMP back after %v, once the ToR resent its table (polling at 50 ms)", down.Round(time.Millisecond), up.Round(time.Millisecond))
	start := time.Now()
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("the ToR's session with c1 is back %v later", time.Since(start).Round(time.Millisecond))
}

func TestECMPSurvivesLosingOneSession(t *testing.T) {
	lab := dualLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	c1 := lab.Server("c1")
	routeVia(ctx, t, c1, "2.2.2.2", "ens3", "ens4")

	// tor2's BGP stops (links stay up): its paths are withdrawn, the
	// route shrinks to ens3 and is not deleted.
	tor2 := lab.ToR(1)
	if err := tor2.Stop(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	routeVia(ctx, t, c1, "2.2.2.2", "ens3")
	if err := tor2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	routeVia(ctx, t, c1, "2.2.2.2", "ens3", "ens4")
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
