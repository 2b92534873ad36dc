package e2e

// The uplink state machine under the timings real links produce: bursts
// of carrier flaps, a ToR whose ports all come back at once, a ToR whose
// BGP restarts. These reproduce what operators saw (issue 11) and hold
// fabricd to the rule that an uplink carries traffic only when the ToR
// behind it can forward.

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

var (
	leafOnce sync.Once
	leaf     *testenv.Lab
	leafErr  error
)

// leafServers are four servers, so that a ToR event touches several
// sessions at once as it does in a rack.
func leafServers() []testenv.ServerSpec {
	servers := testenv.SeedServers()
	return append(servers, testenv.ServerSpec{
		Name:     "c4",
		ASN:      65006,
		Loopback: netip.MustParsePrefix("6.6.6.6/32"),
		Block:    netip.MustParsePrefix("10.1.99.64/26"),
		Pods:     []netip.Addr{netip.MustParseAddr("10.1.99.66")},
	})
}

// leafLab is a shared leaf pair: four servers, each with ens3 to tor and
// ens4 to tor2. Each server hashes ECMP with its own seed, so that flows
// between servers really spread over both ToRs.
func leafLab(t *testing.T) *testenv.Lab {
	t.Helper()
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	leafOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		leaf, leafErr = testenv.New(ctx, testenv.Options{
			Role:           testenv.RoleFabricd,
			FabricdBinary:  bin("fabricd"),
			ToRs:           2,
			Servers:        leafServers(),
			ToRExtraConfig: os.Getenv("LEAF_TOR_EXTRA"),
			Logf:           func(f string, a ...any) { fmt.Printf("leaf lab: "+f+"\n", a...) },
		})
		if leafErr != nil {
			return
		}
		registerClose(leaf)
		for i, s := range leaf.Servers() {
			if _, leafErr = s.Exec(ctx, "sysctl", "-qw", fmt.Sprintf("net.ipv4.fib_multipath_hash_seed=%d", 1000+i*7919)); leafErr != nil {
				return
			}
		}
		if leafErr = leaf.StartServers(ctx); leafErr != nil {
			return
		}
		leafErr = leaf.WaitConverged(ctx, 30*time.Second)
	})
	if leafErr != nil {
		if leaf != nil {
			dumpLogs(t, leaf)
		}
		t.Fatalf("leaf lab: %v", leafErr)
	}
	return leaf
}

// flood pings every 10 ms from every server's loopback to every other
// server's loopback while it runs.
type flood struct {
	mu    sync.Mutex
	procs []*floodProc
}

type floodProc struct {
	name string
	cmd  *exec.Cmd
	out  bytes.Buffer
}

func startFlood(ctx context.Context, t *testing.T, lab *testenv.Lab) *flood {
	t.Helper()
	f := &flood{}
	for _, from := range lab.Servers() {
		for _, to := range lab.Servers() {
			if from == to {
				continue
			}
			src, dst := from.Spec().Loopback.Addr().String(), to.Spec().Loopback.Addr().String()
			p := &floodProc{name: from.Name() + "->" + to.Name()}
			p.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", from.Namespace(), "ping", "-D", "-i", "0.01", "-W", "1", "-I", src, dst)
			p.cmd.Stdout = &p.out
			if err := p.cmd.Start(); err != nil {
				f.stop()
				t.Fatal(err)
			}
			f.procs = append(f.procs, p)
		}
	}
	t.Cleanup(func() { f.stop() })
	return f
}

var (
	pingSummaryRE = regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
	pingReplyRE   = regexp.MustCompile(`(?m)^\[(\d+\.\d+)\] .* icmp_seq=(\d+) `)
)

// floodResult is what a flood saw: packets sent, and per flow the
// packets lost and when (the last reply before each gap, and its size).
// Lost means a gap in the replies' sequence numbers: the requests still
// unanswered when the flood stops are not counted.
type floodResult struct {
	sent int
	lost map[string]int
	gaps map[string][]gap
}

// gap is a run of lost packets: after the reply at after, n went missing.
type gap struct {
	after time.Time
	n     int
}

func (g gap) String() string { return fmt.Sprintf("%d after %s", g.n, g.after.Format("15:04:05.000")) }

// lostSince sums the packets lost in gaps that began at t or later.
func (r floodResult) lostSince(t time.Time) map[string]int {
	out := map[string]int{}
	for flow, gs := range r.gaps {
		for _, g := range gs {
			if !g.after.Before(t) {
				out[flow] += g.n
			}
		}
	}
	return out
}

// stop ends the flood (once; later calls return an empty result).
func (f *flood) stop() floodResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := floodResult{lost: map[string]int{}, gaps: map[string][]gap{}}
	for _, p := range f.procs {
		p.cmd.Process.Signal(os.Interrupt)
		p.cmd.Wait()
		m := pingSummaryRE.FindStringSubmatch(p.out.String())
		if m == nil {
			continue
		}
		sent, _ := strconv.Atoi(m[1])
		r.sent += sent
		last := -1
		var lastAt string
		for _, m := range pingReplyRE.FindAllStringSubmatch(p.out.String(), -1) {
			seq, _ := strconv.Atoi(m[2])
			if last >= 0 && seq > last+1 {
				r.lost[p.name] += seq - last - 1
				sec, _ := strconv.ParseFloat(lastAt, 64)
				r.gaps[p.name] = append(r.gaps[p.name], gap{after: time.Unix(0, int64(sec*1e9)), n: seq - last - 1})
			}
			last, lastAt = seq, m[1]
		}
	}
	f.procs = nil
	return r
}

// portPackets is the number of packets tor's server ports have received.
func portPackets(ctx context.Context, t *testing.T, lab *testenv.Lab, tor *testenv.Router) uint64 {
	t.Helper()
	var sum uint64
	for _, s := range lab.Servers() {
		out, err := tor.Exec(ctx, "cat", "/sys/class/net/"+tor.PortFor(s.Name())+"/statistics/rx_packets")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		sum += n
	}
	return sum
}

// setPorts brings every server port of tor down or up.
func setPorts(ctx context.Context, t *testing.T, lab *testenv.Lab, tor *testenv.Router, state string) {
	t.Helper()
	args := []string{"-batch", "-"}
	var batch strings.Builder
	for _, s := range lab.Servers() {
		fmt.Fprintf(&batch, "link set %s %s\n", tor.PortFor(s.Name()), state)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"-n", tor.Namespace()}, args...)...)
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ports of %s %s: %v\n%s", tor.Name(), state, err, out)
	}
}

// fullECMP waits until every server routes every other server's loopback
// and pod block over both uplinks, and returns how long that took.
func fullECMP(ctx context.Context, t *testing.T, lab *testenv.Lab, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	err := testenv.WaitFor(ctx, timeout, "full ECMP on every server", func() error {
		for _, s := range lab.Servers() {
			out, err := s.Exec(ctx, "ip", "-4", "route", "show", "proto", "bgp")
			if err != nil {
				return err
			}
			for _, o := range lab.Servers() {
				if o == s {
					continue
				}
				for _, p := range []string{o.Spec().Loopback.Addr().String(), o.Spec().Block.String()} {
					route := routeBlock(out, p)
					if !strings.Contains(route, "dev ens3") || !strings.Contains(route, "dev ens4") {
						return fmt.Errorf("%s: route to %s is %q", s.Name(), p, route)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// routeBlock returns the lines of `ip route` output that make up the
// route to prefix (a multipath route spans several lines).
func routeBlock(out, prefix string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, prefix+" "):
			in = true
		case in && strings.HasPrefix(l, "\t"):
		default:
			in = false
		}
		if in {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// flapBurst takes tor's port down for 150 ms and up for 250 ms, n times,
// the way a bad optic bounces.
func flapBurst(ctx context.Context, t *testing.T, tor *testenv.Router, port string, n int) {
	t.Helper()
	for i := range n {
		if _, err := tor.Exec(ctx, "ip", "link", "set", port, "down"); err != nil {
			t.Fatalf("flap %d: %v", i+1, err)
		}
		time.Sleep(150 * time.Millisecond)
		if _, err := tor.Exec(ctx, "ip", "link", "set", port, "up"); err != nil {
			t.Fatalf("flap %d: %v", i+1, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestFlapBurstSessionReturns flaps c1's uplink 20 times, 150 ms without
// carrier and 250 ms with it, the way a bad optic bounces. The session
// must come back and stay, whatever state each flap caught it in.
func TestFlapBurstSessionReturns(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	c1, tor := lab.Server("c1"), lab.ToR(0)
	port := tor.PortFor("c1")
	waitSession(ctx, t, c1, "ens3", tor, 30*time.Second)
	flapBurst(ctx, t, tor, port, 20)
	took := waitSession(ctx, t, c1, "ens3", tor, 15*time.Second)
	t.Logf("session back %v after the last flap", took.Round(time.Millisecond))
	waitKernel(ctx, t, lab, c1, wantKernel(lab, c1))
}

// TestToRPortsResetLosesNothing takes every server port of tor down for
// 2.5 s, as a ToR reload or line-card reset looks to its servers. While
// tor has no routes the servers must send everything through tor2, and
// go back to ECMP only once tor can forward: no packet of a flood between
// every pair of servers may be lost after the ports come back, and the
// sessions must come back without a connection-collision loop. (When the
// ports go down, what tor had in flight is lost with them: at most a
// packet or two per flow.)
func TestToRPortsResetLosesNothing(t *testing.T) {
	lab := leafLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	tor := lab.ToR(0)
	fullECMP(ctx, t, lab, 30*time.Second)

	f := startFlood(ctx, t, lab)
	time.Sleep(time.Second)
	setPorts(ctx, t, lab, tor, "down")
	portsDown := time.Now()
	time.Sleep(2500 * time.Millisecond)
	before := portPackets(ctx, t, lab, tor)
	setPorts(ctx, t, lab, tor, "up")
	portsUp := time.Now()
	sessions := lastSessionUp(ctx, t, lab, tor, 20*time.Second).Sub(portsUp)
	fullECMP(ctx, t, lab, 20*time.Second)
	ecmp := time.Since(portsUp) // an upper bound: polling every server's table takes a while
	time.Sleep(time.Second)
	crossed := portPackets(ctx, t, lab, tor) - before
	r := f.stop()
	t.Logf("ports down at %s, up at %s", portsDown.Format("15:04:05.000"), portsUp.Format("15:04:05.000"))
	t.Logf("ports up -> every session Established %v, full ECMP %v; flood: %d sent, lost %v (gaps %v); %d packets crossed %s after its ports came back",
		sessions.Round(time.Millisecond), ecmp.Round(time.Millisecond), r.sent, r.lost, r.gaps, crossed, tor.Name())
	if lost := r.lostSince(portsUp.Add(-50 * time.Millisecond)); len(lost) > 0 {
		t.Errorf("packets lost after the ports came back: %v", lost)
	}
	for flow, n := range r.lost {
		if n > 3 {
			t.Errorf("%s lost %d packets: more than what a ToR has in flight", flow, n)
		}
	}
	if crossed < 100 {
		t.Errorf("only %d packets crossed %s after it came back: the flood did not test it", crossed, tor.Name())
	}
	if sessions > 6*time.Second {
		t.Errorf("sessions took %v to come back after the ports", sessions.Round(time.Millisecond))
	}
}

// TestToRBGPRestartRecovers kills tor's bgpd and starts it again: fabricd
// must notice the lost session, advertise itself at once so the ToR can
// connect, and be back within a few seconds rather than at its next
// periodic router advertisement.
func TestToRBGPRestartRecovers(t *testing.T) {
	lab := leafLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 2*time.Minute)
	tor := lab.ToR(0)
	fullECMP(ctx, t, lab, 30*time.Second)

	f := startFlood(ctx, t, lab)
	time.Sleep(time.Second)
	if err := tor.Stop(syscall.SIGKILL); err != nil && !strings.Contains(err.Error(), "killed") {
		t.Fatal(err)
	}
	if err := tor.Start(ctx); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	sessions := lastSessionUp(ctx, t, lab, tor, 30*time.Second).Sub(started)
	fullECMP(ctx, t, lab, 20*time.Second)
	ecmp := time.Since(started) // an upper bound: polling every server's table takes a while
	time.Sleep(time.Second)
	r := f.stop()
	t.Logf("ToR's FRR listening -> every session Established %v, full ECMP %v; flood: %d sent, lost %v (gaps %v)",
		sessions.Round(time.Millisecond), ecmp.Round(time.Millisecond), r.sent, r.lost, r.gaps)
	if sessions > 4*time.Second {
		t.Errorf("sessions took %v to come back after the ToR's BGP", sessions.Round(time.Millisecond))
	}
	if len(r.lost) > 0 {
		t.Errorf("packets lost: %v", r.lost)
	}
}

// lastSessionUp waits for every server's session with tor and returns when
// the last one came up.
func lastSessionUp(ctx context.Context, t *testing.T, lab *testenv.Lab, tor *testenv.Router, timeout time.Duration) time.Time {
	t.Helper()
	var last time.Time
	for _, s := range lab.Servers() {
		if at := sessionUpAt(ctx, t, s, "ens3", tor, timeout); at.After(last) {
			last = at
		}
	}
	return last
}
