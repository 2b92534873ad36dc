// Command fabricd is a BGP routing daemon for servers in a pure-L3 fabric:
// it peers with its ToR switches over IPv6 link-local (BGP unnumbered),
// announces the server's prefixes and installs the fabric's routes.

// The number of processors is set by fabricd (package procs), once and
// then as work comes and goes: the runtime must not re-read the CPU
// limits every second behind its back (Go 1.25's updatemaxprocs), which
// also wakes an idle fabricd each time.
//
//go:debug updatemaxprocs=0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/daemon"
	"github.com/fabricd/fabricd/fib"
	"github.com/fabricd/fabricd/internal/journal"
	"github.com/fabricd/fabricd/internal/procs"
)

// Exit statuses: 2 for a configuration the operator must fix, 1 for
// anything else.
const (
	exitFailure = 1
	exitConfig  = 2
)

func main() {
	// GoBGP holds about 800 bytes per prefix; with Go's default GOGC of
	// 100 the heap peaks near twice that while a full table arrives. At
	// 60 the peak RSS for 100,000 prefixes drops from ~150 to ~135 MB
	// with no loss of speed (the kernel's route insertion, not the
	// collector, paces a table load; docs/performance.md). GOGC still
	// overrides.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(60)
	}
	os.Exit(run())
}

func run() int {
	configPath := flag.String("config", config.DefaultPath, "configuration file")
	check := flag.Bool("check", false, "validate the configuration and exit")
	socket := flag.String("socket", "", "API socket, overriding [api] socket (several fabricd on one host, as in the lab)")
	onTerm := flag.String("sigterm", "shutdown", `what SIGTERM means: "shutdown" (withdraw and remove routes) or "restart" (keep them, as SIGUSR1); "restart" suits containers, whose runtime stops them with SIGTERM on every upgrade`)
	flag.Parse()
	if *onTerm != "shutdown" && *onTerm != "restart" {
		fmt.Fprintf(os.Stderr, "fabricd: --sigterm must be shutdown or restart, not %q\n", *onTerm)
		return exitConfig
	}

	cfg, err := daemon.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fabricd: invalid configuration:\n%v\n", err)
		return exitConfig
	}
	if *check {
		fmt.Printf("%s: configuration is valid (AS %d, router ID %s)\n", cfg.Path, cfg.ASN, cfg.RouterID)
		return 0
	}

	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	log := slog.New(logHandler(level))

	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	kernel, err := fib.NewNetlinkKernel()
	if err != nil {
		log.Error("opening netlink", "err", err)
		return exitFailure
	}
	defer kernel.Close()

	d := daemon.New(daemon.Options{Config: cfg, Kernel: kernel, Logger: log, LogLevel: level, APISocket: *socket,
		Busy: governor().Busy})
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(signals)
	handled := make(chan struct{})
	go func() {
		defer close(handled)
		handleSignals(ctx, stop, signals, d, *onTerm == "restart", log)
	}()
	err = d.Run(ctx)
	stop()
	<-handled
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("fabricd stopped", "err", err)
		return exitFailure
	}
	return 0
}

// governor runs fabricd on one processor while it idles and on up to
// four while routes arrive; GOMAXPROCS in the environment, if set,
// decides instead.
func governor() *procs.Governor {
	max := min(runtime.NumCPU(), 4)
	if os.Getenv("GOMAXPROCS") != "" {
		max = 1 // the runtime took it from the environment; leave it
	}
	return procs.New(max, 5*time.Second, runtime.GOMAXPROCS)
}

// logHandler logs to the journal by its native protocol when systemd
// connected stderr to it, so each attribute is a field of its own
// (journalctl INTERFACE=ens3), and as text on stderr otherwise.
func logHandler(level slog.Leveler) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	text := slog.NewTextHandler(os.Stderr, opts)
	if journal.StderrIsJournal() {
		if h, err := journal.New(journal.DefaultSocket, "fabricd", opts, text); err == nil {
			return h
		}
	}
	return text
}

// handleSignals maps signals to the daemon's lifecycle:
//   - SIGTERM, SIGINT: stop for good. Routes are withdrawn from the peers
//     and removed from the kernel (systemctl stop). With termRestarts,
//     SIGTERM is a restart instead.
//   - SIGUSR1: stop for a restart. Routes stay in the kernel and the peers
//     keep ours (graceful restart), so no traffic is lost while the next
//     fabricd starts (systemctl restart, an upgrade).
//   - SIGHUP: reload the configuration (systemctl reload).
func handleSignals(ctx context.Context, stop context.CancelFunc, signals <-chan os.Signal, d *daemon.Daemon, termRestarts bool, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-signals:
			switch sig {
			case syscall.SIGHUP:
				if _, err := d.Reload(ctx); err != nil {
					log.Error("reload refused; keeping the running configuration", "err", err)
				}
			case syscall.SIGUSR1, restartSignal(termRestarts):
				log.Info("stopping for a restart", "signal", sig)
				d.StopGracefully()
				stop()
			default:
				log.Info("stopping", "signal", sig)
				stop()
			}
		}
	}
}

// restartSignal is SIGTERM when it means a restart, or SIGUSR1 again.
func restartSignal(termRestarts bool) os.Signal {
	if termRestarts {
		return syscall.SIGTERM
	}
	return syscall.SIGUSR1
}
