// Package e2e runs fabricd against real FRR in network namespaces and
// checks the real kernel tables. It needs root, Debian's frr and iproute2;
// without them every test skips.
//
// One lab with the seed's topology is shared by the tests of this package
// (building one takes seconds); each test leaves it converged as it found
// it.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

var (
	binDir string // fabricd and fabricctl built for this run

	labsMu sync.Mutex
	labs   []*testenv.Lab // every lab built, closed by TestMain

	seedOnce sync.Once
	seed     *testenv.Lab
	seedErr  error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if reason := skipReason(); reason != "" {
		fmt.Println("e2e: skipping:", reason)
		return m.Run() // every test calls needLab and skips
	}
	dir, err := os.MkdirTemp("", "fabricd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, cmd := range []string{"fabricd", "fabricctl"} {
		args := []string{"build", "-o", filepath.Join(dir, cmd)}
		env := append(os.Environ(), "CGO_ENABLED=0")
		if raceBuild() {
			args = append(args, "-race")
			env = append(os.Environ(), "CGO_ENABLED=1")
		}
		build := exec.Command("go", append(args, "github.com/fabricd/fabricd/cmd/"+cmd)...)
		build.Env = env
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n%s", cmd, err, out)
			return 1
		}
	}
	binDir = dir
	raceLogs := filepath.Join(dir, "race")
	if raceBuild() {
		// Every daemon and fabricctl the tests start inherits this. Reports
		// go to files rather than failing the process, so that a run sees
		// every race and checkRaces can tell ours from known upstream ones.
		os.Setenv("GORACE", "log_path="+raceLogs+" exitcode=0")
	}
	code := m.Run()
	labsMu.Lock()
	defer labsMu.Unlock()
	for _, lab := range labs {
		if err := lab.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "closing lab:", err)
			code = 1
		}
	}
	if raceBuild() && !checkRaces(raceLogs+"*") {
		code = 1
	}
	return code
}

// raceBuild reports whether the daemons are built with the race detector
// (FABRICD_E2E_RACE, set by make e2e): slower, but a data race between
// GoBGP's callbacks, the control loop, the API and the FIB writer fails
// the run.
func raceBuild() bool { return os.Getenv("FABRICD_E2E_RACE") != "" }

// checkRaces prints every race report the daemons wrote and returns false
// if any is not a known upstream race. Known ones are listed, not hidden.
func checkRaces(glob string) bool {
	reports, err := testenv.ReadRaceReports(glob)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return false
	}
	ok := true
	for _, r := range reports {
		if bug := r.KnownUpstream(); bug != "" {
			fmt.Fprintf(os.Stderr, "e2e: known upstream data race %s in %s, not failing the run:\n%s\n", bug, filepath.Base(r.File), r.Text)
			continue
		}
		fmt.Fprintf(os.Stderr, "e2e: DATA RACE in %s:\n%s\n", filepath.Base(r.File), r.Text)
		ok = false
	}
	return ok
}

// registerClose makes TestMain close lab after the last test.
func registerClose(lab *testenv.Lab) {
	labsMu.Lock()
	defer labsMu.Unlock()
	labs = append(labs, lab)
}

func skipReason() string {
	if os.Geteuid() != 0 {
		return "needs root"
	}
	if _, err := os.Stat("/usr/lib/frr/bgpd"); err != nil {
		return "needs Debian's frr package"
	}
	return ""
}

func bin(name string) string { return filepath.Join(binDir, name) }

// seedLab returns the shared lab with every server's fabricd running and
// the fabric converged.
func seedLab(t *testing.T) *testenv.Lab {
	t.Helper()
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	seedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		seed, seedErr = testenv.New(ctx, testenv.Options{
			Role:          testenv.RoleFabricd,
			FabricdBinary: bin("fabricd"),
			// Graceful restart, as the restart tests need, and IPv6
			// unicast between the servers, for the IPv6 tests.
			ToRExtraConfig: "bgp graceful-restart\naddress-family ipv6 unicast\nneighbor COMPUTE activate\nexit-address-family",
			Logf:           func(f string, a ...any) { fmt.Printf("lab: "+f+"\n", a...) },
		})
		if seedErr != nil {
			return
		}
		registerClose(seed)
		if seedErr = seed.StartServers(ctx); seedErr != nil {
			return
		}
		seedErr = seed.WaitConverged(ctx, 30*time.Second)
	})
	if seedErr != nil {
		if seed != nil {
			dumpLogs(t, seed)
		}
		t.Fatalf("seed lab: %v", seedErr)
	}
	return seed
}

// dumpLogs attaches every daemon's log to a failing test.
func dumpLogs(t *testing.T, lab *testenv.Lab) {
	t.Helper()
	for _, s := range lab.Servers() {
		t.Logf("---- %s log (tail) ----\n%s", s.Name(), tail(s.Log(), 60))
	}
	for i := 0; lab.ToR(i) != nil; i++ {
		t.Logf("---- %s log (tail) ----\n%s", lab.ToR(i).Name(), tail(lab.ToR(i).Log(), 40))
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logOnFailure dumps the lab's logs if the test fails.
func logOnFailure(t *testing.T, lab *testenv.Lab) {
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, lab)
		}
	})
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fabricctl runs fabricctl in server s's namespace against its socket.
func fabricctl(ctx context.Context, s *testenv.Server, args ...string) (string, error) {
	argv := append([]string{"--socket", s.SocketPath()}, args...)
	out, err := s.Exec(ctx, bin("fabricctl"), argv...)
	return out, err
}

// bgpRoutes returns the `ip route` lines of proto bgp in s's main table,
// with the protocol printed (iproute2 omits it when filtering by it).
func kernelLines(ctx context.Context, s interface {
	Exec(context.Context, string, ...string) (string, error)
}, args ...string) ([]string, error) {
	out, err := s.Exec(ctx, "ip", args...)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimRight(l, " "); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// nhidRE matches the nexthop object a route points at; see bgpRouteLines.
var nhidRE = regexp.MustCompile(` nhid \d+`)

// bgpRouteLines returns the main-table lines fabricd owns ("proto bgp"),
// without the "nhid N" of routes on kernel nexthop objects: with or
// without objects the rest reads as in the seed,
// "2.2.2.2 via 169.254.0.1 dev ens3 proto bgp metric 20 onlink".
func bgpRouteLines(ctx context.Context, s *testenv.Server) ([]string, error) {
	all, err := kernelLines(ctx, s, "-4", "route", "show")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range all {
		if strings.Contains(l, " proto bgp ") {
			out = append(out, nhidRE.ReplaceAllString(l, ""))
		}
	}
	return out, nil
}
