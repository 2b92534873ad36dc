package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/bench"
	"github.com/fabricd/fabricd/testenv/fault"
	"github.com/fabricd/fabricd/testenv/nlmon"
	"github.com/fabricd/fabricd/testenv/probe"
)

// Config is what to measure.
type Config struct {
	Fabricd  string         // fabricd binary, required for RoleFabricd
	Sizes    []int          // numbers of servers; default 16 and 48
	Roles    []testenv.Role // in run order, each in a fresh lab; default fabricd, then FRR
	Runs     int            // runs per size and role; default 1
	Flows    int            // flood flows; default 8
	Timing   Timing         // default DefaultTiming()
	LogLevel string         // fabricd's [log] level; default "info", as deployed
	// ToRConfig is added inside the FRR ToRs' `router bgp`, for example
	// "coalesce-time 100": the ToRs are as the seed has them without it.
	ToRConfig string
	// Dir, if set, keeps every lab's configs and logs in Dir/nN-ROLE-runR.
	Dir     string
	Command string // the command line, for the report

	// Logf receives progress lines; LabLogf testenv's own. Either may be nil.
	Logf    func(format string, args ...any)
	LabLogf func(format string, args ...any)
}

const (
	floodInterval = 10 * time.Millisecond
	replyTimeout  = time.Second
	// checkEvery is how often the waits look at the trackers and the ToR logs:
	// all in process, so a short period costs next to nothing.
	checkEvery = 20 * time.Millisecond
	// listenEvery is how often a restarted ToR's port 179 is checked.
	listenEvery = 2 * time.Millisecond
	// startTimeout bounds a ToR's restart (its daemons answering vtysh).
	startTimeout = time.Minute
)

// Run measures every size, run and role of cfg. A run that fails is reported
// in Results.Failures and the others go on; only a cancelled ctx stops Run
// early, with the results so far.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = []int{16, 48}
	}
	if len(cfg.Roles) == 0 {
		cfg.Roles = []testenv.Role{testenv.RoleFabricd, testenv.RoleFRR}
	}
	if cfg.Runs == 0 {
		cfg.Runs = 1
	}
	if cfg.Flows == 0 {
		cfg.Flows = 8
	}
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DefaultTiming()
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "info"
	}
	if cfg.Runs < 1 || cfg.Flows < 2 {
		return nil, fmt.Errorf("scale: %d runs and %d flows: want at least 1 and 2", cfg.Runs, cfg.Flows)
	}
	if err := cfg.Timing.validate(); err != nil {
		return nil, err
	}
	for _, n := range cfg.Sizes {
		if _, err := ServerSpecs(n); err != nil {
			return nil, err
		}
	}
	if slices.Contains(cfg.Roles, testenv.RoleFabricd) && cfg.Fabricd == "" {
		return nil, errors.New("scale: the fabricd role needs the fabricd binary")
	}
	res := &Results{
		Command: cfg.Command, Started: time.Now(), Timing: cfg.Timing, Sizes: cfg.Sizes, Roles: cfg.Roles,
		Runs: cfg.Runs, Flows: cfg.Flows, LogLevel: cfg.LogLevel, LoadStart: loadAvg(),
	}
	res.Machine = bench.DescribeMachine(cfg.Fabricd)
	if cfg.Fabricd == "" {
		res.Machine.Fabricd = ""
	} else {
		// Measure a copy: bin/fabricd may be rebuilt while this runs, and every
		// lab must run the same binary.
		tmp, err := os.MkdirTemp("", "fabricd-scale-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		if cfg.Fabricd, err = snapshot(cfg.Fabricd, tmp); err != nil {
			return nil, err
		}
	}
	defer func() {
		res.Took = time.Since(res.Started)
		res.LoadEnd = loadAvg()
	}()
	for _, n := range cfg.Sizes {
		for run := 1; run <= cfg.Runs; run++ {
			for _, role := range cfg.Roles {
				cfg.logf("N=%d %v run %d/%d: building the lab", n, role, run, cfg.Runs)
				s, err := cfg.runLab(ctx, role, n, run)
				if s != nil {
					res.Samples = append(res.Samples, s)
				}
				if err != nil {
					if ctx.Err() != nil {
						return res, ctx.Err()
					}
					msg := fmt.Sprintf("N=%d %v run %d: %v", n, role, run, err)
					res.Failures = append(res.Failures, msg)
					cfg.logf("FAILED %s", msg)
				}
			}
		}
	}
	return res, nil
}

func (c *Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// snapshot copies the binary at path into dir and returns the copy's path.
func snapshot(path, dir string) (string, error) {
	src, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("scale: fabricd binary: %w", err)
	}
	defer src.Close()
	dst := filepath.Join(dir, "fabricd")
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return "", fmt.Errorf("scale: copying fabricd: %w", err)
	}
	_, cerr := io.Copy(f, src)
	if err := errors.Join(cerr, f.Close()); err != nil {
		return "", fmt.Errorf("scale: copying fabricd: %w", err)
	}
	return dst, nil
}

// labRun is one run of one role in one lab.
type labRun struct {
	cfg     *Config
	role    testenv.Role
	lab     *testenv.Lab
	servers []*testenv.Server
	tors    []*testenv.Router
	s       *Sample

	mons    []*nlmon.Monitor
	full    []*nlmon.Tracker   // per server: every other server's prefixes over both uplinks
	off     [][]*nlmon.Tracker // per server, per ToR: no route through that ToR's uplink
	carrier [][]*nlmon.Tracker // per server, per ToR: the uplink has carrier
	logs    []*torLog          // per ToR
	flood   *probe.Probe
	procs   []procID // every daemon process the run started, for the teardown check
	// launched are the server daemons as started, to notice one that died.
	launched [][]procID

	degraded bool // the last disturbance's recovery did not complete
}

func (r *labRun) logf(format string, args ...any) {
	r.cfg.logf("N=%d %v run %d: "+format, append([]any{r.s.N, r.role, r.s.Run}, args...)...)
}

// runLab builds a lab for one role, measures everything in it, and tears it
// down. The sample is returned with what was measured even when a later step
// fails.
func (c *Config) runLab(ctx context.Context, role testenv.Role, n, run int) (_ *Sample, err error) {
	specs, err := ServerSpecs(n)
	if err != nil {
		return nil, err
	}
	s := &Sample{Role: role, N: n, Run: run}
	opts := testenv.Options{Role: role, FabricdBinary: c.Fabricd, ToRs: 2, Servers: specs, Logf: c.LabLogf, ToRExtraConfig: c.ToRConfig}
	if c.Dir != "" {
		opts.Dir, opts.KeepLogs = filepath.Join(c.Dir, fmt.Sprintf("n%d-%v-run%d", n, role, run)), true
	}
	began := time.Now()
	lab, err := testenv.New(ctx, opts)
	if err != nil {
		return nil, err
	}
	s.Build, s.LabPrefix = time.Since(began), lab.Prefix()
	if c.Dir != "" {
		s.LabDir = lab.Dir()
	}
	r := &labRun{cfg: c, role: role, lab: lab, servers: lab.Servers(), tors: []*testenv.Router{lab.ToR(0), lab.ToR(1)}, s: s}
	r.logf("lab %s built in %v", lab.Prefix(), s.Build.Round(time.Millisecond))
	defer func() {
		r.closeInstruments()
		begin := time.Now()
		if cerr := lab.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if left := r.leftovers(); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("teardown of lab %s left %s", lab.Prefix(), strings.Join(left, ", ")))
		} else {
			r.logf("lab %s torn down in %v: no namespace, FRR run directory or daemon of it left", lab.Prefix(), time.Since(begin).Round(time.Millisecond))
		}
	}()
	if err := r.measure(ctx); err != nil {
		return s, err
	}
	return s, nil
}

// measure runs every step in the built lab.
func (r *labRun) measure(ctx context.Context) error {
	r.recordToRs()
	if err := r.prepare(ctx); err != nil {
		return err
	}
	t0, err := r.bringUp(ctx)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, r.cfg.Timing.Settle); err != nil {
		return err
	}
	r.bringUpFigures(t0)
	if err := r.idle(ctx); err != nil {
		return err
	}
	floodStart, err := r.startFlood(ctx)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, r.cfg.Timing.Quiet); err != nil {
		return err
	}
	type window struct{ start, mid, ref time.Time }
	var wins []window
	for _, k := range Kinds {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := Disturbance{Kind: k, ToR: r.tors[0].Name(), Degraded: r.degraded}
		var w window
		var derr error
		switch k {
		case ToRKill:
			w.start, w.mid, w.ref, derr = r.kill(ctx, 0, &d)
		case ToRFreeze:
			w.start, w.mid, w.ref, derr = r.freeze(ctx, 0, &d)
		case ToRPortsDown:
			w.start, w.mid, w.ref, derr = r.portsDown(ctx, 0, &d)
		}
		if derr != nil {
			d.Err = derr.Error()
			r.logf("%v: %v", k, derr)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		d.Start, d.End, d.Ref = w.start, w.mid, w.ref
		r.s.Disturbances = append(r.s.Disturbances, d)
		wins = append(wins, w)
		if err := sleepCtx(ctx, r.cfg.Timing.Quiet); err != nil {
			return err
		}
	}
	end := time.Now()
	for i := range r.s.Disturbances {
		next := end
		if i+1 < len(wins) && !wins[i+1].start.IsZero() {
			next = wins[i+1].start
		}
		r.s.Disturbances[i].LostAgain = r.lostAgain(wins[i].ref, next)
	}

	flood, perr := r.flood.Stop()
	r.flood = nil
	if perr != nil {
		r.s.Notes = append(r.s.Notes, fmt.Sprintf("flood: %v", perr))
	}
	if flood != nil {
		if len(flood.SocketDrops) > 0 {
			r.s.Notes = append(r.s.Notes, fmt.Sprintf("flood: the probe's sockets dropped replies %v: its losses are not trustworthy", flood.SocketDrops))
		}
		losses := flood.Losses()
		if len(wins) > 0 && !wins[0].start.IsZero() {
			r.s.Baseline = lossIn(flood, losses, floodStart, wins[0].start)
		}
		for i, w := range wins {
			next := end
			if i+1 < len(wins) && !wins[i+1].start.IsZero() {
				next = wins[i+1].start
			}
			if w.start.IsZero() {
				continue
			}
			r.s.Disturbances[i].During = lossIn(flood, losses, w.start, w.mid)
			r.s.Disturbances[i].After = lossIn(flood, losses, w.mid, next)
		}
	}
	r.finalChecks()
	return nil
}

// lossIn counts the flood's requests sent in [from, to) and those of them lost.
func lossIn(res *probe.Result, losses []probe.Loss, from, to time.Time) Loss {
	l := Loss{Sent: res.Sent(from, to)}
	for _, x := range losses {
		if !x.Sent.Before(from) && x.Sent.Before(to) {
			l.Lost++
			if x.SendError {
				l.Unsent++
			}
		}
	}
	return l
}

// recordToRs notes the ToRs' daemons for the teardown check.
func (r *labRun) recordToRs() {
	for _, t := range r.tors {
		for name, pid := range t.PIDs() {
			if id, err := identify(t.Name()+" "+name, pid); err == nil {
				r.procs = append(r.procs, id)
			}
		}
	}
}

// prepare gives every server its own ECMP hash seed and, with fabricd, the
// deployed log level, and opens the instruments: a monitor per server and the
// ToRs' logs.
func (r *labRun) prepare(ctx context.Context) error {
	for i, srv := range r.servers {
		if _, err := srv.Exec(ctx, "sysctl", "-q", "-w", fmt.Sprintf("net.ipv4.fib_multipath_hash_seed=%d", hashSeed(i))); err != nil {
			return fmt.Errorf("setting %s's ECMP hash seed: %w", srv.Name(), err)
		}
		if r.role == testenv.RoleFabricd {
			conf, err := withLogLevel(srv.DefaultConfig(), r.cfg.LogLevel)
			if err != nil {
				return err
			}
			if err := srv.WriteConfig(conf); err != nil {
				return err
			}
		}
	}
	for _, srv := range r.servers {
		mon, err := nlmon.Open(srv.Namespace(), nlmon.Options{Watch: netip.MustParsePrefix("0.0.0.0/0")})
		if err != nil {
			return err
		}
		r.mons = append(r.mons, mon)
		ups := srv.Uplinks()
		r.full = append(r.full, mon.Track(srv.Name()+" full ECMP", nlmon.AllThrough(r.lab.PrefixesOfOthers(srv), ups)))
		var offs, carriers []*nlmon.Tracker
		for _, up := range ups {
			offs = append(offs, mon.Track(srv.Name()+" nothing via "+up, func(f *nlmon.FIB) bool { return f.Using(up) == 0 }))
			carriers = append(carriers, mon.Track(srv.Name()+" "+up+" has carrier", func(f *nlmon.FIB) bool { return f.Carrier(up) }))
		}
		r.off = append(r.off, offs)
		r.carrier = append(r.carrier, carriers)
	}
	for _, t := range r.tors {
		var ports []string
		for _, srv := range r.servers {
			ports = append(ports, t.PortFor(srv.Name()))
		}
		r.logs = append(r.logs, newTorLog(t.LogPath(), ports))
	}
	return nil
}

// withLogLevel sets the [log] level of a fabricd config made by
// testenv's DefaultConfig (which asks for debug).
func withLogLevel(conf, level string) (string, error) {
	const dflt = "[log]\nlevel = \"debug\"\n"
	if !strings.Contains(conf, dflt) {
		return "", errors.New("scale: testenv's fabricd config has no [log] level to replace")
	}
	return strings.Replace(conf, dflt, fmt.Sprintf("[log]\nlevel = %q\n", level), 1), nil
}

// bringUp starts every server's daemons at once and waits (bounded) for every
// server's full ECMP. It returns the moment the first daemon started.
func (r *labRun) bringUp(ctx context.Context) (time.Time, error) {
	t0 := time.Now()
	r.s.Start = t0
	err := r.lab.StartServers(ctx)
	r.s.Launch = time.Since(t0)
	if err != nil {
		return t0, err
	}
	for _, srv := range r.servers {
		var ids []procID
		for name, pid := range srv.PIDs() {
			id, err := identify(srv.Name()+" "+name, pid)
			if err != nil {
				return t0, fmt.Errorf("%s's %s: %w", srv.Name(), name, err)
			}
			ids = append(ids, id)
		}
		r.launched = append(r.launched, ids)
		r.procs = append(r.procs, ids...)
	}
	r.logf("server daemons launched in %v; waiting for full ECMP on every server", r.s.Launch.Round(time.Millisecond))
	lastCheck := time.Now()
	for !allOn(r.full) {
		if time.Since(t0) > r.cfg.Timing.BringUp {
			r.logf("bring-up: %d of %d servers without full ECMP after %v", len(r.full)-countOn(r.full), len(r.full), r.cfg.Timing.BringUp)
			return t0, r.bringUpCPU()
		}
		if time.Since(lastCheck) > time.Second {
			lastCheck = time.Now()
			if dead := r.deadDaemons(); len(dead) > 0 {
				return t0, fmt.Errorf("server daemons died during the bring-up: %s", strings.Join(dead, ", "))
			}
		}
		if err := sleepCtx(ctx, checkEvery); err != nil {
			return t0, err
		}
	}
	r.logf("bring-up: every server has full ECMP %v after the first start", time.Since(t0).Round(time.Millisecond))
	return t0, r.bringUpCPU()
}

// bringUpCPU reads the CPU time every server's daemons have used since they
// started.
func (r *labRun) bringUpCPU() error {
	for i, ids := range r.launched {
		var ticks uint64
		for _, id := range ids {
			c, err := readCPU(id.PID)
			if err != nil {
				return fmt.Errorf("bring-up CPU of %s: %w", r.servers[i].Name(), err)
			}
			ticks += c.Ticks
		}
		r.s.BringUpCPU = append(r.s.BringUpCPU, float64(ticks)/userHZ)
	}
	return nil
}

// bringUpFigures reads the bring-up times off the trackers and the ToR logs,
// at the end of the settle time.
func (r *labRun) bringUpFigures(t0 time.Time) {
	for _, t := range r.full {
		h := t.History()
		r.s.BringUp = append(r.s.BringUp, since(t0, lastBecameTrue(h, t0)))
		r.s.BringUpFlaps += lostAgain(h, t0, time.Now())
	}
	for _, srv := range r.servers {
		up := never
		if r.role == testenv.RoleFabricd {
			b, err := os.ReadFile(srv.LogPath())
			if at, ok := fabricdUpAt(string(b), t0); err == nil && ok {
				up = since(t0, at)
			}
		} else {
			up = math.NaN()
		}
		r.s.DaemonUp = append(r.s.DaemonUp, up)
	}
	for _, l := range r.logs {
		l.poll()
		for _, at := range l.firstUp(t0) {
			r.s.SessionsUp = append(r.s.SessionsUp, since(t0, at))
		}
	}
	d := summarize(r.s.BringUp)
	r.logf("bring-up: full ECMP median %s, last %s; launching took %s", fmtMs(d.Median), fmtMs(d.Max), fmtMs(ms(r.s.Launch)))
}

// idle reads every server's memory and then its daemons' CPU time and wakeups
// over the idle window.
func (r *labRun) idle(ctx context.Context) error {
	r.s.RSSByDaemon = map[string][]float64{}
	for _, srv := range r.servers {
		var rss, pss int64
		for name, pid := range srv.PIDs() {
			a, b, err := readMem(pid)
			if err != nil {
				return fmt.Errorf("%s's %s: %w", srv.Name(), name, err)
			}
			rss, pss = rss+a, pss+b
			r.s.RSSByDaemon[name] = append(r.s.RSSByDaemon[name], float64(a)/1024)
		}
		r.s.RSS, r.s.PSS = append(r.s.RSS, float64(rss)/1024), append(r.s.PSS, float64(pss)/1024)
	}
	serverPIDs := make([][]int, len(r.servers))
	for i, srv := range r.servers {
		for _, pid := range srv.PIDs() {
			serverPIDs[i] = append(serverPIDs[i], pid)
		}
	}
	var torPIDs []int
	for _, t := range r.tors {
		for _, pid := range t.PIDs() {
			torPIDs = append(torPIDs, pid)
		}
	}
	read := func() (map[int]cpuSample, error) {
		out := map[int]cpuSample{}
		for _, pids := range append(slices.Clone(serverPIDs), torPIDs) {
			for _, pid := range pids {
				c, err := readCPU(pid)
				if err != nil {
					return nil, fmt.Errorf("idle CPU of pid %d: %w", pid, err)
				}
				out[pid] = c
			}
		}
		return out, nil
	}
	before, err := read()
	if err != nil {
		return err
	}
	w0 := time.Now()
	if err := sleepCtx(ctx, r.cfg.Timing.Idle); err != nil {
		return err
	}
	w1 := time.Now()
	after, err := read()
	if err != nil {
		return err
	}
	r.s.Idle = w1.Sub(w0)
	secs := r.s.Idle.Seconds()
	var total uint64
	for _, pids := range serverPIDs {
		var ticks, sw uint64
		for _, pid := range pids {
			ticks += after[pid].Ticks - before[pid].Ticks
			sw += after[pid].Switches - before[pid].Switches
		}
		total += ticks
		r.s.CPUPerServer = append(r.s.CPUPerServer, 100*float64(ticks)/userHZ/secs)
		r.s.Wakeups = append(r.s.Wakeups, float64(sw)/(secs/60))
	}
	r.s.CPU = 100 * float64(total) / userHZ / secs
	var torTicks uint64
	for _, pid := range torPIDs {
		torTicks += after[pid].Ticks - before[pid].Ticks
	}
	r.s.ToRCPU = 100 * float64(torTicks) / userHZ / secs
	rss, wk := summarize(r.s.RSS), summarize(r.s.Wakeups)
	r.logf("idle: RSS per server median %.1f MB; CPU of all servers %.2f%% of one CPU; wakeups per server and minute median %.0f, max %.0f",
		rss.Median, r.s.CPU, wk.Median, wk.Max)
	return nil
}

// startFlood chooses the flows (half of them sending through each uplink)
// and starts the flood.
func (r *labRun) startFlood(ctx context.Context) (time.Time, error) {
	egress := func(p pair) (int, error) {
		src, dst := r.servers[p.From], r.servers[p.To]
		out, err := src.Exec(ctx, "ip", "-j", "route", "get", dst.Spec().Loopback.Addr().String(),
			"from", src.Spec().Loopback.Addr().String())
		if err != nil {
			return -1, err
		}
		var routes []struct {
			Dev string `json:"dev"`
		}
		if err := json.Unmarshal([]byte(out), &routes); err != nil || len(routes) != 1 {
			return -1, fmt.Errorf("route from %s to %s: unexpected `ip -j route get` output %q", src.Name(), dst.Name(), out)
		}
		return slices.Index(src.Uplinks(), routes[0].Dev), nil
	}
	flows, via, err := chooseFlows(flowCandidates(len(r.servers)), r.cfg.Flows, len(r.tors), egress)
	if err != nil {
		return time.Time{}, err
	}
	if len(flows) < r.cfg.Flows {
		r.s.Notes = append(r.s.Notes, fmt.Sprintf("flood: only %d flows found that spread over both uplinks", len(flows)))
	}
	var eps []probe.Endpoint
	epOf := map[int]int{}
	endpoint := func(i int) int {
		if e, ok := epOf[i]; ok {
			return e
		}
		srv := r.servers[i]
		eps = append(eps, probe.Endpoint{Name: srv.Name(), Server: srv.Name(), NS: srv.Namespace(), Addr: srv.Spec().Loopback.Addr()})
		epOf[i] = len(eps) - 1
		return epOf[i]
	}
	var pflows []probe.Flow
	for k, f := range flows {
		pflows = append(pflows, probe.Flow{From: endpoint(f.From), To: endpoint(f.To)})
		r.s.Flows = append(r.s.Flows, fmt.Sprintf("%s → %s (requests via %s)", r.servers[f.From].Name(), r.servers[f.To].Name(), r.servers[f.From].Uplinks()[via[k]]))
	}
	r.flood, err = probe.Start(probe.Config{Endpoints: eps, Flows: pflows, Interval: floodInterval, Timeout: replyTimeout})
	if err != nil {
		return time.Time{}, err
	}
	r.logf("flood of %d flows running: %s", len(pflows), strings.Join(r.s.Flows, ", "))
	return time.Now(), nil
}

// offTrackers returns, per server, the tracker of "no route through ToR t".
func (r *labRun) offTrackers(t int) []*nlmon.Tracker {
	out := make([]*nlmon.Tracker, len(r.off))
	for i, o := range r.off {
		out[i] = o[t]
	}
	return out
}

// waitAll waits until every tracker holds, or until the deadline.
func waitAll(ctx context.Context, ts []*nlmon.Tracker, deadline time.Time) error {
	for !allOn(ts) && time.Now().Before(deadline) {
		if err := sleepCtx(ctx, checkEvery); err != nil {
			return err
		}
	}
	return nil
}

// healthy reports whether every server has full ECMP and both ToRs have
// logged every session up.
func (r *labRun) healthy() bool {
	for _, l := range r.logs {
		l.poll()
	}
	if !allOn(r.full) {
		return false
	}
	for _, l := range r.logs {
		if !l.allUp() {
			return false
		}
	}
	return true
}

// waitHealthy waits, up to Timing.Recovery after ref, for a healthy fabric.
// A fabric that does not get there is degraded for the next disturbance.
func (r *labRun) waitHealthy(ctx context.Context, ref time.Time) error {
	deadline := ref.Add(r.cfg.Timing.Recovery)
	for !r.healthy() {
		if time.Now().After(deadline) {
			r.degraded = true
			r.logf("not recovered within %v: %d of %d servers with full ECMP; sessions up: %s %d, %s %d of %d",
				r.cfg.Timing.Recovery, countOn(r.full), len(r.full), r.tors[0].Name(), r.logs[0].upCount(),
				r.tors[1].Name(), r.logs[1].upCount(), len(r.servers))
			return nil
		}
		if err := sleepCtx(ctx, checkEvery); err != nil {
			return err
		}
	}
	r.degraded = false
	return nil
}

// failoverTimes reads, per server, when it stopped routing through ToR t after
// start; later than limit is never.
func (r *labRun) failoverTimes(t int, start, limit time.Time) []float64 {
	var out []float64
	for _, tr := range r.offTrackers(t) {
		at := becameTrue(tr.History(), start)
		if at.After(limit) {
			at = time.Time{}
		}
		out = append(out, since(start, at))
	}
	return out
}

// recoveryTimes reads, per server, when it had full ECMP again after ref and
// when ToR t logged its session up again (after from, the disturbance's
// start), both bounded by Timing.Recovery.
func (r *labRun) recoveryTimes(t int, from, ref time.Time, d *Disturbance) {
	limit := ref.Add(r.cfg.Timing.Recovery)
	d.Recovery, d.Sessions = nil, nil
	for _, tr := range r.full {
		at := becameTrue(tr.History(), ref)
		if at.After(limit) {
			at = time.Time{}
		}
		d.Recovery = append(d.Recovery, since(ref, at))
	}
	r.logs[t].poll()
	for _, at := range r.logs[t].backUp(from) {
		if at.After(limit) {
			at = time.Time{}
		}
		v := since(ref, at)
		d.Sessions = append(d.Sessions, max(v, 0))
	}
}

// lostAgain counts the servers that lost full ECMP again between a
// disturbance's reference moment and the next disturbance.
func (r *labRun) lostAgain(ref, until time.Time) int {
	if ref.IsZero() {
		return 0
	}
	n := 0
	for _, t := range r.full {
		if lostAgain(t.History(), ref, until) > 0 {
			n++
		}
	}
	return n
}

func (r *labRun) logDisturbance(d *Disturbance) {
	f, rec, ses := summarize(d.Failover), summarize(d.Recovery), summarize(d.Sessions)
	r.logf("%v: traffic off %s median %s, max %s; full ECMP again median %s, last %s; sessions median %s, last %s",
		d.Kind, d.ToR, fmtMs(f.Median), fmtMs(f.Max), fmtMs(rec.Median), fmtMs(rec.Max), fmtMs(ses.Median), fmtMs(ses.Max))
}

// kill kills ToR t's FRR, waits (bounded) for every server to stop using it,
// leaves it dead for Timing.DeadFor, starts it again and waits for recovery,
// timed from its bgpd listening on port 179. It returns the kill, the restart
// and the listening moment.
func (r *labRun) kill(ctx context.Context, t int, d *Disturbance) (start, restart, listenAt time.Time, err error) {
	tor := r.tors[t]
	lst, err := openBGPListener(tor.Namespace())
	if err != nil {
		return start, restart, listenAt, err
	}
	defer lst.close()
	r.logf("%v: SIGKILL to %s's zebra, bgpd and bfdd", ToRKill, tor.Name())
	start = time.Now()
	tor.Stop(syscall.SIGKILL) // reports "signal: killed"; only survivors are a failure
	if pids := tor.PIDs(); len(pids) > 0 {
		return start, restart, listenAt, fmt.Errorf("%s still runs %v after SIGKILL", tor.Name(), pids)
	}
	r.logs[t].down(start)
	if err := waitAll(ctx, r.offTrackers(t), start.Add(r.cfg.Timing.Failover)); err != nil {
		return start, restart, listenAt, err
	}
	d.Failover = r.failoverTimes(t, start, start.Add(r.cfg.Timing.Failover))
	if err := sleepCtx(ctx, r.cfg.Timing.DeadFor); err != nil {
		return start, restart, listenAt, err
	}

	// Port 179 is watched while FRR starts: Start returns only once every
	// daemon answers vtysh, later than bgpd listens.
	restart = time.Now()
	found := make(chan time.Time, 1)
	stop := make(chan struct{})
	go func() {
		deadline := restart.Add(startTimeout)
		tick := time.NewTicker(listenEvery)
		defer tick.Stop()
		for time.Now().Before(deadline) {
			if ok, err := lst.listening(); err == nil && ok {
				found <- time.Now()
				return
			}
			select {
			case <-stop:
				found <- time.Time{}
				return
			case <-tick.C:
			}
		}
		found <- time.Time{}
	}()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), startTimeout)
	serr := tor.Start(sctx)
	cancel()
	r.recordToRs()
	if serr != nil {
		close(stop)
		<-found
		return start, restart, listenAt, fmt.Errorf("restarting %s: %w", tor.Name(), serr)
	}
	listenAt = <-found
	if listenAt.IsZero() {
		return start, restart, listenAt, fmt.Errorf("%s's bgpd answered vtysh but nothing listens on port 179", tor.Name())
	}
	d.Listen = since(restart, listenAt)
	if err := r.waitHealthy(ctx, listenAt); err != nil {
		return start, restart, listenAt, err
	}
	r.recoveryTimes(t, start, listenAt, d)
	r.logDisturbance(d)
	return start, restart, listenAt, nil
}

// freeze stops ToR t's bgpd and zebra for Timing.Freeze and resumes them,
// then waits for recovery. It returns the SIGSTOP and the SIGCONT moments
// (the latter twice: it ends the disturbance and is the recovery's reference).
func (r *labRun) freeze(ctx context.Context, t int, d *Disturbance) (start, cont, ref time.Time, err error) {
	tor := r.tors[t]
	r.logf("%v: SIGSTOP to %s's bgpd and zebra for %v", ToRFreeze, tor.Name(), r.cfg.Timing.Freeze)
	start = time.Now()
	if err := tor.Signal(syscall.SIGSTOP, "bgpd", "zebra"); err != nil {
		// Whatever was stopped must run again.
		return start, cont, ref, errors.Join(err, tor.Signal(syscall.SIGCONT, "bgpd", "zebra"))
	}
	resumed := false
	resume := func() error {
		if resumed {
			return nil
		}
		resumed = true
		cont = time.Now()
		return tor.Signal(syscall.SIGCONT, "bgpd", "zebra")
	}
	defer func() { err = errors.Join(err, resume()) }() // also when the run is cancelled
	r.logs[t].down(start)
	end := start.Add(r.cfg.Timing.Freeze)
	if err := waitAll(ctx, r.offTrackers(t), end); err != nil {
		return start, cont, ref, err
	}
	if err := sleepCtx(ctx, time.Until(end)); err != nil {
		return start, cont, ref, err
	}
	if err := resume(); err != nil {
		return start, cont, ref, err
	}
	d.Failover = r.failoverTimes(t, start, cont)
	if err := r.waitHealthy(ctx, cont); err != nil {
		return start, cont, cont, err
	}
	r.recoveryTimes(t, start, cont, d)
	r.logDisturbance(d)
	return start, cont, cont, nil
}

// portsDown takes every port of ToR t down for Timing.PortsDown and up again,
// then waits for recovery, timed from the ports coming up.
func (r *labRun) portsDown(ctx context.Context, t int, d *Disturbance) (start, up, ref time.Time, err error) {
	tor := r.tors[t]
	r.logf("%v: every port of %s down for %v", ToRPortsDown, tor.Name(), r.cfg.Timing.PortsDown)
	r.logs[t].down(time.Now())
	span, err := fault.PortsDown(ctx, r.lab, tor, r.cfg.Timing.PortsDown)
	if err != nil {
		return span.Start, span.End, span.End, err
	}
	// The ports go down one after the other, a few milliseconds apart: each
	// server's failover counts from its own carrier loss.
	for i, tr := range r.offTrackers(t) {
		lost := becameFalse(r.carrier[i][t].History(), span.Start)
		off := becameTrue(tr.History(), span.Start)
		switch {
		case lost.IsZero() || lost.After(span.End):
			d.Failover = append(d.Failover, math.NaN()) // its carrier never went
		case off.IsZero() || off.After(span.End):
			d.Failover = append(d.Failover, never)
		default:
			d.Failover = append(d.Failover, max(0, ms(off.Sub(lost))))
		}
	}
	if err := r.waitHealthy(ctx, span.End); err != nil {
		return span.Start, span.End, span.End, err
	}
	r.recoveryTimes(t, span.Start, span.End, d)
	r.logDisturbance(d)
	return span.Start, span.End, span.End, nil
}

// finalChecks compares each monitor's model with its kernel and makes sure no
// server daemon died or was replaced during the run.
func (r *labRun) finalChecks() {
	for _, m := range r.mons {
		if err := m.Verify(); err != nil {
			r.s.Notes = append(r.s.Notes, err.Error())
		}
	}
	if dead := r.deadDaemons(); len(dead) > 0 {
		r.s.Notes = append(r.s.Notes, "server daemons that died during the run: "+strings.Join(dead, ", "))
	}
}

// deadDaemons lists the server daemons launched that no longer run.
func (r *labRun) deadDaemons() []string {
	var out []string
	for _, ids := range r.launched {
		for _, id := range ids {
			if !id.alive() {
				out = append(out, fmt.Sprintf("%s (pid %d)", id.Name, id.PID))
			}
		}
	}
	return out
}

func (r *labRun) closeInstruments() {
	if r.flood != nil {
		r.flood.Stop()
		r.flood = nil
	}
	for _, m := range r.mons {
		m.Close()
	}
	r.mons = nil
}

// leftovers lists what of the lab is still there after Close: namespaces and
// FRR run directories with its prefix, and any daemon it started.
func (r *labRun) leftovers() []string {
	var out []string
	prefix := r.lab.Prefix() + "-"
	for _, dir := range []string{"/var/run/netns", "/var/run/frr"} {
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			out = append(out, fmt.Sprintf("%s unreadable: %v", dir, err))
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), prefix) {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	for _, p := range r.procs {
		if p.alive() {
			out = append(out, fmt.Sprintf("%s (pid %d)", p.Name, p.PID))
		}
	}
	return out
}

func allOn(ts []*nlmon.Tracker) bool { return countOn(ts) == len(ts) }

func countOn(ts []*nlmon.Tracker) int {
	n := 0
	for _, t := range ts {
		if on, _ := t.State(); on {
			n++
		}
	}
	return n
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
