package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/fabricd/fabricd/api"
	"github.com/fabricd/fabricd/api/fabricdpb"
)

// waitOnline is `fabricctl wait-online`, what fabricd-wait-online.service
// runs so that kubelet starts only once this server can reach the fabric:
// like systemd-networkd-wait-online, it succeeds when fabricd is online
// (every uplink with carrier forwards: its session is Established and the
// ToR has sent its whole table; one does; and the kernel holds what the
// RIB wants), and fails after a timeout. fabricd need not be running yet
// when it starts.
func waitOnline(socket string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wait-online", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	anyUplink := fs.Bool("any", false, "one uplink online is enough")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client, closeConn, err := api.Dial(socket)
	if err != nil {
		fmt.Fprintf(stderr, "fabricctl: %v\n", err)
		return 1
	}
	defer closeConn()

	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	why := "fabricd is not running"
	for {
		if reachable(socket) == nil {
			call, cancelCall := context.WithTimeout(ctx, 5*time.Second)
			s, err := client.GetSummary(call, &fabricdpb.GetSummaryRequest{})
			cancelCall()
			if err == nil {
				var ok bool
				if ok, why = online(s, *anyUplink); ok {
					fmt.Fprintf(stdout, "online: %s\n", why)
					return 0
				}
			} else {
				why = err.Error()
			}
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "fabricctl: not online after %s: %s\n", *timeout, why)
			return 1
		case <-tick.C:
		}
	}
}

// online decides from a summary; why says what is (or is not) there.
func online(s *fabricdpb.Summary, anyUplink bool) (bool, string) {
	var up, waiting []string
	for _, p := range s.GetPeers() {
		if p.GetState() == "Established" && p.GetEndOfRib() {
			up = append(up, p.GetInterface())
		} else {
			waiting = append(waiting, fmt.Sprintf("%s %s", p.GetInterface(), p.GetState()))
		}
	}
	switch {
	case len(s.GetPeers()) == 0:
		return false, "no uplinks configured"
	case !s.GetFibInSync():
		return false, "routes are still being installed"
	case anyUplink && len(up) > 0, s.GetOnline():
		return true, fmt.Sprintf("%s up, %d routes installed", strings.Join(up, ", "), s.GetInstalledCount())
	case len(waiting) == 0:
		return false, "waiting for the uplinks to forward"
	}
	return false, "waiting for " + strings.Join(waiting, ", ")
}
