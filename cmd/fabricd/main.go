// Command fabricd is a BGP routing daemon for servers in a pure-L3 fabric:
// it peers with its ToR switches over IPv6 link-local (BGP unnumbered),
// announces the server's prefixes and installs the fabric's routes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/daemon"
	"github.com/fabricd/fabricd/fib"
)

// Exit statuses: 2 for a configuration the operator must fix, 1 for
// anything else.
const (
	exitFailure = 1
	exitConfig  = 2
)

func main() {
	os.Exit(run())
}

func run() int {
	configPath := flag.String("config", config.DefaultPath, "configuration file")
	check := flag.Bool("check", false, "validate the configuration and exit")
	flag.Parse()

	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fabricd: invalid configuration:\n%v\n", err)
		return exitConfig
	}
	if *check {
		fmt.Printf("%s: configuration is valid\n", cfg.Path)
		return 0
	}

	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	kernel, err := fib.NewNetlinkKernel()
	if err != nil {
		log.Error("opening netlink", "err", err)
		return exitFailure
	}
	defer kernel.Close()

	d := daemon.New(daemon.Options{Config: cfg, Kernel: kernel, Logger: log, LogLevel: level})
	go reloadOnHangup(ctx, d, log)
	if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("fabricd stopped", "err", err)
		return exitFailure
	}
	return 0
}

// reloadOnHangup turns SIGHUP (systemctl reload) into a reload. A refused
// configuration is logged; the running one stays.
func reloadOnHangup(ctx context.Context, d *daemon.Daemon, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if _, err := d.Reload(ctx); err != nil {
				log.Error("reload refused; keeping the running configuration", "err", err)
			}
		}
	}
}
