// Package chaos is a seeded soak of the dual-ToR fabric: while an ICMP flood runs
// between every pair of server loopbacks and of pods, faults drawn from a seed
// (package fault) disturb one ToR at a time, and every lost packet is put on a
// timeline next to them. The same seed gives the same schedule, and the same
// ECMP hashing, for fabricd and for FRR on the servers, each in a fresh lab, so
// the two can be compared side by side.
//
// What is measured, and how:
//
//   - Loss: package probe sends an echo request every 10 ms on every flow from
//     raw sockets inside the namespaces, and records each request and reply. A
//     request without a reply within 1 s is lost. Each loss is attributed to the
//     fault whose window holds its sending time (see attribute); losses in no
//     window are reported as "(no event)".
//   - In flight: when a server's own link loses carrier (a flap, a burst, or
//     all ports of its ToR at once), what the ToR had already sent towards it,
//     or was still sending before it withdrew the server's routes, is lost
//     whatever the server does. Losses of flows with the flapped server at
//     either end, sent from 20 ms before to 100 ms after a carrier loss of that
//     link (seen by the server's kernel), are counted in their own column and
//     do not fail the run.
//   - Traffic across the disturbed ToR: nftables counters on every ToR port
//     count the echo requests and replies each ToR receives from the servers
//     (before routing: also those it then drops) and sends to them, read in
//     process every 100 ms. For each fault, the share of the flood that went
//     into the disturbed element (the ToR; for a flap that link, both ways;
//     for a deleted gateway entry what the server sent up that link; for a
//     server fault that server's links) in the second before it
//     began, and in the second after full ECMP returned, shows that the fault
//     really hit traffic. Each server hashes ECMP with its own
//     net.ipv4.fib_multipath_hash_seed (derived from the run seed), so flows
//     spread over both ToRs.
//   - Sessions: the ToRs' logs (%ADJCHANGE lines), read in process as they
//     grow, tell when every session with every server is up again. A fault's
//     window for losses lasts until both the FIBs and the sessions are back
//     (a FIB can hold stale paths through a ToR that has no session), and the
//     next fault on the other ToR waits for both.
//   - Time to full ECMP again: one rtnetlink monitor per server namespace
//     (package nlmon) tracks whether every other server's loopback and pod
//     block is routed over both uplinks; from the end of a fault (link up, ToR
//     resumed or restarted, daemon started) to the first moment every server
//     has that again. Not within 45 s: "never".
//   - At the end: every server's kernel routes equal what the ToRs' BGP tables
//     announce to it, every ToR session is Established, and every server daemon
//     that lived long enough holds no more file descriptors (and, for fabricd,
//     goroutines) than at its baseline.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/fault"
	"github.com/fabricd/fabricd/testenv/nlmon"
	"github.com/fabricd/fabricd/testenv/probe"
)

// Config is one soak of one role.
type Config struct {
	Role     testenv.Role
	Fabricd  string // fabricd binary, for RoleFabricd
	Seed     uint64
	Duration time.Duration // nominal length of the schedule (default 10 minutes)
	Servers  int           // dual-homed servers, each with one pod: 4 by default, 2 to 8
	Dir      string        // lab directory (configs, logs); default a temporary one
	KeepLogs bool          // leave the lab directory in place
	Logf     func(format string, args ...any)
}

const (
	floodInterval = 10 * time.Millisecond
	replyTimeout  = time.Second
	warmup        = 5 * time.Second
	// recoveryTimeout bounds the wait for full ECMP after a fault before the
	// next one may disturb the other ToR; a fault not recovered by then is
	// reported as "never".
	recoveryTimeout = 45 * time.Second
	// finalTimeout bounds the waits at the end (full ECMP, sessions).
	finalTimeout = 60 * time.Second
	// lossGrace extends a fault's window past its recovery: replies in flight,
	// a daemon's last cleanup.
	lossGrace = 2 * time.Second
	// inFlightBefore and inFlightAfter bound the losses a flap of a server's
	// own link may cause (see the package comment).
	inFlightBefore = 20 * time.Millisecond
	inFlightAfter  = 100 * time.Millisecond
	shareWindow    = time.Second
	sampleEvery    = 100 * time.Millisecond
	// baselineAge is how long a server daemon runs before its file descriptors
	// and goroutines are taken as its baseline.
	baselineAge        = 10 * time.Second
	fdTolerance        = 2
	goroutineTolerance = 5
	metricsListen      = "127.0.0.1:9179"
	// torGracefulRestart is the ToRs' BGP config as operators of such fabrics
	// write it: graceful restart, as restarting speaker and as helper.
	torGracefulRestart = "bgp graceful-restart"
)

// ServerSpecs returns n servers c1..cn: AS 65100+k, loopback 10.0.0.k/32, pod
// block 10.1.k.0/26 with one pod 10.1.k.2.
func ServerSpecs(n int) []testenv.ServerSpec {
	var out []testenv.ServerSpec
	for k := 1; k <= n; k++ {
		out = append(out, testenv.ServerSpec{
			Name:     fmt.Sprintf("c%d", k),
			ASN:      uint32(65100 + k),
			Loopback: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(k)}), 32),
			Block:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(k), 0}), 26),
			Pods:     []netip.Addr{netip.AddrFrom4([4]byte{10, 1, byte(k), 2})},
		})
	}
	return out
}

// hashSeed derives server k's ECMP hash seed from the run seed (splitmix64):
// different per server, the same for both roles, never 0 (which would make the
// kernel pick a random one).
func hashSeed(seed uint64, k int) uint32 {
	z := seed + uint64(k+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return uint32(z)&0x7fffffff | 1
}

// Event is one fault as it ran.
type Event struct {
	Index int
	Step  Step
	What  string
	Start time.Time
	End   time.Time
	Err   string
	// Degraded: the fabric was not at full ECMP when the fault began, because
	// an earlier one never recovered.
	Degraded bool
}

type runner struct {
	cfg     Config
	lab     *testenv.Lab
	servers []*testenv.Server
	tors    []*testenv.Router
	names   []string

	mons    []*nlmon.Monitor
	full    []*nlmon.Tracker   // per server: every other server's prefixes over both uplinks
	carrier [][]*nlmon.Tracker // per server, per uplink
	meters  []*nlmon.Counters  // per ToR
	series  *series
	sess    *sessions
	probe   *probe.Probe
	procs   *procs

	// degraded: the fabric did not recover from a fault within
	// recoveryTimeout and has not since; the schedule no longer waits for it.
	degraded bool

	mu     sync.Mutex // events are appended by the scheduler, filled in by the faults
	events []*Event
}

func (r *runner) logf(format string, args ...any) {
	if r.cfg.Logf != nil {
		r.cfg.Logf(format, args...)
	}
}

// Run builds a lab, runs the soak for one role and tears the lab down.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	if cfg.Duration <= 0 {
		cfg.Duration = 10 * time.Minute
	}
	if cfg.Servers == 0 {
		cfg.Servers = 4
	}
	if cfg.Servers < 2 || cfg.Servers > 8 {
		return nil, fmt.Errorf("chaos: %d servers, want 2 to 8", cfg.Servers)
	}
	r := &runner{cfg: cfg}
	began := time.Now()
	r.lab, err = testenv.New(ctx, testenv.Options{
		Role:           cfg.Role,
		FabricdBinary:  cfg.Fabricd,
		ToRs:           2,
		Servers:        ServerSpecs(cfg.Servers),
		Dir:            cfg.Dir,
		KeepLogs:       cfg.KeepLogs,
		ToRExtraConfig: torGracefulRestart,
		Logf:           cfg.Logf,
	})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, r.lab.Close()) }()
	r.servers, r.tors = r.lab.Servers(), []*testenv.Router{r.lab.ToR(0), r.lab.ToR(1)}
	for _, s := range r.servers {
		r.names = append(r.names, s.Name())
	}
	defer r.closeInstruments()
	if err := r.setUp(ctx); err != nil {
		return nil, err
	}
	res, err = r.soak(ctx)
	if res != nil {
		res.Took = time.Since(began)
		res.LabDir = r.lab.Dir()
		res.LabPrefix = r.lab.Prefix()
	}
	return res, err
}

// setUp starts the servers with distinct ECMP hash seeds, waits for the fabric
// and opens the instruments.
func (r *runner) setUp(ctx context.Context) error {
	for i, s := range r.servers {
		seed := hashSeed(r.cfg.Seed, i)
		if _, err := s.Exec(ctx, "sysctl", "-q", "-w", fmt.Sprintf("net.ipv4.fib_multipath_hash_seed=%d", seed)); err != nil {
			return fmt.Errorf("setting %s's ECMP hash seed: %w", s.Name(), err)
		}
		if r.cfg.Role == testenv.RoleFabricd {
			if err := s.WriteConfig(s.DefaultConfig() + "\n[metrics]\nlisten = \"" + metricsListen + "\"\n"); err != nil {
				return err
			}
		}
	}
	if err := r.lab.StartServers(ctx); err != nil {
		return err
	}
	if err := r.lab.WaitConverged(ctx, 90*time.Second); err != nil {
		return err
	}
	r.logf("chaos: %v: fabric converged", r.cfg.Role)

	for _, s := range r.servers {
		mon, err := nlmon.Open(s.Namespace(), nlmon.Options{Watch: netip.MustParsePrefix("0.0.0.0/0")})
		if err != nil {
			return err
		}
		r.mons = append(r.mons, mon)
		ups := s.Uplinks()
		r.full = append(r.full, mon.Track(s.Name()+" full ECMP", nlmon.AllThrough(r.lab.PrefixesOfOthers(s), ups)))
		var cs []*nlmon.Tracker
		for _, up := range ups {
			cs = append(cs, mon.Track(s.Name()+" "+up+" carrier", func(f *nlmon.FIB) bool { return f.Carrier(up) }))
		}
		r.carrier = append(r.carrier, cs)
	}
	for _, t := range r.tors {
		var ports []string
		for _, s := range r.servers {
			ports = append(ports, t.PortFor(s.Name()))
		}
		// Echo requests and replies only: not the ToR's own ICMP errors.
		m, err := nlmon.InstallCounters(ctx, t.Namespace(), "chaos_flood", ports, "icmp type { echo-request, echo-reply }")
		if err != nil {
			return err
		}
		r.meters = append(r.meters, m)
	}
	r.series = startSeries(r.meters, sampleEvery)
	var logs, ports []string
	for _, t := range r.tors {
		logs = append(logs, t.LogPath())
	}
	for _, s := range r.servers {
		ports = append(ports, r.tors[0].PortFor(s.Name()))
	}
	r.sess = followSessions(logs, ports, sampleEvery)

	// Endpoints: the servers' loopbacks, then their pods, as probeFlows expects.
	var eps []probe.Endpoint
	for _, s := range r.servers {
		eps = append(eps, probe.Endpoint{Name: s.Name(), Server: s.Name(), NS: s.Namespace(), Addr: s.Spec().Loopback.Addr()})
	}
	for _, s := range r.servers {
		p := s.Pod(0)
		eps = append(eps, probe.Endpoint{Name: s.Name() + "-pod", Server: s.Name(), NS: p.Namespace(), Addr: p.Addr()})
	}
	var err error
	r.probe, err = probe.Start(probe.Config{
		Endpoints: eps,
		Flows:     probeFlows(len(r.servers)),
		Interval:  floodInterval,
		Timeout:   replyTimeout,
	})
	if err != nil {
		return err
	}
	r.procs = newProcs(r.cfg.Role, r.servers)
	return nil
}

// closeInstruments stops whatever setUp or soak left running; each part is
// closed at most once.
func (r *runner) closeInstruments() {
	if r.probe != nil {
		r.probe.Stop()
		r.probe = nil
	}
	if r.series != nil {
		r.series.stop()
		r.series = nil
	}
	if r.sess != nil {
		r.sess.stop()
		r.sess = nil
	}
	for _, m := range r.meters {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m.Close(ctx)
		cancel()
	}
	r.meters = nil
	for _, m := range r.mons {
		m.Close()
	}
	r.mons = nil
}

// healthy reports whether every server has full ECMP now and every ToR
// says its session with every server is up. (A FIB can be full of stale
// paths through a ToR that has no session with the server.)
func (r *runner) healthy() bool { return len(r.unhealthy()) == 0 }

// unhealthy lists what keeps the fabric from being healthy.
func (r *runner) unhealthy() []string {
	var out []string
	for i, t := range r.full {
		if on, _ := t.State(); !on {
			out = append(out, r.names[i]+" lacks full ECMP")
		}
	}
	for _, d := range r.sess.down([]string{r.tors[0].Name(), r.tors[1].Name()}) {
		out = append(out, "session "+d+" down")
	}
	return out
}

// waitHealthy waits up to timeout for the fabric to be healthy.
func (r *runner) waitHealthy(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !r.healthy() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// soak runs the schedule, then the end checks, and analyses the records.
func (r *runner) soak(ctx context.Context) (*Result, error) {
	plan := Plan(r.cfg.Seed, r.cfg.Duration, len(r.servers), len(r.tors))
	res := &Result{Role: r.cfg.Role, Seed: r.cfg.Seed, Duration: r.cfg.Duration, Servers: r.names, Plan: plan}
	for i, s := range r.servers {
		res.HashSeeds = append(res.HashSeeds, hashSeed(r.cfg.Seed, i))
		res.Ports = append(res.Ports, r.tors[0].PortFor(s.Name()))
	}
	res.T0 = time.Now()
	r.logf("chaos: %v: flood of %d flows running; %d faults planned (seed %d, nominal %v)",
		r.cfg.Role, len(probeFlows(len(r.servers))), len(plan), r.cfg.Seed, r.cfg.Duration)
	if err := sleepCtx(ctx, warmup); err != nil {
		return nil, err
	}
	res.WarmupEnd = time.Now()
	r.procs.checkpoint(r.healthy())

	var wg sync.WaitGroup
	active := 0
	done := make(chan struct{}, len(plan))
	lastToR := -2 // nothing disturbed yet
	var prevStart time.Time
	for i, st := range plan {
		if ctx.Err() != nil {
			break
		}
		if st.Overlap {
			if err := sleepCtx(ctx, time.Until(prevStart.Add(st.Gap))); err != nil {
				break
			}
		} else {
			for ; active > 0; active-- {
				<-done
			}
			if err := sleepCtx(ctx, st.Gap); err != nil {
				break
			}
			// Never two ToRs at once: a fault on another ToR, or on a server,
			// waits until the fabric has recovered from the last one.
			if st.Class.serverLevel() || st.ToR != lastToR {
				if !r.degraded && !r.waitHealthy(ctx, recoveryTimeout) && ctx.Err() == nil {
					r.degraded = true
					r.logf("chaos: %v: the fabric did not recover within %v (%s); going on with a degraded fabric",
						r.cfg.Role, recoveryTimeout, strings.Join(r.unhealthy(), ", "))
				}
				if r.degraded && r.healthy() {
					r.degraded = false
				}
			}
			lastToR = st.ToR
			if r.healthy() {
				r.procs.checkpoint(true)
			}
		}
		ev := &Event{Index: i, Step: st, What: st.Describe(r.names), Degraded: r.degraded}
		r.mu.Lock()
		r.events = append(r.events, ev)
		r.mu.Unlock()
		prevStart = time.Now()
		r.logf("chaos: %v: %3d %-16s %s", r.cfg.Role, i, st.Class, ev.What)
		active++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { done <- struct{}{} }()
			span, err := r.inject(ctx, st)
			ev.Start, ev.End = span.Start, span.End
			if err != nil {
				ev.Err = err.Error()
				r.logf("chaos: %v: %3d failed: %v", r.cfg.Role, i, err)
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res.ScheduleEnd = time.Now()
	r.logf("chaos: %v: schedule done after %v; final checks", r.cfg.Role, res.ScheduleEnd.Sub(res.T0).Round(time.Second))
	res.FinalHealthy = r.waitHealthy(ctx, finalTimeout)
	res.Checks = append(res.Checks, r.checkSessions(ctx))
	// Settle, then let the last replies in.
	sleepCtx(ctx, 3*time.Second)
	flood, perr := r.probe.Stop()
	r.probe = nil
	res.End = time.Now()
	if perr != nil {
		res.Checks = append(res.Checks, Check{Name: "probe sockets", Detail: perr.Error()})
	}
	res.Flood = flood
	res.Samples = r.series.stop()
	r.series = nil
	res.Trackers = r.histories()
	res.Trackers.Sessions = r.sess.stop()
	r.sess = nil
	res.Checks = append(res.Checks, r.checkKernels(ctx)...)
	res.Checks = append(res.Checks, r.checkMonitors()...)
	res.Procs = r.procs.finish()
	r.mu.Lock()
	for _, ev := range r.events {
		res.Events = append(res.Events, *ev)
	}
	r.mu.Unlock()
	res.analyse()
	if r.cfg.KeepLogs {
		// Every loss, for a closer look next to the daemons' logs.
		if err := writeFile(filepath.Join(r.lab.Dir(), "losses.tsv"), res.WriteLosses); err != nil {
			r.logf("chaos: %v", err)
		}
	}
	return res, nil
}

// probeFlows lists the flows of a run with n servers (loopbacks, then pods).
func probeFlows(n int) []probe.Flow {
	var loops, pods []int
	for i := range n {
		loops = append(loops, i)
		pods = append(pods, n+i)
	}
	return append(probe.AllPairs(loops...), probe.AllPairs(pods...)...)
}

func (r *runner) inject(ctx context.Context, st Step) (fault.Span, error) {
	var tor *testenv.Router
	if st.ToR >= 0 {
		tor = r.tors[st.ToR]
	}
	var srv *testenv.Server
	if st.Server >= 0 {
		srv = r.servers[st.Server]
	}
	switch st.Class {
	case LinkFlap:
		return fault.Flaps(ctx, tor, srv.Name(), 1, st.Down, 0)
	case LinkFlapBurst:
		return fault.Flaps(ctx, tor, srv.Name(), st.Count, st.Down, st.Up)
	case ToRPortsDown:
		return fault.PortsDown(ctx, r.lab, tor, st.Down)
	case ToRKill:
		return fault.KillToR(ctx, tor, func(at time.Time) { r.sess.killed(st.ToR, at) })
	case ToRFreeze:
		span, err := fault.FreezeToR(ctx, tor, st.Down)
		if !span.End.IsZero() {
			r.sess.frozen(st.ToR, span.End)
		}
		return span, err
	case ToRNoRA:
		return fault.SuppressRA(ctx, r.lab, tor, st.Down)
	case ServerKill:
		return fault.KillServer(ctx, srv)
	case ServerRestart:
		return fault.RestartServer(ctx, srv, r.cfg.Role)
	case GatewayDelete:
		return fault.DeleteGateway(srv, srv.Uplinks()[st.ToR])
	}
	return fault.Span{}, fmt.Errorf("unknown fault class %q", st.Class)
}

// histories copies every tracker's timeline for the analysis.
func (r *runner) histories() Trackers {
	var t Trackers
	for i := range r.servers {
		t.Full = append(t.Full, r.full[i].History())
		var cs [][]nlmon.Transition
		for _, c := range r.carrier[i] {
			cs = append(cs, c.History())
		}
		t.Carrier = append(t.Carrier, cs)
	}
	return t
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(write(f), f.Close())
}
