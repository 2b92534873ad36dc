// Command fabricd-scale runs the fabric-scale benchmark of package
// testenv/scale: two FRR ToRs and N dual-homed servers, with fabricd on every
// server and then FRR on every server, each in a fresh lab. For every N it
// prints bring-up, idle memory, idle CPU and wakeups, failover on a killed and
// on a frozen ToR, recovery after the killed ToR returns and after all of a
// ToR's ports were down, each with the packets a ping flood lost, side by side
// for both roles.
//
//	fabricd-scale --fabricd PATH [--sizes 16,48] [--roles fabricd,frr] [--runs 1]
//	              [--flows 8] [--out FILE] [--dir DIR] [--log-level info] [-v]
//
// It needs root, FRR under /usr/lib/frr and iproute2. Ctrl-C stops it and
// removes every namespace and process it started. The exit status is 1 if a
// run failed or its lab was not torn down cleanly, 2 for bad flags.
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
	"github.com/fabricd/fabricd/testenv/scale"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("fabricd-scale", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "usage: fabricd-scale --fabricd PATH [flags]\n\nCompares fabricd with FRR on every server of a dual-ToR fabric of N servers.\n\nflags:\n")
		fs.PrintDefaults()
	}
	t := scale.DefaultTiming()
	bin := fs.String("fabricd", "", "fabricd binary to measure (needed for the fabricd role)")
	sizes := fs.String("sizes", "16,48", "comma-separated numbers of servers")
	roles := fs.String("roles", "fabricd,frr", "server roles, in run order: fabricd, frr or both")
	runs := fs.Int("runs", 1, "runs per size and role (medians across runs when more than 1)")
	flows := fs.Int("flows", 8, "ping flood flows between server loopbacks, half sending through each uplink")
	out := fs.String("out", "", "also write the Markdown report to this file")
	dir := fs.String("dir", "", "keep every lab's configs and logs under this directory (DIR/nN-ROLE-runR)")
	level := fs.String("log-level", "info", "fabricd's [log] level (info: as deployed)")
	torConfig := fs.String("tor-config", "", `lines added inside the FRR ToRs' "router bgp", e.g. "coalesce-time 100" (\n between lines)`)
	fs.DurationVar(&t.Settle, "settle", t.Settle, "quiet time after the last server's full ECMP, before memory and the idle window")
	fs.DurationVar(&t.Idle, "idle", t.Idle, "idle window for CPU time and wakeups")
	fs.DurationVar(&t.Freeze, "freeze", t.Freeze, "how long the frozen ToR stays stopped (more than the 9 s hold time)")
	fs.DurationVar(&t.Recovery, "recovery", t.Recovery, "bound on every recovery before it is reported as never")
	verbose := fs.Bool("v", false, "show the labs' own progress messages")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	ns, err := parseSizes(*sizes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-scale:", err)
		return 2
	}
	rs, err := testenv.ParseRoles(*roles)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-scale:", err)
		return 2
	}
	abs := ""
	if *bin != "" {
		if abs, err = filepath.Abs(*bin); err != nil {
			fmt.Fprintln(os.Stderr, "fabricd-scale:", err)
			return 2
		}
	}
	if *dir != "" {
		if *dir, err = filepath.Abs(*dir); err != nil {
			fmt.Fprintln(os.Stderr, "fabricd-scale:", err)
			return 2
		}
	}
	progress := func(format string, args ...any) {
		fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	cfg := scale.Config{
		Fabricd:   abs,
		Sizes:     ns,
		Roles:     rs,
		Runs:      *runs,
		Flows:     *flows,
		Timing:    t,
		LogLevel:  *level,
		ToRConfig: strings.ReplaceAll(*torConfig, `\n`, "\n"),
		Dir:       *dir,
		Command:   testenv.CommandLine(),
		Logf:      progress,
	}
	if *verbose {
		cfg.LabLogf = func(format string, args ...any) { progress("  "+format, args...) }
	}

	// Ctrl-C and SIGTERM only cancel ctx: the run in progress then resumes a
	// frozen ToR and tears its lab down before Run returns. The daemons are in
	// their own process groups and do not see the terminal's Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := scale.Run(ctx, cfg)
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "fabricd-scale: interrupted; everything it started has been removed")
		return 1
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-scale:", err)
		return 1
	}
	md := res.Markdown()
	fmt.Print("\n" + md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "fabricd-scale:", err)
			return 1
		}
		fmt.Println("report:", *out)
	}
	if len(res.Failures) > 0 {
		fmt.Fprintf(os.Stderr, "fabricd-scale: %d run(s) failed; see the end of the report\n", len(res.Failures))
		return 1
	}
	return 0
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 2 || n > scale.MaxServers {
			return nil, fmt.Errorf("--sizes: %q is not a number of servers from 2 to %d", f, scale.MaxServers)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("--sizes: no size given")
	}
	return out, nil
}
