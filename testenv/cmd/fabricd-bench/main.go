// Command fabricd-bench compares fabricd with FRR (zebra + bgpd) as a server's
// routing daemon against the same FRR ToR, in the namespace labs of package
// testenv: FIB completion and bring-up for N prefixes, peak memory, the kernel's
// own floor for the same routes, and, with two ToRs, how fast the FIB leaves an
// uplink that loses carrier and returns to ECMP when it comes back. It prints
// Markdown tables (median, min, max, fabricd / FRR) and can write them to a file.
//
//	fabricd-bench --fabricd PATH [--runs 3] [--sizes 10000,100000] [--link-prefixes 10000]
//	              [--floor=true] [--roles frr,fabricd] [--perf DIR] [--out FILE] [--keep-logs] [-v]
//
// It needs root, FRR under /usr/lib/frr and iproute2; --perf needs perf. Ctrl-C
// stops it and removes every namespace and process it started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/bench"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("fabricd-bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: fabricd-bench --fabricd PATH [flags]\n\nCompares fabricd with FRR as a server's routing daemon in namespace labs.\n\nflags:\n")
		fs.PrintDefaults()
	}
	bin := fs.String("fabricd", "", "fabricd binary to measure (required)")
	runs := fs.Int("runs", 3, "runs per role and size")
	sizes := fs.String("sizes", "10000,100000", "comma-separated numbers of prefixes the ToR originates in the FIB runs")
	linkPrefixes := fs.Int("link-prefixes", 10000, "prefixes both ToRs originate in the link-down/link-up runs (0 skips them)")
	floor := fs.Bool("floor", true, "measure the kernel floor (ip -batch) for each size")
	perfDir := fs.String("perf", "", "also profile one fabricd run at the largest size with perf record, into this directory")
	out := fs.String("out", "", "also write the Markdown results to this file")
	roles := fs.String("roles", "frr,fabricd", "server roles to measure, in order: frr, fabricd or both")
	keep := fs.Bool("keep-logs", false, "keep every lab's directory (configs and logs)")
	verbose := fs.Bool("v", false, "show the labs' own progress messages")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *bin == "" {
		fs.Usage()
		return 2
	}
	ns, err := parseSizes(*sizes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-bench:", err)
		return 2
	}
	rs, err := testenv.ParseRoles(*roles)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-bench:", err)
		return 2
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-bench:", err)
		return 2
	}
	if *perfDir != "" {
		if *perfDir, err = filepath.Abs(*perfDir); err != nil {
			fmt.Fprintln(os.Stderr, "fabricd-bench:", err)
			return 2
		}
	}

	progress := func(format string, args ...any) {
		fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	cfg := bench.Config{
		Fabricd:      abs,
		Runs:         *runs,
		Sizes:        ns,
		LinkPrefixes: *linkPrefixes,
		Floor:        *floor,
		ProfileDir:   *perfDir,
		KeepLogs:     *keep,
		Roles:        rs,
		Logf:         progress,
	}
	if *verbose {
		cfg.LabLogf = func(format string, args ...any) { progress("  "+format, args...) }
	}

	// Ctrl-C and SIGTERM only cancel ctx: the run in progress then tears its lab down
	// before Run returns. The daemons are in their own process groups and do not
	// see the terminal's Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "fabricd-bench: interrupted; everything it started has been removed")
		return 1
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-bench:", err)
		return 1
	}
	md := res.Markdown(testenv.CommandLine())
	fmt.Print("\n" + md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "fabricd-bench:", err)
			return 1
		}
	}
	if len(res.Failures) > 0 {
		fmt.Fprintf(os.Stderr, "fabricd-bench: %d run(s) failed; see the end of the report\n", len(res.Failures))
		return 1
	}
	return 0
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(strings.ReplaceAll(f, "_", ""))
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--sizes: %q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}
