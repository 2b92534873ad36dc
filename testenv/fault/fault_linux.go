// Package fault injects into a testenv lab the failures a server fabric meets in
// the field: carrier flaps of a server's link, a ToR whose ports all go down, a
// ToR's routing daemons killed or frozen, a ToR that stops sending router
// advertisements, a server's routing daemon killed or restarted, and the
// server's gateway neighbour entry deleted.
//
// Every fault returns its Span: Start is its first action, End the moment it is
// over (the link is up again, the daemons run again, the ToR is resumed). A
// fault undoes what it did even when its context ends early, so a cancelled run
// never leaves a link down or a ToR frozen; then it returns the context's error.
//
// Link changes are made over rtnetlink from this process (package nlmon), so
// their trigger times are exact; daemons are signalled through the processes
// testenv started.
package fault

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
)

// Span is when a fault disturbed the lab.
type Span struct{ Start, End time.Time }

// undoTimeout bounds the undoing of a fault whose context has ended.
const undoTimeout = 30 * time.Second

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flaps takes the link between tor and the named server down for down and up
// again, n times, waiting up between flaps (n = 1: a single flap).
//
// The flap is made on the ToR's side: its port is set administratively down,
// so the server's uplink loses carrier and stays administratively up, which is
// what a server sees when the ToR's port, the optic or the cable fails. (A
// server-side `ip link set down` would instead make the server's kernel flush
// the uplink's routes and neighbours itself, which hides what the routing
// daemon does.)
func Flaps(ctx context.Context, tor *testenv.Router, server string, n int, down, up time.Duration) (Span, error) {
	port := tor.PortFor(server)
	if port == "" {
		return Span{}, fmt.Errorf("flap: %s has no port to %s", tor.Name(), server)
	}
	var span Span
	for i := range n {
		t, err := nlmon.SetLink(tor.Namespace(), port, false)
		if err != nil {
			return span, err
		}
		if i == 0 {
			span.Start = t
		}
		werr := sleep(ctx, down)
		if span.End, err = nlmon.SetLink(tor.Namespace(), port, true); err != nil {
			return span, err
		}
		if werr != nil {
			return span, werr
		}
		if i < n-1 {
			if err := sleep(ctx, up); err != nil {
				return span, err
			}
		}
	}
	return span, nil
}

// PortsDown sets every port of tor down at once, waits d, and sets them up
// again at once: a ToR reload or line-card reset as its servers see it. Start
// is when the ports went down, End when they came back up.
func PortsDown(ctx context.Context, lab *testenv.Lab, tor *testenv.Router, d time.Duration) (span Span, err error) {
	var ports []string
	for _, s := range lab.Servers() {
		ports = append(ports, tor.PortFor(s.Name()))
	}
	if span.Start, err = nlmon.SetLinks(tor.Namespace(), ports, false); err != nil {
		// Some may have gone down: bring every one back.
		_, uerr := nlmon.SetLinks(tor.Namespace(), ports, true)
		return span, errors.Join(err, uerr)
	}
	werr := sleep(ctx, d)
	span.End, err = nlmon.SetLinks(tor.Namespace(), ports, true)
	return span, errors.Join(werr, err)
}

// KillToR kills tor's FRR daemons (zebra, bgpd and bfdd) with SIGKILL, as a
// crash or an OOM kill would, and starts them again at once, as systemd or
// watchfrr would. End is when the new daemons answer vtysh with their config
// loaded. bfdd goes too: it is one of the ToR's FRR processes and a restarted
// zebra would not serve the old one. dead, if not nil, is called once they
// are dead, before they start again, with the moment of the kill: a dead
// daemon logs nothing, so whoever follows the ToR's log must be told.
func KillToR(ctx context.Context, tor *testenv.Router, dead func(time.Time)) (Span, error) {
	span := Span{Start: time.Now()}
	// Stop reports how the daemons died ("signal: killed"); only daemons still
	// running afterwards are a failure.
	tor.Stop(syscall.SIGKILL)
	if pids := tor.PIDs(); len(pids) > 0 {
		return span, fmt.Errorf("kill: %s still runs %v after SIGKILL", tor.Name(), pids)
	}
	if dead != nil {
		dead(span.Start)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	err := tor.Start(sctx)
	span.End = time.Now()
	if err != nil {
		return span, fmt.Errorf("restarting FRR on %s after the kill: %w", tor.Name(), err)
	}
	return span, ctx.Err()
}

// FreezeToR stops all of tor's FRR daemons with SIGSTOP for d and resumes them
// with SIGCONT: a hung control plane. The kernel keeps forwarding with the
// routes it had; past the hold time (9 s) the servers give up on the sessions.
func FreezeToR(ctx context.Context, tor *testenv.Router, d time.Duration) (span Span, err error) {
	span.Start = time.Now()
	if err := tor.Signal(syscall.SIGSTOP); err != nil {
		return span, err
	}
	defer func() {
		err = errors.Join(err, tor.Signal(syscall.SIGCONT))
		span.End = time.Now()
	}()
	return span, sleep(ctx, d)
}

// raTable is the nftables table SuppressRA adds to a ToR.
const raTable = "fault_no_ra"

// SuppressRA makes tor send no router advertisement for d, then sends them
// again.
//
// The operator's way is `ipv6 nd suppress-ra` on the ports, and SuppressRA
// configures that (and `no ipv6 nd suppress-ra` afterwards). But FRR 8.4 goes on
// advertising on ports with BGP unnumbered peers regardless, because bgpd
// enables RAs there by itself. So that the servers really hear no RA, outgoing
// router advertisements are also dropped in the ToR's namespace with nftables
// for the duration.
func SuppressRA(ctx context.Context, lab *testenv.Lab, tor *testenv.Router, d time.Duration) (span Span, err error) {
	var ports []string
	for _, s := range lab.Servers() {
		ports = append(ports, tor.PortFor(s.Name()))
	}
	cmds := func(no string) []string {
		out := []string{"configure terminal"}
		for _, p := range ports {
			out = append(out, "interface "+p, no+"ipv6 nd suppress-ra", "exit")
		}
		return out
	}
	// Bounded: a ToR that does not answer must not hang the caller.
	ctx, cancel := context.WithTimeout(ctx, d+undoTimeout)
	defer cancel()
	span.Start = time.Now()
	drop := fmt.Sprintf("add table ip6 %[1]s; add chain ip6 %[1]s out { type filter hook output priority -300; policy accept; }; "+
		"add rule ip6 %[1]s out icmpv6 type nd-router-advert drop", raTable)
	if _, err := tor.Exec(ctx, "nft", drop); err != nil {
		return span, fmt.Errorf("suppressing RAs on %s: %w", tor.Name(), err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		_, verr := tor.Vtysh(uctx, cmds("no ")...)
		_, nerr := tor.Exec(uctx, "nft", "delete", "table", "ip6", raTable)
		span.End = time.Now()
		if nerr != nil {
			nerr = fmt.Errorf("letting RAs out again on %s: %w", tor.Name(), nerr)
		}
		err = errors.Join(err, verr, nerr)
	}()
	// vtysh exits 0 even when it refuses a command, and FRR's answer changes
	// nothing about the drop above: it is not checked.
	if _, err := tor.Vtysh(ctx, cmds("")...); err != nil {
		return span, fmt.Errorf("configuring suppress-ra on %s: %w", tor.Name(), err)
	}
	return span, sleep(ctx, d)
}

// KillServer kills the server's routing daemon(s) with SIGKILL, a crash, and
// starts them again at once, as systemd's Restart= would. End is when the new
// daemon runs (fabricd) or answers vtysh with its config loaded (FRR).
func KillServer(ctx context.Context, s *testenv.Server) (Span, error) {
	span := Span{Start: time.Now()}
	s.Stop(syscall.SIGKILL) // reports "signal: killed"; whether it is gone is checked by Start
	return startAgain(ctx, s, span)
}

// RestartServer restarts the server's routing daemon the way `systemctl
// restart` does on a real server:
//
//   - fabricd: SIGUSR1 (the unit's RestartKillSignal: end the sessions without
//     a NOTIFICATION and leave the kernel as it is), then start again;
//   - FRR: Debian's frr.service stops with `frrinit.sh stop`, which sends
//     SIGTERM to every daemon, then starts them again. zebra removes its
//     routes from the kernel when it exits (Debian does not start it with -r),
//     so this is not a hitless restart: it is what operators of FRR servers get.
func RestartServer(ctx context.Context, s *testenv.Server, role testenv.Role) (Span, error) {
	span := Span{Start: time.Now()}
	sig := syscall.SIGTERM
	if role == testenv.RoleFabricd {
		sig = syscall.SIGUSR1
	}
	if err := s.Stop(sig); err != nil {
		return span, fmt.Errorf("restart: %w", err)
	}
	return startAgain(ctx, s, span)
}

func startAgain(ctx context.Context, s *testenv.Server, span Span) (Span, error) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	err := s.Start(sctx)
	span.End = time.Now()
	if err != nil {
		return span, fmt.Errorf("starting %s again: %w", s.Name(), err)
	}
	return span, ctx.Err()
}

// Gateway is the address learned routes go through on the servers
// (`via 169.254.0.1 dev ens3 onlink`), resolved by a permanent neighbour entry.
var Gateway = netip.MustParseAddr("169.254.0.1")

// DeleteGateway deletes the server's neighbour entry for 169.254.0.1 on uplink,
// as an operator's `ip neigh flush` or another daemon might.
func DeleteGateway(s *testenv.Server, uplink string) (Span, error) {
	t, err := nlmon.DeleteNeighbor(s.Namespace(), uplink, Gateway)
	return Span{Start: t, End: t}, err
}
