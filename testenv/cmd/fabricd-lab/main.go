// Command fabricd-lab shows the seed article's fabric at work: it builds the lab of
// package testenv in network namespaces (FRR as the ToR), starts the servers (fabricd,
// or FRR for comparison), waits for BGP to converge, prints the ToR's sessions, each
// server's routes and a few pings, and tears everything down again, also on Ctrl-C.
//
//	fabricd-lab demo [--role fabricd|frr] [--fabricd PATH] [--tors 1|2] [--tor-flavor F[,F]] [--keep]
//
// It needs root and FRR installed under /usr/lib/frr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

const usage = `usage: fabricd-lab demo [--role fabricd|frr] [--fabricd PATH] [--tors 1|2] [--tor-flavor F[,F]] [--keep]

Builds the seed fabric (FRR ToR, servers c1-c3 with one pod each) in network
namespaces, starts the servers, waits for convergence, shows routes and pings,
then tears it all down.
`

func main() {
	if len(os.Args) < 2 || os.Args[1] != "demo" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage+"\nflags:\n")
		fs.PrintDefaults()
	}
	role := fs.String("role", "fabricd", "what runs on the servers: fabricd or frr")
	bin := fs.String("fabricd", "", "fabricd binary (needed with --role fabricd)")
	tors := fs.Int("tors", 1, "number of ToRs, 1 or 2")
	keep := fs.Bool("keep", false, "keep the lab up until Ctrl-C, to poke around in it (also when it does not converge)")
	flavors := fs.String("tor-flavor", "", "what the ToRs run, one per ToR, comma-separated: "+flavorNames()+" (default frr)")
	fs.Parse(os.Args[2:])
	if fs.NArg() > 0 {
		fs.Usage()
		os.Exit(2)
	}

	opts := testenv.Options{FabricdBinary: *bin, ToRs: *tors}
	if *flavors != "" {
		for name := range strings.SplitSeq(*flavors, ",") {
			f, err := testenv.ParseToRFlavor(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, "fabricd-lab:", err)
				os.Exit(2)
			}
			opts.ToRFlavors = append(opts.ToRFlavors, f)
		}
	}
	switch *role {
	case "fabricd":
		opts.Role = testenv.RoleFabricd
	case "frr":
		opts.Role = testenv.RoleFRR
	default:
		fmt.Fprintf(os.Stderr, "fabricd-lab: unknown role %q (want fabricd or frr)\n", *role)
		os.Exit(2)
	}
	if opts.Role == testenv.RoleFabricd && *bin == "" {
		fmt.Fprintln(os.Stderr, "fabricd-lab: --role fabricd needs --fabricd PATH (or try --role frr)")
		os.Exit(2)
	}

	// Until demo returns, Ctrl-C and SIGTERM only cancel ctx, so that the lab is always
	// torn down; the daemons are in their own process groups and do not see Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := demo(ctx, opts, *keep)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-lab:", err)
		os.Exit(1)
	}
}

func demo(ctx context.Context, opts testenv.Options, keep bool) (err error) {
	opts.Logf = func(format string, args ...any) { fmt.Printf("   "+format+"\n", args...) }

	heading("Building the lab (%d ToR, role %v)", max(opts.ToRs, 1), opts.Role)
	lab, err := testenv.New(ctx, opts)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer func() {
		heading("Tearing down lab %s", lab.Prefix())
		if cerr := lab.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()

	heading("Starting the servers")
	begin := time.Now()
	if err := lab.StartServers(ctx); err != nil {
		return interrupted(ctx, err)
	}
	heading("Waiting for BGP to converge")
	if err := lab.WaitConverged(ctx, 60*time.Second); err != nil {
		if ctx.Err() == nil {
			printLogs(lab)
		}
		if keep && ctx.Err() == nil {
			// A lab that does not converge is exactly the one to look into.
			fmt.Printf("\n   not converged: %v\n", err)
			printHints(lab, opts.Role)
			<-ctx.Done()
			fmt.Println()
		}
		return interrupted(ctx, err)
	}
	fmt.Printf("   converged %v after the servers started\n", time.Since(begin).Round(time.Millisecond))

	for i := 0; lab.ToR(i) != nil; i++ {
		tor := lab.ToR(i)
		show, run := "show bgp summary", func() (string, error) { return tor.Vtysh(ctx, "show bgp summary") }
		if !tor.Flavor().IsFRR() {
			show, run = "birdc show protocols", func() (string, error) { return tor.Birdc(ctx, "show", "protocols") }
		}
		heading("%s (%v): %s", tor.Name(), tor.Flavor(), show)
		out, err := run()
		if err != nil {
			return interrupted(ctx, err)
		}
		fmt.Print(out)
	}
	for _, s := range lab.Servers() {
		heading("%s: ip route", s.Name())
		out, err := s.Exec(ctx, "ip", "route")
		if err != nil {
			return interrupted(ctx, err)
		}
		fmt.Print(out)
	}

	// From the first server to each other one: loopback to loopback, then pod to pod.
	var failed []string
	servers := lab.Servers()
	src := servers[0]
	for _, dst := range servers[1:] {
		from, to := src.Spec().Loopback.Addr(), dst.Spec().Loopback.Addr()
		heading("ping %s (%v) -> %s (%v)", src.Name(), from, dst.Name(), to)
		out, err := src.Exec(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", from.String(), to.String())
		fmt.Print(out)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(ctx, err)
			}
			failed = append(failed, fmt.Sprintf("%v -> %v: %v", from, to, err))
		}
		pf, pt := src.Pod(0), dst.Pod(0)
		if pf == nil || pt == nil {
			continue
		}
		heading("ping pod %s/%v -> pod %s/%v", src.Name(), pf.Addr(), dst.Name(), pt.Addr())
		out, err = pf.Exec(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "2", pt.Addr().String())
		fmt.Print(out)
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(ctx, err)
			}
			failed = append(failed, fmt.Sprintf("pod %v -> pod %v: %v", pf.Addr(), pt.Addr(), err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("pings failed:\n  %s", strings.Join(failed, "\n  "))
	}

	if keep {
		printHints(lab, opts.Role)
		<-ctx.Done()
		fmt.Println()
	}
	return nil
}

// interrupted turns the error of a step cut short by Ctrl-C into a plain message.
func interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	return err
}

func flavorNames() string {
	var names []string
	for _, f := range testenv.ToRFlavors() {
		names = append(names, f.String())
	}
	return strings.Join(names, ", ")
}

func heading(format string, args ...any) {
	fmt.Printf("\n== "+format+"\n", args...)
}

func printLogs(lab *testenv.Lab) {
	for _, s := range lab.Servers() {
		heading("%s log (last lines)", s.Name())
		fmt.Println(lastLines(s.Log(), 25))
	}
	for i := 0; lab.ToR(i) != nil; i++ {
		heading("%s log (last lines)", lab.ToR(i).Name())
		fmt.Println(lastLines(lab.ToR(i).Log(), 25))
	}
}

func lastLines(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func printHints(lab *testenv.Lab, role testenv.Role) {
	servers := lab.Servers()
	first, last := servers[0], servers[len(servers)-1]
	heading("The lab stays up until Ctrl-C. To look around:")
	for i := 0; lab.ToR(i) != nil; i++ {
		if tor := lab.ToR(i); !tor.Flavor().IsFRR() {
			fmt.Printf("   birdc -s %s show protocols all\n", tor.BirdSocket())
			continue
		}
		fmt.Printf("   vtysh -N %s -c 'show bgp summary'\n", lab.ToR(i).Namespace())
	}
	if role == testenv.RoleFRR {
		fmt.Printf("   vtysh -N %s -c 'show bgp ipv4 unicast'\n", first.Namespace())
	}
	fmt.Printf("   ip netns exec %s ip route\n", first.Namespace())
	if pf, pt := first.Pod(0), last.Pod(0); pf != nil && pt != nil {
		fmt.Printf("   ip netns exec %s ping %v\n", pf.Namespace(), pt.Addr())
	}
	fmt.Printf("   ip netns exec %s bash     # a shell on %s\n", first.Namespace(), first.Name())
	fmt.Printf("   logs: %s, %s\n", lab.ToR(0).LogPath(), first.LogPath())
}
