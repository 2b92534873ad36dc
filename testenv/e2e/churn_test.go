package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// churnPrefixes is how many prefixes the ToR announces and withdraws at a
// time: a large data-centre table. A full announce or withdraw of all of
// them reaches the server's kernel in about 4 s here, so a minute of churn
// is a dozen or more bursts, most of them overlapping the previous one.
const churnPrefixes = 100_000

// churnBase is where the churned /32s come from: shared address space,
// 4M addresses, unused by the lab.
var churnBase = netip.MustParseAddr("100.64.0.0")

// TestChurnConsistency has the ToR announce and withdraw 100,000 prefixes
// in bursts for 60 s (two phases of 30 s), each burst starting before
// fabricd has caught up with the last one. After each phase c1's kernel must
// hold exactly the routes FRR says it sent to c1 (minus c1's own, which come
// back with c1's AS in the path), and fabricd's heap must not grow from one
// phase to the next: the plateau of a table that size. It builds a lab of
// its own, one server, so that the shared labs' servers do not each install
// 100,000 routes.
func TestChurnConsistency(t *testing.T) {
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	began := time.Now()
	ctx := ctxFor(t, 4*time.Minute)
	lab, err := testenv.New(ctx, testenv.Options{
		Role:          testenv.RoleFabricd,
		FabricdBinary: bin("fabricd"),
		Servers:       testenv.SeedServers()[:1],
		// The churn generator: kernel routes on the ToR (it runs no
		// staticd), redistributed into BGP.
		ToRExtraConfig: "address-family ipv4 unicast\nredistribute kernel\nexit-address-family",
		Logf:           func(f string, a ...any) { fmt.Printf("churn lab: "+f+"\n", a...) },
	})
	if err != nil {
		t.Fatal(err)
	}
	// Registered before logOnFailure so that the logs are read before
	// Close removes them.
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("closing the churn lab: %v", err)
		}
	})
	logOnFailure(t, lab)
	c1, tor := lab.Server("c1"), lab.ToR(0)
	port := tor.PortFor("c1")
	if err := c1.WriteConfig(withMetrics(c1.DefaultConfig())); err != nil {
		t.Fatal(err)
	}
	if err := c1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// The ToR's table is one window of consecutive addresses; a burst
	// moves the window (withdrawing what leaves it, announcing what
	// enters) or empties it.
	var cur window
	apply := func(next window) {
		t.Helper()
		del, add := cur.minus(next), next.minus(cur)
		for _, d := range del {
			if err := batchToRRoutes(ctx, tor, "del", d.prefixes()); err != nil {
				t.Fatal(err)
			}
		}
		for _, a := range add {
			if err := batchToRRoutes(ctx, tor, "add", a.prefixes()); err != nil {
				t.Fatal(err)
			}
		}
		cur = next
	}
	t.Cleanup(func() { flushToRRoutes(t, tor) })

	// Before any churn: the table's size in fabricd's heap.
	start := time.Now()
	apply(window{0, churnPrefixes})
	waitTable(ctx, t, c1, churnPrefixes)
	t.Logf("initial %d prefixes in c1's kernel after %v", churnPrefixes, time.Since(start).Round(time.Millisecond))
	initial := postGCHeap(ctx, t, c1)

	// Two phases of 30 s of bursts, each ending with a table of the same
	// size, checked prefix for prefix. A fixed seed: the same bursts every
	// run. Pauses of 0.2-3 s, so bursts land while fabricd is still busy
	// with the previous one; every fourth burst withdraws everything.
	rng := rand.New(rand.NewPCG(100, 100))
	var heaps []float64
	for phase := range 2 {
		churnEnd := time.Now().Add(30 * time.Second)
		var bursts, moved int
		var peak float64
		for time.Now().Before(churnEnd) {
			var next window
			if bursts%4 != 3 {
				off := rng.IntN(3 * churnPrefixes)
				next = window{off, off + churnPrefixes}
			}
			for _, w := range append(cur.minus(next), next.minus(cur)...) {
				moved += w.hi - w.lo
			}
			apply(next)
			bursts++
			if m, err := scrape(ctx, c1); err == nil {
				peak = max(peak, m["go_memstats_heap_inuse_bytes"])
			}
			time.Sleep(time.Duration(200+rng.IntN(2800)) * time.Millisecond)
		}
		// The final table of the phase, announced over whatever the
		// last burst left.
		off := 3*churnPrefixes + 7*(phase+1)
		apply(window{off, off + churnPrefixes})
		settle := time.Now()
		waitTable(ctx, t, c1, churnPrefixes)
		t.Logf("phase %d: %d bursts in 30 s (%d announcements and withdrawals, heap in use up to %.1f MiB); c1 in sync with the final table %v after the last burst",
			phase+1, bursts, moved, peak/(1<<20), time.Since(settle).Round(time.Millisecond))
		checkAgainstFRR(ctx, t, c1, tor, port)
		heaps = append(heaps, postGCHeap(ctx, t, c1))
	}

	// Memory. Go maps keep their buckets after deletions, so the first
	// churn may leave the heap somewhat above its size before (bounded
	// here by half again plus 8 MiB); after that, more churn must not add
	// anything: the second phase ends within 10% plus 8 MiB of the first.
	// A leak of even 50 bytes per announcement would add tens of MiB per
	// phase.
	t.Logf("fabricd's heap in use after a collection, %d prefixes: %.1f MiB before the churn, %.1f MiB after 30 s of it (the plateau), %.1f MiB after 60 s; whole test %v",
		churnPrefixes, initial/(1<<20), heaps[0]/(1<<20), heaps[1]/(1<<20), time.Since(began).Round(time.Second))
	if limit := initial*1.5 + 8<<20; heaps[0] > limit {
		t.Errorf("heap after the first churn %.1f MiB, above %.1f MiB (1.5 x %.1f + 8)", heaps[0]/(1<<20), limit/(1<<20), initial/(1<<20))
	}
	if limit := heaps[0]*1.1 + 8<<20; heaps[1] > limit {
		t.Errorf("heap kept growing with the churn: %.1f MiB after the second phase, above %.1f MiB (1.1 x %.1f + 8)", heaps[1]/(1<<20), limit/(1<<20), heaps[0]/(1<<20))
	}
}

// checkAgainstFRR compares s's kernel, prefix for prefix, with what FRR
// says it advertised on port (less s's own prefixes, which come back with
// s's AS in the path and are dropped), and fabricd's FIB counters with both.
func checkAgainstFRR(ctx context.Context, t *testing.T, s *testenv.Server, tor *testenv.Router, port string) {
	t.Helper()
	// Polled: the route count that ended the wait may have been passed
	// on the way (FRR or fabricd still busy); a real disagreement stays.
	var want, got map[string]bool
	var advertised int
	err := testenv.WaitFor(ctx, 30*time.Second, s.Name()+"'s kernel to equal what FRR advertised", func() error {
		var adv struct {
			Routes map[string]struct {
				Path string `json:"path"`
			} `json:"advertisedRoutes"`
		}
		if err := tor.VtyshJSON(ctx, "show bgp ipv4 unicast neighbors "+port+" advertised-routes json", &adv); err != nil {
			return err
		}
		advertised = len(adv.Routes)
		own := fmt.Sprintf(" %d ", s.Spec().ASN)
		want = map[string]bool{}
		for p, r := range adv.Routes {
			if !strings.Contains(" "+r.Path+" ", own) {
				want[p] = true
			}
		}
		var err error
		if got, err = kernelBGPPrefixes(ctx, s); err != nil {
			return testenv.Permanent(err)
		}
		var missing, extra []string
		for p := range want {
			if !got[p] {
				missing = append(missing, p)
			}
		}
		for p := range got {
			if !want[p] {
				extra = append(extra, p)
			}
		}
		if len(missing) > 0 || len(extra) > 0 {
			slices.Sort(missing)
			slices.Sort(extra)
			return fmt.Errorf("%d missing (e.g. %v), %d extra (e.g. %v)", len(missing), first(missing, 5), len(extra), first(extra, 5))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	t.Logf("FRR advertised %d prefixes to %s (%d not its own); %s's kernel routes %d through the ToR",
		advertised, s.Name(), len(want), s.Name(), len(got))
	if len(want) != churnPrefixes+1 { // and the ToR's loopback
		t.Errorf("FRR advertised %d prefixes of others, want %d", len(want), churnPrefixes+1)
	}
	m, err := scrape(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if n := m["fabricd_fib_routes_installed"]; n != float64(len(got)) {
		t.Errorf("fabricd_fib_routes_installed = %v, the kernel has %d", n, len(got))
	}
	if n := m["fabricd_fib_errors_total"]; n != 0 {
		t.Errorf("fabricd_fib_errors_total = %v: the kernel refused operations during the churn", n)
	}
}

// postGCHeap is fabricd's heap in use just after a garbage collection: the
// live heap, where a sample at a random time would also count garbage of
// unknown age. It samples until two collections have happened (each scrape
// of a large table's metrics allocates several MiB, so they come soon) and
// returns the lowest value.
func postGCHeap(ctx context.Context, t *testing.T, s *testenv.Server) float64 {
	t.Helper()
	var low, gcs0 float64
	err := testenv.WaitFor(ctx, 60*time.Second, "two garbage collections in fabricd", func() error {
		m, err := scrape(ctx, s)
		if err != nil {
			return err
		}
		inuse, gcs := m["go_memstats_heap_inuse_bytes"], m["go_gc_duration_seconds_count"]
		if low == 0 {
			low, gcs0 = inuse, gcs
		}
		low = min(low, inuse)
		if gcs < gcs0+2 {
			return fmt.Errorf("%v collections so far", gcs-gcs0)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return low
}

// window is the address range [lo, hi) of the ToR's churned table, as
// offsets from churnBase; lo == hi is empty.
type window struct{ lo, hi int }

// minus returns the parts of w outside o (at most two ranges).
func (w window) minus(o window) []window {
	if w.lo >= w.hi {
		return nil
	}
	if o.lo >= o.hi || o.hi <= w.lo || o.lo >= w.hi {
		return []window{w}
	}
	var out []window
	if w.lo < o.lo {
		out = append(out, window{w.lo, o.lo})
	}
	if o.hi < w.hi {
		out = append(out, window{o.hi, w.hi})
	}
	return out
}

func (w window) prefixes() []string { return hostPrefixes(churnBase, w.lo, w.hi-w.lo) }

// waitTable waits until s's kernel holds n churned routes plus the seed's
// (the ToR's loopback and s's blackhole) and fabricd says its FIB is in
// sync.
func waitTable(ctx context.Context, t *testing.T, s *testenv.Server, n int) {
	t.Helper()
	err := testenv.WaitFor(ctx, 90*time.Second, fmt.Sprintf("%d routes in %s's kernel", n, s.Name()), func() error {
		got, err := countBGPRoutes(ctx, s)
		if err != nil {
			return err
		}
		if got != n+2 {
			return fmt.Errorf("%d routes", got)
		}
		out, err := fabricctl(ctx, s, "show", "bgp", "summary", "json")
		if err != nil {
			return err
		}
		if !strings.Contains(out, `"fibInSync": true`) && !strings.Contains(out, `"fibInSync":true`) {
			return fmt.Errorf("%d routes, but fabricd's FIB is not in sync yet", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// kernelBGPPrefixes returns the prefixes s's kernel routes through an uplink
// with protocol bgp (blackholes, fabricd's own, left out).
func kernelBGPPrefixes(ctx context.Context, s *testenv.Server) (map[string]bool, error) {
	out, err := s.Exec(ctx, "ip", "-4", "route", "show", "proto", "bgp")
	if err != nil {
		return nil, err
	}
	got := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] == "blackhole" {
			continue
		}
		if !strings.Contains(l, " via 169.254.0.1 dev ens3 ") {
			return nil, fmt.Errorf("unexpected route: %s", l)
		}
		p := f[0]
		if !strings.Contains(p, "/") {
			p += "/32"
		}
		got[p] = true
	}
	return got, nil
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }
