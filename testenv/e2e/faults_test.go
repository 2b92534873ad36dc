package e2e

// Faults of the link and of the ToR: flaps, a restarting or replaced ToR,
// a tampered gateway neighbour entry, a ToR that stops forwarding with its
// link up (BFD). Each test leaves its lab converged with the default
// configs.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// TestLinkFlaps flaps c1's uplink 50 times, mostly from the ToR's side
// (carrier loss), every fifth time from the server's side (admin down, which
// makes the kernel drop the uplink's routes, nexthop objects and neighbour
// entries itself). Afterwards fabricd must have put back exactly what it had
// and hold no more goroutines or file descriptors than before.
func TestLinkFlaps(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 4*time.Minute)
	c1, tor := lab.Server("c1"), lab.ToR(0)
	port := tor.PortFor("c1")
	restartWith(ctx, t, lab, c1, withMetrics(c1.DefaultConfig()))
	pid := c1.PID()

	waitKernel(ctx, t, lab, c1, wantKernel(lab, c1))
	before, err := snapshotKernel(ctx, c1)
	if err != nil {
		t.Fatal(err)
	}
	if len(before.neigh) != 1 || len(before.nexthops) == 0 {
		t.Fatalf("unexpected baseline: %+v", before)
	}
	// The baseline is the lowest of a few samples: a scrape or a BGP
	// keepalive briefly adds a goroutine.
	baseG := 1 << 30
	for range 5 {
		baseG = min(baseG, int(metric(ctx, t, c1, "go_goroutines")))
		time.Sleep(200 * time.Millisecond)
	}
	baseFDs, err := openFDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("baseline: %d goroutines, %d open files, %d routes, %d nexthop objects", baseG, baseFDs, len(before.routes4), len(before.nexthops))

	// A fixed seed: the same flap pattern every run, with intervals from
	// 10 ms (a bouncing connector) to a few hundred ms.
	rng := rand.New(rand.NewPCG(50, 50))
	start := time.Now()
	var upWaits []time.Duration
	for i := range 50 {
		run, dev, side := c1.Exec, "ens3", "server"
		if i%5 != 4 {
			run, dev, side = tor.Exec, port, "ToR"
		}
		if _, err := run(ctx, "ip", "link", "set", dev, "down"); err != nil {
			t.Fatalf("flap %d (%s side): %v", i+1, side, err)
		}
		time.Sleep(time.Duration(10+rng.IntN(190)) * time.Millisecond)
		if _, err := run(ctx, "ip", "link", "set", dev, "up"); err != nil {
			t.Fatalf("flap %d (%s side): %v", i+1, side, err)
		}
		if i%10 == 9 {
			// Now and then let the session come all the way up, so that
			// flaps also hit an established session with its routes.
			upWaits = append(upWaits, waitSession(ctx, t, c1, "ens3", tor, 30*time.Second))
			continue
		}
		time.Sleep(time.Duration(10+rng.IntN(390)) * time.Millisecond)
	}
	t.Logf("50 flaps done in %v (session re-established after flaps 10, 20, ...: %v)", time.Since(start).Round(time.Millisecond), upWaits)

	if c1.PID() != pid {
		t.Fatalf("fabricd restarted or died during the flaps (pid %d, now %d)", pid, c1.PID())
	}
	settle := time.Now()
	if err := lab.WaitConverged(ctx, 45*time.Second); err != nil {
		t.Fatal(err)
	}
	err = testenv.WaitFor(ctx, 20*time.Second, "c1's kernel to be as before the flaps", func() error {
		now, err := snapshotKernel(ctx, c1)
		if err != nil {
			return err
		}
		return now.diff(before)
	})
	if err != nil {
		t.Error(err)
	}
	t.Logf("kernel state back %v after the last flap", time.Since(settle).Round(time.Millisecond))

	// Goroutines and descriptors: allowed to settle (sessions and
	// connection attempts wind down), but not to stay above the baseline.
	var g float64
	err = testenv.WaitFor(ctx, 15*time.Second, "goroutines back to the baseline", func() error {
		g = metric(ctx, t, c1, "go_goroutines")
		if int(g) > baseG+3 {
			return fmt.Errorf("%v goroutines, baseline %d", g, baseG)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	var fds int
	err = testenv.WaitFor(ctx, 15*time.Second, "open files back to the baseline", func() error {
		n, err := openFDs(pid)
		if err != nil {
			return testenv.Permanent(err)
		}
		fds = n
		if fds > baseFDs {
			return fmt.Errorf("%d open files, baseline %d", fds, baseFDs)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
		if out, lerr := exec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd", pid)).CombinedOutput(); lerr == nil {
			t.Logf("open files:\n%s", out)
		}
	}
	t.Logf("after the flaps: %v goroutines (baseline %d), %d open files (baseline %d)", g, baseG, fds, baseFDs)

	if out, err := c1.Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "1.1.1.1", "2.2.2.2"); err != nil {
		t.Errorf("ping c1 -> c2 after the flaps: %v\n%s", err, out)
	}
}

// TestToRRestart restarts the ToR's FRR (zebra, bgpd, bfdd) under the
// servers: every session and route must come back by itself, with no
// fabricd restarted.
func TestToRRestart(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	tor, c1 := lab.ToR(0), lab.Server("c1")
	pids := map[string]int{}
	for _, s := range lab.Servers() {
		pids[s.Name()] = s.PID()
	}

	// How long c1 had no route to c2 while the ToR was away, for the
	// record: the ToR's zebra removes its own routes when it stops and
	// FRR does not announce preserved forwarding state, so fabricd rightly
	// drops the ToR's paths instead of keeping them as stale.
	var missing atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if out, err := c1.Exec(ctx, "ip", "route", "show", "2.2.2.2"); err == nil && !strings.Contains(out, "proto bgp") {
				missing.Add(int64(50 * time.Millisecond))
			}
		}
	}()

	start := time.Now()
	if err := tor.Restart(ctx); err != nil {
		close(stop)
		t.Fatal(err)
	}
	restarted := time.Since(start)
	err := lab.WaitConverged(ctx, 60*time.Second)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ToR restarted in %v; fabric converged %v after the restart began; c1 had no route to c2 for about %v",
		restarted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), time.Duration(missing.Load()))

	peers, err := tor.BGPPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range lab.Servers() {
		if got := s.PID(); got != pids[s.Name()] {
			t.Errorf("%s: fabricd pid %d, was %d: it restarted or died", s.Name(), got, pids[s.Name()])
		}
		if p := peers[tor.PortFor(s.Name())]; p.State != "Established" || p.PfxRcd != 2 {
			t.Errorf("ToR's session with %s: %+v", s.Name(), p)
		}
		waitKernel(ctx, t, lab, s, wantKernel(lab, s))
		want := fmt.Sprintf("169.254.0.1 dev ens3 lladdr %s PERMANENT proto bgp", torMAC(ctx, t, lab, s))
		if neigh, _ := kernelLines(ctx, s, "neigh", "show", "169.254.0.1"); !slices.Equal(neigh, []string{want}) {
			t.Errorf("%s: neighbour entries %q, want %q", s.Name(), neigh, want)
		}
	}
	if out, err := c1.Pod(0).Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "1", lab.Server("c3").Pod(0).Addr().String()); err != nil {
		t.Errorf("pod c1 -> pod c3 after the ToR's restart: %v\n%s", err, out)
	}
}

// TestToRReplaced swaps the ToR on c2's link for "another box": its port
// goes down, comes back with a new MAC and so a new EUI-64 link-local
// address. fabricd must follow within one of the ToR's RA intervals (5 s)
// after the port is up, plus the new address's DAD (about 1.5 s): new MAC in
// the 169.254.0.1 entry, session Established with the new address.
func TestToRReplaced(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	tor, c2 := lab.ToR(0), lab.Server("c2")
	port := tor.PortFor("c2")
	oldMAC := torMAC(ctx, t, lab, c2)
	const newMAC = "02:fd:00:00:00:02"
	// The new ToR's address goes through duplicate address detection
	// (1-2 s), then its session comes up and it sends its table (FRR
	// holds it back about a second); the gateway entry is written only
	// then, when the uplink forwards again.
	const limit = 9 * time.Second

	// replace gives the ToR's port mac and measures how long fabricd
	// takes to follow.
	replace := func(t *testing.T, mac string) {
		t.Helper()
		for _, args := range [][]string{{"link", "set", port, "down"}, {"link", "set", port, "address", mac}, {"link", "set", port, "up"}} {
			if _, err := tor.Exec(ctx, "ip", args...); err != nil {
				t.Fatal(err)
			}
		}
		up := time.Now()
		var ll string
		err := testenv.WaitFor(ctx, 5*time.Second, "the ToR port's new link-local address", func() error {
			out, err := tor.Exec(ctx, "ip", "-j", "-6", "addr", "show", "dev", port, "scope", "link")
			if err != nil {
				return err
			}
			var links []struct {
				AddrInfo []struct {
					Local string `json:"local"`
				} `json:"addr_info"`
			}
			if err := json.Unmarshal([]byte(out), &links); err != nil {
				return err
			}
			if len(links) != 1 || len(links[0].AddrInfo) != 1 {
				return fmt.Errorf("addresses: %s", out)
			}
			ll = links[0].AddrInfo[0].Local
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		wantNeigh := []string{fmt.Sprintf("169.254.0.1 dev ens3 lladdr %s PERMANENT proto bgp", mac)}
		var neighAt time.Duration
		err = testenv.WaitFor(ctx, 20*time.Second, "the gateway entry with the new MAC and the session with the new address", func() error {
			if neighAt == 0 {
				neigh, err := kernelLines(ctx, c2, "neigh", "show", "169.254.0.1")
				if err != nil {
					return err
				}
				if !slices.Equal(neigh, wantNeigh) {
					return fmt.Errorf("neighbour entry %q", neigh)
				}
				neighAt = time.Since(up)
			}
			st, err := fabricdIface(ctx, c2, "ens3")
			if err != nil {
				return err
			}
			if st.PeerAddress != ll+"%ens3" || st.PeerMAC != mac || st.SessionState != "Established" {
				return fmt.Errorf("fabricd: peer %s %s, session %s", st.PeerAddress, st.PeerMAC, st.SessionState)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sessionAt := time.Since(up)
		t.Logf("ToR port up with MAC %s (%s): gateway entry updated after %v, session Established with the new address after %v",
			mac, ll, neighAt.Round(time.Millisecond), sessionAt.Round(time.Millisecond))
		if neighAt > limit || sessionAt > limit {
			t.Errorf("fabricd took %v (neighbour entry) and %v (session) to follow the new ToR, want both within %v", neighAt, sessionAt, limit)
		}
		waitKernel(ctx, t, lab, c2, wantKernel(lab, c2))
		if out, err := c2.Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "2.2.2.2", "1.1.1.1"); err != nil {
			t.Errorf("ping c2 -> c1 through the new ToR: %v\n%s", err, out)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if torMAC(ctx, t, lab, c2) != oldMAC {
			for _, args := range [][]string{{"link", "set", port, "down"}, {"link", "set", port, "address", oldMAC}, {"link", "set", port, "up"}} {
				tor.Exec(ctx, "ip", args...)
			}
		}
		if err := lab.WaitConverged(ctx, 45*time.Second); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	t.Run("new box", func(t *testing.T) { replace(t, newMAC) })
	t.Run("old box back", func(t *testing.T) { replace(t, oldMAC) })
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestGatewayNeighborRestored has an operator or another daemon overwrite,
// downgrade and delete c3's 169.254.0.1 entry, which every learned route
// needs: fabricd puts it back within a second or two.
func TestGatewayNeighborRestored(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, time.Minute)
	c3 := lab.Server("c3")
	mac := torMAC(ctx, t, lab, c3)
	want := []string{fmt.Sprintf("169.254.0.1 dev ens3 lladdr %s PERMANENT proto bgp", mac)}
	if got, _ := kernelLines(ctx, c3, "neigh", "show", "169.254.0.1"); !slices.Equal(got, want) {
		t.Fatalf("baseline neighbour entry %q, want %q", got, want)
	}
	logFrom := len(c3.Log())
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"overwritten with another MAC", []string{"neigh", "replace", "169.254.0.1", "lladdr", "02:de:ad:be:ef:00", "dev", "ens3", "nud", "permanent"}},
		{"deleted", []string{"neigh", "del", "169.254.0.1", "dev", "ens3"}},
		{"made a dynamic entry", []string{"neigh", "replace", "169.254.0.1", "lladdr", mac, "dev", "ens3", "nud", "reachable"}},
	} {
		if _, err := c3.Exec(ctx, "ip", tc.args...); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		start := time.Now()
		var got []string
		err := testenv.WaitFor(ctx, 10*time.Second, "the gateway entry restored", func() error {
			var err error
			if got, err = kernelLines(ctx, c3, "neigh", "show", "169.254.0.1"); err != nil {
				return err
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("entry %q", got)
			}
			return nil
		})
		took := time.Since(start)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		t.Logf("%s: restored after %v", tc.name, took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("%s: restoring took %v, want at most 2 s", tc.name, took)
		}
	}
	waitKernel(ctx, t, lab, c3, wantKernel(lab, c3))
	if !strings.Contains(c3.Log()[logFrom:], "neighbour entry for the gateway was changed by someone else; restoring it") {
		t.Errorf("fabricd did not log the restores")
	}
}

// TestBFDDetectsSilentToR runs BFD (100 ms x 3) between c1 and tor in the
// dual-ToR lab, then has tor drop everything on its port to c1 while the
// link stays up. Without BFD only the 9 s hold timer would notice; with it
// the session and its routes must go within a second, and traffic moves to
// tor2.
func TestBFDDetectsSilentToR(t *testing.T) {
	lab := dualLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	c1, tor := lab.Server("c1"), lab.ToR(0)
	port := tor.PortFor("c1")
	// Registered first, so it runs after every other cleanup.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := lab.WaitConverged(ctx, 45*time.Second); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})

	torConfig(ctx, t, tor,
		[]string{"bfd", "profile fabricd-e2e", "transmit-interval 100", "receive-interval 100", "detect-multiplier 3", "exit", "exit",
			"router bgp 65004", "neighbor " + port + " bfd profile fabricd-e2e"},
		[]string{"router bgp 65004", "no neighbor " + port + " bfd", "exit", "bfd", "no profile fabricd-e2e"})
	restoreDefaultOnCleanup(t, c1)
	reloadWith(ctx, t, c1, neighborOption(t, c1.DefaultConfig(), "ens3", "bfd = true", "bfd-interval = 100", "bfd-multiplier = 3"))
	waitSession(ctx, t, c1, "ens3", tor, 30*time.Second)
	waitBFDUp(ctx, t, tor, port)
	routeVia(ctx, t, c1, "2.2.2.2", "ens3", "ens4")
	routeVia(ctx, t, c1, "4.4.4.4", "ens3")

	drop, undrop, how := dropAllOnPort(tor, port)
	t.Logf("dropping all traffic on %s's %s with %s; the link stays up", tor.Name(), port, how)
	undone := false
	t.Cleanup(func() {
		if !undone {
			undrop(context.Background())
		}
	})
	start := time.Now()
	if err := drop(ctx); err != nil {
		t.Fatal(err)
	}
	ruleIn := time.Since(start)
	var gone time.Duration
	for {
		out, err := c1.Exec(ctx, "ip", "route", "show", "4.4.4.4")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "proto bgp") {
			gone = time.Since(start)
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("c1 still routes 4.4.4.4 through the silent ToR after 15 s: %q", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("BFD: drop installed in %v; c1's route through the silent ToR gone %v after the drop began (polling every 10 ms)",
		ruleIn.Round(time.Millisecond), gone.Round(time.Millisecond))
	if gone >= time.Second {
		t.Errorf("the route through the silent ToR went after %v, want well under 1 s", gone)
	}
	if out, _ := c1.Exec(ctx, "ip", "link", "show", "ens3"); !strings.Contains(out, "LOWER_UP") {
		t.Errorf("the drop took the carrier down, the test measures nothing: %s", out)
	}
	routeVia(ctx, t, c1, "2.2.2.2", "ens4")
	if err := testenv.WaitFor(ctx, 10*time.Second, "ping c1 -> c2 through tor2", func() error {
		_, err := c1.Exec(ctx, "ping", "-c", "1", "-W", "1", "-I", "1.1.1.1", "2.2.2.2")
		return err
	}); err != nil {
		t.Error(err)
	}

	// The ToR forwards again: BFD, the session and ECMP come back.
	if err := undrop(ctx); err != nil {
		t.Fatal(err)
	}
	undone = true
	back := waitSession(ctx, t, c1, "ens3", tor, 45*time.Second)
	routeVia(ctx, t, c1, "2.2.2.2", "ens3", "ens4")
	t.Logf("session back %v after the drop was removed", back.Round(time.Millisecond))
}

// waitBFDUp waits until the ToR's BFD session on port is up.
func waitBFDUp(ctx context.Context, t *testing.T, tor *testenv.Router, port string) {
	t.Helper()
	err := testenv.WaitFor(ctx, 20*time.Second, "BFD up on "+tor.Name()+" "+port, func() error {
		var peers []struct {
			Interface string `json:"interface"`
			Status    string `json:"status"`
		}
		if err := tor.VtyshJSON(ctx, "show bfd peers json", &peers); err != nil {
			return err
		}
		for _, p := range peers {
			if p.Interface == port && p.Status == "up" {
				return nil
			}
		}
		return fmt.Errorf("BFD peers: %+v", peers)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// dropAllOnPort returns functions that make the ToR drop, and forward
// again, every packet from and to port while the link keeps its carrier.
// With nftables (CI: apt-get install nftables) that is a table of its own;
// without it, or with FABRICD_E2E_DROP=tc, tc: a pfifo of length 0 as the
// port's root qdisc drops all it sends, and an ingress filter redirects all
// it receives into that qdisc (kernels without act_gact have no tc drop
// action).
func dropAllOnPort(tor *testenv.Router, port string) (drop, undrop func(context.Context) error, how string) {
	if _, err := exec.LookPath("nft"); err == nil && os.Getenv("FABRICD_E2E_DROP") != "tc" {
		const table = "fabricd_e2e_drop"
		rules := fmt.Sprintf(`table inet %[1]s {
	chain e2e_in { type filter hook input priority -300; policy accept; iifname %[2]q drop; }
	chain e2e_fwd { type filter hook forward priority -300; policy accept; iifname %[2]q drop; oifname %[2]q drop; }
	chain e2e_out { type filter hook output priority -300; policy accept; oifname %[2]q drop; }
}
`, table, port)
		drop = func(ctx context.Context) error {
			f, err := os.CreateTemp("", "fabricd-e2e-nft-")
			if err != nil {
				return err
			}
			defer os.Remove(f.Name())
			if _, err := f.WriteString(rules); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			_, err = tor.Exec(ctx, "nft", "-f", f.Name())
			return err
		}
		undrop = func(ctx context.Context) error {
			_, err := tor.Exec(ctx, "nft", "delete", "table", "inet", table)
			return err
		}
		return drop, undrop, "nftables"
	}
	drop = func(ctx context.Context) error {
		for _, args := range [][]string{
			{"qdisc", "add", "dev", port, "root", "pfifo", "limit", "0"},
			{"qdisc", "add", "dev", port, "ingress"},
			{"filter", "add", "dev", port, "parent", "ffff:", "protocol", "all", "u32", "match", "u32", "0", "0",
				"action", "mirred", "egress", "redirect", "dev", port},
		} {
			if _, err := tor.Exec(ctx, "tc", args...); err != nil {
				return err
			}
		}
		return nil
	}
	undrop = func(ctx context.Context) error {
		_, err1 := tor.Exec(ctx, "tc", "qdisc", "del", "dev", port, "ingress")
		_, err2 := tor.Exec(ctx, "tc", "qdisc", "del", "dev", port, "root")
		if err1 != nil {
			return err1
		}
		return err2
	}
	return drop, undrop, "tc (pfifo limit 0, ingress redirected into it)"
}
