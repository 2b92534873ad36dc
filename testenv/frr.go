package testenv

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// frrStartTimeout bounds each wait while FRR daemons come up (normally well under 1 s).
const frrStartTimeout = 10 * time.Second

// errStuck marks a daemon that could not be stopped at all; anything else going wrong
// while stopping is just how the daemon exited.
var errStuck = errors.New("process could not be stopped")

// frrInstance is one set of FRR daemons in one namespace, sharing a config directory
// and a log file.
type frrInstance struct {
	ns      string
	dir     string   // <daemon>.conf, <daemon>.out, frr.log
	daemons []string // start order; zebra first
	procs   []*daemon
	// loadTime is added to frrStartTimeout for each wait: a ToR with a large
	// originated table takes longer to read its config.
	loadTime time.Duration
}

func (f *frrInstance) logPath() string { return filepath.Join(f.dir, "frr.log") }

// start starts the daemons and returns once each has loaded its config and answers
// vtysh. A config line FRR rejects is an error: FRR would carry on without it, and a
// lab silently missing part of its config is worse than one that fails to build.
func (f *frrInstance) start(ctx context.Context) error {
	if len(f.procs) > 0 {
		return fmt.Errorf("FRR in %s is already running", f.ns)
	}
	if err := f.launch(ctx); err != nil {
		// Leave nothing half-started: the caller can simply try again.
		if serr := f.stop(syscall.SIGTERM); errors.Is(serr, errStuck) {
			err = errors.Join(err, serr)
		}
		return err
	}
	return nil
}

func (f *frrInstance) launch(ctx context.Context) error {
	marks := f.logMarks()
	// A zserv.api left by the previous run would make the wait below pass too early.
	sock := filepath.Join(frrRunDir, f.ns, "zserv.api")
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, name := range f.daemons {
		argv := []string{"ip", "netns", "exec", f.ns, filepath.Join(frrBin, name),
			"-N", f.ns, "-f", filepath.Join(f.dir, name+".conf"), "-P", "0"}
		if name == "zebra" {
			// The netlink receive buffer FRR's own init scripts use, so that route
			// bursts do not overflow it.
			argv = append(argv, "-s", "90000000")
		}
		d, err := startDaemon(name, filepath.Join(f.dir, name+".out"), argv, nil)
		if err != nil {
			return err
		}
		f.procs = append(f.procs, d)
		if name != "zebra" {
			continue
		}
		// The other daemons connect to zebra when they start and, if it is not listening
		// yet, retry only about 10 s later (staticd did exactly that in experiments).
		if err := WaitFor(ctx, frrStartTimeout, "zebra's socket in "+f.ns, func() error {
			if err := f.checkAlive(); err != nil {
				return Permanent(err)
			}
			_, err := os.Stat(sock)
			return err
		}); err != nil {
			return f.withLogs(err)
		}
	}
	// A daemon reads its config in the first turn of its event loop, before it serves
	// any vty connection: once it answers, its config is in.
	for _, name := range f.daemons {
		if err := WaitFor(ctx, frrStartTimeout+f.loadTime, name+" in "+f.ns+" to answer vtysh", func() error {
			if err := f.checkAlive(); err != nil {
				return Permanent(err)
			}
			_, err := vtysh(ctx, f.ns, []string{"-d", name}, "show version")
			return err
		}); err != nil {
			return f.withLogs(err)
		}
	}
	if bad := f.configErrors(marks); len(bad) > 0 {
		return fmt.Errorf("FRR in %s rejected config lines:\n%s", f.ns, strings.Join(bad, "\n"))
	}
	return nil
}

// stop stops the daemons in reverse start order, zebra last, so that bgpd can still
// withdraw through it. Exit errors are returned; errStuck marks a daemon that would not die.
func (f *frrInstance) stop(sig os.Signal) error {
	var errs []error
	for _, d := range slices.Backward(f.procs) {
		if err := d.stop(sig, stopGrace); err != nil {
			if d.running() {
				err = fmt.Errorf("%w: %w", errStuck, err)
			}
			errs = append(errs, err)
		}
	}
	f.procs = nil
	return errors.Join(errs...)
}

// checkAlive reports a daemon that has exited on its own.
func (f *frrInstance) checkAlive() error {
	if len(f.procs) == 0 {
		return fmt.Errorf("FRR in %s is not running", f.ns)
	}
	for _, d := range f.procs {
		if !d.running() {
			err := d.exitErr()
			if err == nil {
				err = fmt.Errorf("%s (pid %d) exited", d.name, d.pid())
			}
			return err
		}
	}
	return nil
}

func (f *frrInstance) pid(daemon string) int {
	for _, d := range f.procs {
		if d.name == daemon && d.running() {
			return d.pid()
		}
	}
	return 0
}

// outputs lists the files the daemons write to: the shared log, then each stdout/stderr.
func (f *frrInstance) outputs() []string {
	files := []string{f.logPath()}
	for _, name := range f.daemons {
		files = append(files, filepath.Join(f.dir, name+".out"))
	}
	return files
}

// logMarks records the current sizes of the output files: files are appended to across
// restarts, and only what follows the marks belongs to this start.
func (f *frrInstance) logMarks() map[string]int64 {
	marks := map[string]int64{}
	for _, p := range f.outputs() {
		if fi, err := os.Stat(p); err == nil {
			marks[p] = fi.Size()
		}
	}
	return marks
}

// configErrors returns FRR's complaints about config lines, written since marks. They
// go to frr.log, or to stdout when the bad line comes before `log file`.
func (f *frrInstance) configErrors(marks map[string]int64) []string {
	var bad []string
	for _, p := range f.outputs() {
		for _, line := range strings.Split(readFrom(p, marks[p]), "\n") {
			if strings.Contains(line, "config line") {
				bad = append(bad, strings.TrimSpace(line))
			}
		}
	}
	return bad
}

// log returns the shared log and any non-empty daemon output.
func (f *frrInstance) log() string {
	var b strings.Builder
	for i, p := range f.outputs() {
		text := readFrom(p, 0)
		if i > 0 && strings.TrimSpace(text) == "" {
			continue
		}
		fmt.Fprintf(&b, "==> %s <==\n%s", p, text)
		if !strings.HasSuffix(text, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// withLogs adds the end of the daemons' output to err, as the log files may be deleted
// by the cleanup that follows.
func (f *frrInstance) withLogs(err error) error {
	var b strings.Builder
	for _, p := range f.outputs() {
		if text := tail(readFrom(p, 0), 15); text != "" {
			fmt.Fprintf(&b, "\n--- %s ---\n%s", filepath.Base(p), text)
		}
	}
	return fmt.Errorf("%w%s", err, b.String())
}

func readFrom(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// tail returns the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// vtysh runs vtysh against the FRR of namespace ns, each command as its own -c.
func vtysh(ctx context.Context, ns string, opts []string, cmds ...string) (string, error) {
	args := append([]string{"-N", ns}, opts...)
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	cmd := exec.CommandContext(ctx, "vtysh", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err != nil {
		// vtysh -N always complains about the missing /etc/frr/<ns>/vtysh.conf; that is
		// harmless and would only bury the real message.
		var msgs []string
		sc := bufio.NewScanner(&stderr)
		for sc.Scan() {
			if line := strings.TrimSpace(sc.Text()); line != "" && !strings.Contains(line, "vtysh.conf") {
				msgs = append(msgs, line)
			}
		}
		if out := strings.TrimSpace(stdout.String()); out != "" {
			msgs = append(msgs, out)
		}
		return stdout.String(), fmt.Errorf("vtysh -N %s %q: %w: %s", ns, cmds, err, strings.Join(msgs, "; "))
	}
	return stdout.String(), nil
}

// frrHeader starts every daemon's config: the datacenter profile (3/9 s timers, no eBGP
// policy requirement), the hostname BGP announces, and a microsecond-stamped shared log.
func frrHeader(b *strings.Builder, hostname, dir string) {
	fmt.Fprintf(b, "frr defaults datacenter\nhostname %s\nlog file %s\nlog timestamp precision 6\n!\n",
		hostname, filepath.Join(dir, "frr.log"))
}

// Router is a ToR: FRR's zebra, bgpd and bfdd in its own namespace, or BIRD with
// Options.ToRFlavors (Start, Stop, Restart, Log, BGPPeers and Exec work for both).
type Router struct {
	lab      *Lab
	index    int
	name     string // "tor", "tor2"
	asn      uint32
	loopback netip.Prefix

	flavor ToRFlavor

	mu   sync.Mutex // serialises Start and Stop
	frr  *frrInstance
	bird *daemon // ToRBIRD
	// startedAt is when the last Start returned.
	startedAt time.Time
}

// Name is "tor" or "tor2", also its FRR hostname and directory under Dir.
func (r *Router) Name() string { return r.name }

// ASN is the ToR's AS: 65004 or 65005.
func (r *Router) ASN() uint32 { return r.asn }

// Namespace is the ToR's network namespace.
func (r *Router) Namespace() string { return r.lab.prefix + "-" + r.name }

func (r *Router) dir() string { return filepath.Join(r.lab.dir, r.name) }

// port names the ToR's port to server i (0-based).
func (r *Router) port(i int) string { return fmt.Sprintf("swp%d", i+1) }

// PortFor returns the ToR's port to the named server, e.g. "swp2", or "" if there is
// no such server.
func (r *Router) PortFor(server string) string {
	for i, s := range r.lab.servers {
		if s.spec.Name == server {
			return r.port(i)
		}
	}
	return ""
}

// Vtysh runs vtysh commands on the ToR, each as a separate -c, and returns the output.
func (r *Router) Vtysh(ctx context.Context, cmds ...string) (string, error) {
	if !r.flavor.IsFRR() {
		return "", fmt.Errorf("%s runs %v, not FRR: no vtysh", r.name, r.flavor)
	}
	return vtysh(ctx, r.Namespace(), nil, cmds...)
}

// VtyshJSON runs one vtysh command that prints JSON (it should end in "json") and
// decodes the output into v.
func (r *Router) VtyshJSON(ctx context.Context, cmd string, v any) error {
	out, err := r.Vtysh(ctx, cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("decoding output of %q on %s: %w", cmd, r.name, err)
	}
	return nil
}

// Exec runs a program in the ToR's namespace and returns its standard output.
func (r *Router) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return execIn(ctx, r.Namespace(), name, args...)
}

// Start (re)starts the ToR's FRR from freshly written configs. It returns once the
// daemons answer vtysh and, with Options.ToRPrefixes, bgpd has selected every
// originated prefix as a best path.
func (r *Router) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.flavor.IsFRR() {
		if err := r.startBIRD(ctx); err != nil {
			return err
		}
		r.startedAt = time.Now()
		return nil
	}
	if err := r.writeConfigs(); err != nil {
		return err
	}
	if r.frr == nil {
		r.frr = &frrInstance{ns: r.Namespace(), dir: r.dir(), daemons: []string{"zebra", "bgpd", "bfdd"},
			loadTime: torPrefixTimeout(r.lab.opts.ToRPrefixes) - torPrefixTimeout(0)}
	}
	if err := r.frr.start(ctx); err != nil {
		return fmt.Errorf("starting FRR on %s: %w", r.name, err)
	}
	if err := r.waitPrefixes(ctx); err != nil {
		return fmt.Errorf("starting FRR on %s: %w", r.name, err)
	}
	r.startedAt = time.Now()
	return nil
}

// FRRStartupWindow is how long an FRR ToR sets the Restart State bit in
// its OPENs after it starts (bgpd's startup timer, the default restart
// time): a restarting peer then need not wait for the ToR's End-of-RIB.
// Tests of what a restarting server does when it must wait run after it.
const FRRStartupWindow = 120 * time.Second

// Uptime is how long ago the ToR's daemons were last started.
func (r *Router) Uptime() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return time.Since(r.startedAt)
}

// Stop sends sig to the ToR's daemons (bfdd and bgpd first, zebra last) and waits for
// them to exit, killing them after 10 s. It returns their exit errors, if any. Stopping
// zebra removes the ToR's routes from its kernel.
func (r *Router) Stop(sig os.Signal) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.flavor.IsFRR() {
		return r.stopBIRD(sig)
	}
	if r.frr == nil {
		return nil
	}
	if err := r.frr.stop(sig); err != nil {
		return fmt.Errorf("stopping FRR on %s: %w", r.name, err)
	}
	return nil
}

// Restart stops the ToR's zebra, bgpd and bfdd with SIGTERM and starts them again.
func (r *Router) Restart(ctx context.Context) error {
	if err := r.Stop(syscall.SIGTERM); err != nil && errors.Is(err, errStuck) {
		return err
	}
	return r.Start(ctx)
}

// Log returns the ToR's FRR log and any daemon output, for test failure messages.
func (r *Router) Log() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.flavor.IsFRR() {
		return r.birdLog()
	}
	if r.frr == nil {
		return ""
	}
	return r.frr.log()
}

func (l *Lab) startToRs(ctx context.Context) error {
	for _, r := range l.tors {
		if err := l.makeRunDir(r.Namespace()); err != nil {
			return err
		}
		if err := r.Start(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (r *Router) writeConfigs() error {
	for name, text := range map[string]string{
		"zebra": r.zebraConf(),
		"bgpd":  r.bgpdConf(),
		"bfdd":  r.bfddConf(),
	} {
		if err := os.WriteFile(filepath.Join(r.dir(), name+".conf"), []byte(text), 0o644); err != nil {
			return fmt.Errorf("writing %s config of %s: %w", name, r.name, err)
		}
	}
	return nil
}

// zebraConf makes the ToR send router advertisements on every port: FRR learns an
// unnumbered peer's link-local address only from the RAs it hears.
func (r *Router) zebraConf() string {
	var b strings.Builder
	frrHeader(&b, r.name, r.dir())
	for i := range r.lab.servers {
		fmt.Fprintf(&b, "interface %s\n%sexit\n!\n", r.port(i), r.portNDConfig())
	}
	return b.String()
}

// bgpdConf is the seed's ToR config, with ToRExtraConfig at the end of `router bgp`.
func (r *Router) bgpdConf() string {
	var b strings.Builder
	frrHeader(&b, r.name, r.dir())
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n bgp bestpath as-path multipath-relax\n", r.asn, r.loopback.Addr())
	b.WriteString(" neighbor COMPUTE peer-group\n neighbor COMPUTE remote-as external\n")
	for i := range r.lab.servers {
		b.WriteString(r.neighborLine(r.port(i)))
	}
	n := r.lab.opts.ToRPrefixes
	if n > 0 {
		// Without this, bgpd would announce a `network` only once zebra has a route
		// for it, which would mean N kernel routes on the ToR as well.
		b.WriteString(" no bgp network import-check\n")
	}
	b.WriteString(" address-family ipv4 unicast\n  redistribute connected\n  neighbor COMPUTE soft-reconfiguration inbound\n")
	if n > 0 {
		b.Grow(n * len("  network 100.64.255.255/32\n"))
		for a := range torPrefixAddrs(r.lab.opts.ToRPrefixBase, n) {
			fmt.Fprintf(&b, "  network %s/32\n", a)
		}
	}
	b.WriteString(" exit-address-family\n")
	for line := range strings.SplitSeq(r.lab.opts.ToRExtraConfig, "\n") {
		if strings.TrimSpace(line) != "" {
			fmt.Fprintf(&b, " %s\n", strings.TrimSpace(line))
		}
	}
	b.WriteString("exit\n!\n")
	return b.String()
}

// LogPath is the ToR's shared FRR log, <Dir>/<name>/frr.log, with microsecond
// timestamps: the place to read when sessions came up (%ADJCHANGE lines). For a
// BIRD ToR it is <Dir>/<name>/bird.log.
func (r *Router) LogPath() string {
	if !r.flavor.IsFRR() {
		return r.birdLogPath()
	}
	return filepath.Join(r.dir(), "frr.log")
}

// BestPaths returns how many IPv4 unicast prefixes the ToR's bgpd has selected a
// best path for: what it can announce. Unlike `show bgp summary`, it also counts
// while the ToR has no peer configured.
func (r *Router) BestPaths(ctx context.Context) (int, error) {
	var stats struct {
		IPv4Unicast []struct {
			TotalAdvertisements int `json:"totalAdvertisements"`
		} `json:"ipv4Unicast"`
	}
	if err := r.VtyshJSON(ctx, "show bgp ipv4 unicast statistics json", &stats); err != nil {
		return 0, err
	}
	if len(stats.IPv4Unicast) == 0 {
		return 0, fmt.Errorf("%s: no IPv4 unicast statistics", r.name)
	}
	return stats.IPv4Unicast[0].TotalAdvertisements, nil
}

// torPrefixTimeout bounds the wait for a ToR's bgpd to select its originated
// prefixes: about a second per 100,000 here, more on a loaded machine.
func torPrefixTimeout(n int) time.Duration { return 30*time.Second + time.Duration(n)*time.Millisecond }

// waitPrefixes waits until the ToR has selected all its originated prefixes (and
// its loopback) as best paths. bgpd reads its config before it answers vtysh, but
// best-path selection of the `network` routes runs on its work queue after that.
func (r *Router) waitPrefixes(ctx context.Context) error {
	n := r.lab.opts.ToRPrefixes
	if n == 0 {
		return nil
	}
	begin := time.Now()
	err := WaitFor(ctx, torPrefixTimeout(n), fmt.Sprintf("%s to select its %d originated prefixes", r.name, n), func() error {
		if err := r.frr.checkAlive(); err != nil {
			return Permanent(err)
		}
		got, err := r.BestPaths(ctx)
		if err != nil {
			return err
		}
		if got < n+1 { // and the loopback, redistributed
			return fmt.Errorf("%s has %d best paths, want %d", r.name, got, n+1)
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.lab.logf("testenv: %s: %d originated prefixes selected %v after FRR answered", r.name, n, time.Since(begin).Round(time.Millisecond))
	return nil
}

func (r *Router) bfddConf() string {
	var b strings.Builder
	frrHeader(&b, r.name, r.dir())
	return b.String()
}
