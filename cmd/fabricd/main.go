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

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Log.Level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	kernel, err := fib.NewNetlinkKernel()
	if err != nil {
		log.Error("opening netlink", "err", err)
		return exitFailure
	}
	defer kernel.Close()

	if err := daemon.New(cfg, kernel, log).Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("fabricd stopped", "err", err)
		return exitFailure
	}
	return 0
}
