// Command fabricd-chaos runs the seeded chaos soak of package testenv/chaos: a
// dual-ToR lab with an ICMP flood between every pair of servers and pods, and
// faults drawn from the seed, once per role in a fresh lab, with the same
// schedule. It prints one table (per fault class and role: faults, packets
// lost, share of the flood across the disturbed ToR, worst time to full ECMP
// again) and the verdict, and writes the full report to --out.
//
//	fabricd-chaos [--seed N] [--duration 10m] [--roles fabricd,frr] [--fabricd PATH] [--out FILE]
//
// The exit status is 1 if the fabricd role fails the pass rule (FRR is the
// baseline: reported, never asserted), 2 for bad flags, 3 if a run could not
// be completed. It needs root and FRR under /usr/lib/frr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/chaos"
)

func main() {
	seed := flag.Uint64("seed", 1, "seed of the fault schedule and of the servers' ECMP hashing")
	duration := flag.Duration("duration", 10*time.Minute, "nominal length of the schedule, per role")
	roles := flag.String("roles", "fabricd,frr", "server roles to run, in this order, each in a fresh lab")
	bin := flag.String("fabricd", "", "fabricd binary (needed for the fabricd role)")
	out := flag.String("out", "", "write the full report (markdown) to this file")
	servers := flag.Int("servers", 4, "dual-homed servers, 2 to 8")
	dir := flag.String("dir", "", "keep each lab's configs and logs under this directory (DIR/ROLE)")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	rs, err := testenv.ParseRoles(*roles)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-chaos:", err)
		os.Exit(2)
	}
	if slices.Contains(rs, testenv.RoleFabricd) && *bin == "" {
		fmt.Fprintln(os.Stderr, "fabricd-chaos: the fabricd role needs --fabricd PATH")
		os.Exit(2)
	}

	// Ctrl-C and SIGTERM cancel the run; the faults undo themselves and the lab
	// is torn down before the program exits.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) {
		fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	var results []*chaos.Result
	status := 0
	for _, role := range rs {
		cfg := chaos.Config{Role: role, Fabricd: *bin, Seed: *seed, Duration: *duration, Servers: *servers, Logf: logf}
		if *dir != "" {
			cfg.Dir, cfg.KeepLogs = *dir+"/"+role.String(), true
		}
		res, err := chaos.Run(ctx, cfg)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fabricd-chaos: %v: %v\n", role, err)
			if errors.Is(err, context.Canceled) {
				os.Exit(3)
			}
			status = 3
			continue
		}
		results = append(results, res)
		fmt.Print(res.Summary())
		if role == testenv.RoleFabricd && !res.Passed() && status == 0 {
			status = 1
		}
	}
	fmt.Print("\n" + chaos.Table(results))
	for _, r := range results {
		fmt.Print(r.Summary())
	}
	if *out != "" {
		report := chaos.Markdown(results, strings.Join(os.Args, " "))
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "fabricd-chaos:", err)
			status = 3
		} else {
			fmt.Println("report:", *out)
		}
	}
	os.Exit(status)
}
