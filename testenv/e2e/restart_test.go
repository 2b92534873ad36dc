package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// pingFlood pings from c1's pod to c2's pod every 10 ms while fn runs, and
// returns how many were sent and received. Traffic crosses c1's FIB, the
// ToR's and c2's, in both directions.
func pingFlood(ctx context.Context, t *testing.T, lab *testenv.Lab, fn func()) (sent, received int) {
	t.Helper()
	from, to := lab.Server("c1").Pod(0), lab.Server("c2").Pod(0)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", from.Namespace(), "ping", "-q", "-i", "0.01", "-W", "1", to.Addr().String())
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // some traffic before
	fn()
	time.Sleep(500 * time.Millisecond) // and after
	// SIGINT makes ping print its summary and exit.
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no ping summary in %q", out.String())
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

// restartAndConverge stops s's fabricd with stop, leaves it down for a
// second (the kernel still routes while nothing runs), starts it again and
// waits for the fabric to converge.
func restartAndConverge(ctx context.Context, lab *testenv.Lab, s *testenv.Server, stop func() error) error {
	if err := stop(); err != nil {
		return err
	}
	time.Sleep(time.Second)
	if err := s.Start(ctx); err != nil {
		return err
	}
	return lab.WaitConverged(ctx, 30*time.Second)
}

// kill9 crashes s's fabricd: nothing is cleaned up, nothing is said to the
// ToR. Its "signal: killed" exit is what was asked for.
func kill9(s *testenv.Server) error {
	if err := s.Stop(syscall.SIGKILL); err != nil && !regexp.MustCompile(`signal: killed`).MatchString(err.Error()) {
		return err
	}
	return nil
}

func TestRestartLosesNoPackets(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	ctx := ctxFor(t, 3*time.Minute)
	c1 := lab.Server("c1")

	for _, tc := range []struct {
		name string
		stop func() error
	}{
		// systemctl restart: the unit's RestartKillSignal.
		{"graceful restart (SIGUSR1)", func() error { return c1.Stop(syscall.SIGUSR1) }},
		// A crash: nothing is cleaned up, nothing is said to the ToR.
		{"kill -9", func() error { return kill9(c1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			var restartErr error
			start := time.Now()
			sent, received := pingFlood(ctx, t, lab, func() { restartErr = restartAndConverge(ctx, lab, c1, tc.stop) })
			if restartErr != nil {
				t.Fatal(restartErr)
			}
			t.Logf("%s: ping through c1 during the restart: %d sent, %d received (restart and reconvergence took %v)",
				tc.name, sent, received, time.Since(start).Round(time.Millisecond))
			if sent < 100 || received != sent {
				t.Errorf("lost %d of %d packets", sent-received, sent)
			}
			// The earlier run's routes were taken over, not duplicated.
			waitKernel(ctx, t, lab, c1, wantKernel(lab, c1))
		})
	}
}

// TestCrashRightAfterRestart crashes c1's fabricd 300 ms after its
// session is back from a restart, before the ToR's End-of-RIB. The ToR still
// holds c1's routes as stale from the restart, and FRR deletes paths that
// are still stale when the session drops again: unless fabricd has resent
// them by then, traffic to c1 is lost until the next session (CI saw 331
// of 401 pings lost). Only a ToR past its startup window makes fabricd
// wait for its End-of-RIB, so the test runs after it.
func TestCrashRightAfterRestart(t *testing.T) {
	lab := seedLab(t)
	logOnFailure(t, lab)
	tor, c1 := lab.ToR(0), lab.Server("c1")
	if wait := testenv.FRRStartupWindow + 2*time.Second - tor.Uptime(); wait > 0 {
		t.Logf("waiting %v for the ToR to leave its startup window", wait.Round(time.Second))
		time.Sleep(wait)
	}
	ctx := ctxFor(t, 3*time.Minute)
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	port := tor.PortFor("c1")
	var restartErr error
	var startToKill time.Duration
	sent, received := pingFlood(ctx, t, lab, func() {
		if restartErr = c1.Stop(syscall.SIGUSR1); restartErr != nil {
			return
		}
		time.Sleep(time.Second) // down as long as in restartAndConverge
		if restartErr = c1.Start(ctx); restartErr != nil {
			return
		}
		started := time.Now()
		if restartErr = testenv.WaitFor(ctx, 30*time.Second, "c1's session at the ToR", func() error {
			peers, err := tor.BGPPeers(ctx)
			if err != nil {
				return err
			}
			if st := peers[port].State; st != "Established" {
				return fmt.Errorf("session on %s is %s", port, st)
			}
			return nil
		}); restartErr != nil {
			return
		}
		// A crash shortly after: CI saw one 1.2 s after the session came
		// back, before the ToR's End-of-RIB (about 1.1 s after it here).
		time.Sleep(300 * time.Millisecond)
		startToKill = time.Since(started)
		restartErr = restartAndConverge(ctx, lab, c1, func() error { return kill9(c1) })
	})
	if restartErr != nil {
		t.Fatal(restartErr)
	}
	t.Logf("restart, crash 300 ms after the ToR shows the session (%v after the start), start again: %d pings sent, %d received",
		startToKill.Round(time.Millisecond), sent, received)
	if sent < 100 || received != sent {
		t.Errorf("lost %d of %d packets", sent-received, sent)
	}
}
