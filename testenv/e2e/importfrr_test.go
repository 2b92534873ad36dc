package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// TestImportFRRConfig runs the lab's servers with FRR, as the seed did,
// records the kernel routes BGP gave every node, then runs fabricd on the
// same topology with the configs `fabricctl import-frr` made of each
// server's FRR config files, and requires the same routes: the same
// prefixes through the same uplinks, the same blackholes, on the servers
// and on the ToRs (which shows the announcements are the same too). Two
// ToRs, so the uplink sets are ECMP pairs.
func TestImportFRRConfig(t *testing.T) {
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	ctx := ctxFor(t, 2*time.Minute)
	logf := func(f string, a ...any) { fmt.Printf("import-frr lab: "+f+"\n", a...) }

	// The fabricd lab is built while FRR converges in the other.
	type built struct {
		lab *testenv.Lab
		err error
	}
	fabricdLab := make(chan built, 1)
	go func() {
		lab, err := testenv.New(ctx, testenv.Options{Role: testenv.RoleFabricd, FabricdBinary: bin("fabricd"), ToRs: 2, Logf: logf})
		fabricdLab <- built{lab, err}
	}()
	frrLab, err := testenv.New(ctx, testenv.Options{Role: testenv.RoleFRR, ToRs: 2, Logf: logf})
	var want map[string]map[string]string
	if err == nil {
		if err = frrLab.StartServers(ctx); err == nil {
			err = frrLab.WaitConverged(ctx, 45*time.Second)
		}
		if err == nil {
			want, err = bgpRoutes(ctx, frrLab)
		}
		if err != nil {
			dumpLogs(t, frrLab)
		}
		// Closed before fabricd starts: two labs' daemons at once would
		// only slow both down on two cores.
		if cerr := frrLab.Close(); err == nil {
			err = cerr
		}
	}
	fl := <-fabricdLab
	if fl.lab != nil {
		t.Cleanup(func() {
			if err := fl.lab.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	if err != nil {
		t.Fatalf("FRR lab: %v", err)
	}
	if fl.err != nil {
		t.Fatalf("fabricd lab: %v", fl.err)
	}
	lab := fl.lab
	logOnFailure(t, lab) // runs before the Close above

	dir := t.TempDir()
	for _, s := range lab.Servers() {
		args := []string{"import-frr"}
		for _, f := range s.FRRConfig() {
			path := filepath.Join(dir, s.Name()+"-"+f.Name)
			if err := os.WriteFile(path, []byte(f.Text), 0o644); err != nil {
				t.Fatal(err)
			}
			args = append(args, path)
		}
		var stderr strings.Builder
		cmd := exec.CommandContext(ctx, bin("fabricctl"), args...)
		cmd.Stderr = &stderr
		imported, err := cmd.Output()
		if err != nil {
			t.Fatalf("fabricctl import-frr for %s: %v\n%s\n%s", s.Name(), err, stderr.String(), imported)
		}
		if err := s.WriteConfig(string(imported)); err != nil {
			t.Fatal(err)
		}
		// The socket is the lab's (every namespace shares /run).
		if err := s.Start(ctx, "--socket", s.SocketPath()); err != nil {
			t.Fatal(err)
		}
	}
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// Converged checks the lab's generic shape; the comparison is exact.
	var got map[string]map[string]string
	err = testenv.WaitFor(ctx, 15*time.Second, "the same routes as with FRR", func() error {
		var err error
		if got, err = bgpRoutes(ctx, lab); err != nil {
			return err
		}
		return diffRoutes(got, want)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("same routes as FRR on every node:\n%s", formatRoutes(got))
}

// execer is a lab node: a server or a ToR.
type execer interface {
	Name() string
	Exec(ctx context.Context, name string, args ...string) (string, error)
}

// bgpRoutes reads every node's kernel routes that BGP made, plus the
// blackholes, keyed by node and prefix. The value is "blackhole" or the
// sorted uplinks: FRR writes `via inet6 fe80::… dev ens3` and fabricd
// `via 169.254.0.1 dev ens3 onlink`, both on nexthop objects with
// their own IDs, so only the interfaces compare.
func bgpRoutes(ctx context.Context, lab *testenv.Lab) (map[string]map[string]string, error) {
	var nodes []execer
	for _, s := range lab.Servers() {
		nodes = append(nodes, s)
	}
	for i := 0; lab.ToR(i) != nil; i++ {
		nodes = append(nodes, lab.ToR(i))
	}
	all := map[string]map[string]string{}
	for _, n := range nodes {
		routes := map[string]string{}
		for _, fam := range []string{"-4", "-6"} {
			out, err := n.Exec(ctx, "ip", "-j", fam, "route", "show")
			if err != nil {
				return nil, err
			}
			var list []struct {
				Dst      string `json:"dst"`
				Type     string `json:"type"`
				Protocol string `json:"protocol"`
				Dev      string `json:"dev"`
				Nexthops []struct {
					Dev string `json:"dev"`
				} `json:"nexthops"`
			}
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				return nil, fmt.Errorf("%s: ip -j route: %w", n.Name(), err)
			}
			for _, r := range list {
				switch {
				case r.Type == "blackhole":
					routes[r.Dst] = "blackhole"
				case r.Protocol == "bgp":
					devs := []string{r.Dev}
					if len(r.Nexthops) > 0 {
						devs = nil
						for _, nh := range r.Nexthops {
							devs = append(devs, nh.Dev)
						}
					}
					slices.Sort(devs)
					routes[r.Dst] = "via " + strings.Join(devs, ",")
				}
			}
		}
		all[n.Name()] = routes
	}
	return all, nil
}

func diffRoutes(got, want map[string]map[string]string) error {
	var diffs []string
	for _, node := range slices.Sorted(maps.Keys(want)) {
		for _, dst := range slices.Sorted(maps.Keys(want[node])) {
			if g := got[node][dst]; g != want[node][dst] {
				diffs = append(diffs, fmt.Sprintf("%s %s: fabricd %q, FRR %q", node, dst, g, want[node][dst]))
			}
		}
		for dst, g := range got[node] {
			if _, ok := want[node][dst]; !ok {
				diffs = append(diffs, fmt.Sprintf("%s %s: fabricd %q, FRR none", node, dst, g))
			}
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("routes differ:\n%s", strings.Join(diffs, "\n"))
	}
	return nil
}

func formatRoutes(all map[string]map[string]string) string {
	var b strings.Builder
	for _, node := range slices.Sorted(maps.Keys(all)) {
		for _, dst := range slices.Sorted(maps.Keys(all[node])) {
			fmt.Fprintf(&b, "  %s: %s %s\n", node, dst, all[node][dst])
		}
	}
	return b.String()
}
