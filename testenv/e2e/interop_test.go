package e2e

// The interop matrix (issue 12): the seed scenario against every kind of ToR
// testenv can play (testenv.ToRFlavor). Each row builds its own small lab,
// checks the seed's kernel shape and traffic, flaps a server link once and
// then in a burst, restarts the ToR, and closes the lab before the next row
// starts.
//
// FABRICD_E2E_PCAP=DIR records every ToR port of every row in
// DIR/<row>-<tor>.pcapng (dumpcap, started before the servers), keeps each
// row's configs and logs in DIR/<row>/, and turns on FRR's `debug bgp
// neighbor-events`: the evidence behind docs/interop-notes.md.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// interopRow is one ToR configuration of the matrix.
type interopRow struct {
	name    string
	flavors []testenv.ToRFlavor // one per ToR
	// needs says what fabricd must do to pass the row, for the log.
	needs string
}

var interopRows = []interopRow{
	{name: "frr", flavors: []testenv.ToRFlavor{testenv.ToRFRR}},
	{name: "frr-v6only", flavors: []testenv.ToRFlavor{testenv.ToRFRRV6Only}},
	{name: "frr-ra-lifetime-0", flavors: []testenv.ToRFlavor{testenv.ToRFRRRALifetime0}},
	{name: "frr-no-ra", flavors: []testenv.ToRFlavor{testenv.ToRFRRNoRA},
		needs: "advertise without having heard the ToR, and find it in the neighbour table when it calls"},
	{name: "frr-global-addr", flavors: []testenv.ToRFlavor{testenv.ToRFRRGlobal}},
	{name: "bird", flavors: []testenv.ToRFlavor{testenv.ToRBIRD},
		needs: "the ToR's MAC from the kernel (its RAs have no source link-layer option), and connect to a passive ToR"},
	{name: "frr+bird", flavors: []testenv.ToRFlavor{testenv.ToRFRR, testenv.ToRBIRD},
		needs: "as the bird row, on ens4"},
}

// interopServers keeps the rows small: the seed's servers, one pod each.
func interopServers() []testenv.ServerSpec { return testenv.SeedServers() }

func TestInteropMatrix(t *testing.T) {
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	for _, row := range interopRows {
		t.Run(row.name, func(t *testing.T) { runInteropRow(t, row) })
	}
}

// runInteropRow is the seed scenario against one row's ToRs.
func runInteropRow(t *testing.T, row interopRow) {
	for _, f := range row.flavors {
		if !f.IsFRR() {
			if _, err := exec.LookPath("bird"); err != nil {
				t.Skip("needs BIRD 2 (apt-get install bird2)")
			}
		}
	}
	if row.needs != "" {
		t.Logf("this row needs fabricd to %s", row.needs)
	}
	ctx := ctxFor(t, 2*time.Minute)
	begin := time.Now()
	opts := testenv.Options{
		Role:          testenv.RoleFabricd,
		FabricdBinary: bin("fabricd"),
		ToRs:          len(row.flavors),
		ToRFlavors:    row.flavors,
		Servers:       interopServers(),
		Logf:          t.Logf,
	}
	research := os.Getenv("FABRICD_E2E_PCAP")
	if research != "" {
		opts.Dir, opts.KeepLogs = filepath.Join(research, rowFile(row.name)), true
		if err := os.RemoveAll(opts.Dir); err != nil {
			t.Fatal(err)
		}
	}
	lab, err := testenv.New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Registered before logOnFailure, so the logs are read before the lab goes.
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("closing the lab: %v", err)
		}
	})
	logOnFailure(t, lab)
	// Also when the row fails early: the flavor must be what it claims.
	t.Cleanup(func() { checkNoRA(ctx, t, lab) })
	if research != "" {
		startCapture(t, lab, research, row.name)
		for i := range row.flavors {
			if tor := lab.ToR(i); tor.Flavor().IsFRR() {
				if out, err := tor.Vtysh(ctx, "debug bgp neighbor-events"); err != nil {
					t.Fatalf("%s: %v\n%s", tor.Name(), err, out)
				}
			}
		}
	}

	if err := lab.StartServers(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("converged %v after the build began", time.Since(begin).Round(time.Millisecond))
	checkSeedShape(ctx, t, lab)
	pingAcross(ctx, t, lab)

	// A carrier flap on c1's link to the first ToR: c1's routes through it go,
	// and come back once the link is up again.
	c1, tor := lab.Server("c1"), lab.ToR(0)
	port := tor.PortFor("c1")
	if _, err := tor.Exec(ctx, "ip", "link", "set", port, "down"); err != nil {
		t.Fatal(err)
	}
	err = testenv.WaitFor(ctx, 10*time.Second, "c1's route to 4.4.4.4 to go with the carrier", func() error {
		out, err := c1.Exec(ctx, "ip", "route", "show", "4.4.4.4")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("still %q", out)
		}
		return nil
	})
	if _, uerr := tor.Exec(ctx, "ip", "link", "set", port, "up"); uerr != nil {
		t.Fatal(uerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	flapped := time.Now()
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatalf("after the flap: %v", err)
	}
	t.Logf("flap: converged again %v after the link came back", time.Since(flapped).Round(time.Millisecond))
	checkSeedShape(ctx, t, lab)

	// Then a burst of flaps on the same link, whatever state each one
	// catches the session in: it must come back and stay.
	flapBurst(ctx, t, tor, port, 10)
	burst := time.Now()
	if err := lab.WaitConverged(ctx, 30*time.Second); err != nil {
		t.Fatalf("after a burst of 10 flaps: %v", err)
	}
	t.Logf("burst of 10 flaps: converged again %v after the last", time.Since(burst).Round(time.Millisecond))
	checkSeedShape(ctx, t, lab)

	// Every ToR restarts its daemons; nothing on the servers does.
	for i := range row.flavors {
		tor := lab.ToR(i)
		start := time.Now()
		if err := tor.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if err := lab.WaitConverged(ctx, 45*time.Second); err != nil {
			t.Fatalf("after restarting %s: %v", tor.Name(), err)
		}
		t.Logf("%s (%v) restarted: converged again %v after the restart began", tor.Name(), tor.Flavor(), time.Since(start).Round(time.Millisecond))
	}
	checkSeedShape(ctx, t, lab)
	pingAcross(ctx, t, lab)
}

// checkNoRA makes sure a ToRFRRNoRA ToR really kept its RAs off the wire
// through the whole row: FRR tried (it ignores suppress-ra on a port with
// an unnumbered neighbor), the lab dropped them, and no server heard one.
// It runs as a cleanup, so it only reports errors.
func checkNoRA(ctx context.Context, t *testing.T, lab *testenv.Lab) {
	for i := 0; lab.ToR(i) != nil; i++ {
		tor := lab.ToR(i)
		if tor.Flavor() != testenv.ToRFRRNoRA {
			continue
		}
		dropped, err := tor.DroppedRAs(ctx)
		if err != nil {
			t.Error(err)
			continue
		}
		if dropped == 0 {
			t.Errorf("%s: no RA dropped: FRR now honours suppress-ra, or the drop does not work", tor.Name())
		}
		for _, s := range lab.Servers() {
			st, err := fabricdIface(ctx, s, s.Uplinks()[i])
			if err != nil {
				t.Error(err)
				continue
			}
			if st.RAsReceived != 0 {
				t.Errorf("%s heard %d RAs on %s from a ToR that must send none", s.Name(), st.RAsReceived, s.Uplinks()[i])
			}
		}
		t.Logf("%s: %d RAs dropped on their way out, none received", tor.Name(), dropped)
	}
}

// checkSeedShape checks every server's kernel against the seed: with one ToR
// exactly wantKernel's routes; with two, the multipath routes WaitConverged
// has checked. Either way, one permanent 169.254.0.1 entry per uplink with
// the MAC of the ToR port on the other end.
func checkSeedShape(ctx context.Context, t *testing.T, lab *testenv.Lab) {
	t.Helper()
	for _, s := range lab.Servers() {
		if lab.ToR(1) == nil {
			waitKernel(ctx, t, lab, s, wantKernel(lab, s))
		}
		var want []string
		for i, up := range s.Uplinks() {
			want = append(want, fmt.Sprintf("169.254.0.1 dev %s lladdr %s PERMANENT proto bgp", up, portMAC(ctx, t, lab.ToR(i), s)))
		}
		err := testenv.WaitFor(ctx, 10*time.Second, s.Name()+"'s gateway neighbour entries", func() error {
			got, err := kernelLines(ctx, s, "neigh", "show", "169.254.0.1")
			if err != nil {
				return err
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("have %q, want %q", got, want)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// pingAcross pings from c1's loopback to every other server's and every
// ToR's, and pod to pod around the servers.
func pingAcross(ctx context.Context, t *testing.T, lab *testenv.Lab) {
	t.Helper()
	servers := lab.Servers()
	c1 := servers[0]
	var dsts []string
	for _, s := range servers[1:] {
		dsts = append(dsts, s.Spec().Loopback.Addr().String())
	}
	for _, tl := range []string{"4.4.4.4", "5.5.5.5"}[:len(servers[0].Uplinks())] {
		dsts = append(dsts, tl)
	}
	src := c1.Spec().Loopback.Addr().String()
	for _, dst := range dsts {
		if out, err := c1.Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", src, dst); err != nil {
			t.Errorf("ping -I %s %s: %v\n%s", src, dst, err, out)
		}
	}
	for i, s := range servers {
		from, to := s.Pod(0), servers[(i+1)%len(servers)].Pod(0)
		if out, err := from.Exec(ctx, "ping", "-c", "2", "-i", "0.2", "-W", "1", to.Addr().String()); err != nil {
			t.Errorf("pod %s -> pod %s: %v\n%s", from.Addr(), to.Addr(), err, out)
		}
	}
}

// rowFile is a row's name as a file name.
func rowFile(row string) string { return strings.ReplaceAll(row, "+", "-") }

// startCapture records the ToRs' ports into dir until the test ends. It
// returns once dumpcap captures, so that nothing the servers send is missed.
func startCapture(t *testing.T, lab *testenv.Lab, dir, row string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; lab.ToR(i) != nil; i++ {
		tor := lab.ToR(i)
		args := []string{"netns", "exec", tor.Namespace(), "dumpcap", "-q"}
		for _, s := range lab.Servers() {
			args = append(args, "-i", tor.PortFor(s.Name()))
		}
		base := filepath.Join(dir, rowFile(row)+"-"+tor.Name())
		args = append(args, "-w", base+".pcapng")
		errFile, err := os.Create(base + ".dumpcap.log")
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("ip", args...)
		cmd.Stderr = errFile
		if err := cmd.Start(); err != nil {
			errFile.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
			errFile.Close()
		})
		err = testenv.WaitFor(context.Background(), 10*time.Second, "dumpcap on "+tor.Name(), func() error {
			b, err := os.ReadFile(errFile.Name())
			if err != nil {
				return err
			}
			if strings.Count(string(b), "Capturing on") == 0 {
				return fmt.Errorf("dumpcap says %q", b)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("capturing %s's ports into %s.pcapng", tor.Name(), base)
	}
}
