// Package testenv builds the seed article's pure-L3 fabric in network namespaces:
// one or two ToRs running real FRR, and servers that peer with them by eBGP over IPv6
// link-local addresses ("BGP unnumbered"). The server side is played either by fabricd
// or, for side-by-side comparisons, by FRR with the seed's server configuration.
//
// Every namespace name starts with a random per-run prefix (such as "fd3a9c-"), so several
// labs can run on one machine at once. Everything New creates is removed by Close, and a
// New that fails cleans up after itself.
//
// Layout, for prefix fd3a9c and the seed servers:
//
//	fd3a9c-tor      FRR AS 65004, lo 4.4.4.4/32, swp1..swp3; forwards IPv4 and IPv6
//	fd3a9c-tor2     (ToRs: 2) FRR AS 65005, lo 5.5.5.5/32, swp1..swp3
//	fd3a9c-c1       lo 1.1.1.1/32, ens3 to tor swp1 (ens4 to tor2 swp1), IPv4 forwarding,
//	                cali* to its pod, and 169.254.1.1/32 dev lo (see createNamespaces)
//	fd3a9c-c1-pod0  eth0 10.1.8.195/32, default via 169.254.1.1 (Calico style)
//
// The uplinks are veth pairs whose two ends have different ifindexes (swpN is 1000+N-1):
// the kernel reports a device's carrier changes at once only if its ifindex differs
// from its iflink (a veth's peer), and otherwise up to a second late. With
// Options.ToRPrefixes every ToR also originates that many /32s (100.64.0.0/10 by
// default), for benchmarks (package testenv/bench).
//
// Configs and logs live in Dir: tor/frr.log (all ToR daemons, microsecond timestamps),
// c1/fabricd.toml, c1/fabricd.log, c1/fabricd.sock; with RoleFRR c1/frr.log.
//
// Options.ToRFlavors makes a ToR run a variant of the seed's FRR config or BIRD 2
// instead (see ToRFlavor); a BIRD ToR keeps tor/bird.conf, bird.log and its control
// socket bird.ctl.
//
// The package needs root, iproute2, procps' sysctl, FRR under /usr/lib/frr with vtysh,
// and ping (iputils-ping) for the tests; BIRD ToRs need bird2, the no-RA flavor nft.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Role selects what plays the server side of the fabric.
type Role int

const (
	// RoleFabricd runs Options.FabricdBinary on every server.
	RoleFabricd Role = iota
	// RoleFRR runs FRR's zebra, staticd and bgpd on every server, configured like the seed.
	RoleFRR
)

func (r Role) String() string {
	switch r {
	case RoleFabricd:
		return "fabricd"
	case RoleFRR:
		return "frr"
	default:
		return fmt.Sprintf("Role(%d)", int(r))
	}
}

// ParseRoles reads a --roles flag: "fabricd", "frr" or both, comma-separated,
// in the order given.
func ParseRoles(s string) ([]Role, error) {
	var out []Role
	for f := range strings.SplitSeq(s, ",") {
		switch strings.TrimSpace(f) {
		case "fabricd":
			out = append(out, RoleFabricd)
		case "frr":
			out = append(out, RoleFRR)
		case "":
		default:
			return nil, fmt.Errorf("--roles: unknown role %q (want fabricd or frr)", f)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--roles: no role given")
	}
	return out, nil
}

// CommandLine is how the running program was invoked, for a report: its
// name and its arguments, quoted where they hold spaces or quotes.
func CommandLine() string {
	args := []string{filepath.Base(os.Args[0])}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

// Options describes the lab to build. The zero value is not usable for RoleFabricd
// (FabricdBinary is required); everything else has a default.
type Options struct {
	Role          Role
	FabricdBinary string // required for RoleFabricd

	// ToRs is 1 (the default) or 2. With 2, every server also gets ens4 to tor2
	// (AS 65005, router-id 5.5.5.5). Each ToR's ports are swp1..swpN, in server order.
	ToRs int

	// ToRFlavors says what ToR i (tor, tor2) runs and how it is configured, for
	// interop tests (see ToRFlavor); ToRs without an entry run the seed's FRR.
	// BIRD ToRs take no ToRExtraConfig and no ToRPrefixes.
	ToRFlavors []ToRFlavor

	Servers []ServerSpec // default SeedServers()

	// Dir holds configs, logs and the fabricd API sockets. Default: a new temporary
	// directory. FRR runs as user frr, so Dir and its parents must be searchable by it
	// (t.TempDir() is not: its parent is 0700); New checks this.
	Dir string

	// ToRExtraConfig is appended inside `router bgp` of every FRR ToR, for example
	// "bgp graceful-restart" or "neighbor COMPUTE bfd". bfdd always runs on them.
	ToRExtraConfig string

	// ToRPrefixes makes every ToR originate that many extra IPv4 /32 prefixes, the
	// first addresses of ToRPrefixBase, as the table a server learns from its fabric;
	// with two ToRs both originate the same ones, so servers get them by ECMP. They
	// are `network` statements with `no bgp network import-check`: bgpd loads 100,000
	// of them in about a second and neither the ToR's zebra nor its kernel is involved
	// (kernel routes with `redistribute kernel` took 3-4 s plus an `ip -batch`).
	// Router.Start, and so New, returns only once the ToR has selected them all as
	// best paths: a server started after that never races the ToR's own loading.
	// Default 0.
	ToRPrefixes int
	// ToRPrefixBase is where the originated prefixes are taken from; it must hold
	// ToRPrefixes addresses and overlap no other lab address. Default 100.64.0.0/10
	// (shared address space: room for 4M prefixes and no clash with the seed's).
	ToRPrefixBase netip.Prefix

	KeepLogs bool // Close leaves Dir in place

	// Logf receives progress messages (t.Logf or a fmt.Printf wrapper); may be nil.
	Logf func(format string, args ...any)

	// hook, when set, runs after each build step of New; an error from it makes New
	// fail right there. Tests use it to prove that a failed New leaves nothing behind.
	hook func(l *Lab, step string) error
}

// ServerSpec describes one server of the fabric.
type ServerSpec struct {
	Name     string       // "c1"; also the FRR hostname and the namespace suffix
	ASN      uint32       // the server's own AS
	Loopback netip.Prefix // e.g. 1.1.1.1/32 on lo; its address is the router-id
	Block    netip.Prefix // pod block, announced and backed by a blackhole route
	Pods     []netip.Addr // one pod namespace each, wired like Calico does it
}

// SeedServers returns the three servers of the seed article.
func SeedServers() []ServerSpec {
	return []ServerSpec{
		{
			Name:     "c1",
			ASN:      65001,
			Loopback: netip.MustParsePrefix("1.1.1.1/32"),
			Block:    netip.MustParsePrefix("10.1.8.192/26"),
			Pods:     []netip.Addr{netip.MustParseAddr("10.1.8.195")},
		},
		{
			Name:     "c2",
			ASN:      65002,
			Loopback: netip.MustParsePrefix("2.2.2.2/32"),
			Block:    netip.MustParsePrefix("10.1.71.192/26"),
			Pods:     []netip.Addr{netip.MustParseAddr("10.1.71.195")},
		},
		{
			Name:     "c3",
			ASN:      65003,
			Loopback: netip.MustParsePrefix("3.3.3.3/32"),
			Block:    netip.MustParsePrefix("10.1.240.0/26"),
			Pods:     []netip.Addr{netip.MustParseAddr("10.1.240.2")},
		},
	}
}

// Lab is a running fabric. Its methods are safe for concurrent use.
type Lab struct {
	opts    Options
	prefix  string // random per-run namespace prefix, e.g. "fd3a9c"
	dir     string
	ownDir  bool // New made dir, so Close may remove it whole
	tors    []*Router
	servers []*Server

	mu         sync.Mutex
	closed     bool
	namespaces []string // created so far, in order; Close deletes them in reverse
	runDirs    []string // /var/run/frr/<ns> directories created
	subdirs    []string // node directories New made inside a caller-provided Dir
}

const (
	frrBin    = "/usr/lib/frr"
	frrRunDir = "/var/run/frr"
	netnsDir  = "/var/run/netns"

	// stopGrace is how long a daemon gets to exit after a signal before SIGKILL.
	stopGrace = 10 * time.Second
	// dadTimeout bounds the wait for IPv6 duplicate address detection (normally 1-2 s).
	dadTimeout = 15 * time.Second
	// maxUnixPath is the size of sun_path: the FRR sockets and the fabricd API socket
	// must fit, with the terminating NUL.
	maxUnixPath = 108
)

// serverNameRE keeps server names usable in namespace names, paths, FRR hostnames
// and sysctl keys without any quoting.
var serverNameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// newLab validates opts, fills in defaults and lays out the nodes. It has no side
// effects, so the config generators can be tested without root.
func newLab(opts Options) (*Lab, error) {
	if opts.ToRs == 0 {
		opts.ToRs = 1
	}
	if opts.ToRs != 1 && opts.ToRs != 2 {
		return nil, fmt.Errorf("testenv: ToRs must be 1 or 2, got %d", opts.ToRs)
	}
	if opts.Servers == nil {
		opts.Servers = SeedServers()
	}
	if !opts.ToRPrefixBase.IsValid() {
		opts.ToRPrefixBase = DefaultToRPrefixBase
	}
	if err := validateToRPrefixes(opts); err != nil {
		return nil, err
	}
	if err := validateFlavors(opts); err != nil {
		return nil, err
	}
	if len(opts.Servers) == 0 {
		return nil, errors.New("testenv: no servers")
	}
	switch opts.Role {
	case RoleFabricd:
		bin, err := checkFabricdBinary(opts.FabricdBinary)
		if err != nil {
			return nil, err
		}
		opts.FabricdBinary = bin
	case RoleFRR:
	default:
		return nil, fmt.Errorf("testenv: unknown role %v", opts.Role)
	}

	l := &Lab{opts: opts}
	for i := range opts.ToRs {
		r := &Router{lab: l, index: i, name: "tor", asn: 65004, loopback: netip.MustParsePrefix("4.4.4.4/32")}
		if i == 1 {
			r.name, r.asn, r.loopback = "tor2", 65005, netip.MustParsePrefix("5.5.5.5/32")
		}
		r.flavor = opts.flavorOf(i)
		l.tors = append(l.tors, r)
	}
	names := map[string]bool{}
	for i, spec := range opts.Servers {
		if err := validateSpec(spec); err != nil {
			return nil, err
		}
		if names[spec.Name] || spec.Name == "tor" || spec.Name == "tor2" {
			return nil, fmt.Errorf("testenv: server name %q is used twice", spec.Name)
		}
		names[spec.Name] = true
		s := &Server{lab: l, index: i, spec: spec}
		s.spec.Pods = slices.Clone(spec.Pods) // the caller may reuse its slice
		for j, addr := range spec.Pods {
			s.pods = append(s.pods, &Pod{server: s, index: j, addr: addr})
		}
		l.servers = append(l.servers, s)
	}
	return l, nil
}

// DefaultToRPrefixBase is Options.ToRPrefixBase's default.
var DefaultToRPrefixBase = netip.MustParsePrefix("100.64.0.0/10")

// torLoopbacks are the ToRs' router IDs, which the originated prefixes must not hide.
var torLoopbacks = []netip.Prefix{netip.MustParsePrefix("4.4.4.4/32"), netip.MustParsePrefix("5.5.5.5/32")}

func validateToRPrefixes(opts Options) error {
	n, base := opts.ToRPrefixes, opts.ToRPrefixBase
	if n < 0 {
		return fmt.Errorf("testenv: ToRPrefixes is %d", n)
	}
	if !base.Addr().Is4() || base != base.Masked() {
		return fmt.Errorf("testenv: ToRPrefixBase %v is not a masked IPv4 prefix", base)
	}
	if size := uint64(1) << (32 - base.Bits()); uint64(n) > size {
		return fmt.Errorf("testenv: ToRPrefixBase %v holds %d addresses, fewer than ToRPrefixes %d", base, size, n)
	}
	if n == 0 {
		return nil
	}
	others := slices.Clone(torLoopbacks)
	for _, spec := range opts.Servers {
		others = append(others, spec.Loopback, spec.Block)
		for _, p := range spec.Pods {
			others = append(others, netip.PrefixFrom(p, 32))
		}
	}
	others = append(others, netip.MustParsePrefix(calicoGateway+"/32"))
	for _, o := range others {
		if o.IsValid() && base.Overlaps(o) {
			return fmt.Errorf("testenv: ToRPrefixBase %v overlaps the lab's %v", base, o)
		}
	}
	return nil
}

// ToRPrefixes returns the prefixes every ToR originates (Options.ToRPrefixes of
// them, in address order), or nil.
func (l *Lab) ToRPrefixes() []netip.Prefix {
	if l.opts.ToRPrefixes == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, l.opts.ToRPrefixes)
	for a := range torPrefixAddrs(l.opts.ToRPrefixBase, l.opts.ToRPrefixes) {
		out = append(out, netip.PrefixFrom(a, 32))
	}
	return out
}

// torPrefixAddrs yields the first n addresses of base; validateToRPrefixes has made
// sure they fit.
func torPrefixAddrs(base netip.Prefix, n int) iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		a := base.Addr()
		for range n {
			if !yield(a) {
				return
			}
			a = a.Next()
		}
	}
}

func validateSpec(spec ServerSpec) error {
	if !serverNameRE.MatchString(spec.Name) {
		return fmt.Errorf("testenv: server name %q: want a lower-case letter then up to 11 letters or digits", spec.Name)
	}
	if spec.ASN == 0 {
		return fmt.Errorf("testenv: server %s: ASN is 0", spec.Name)
	}
	if !spec.Loopback.IsValid() || !spec.Loopback.Addr().Is4() || spec.Loopback.Bits() != 32 {
		return fmt.Errorf("testenv: server %s: loopback %v is not an IPv4 /32 (its address is the router-id)", spec.Name, spec.Loopback)
	}
	if !spec.Block.IsValid() || !spec.Block.Addr().Is4() || spec.Block != spec.Block.Masked() {
		return fmt.Errorf("testenv: server %s: block %v is not a masked IPv4 prefix", spec.Name, spec.Block)
	}
	seen := map[netip.Addr]bool{}
	for _, p := range spec.Pods {
		if !p.Is4() || seen[p] {
			return fmt.Errorf("testenv: server %s: pod address %v is not a distinct IPv4 address", spec.Name, p)
		}
		seen[p] = true
	}
	return nil
}

// checkFabricdBinary resolves the fabricd path before anything is built, so a typo fails
// New without side effects.
func checkFabricdBinary(path string) (string, error) {
	if path == "" {
		return "", errors.New("testenv: RoleFabricd needs Options.FabricdBinary")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("testenv: fabricd binary %q: %w", path, err)
	}
	// Debian's FRR ships an unrelated /usr/lib/frr/fabricd (OpenFabric); starting it by
	// mistake would make for a very confusing test failure.
	if strings.HasPrefix(abs, frrBin+"/") {
		return "", fmt.Errorf("testenv: fabricd binary %s is FRR's OpenFabric daemon, not ours", abs)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("testenv: fabricd binary: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("testenv: fabricd binary %s is not an executable file", abs)
	}
	return abs, nil
}

// New builds the lab: namespaces, links, addresses, pods, and the ToRs' FRR. It returns
// once the ToRs answer vtysh and no IPv6 link-local address in the lab is tentative any
// more. It does not start the server daemons (see Server.Start and Lab.StartServers).
// If it fails, it removes everything it made.
func New(ctx context.Context, opts Options) (_ *Lab, err error) {
	begin := time.Now()
	l, err := newLab(opts)
	if err != nil {
		return nil, err
	}
	if err := checkHost(l.opts.Role); err != nil {
		return nil, err
	}
	if err := checkFlavorHost(l.opts); err != nil {
		return nil, err
	}
	if l.prefix, err = pickPrefix(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if cerr := l.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("testenv: cleaning up after the failed build: %w", cerr))
			}
		}
	}()

	steps := []struct {
		name string
		do   func(context.Context) error
	}{
		{"dirs", func(context.Context) error { return l.makeDirs() }},
		{"namespaces", l.createNamespaces},
		{"links", l.wireUplinks},
		{"flavors", l.prepareFlavors},
		{"pods", l.addPods},
		{"tors", l.startToRs},
		{"dad", l.waitDAD},
	}
	var took []string
	for _, st := range steps {
		stepStart := time.Now()
		if err := st.do(ctx); err != nil {
			return nil, fmt.Errorf("testenv: building lab %s (step %s): %w", l.prefix, st.name, err)
		}
		if l.opts.hook != nil {
			if err := l.opts.hook(l, st.name); err != nil {
				return nil, fmt.Errorf("testenv: building lab %s (after step %s): %w", l.prefix, st.name, err)
			}
		}
		took = append(took, fmt.Sprintf("%s %v", st.name, time.Since(stepStart).Round(time.Millisecond)))
	}
	l.logf("testenv: lab %s (%d ToR, %d servers, role %v) ready in %v (%s), dir %s",
		l.prefix, len(l.tors), len(l.servers), l.opts.Role, time.Since(begin).Round(time.Millisecond),
		strings.Join(took, ", "), l.dir)
	return l, nil
}

// pickPrefix chooses a namespace prefix that no existing namespace or FRR run directory
// uses. Another run could still pick the same one in the same instant; `ip netns add`
// then fails rather than sharing a namespace.
func pickPrefix() (string, error) {
	var existing []string
	for _, dir := range []string{netnsDir, frrRunDir} {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("testenv: listing %s: %w", dir, err)
		}
		for _, e := range entries {
			existing = append(existing, e.Name())
		}
	}
	for range 100 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("testenv: random prefix: %w", err)
		}
		p := "fd" + hex.EncodeToString(b[:])
		if !slices.ContainsFunc(existing, func(n string) bool { return strings.HasPrefix(n, p+"-") }) {
			return p, nil
		}
	}
	return "", errors.New("testenv: no free namespace prefix found")
}

// stopForTeardown stops a node's daemons with SIGTERM for Close. Only a
// daemon that cannot be stopped is an error; one that exits unhappily is
// logged, since teardown must go on.
func (l *Lab) stopForTeardown(stop func(os.Signal) error) error {
	err := stop(syscall.SIGTERM)
	if err != nil && !errors.Is(err, errStuck) {
		l.logf("testenv: %v", err)
		return nil
	}
	return err
}

// Close stops every process the lab started, deletes its namespaces and FRR run
// directories, and removes Dir unless KeepLogs is set. It is idempotent; later calls
// return nil. Exit statuses of the daemons are not errors here (see Server.Stop).
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()

	// Teardown must finish even when the caller's context is already cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var errs []error
	// Servers first: their daemons then see the ToR go away last, as in a drain.
	for _, s := range l.servers {
		if err := l.stopForTeardown(s.Stop); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range l.tors {
		if err := l.stopForTeardown(r.Stop); err != nil {
			errs = append(errs, err)
		}
	}

	l.mu.Lock()
	namespaces := slices.Clone(l.namespaces)
	runDirs := slices.Clone(l.runDirs)
	subdirs := slices.Clone(l.subdirs)
	l.mu.Unlock()

	for _, ns := range slices.Backward(namespaces) {
		if _, err := run(ctx, "ip", "netns", "delete", ns); err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range runDirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", d, err))
		}
	}
	switch {
	case l.dir == "":
	case l.opts.KeepLogs:
		l.logf("testenv: lab %s closed; logs kept in %s", l.prefix, l.dir)
	case l.ownDir:
		if err := os.RemoveAll(l.dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", l.dir, err))
		}
	default:
		for _, d := range subdirs {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, fmt.Errorf("removing %s: %w", d, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testenv: closing lab %s: %w", l.prefix, err)
	}
	return nil
}

// Dir is the directory with the configs and logs.
func (l *Lab) Dir() string { return l.dir }

// Prefix is the per-run prefix of every namespace name, e.g. "fd3a9c".
func (l *Lab) Prefix() string { return l.prefix }

// Namespaces lists the namespaces the lab created, in creation order.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.namespaces)
}

// ToR returns ToR i (0-based), or nil if there is no such ToR.
func (l *Lab) ToR(i int) *Router {
	if i < 0 || i >= len(l.tors) {
		return nil
	}
	return l.tors[i]
}

// Server returns the server with the given name, or nil.
func (l *Lab) Server(name string) *Server {
	for _, s := range l.servers {
		if s.spec.Name == name {
			return s
		}
	}
	return nil
}

// Servers returns all servers in spec order.
func (l *Lab) Servers() []*Server { return slices.Clone(l.servers) }

// PrefixesOfOthers returns what every server but s announces: its loopback
// and pod block, the routes s has through all its uplinks once the fabric
// has converged.
func (l *Lab) PrefixesOfOthers(s *Server) []netip.Prefix {
	var out []netip.Prefix
	for _, o := range l.servers {
		if o != s {
			out = append(out, o.spec.Loopback, o.spec.Block)
		}
	}
	return out
}

// StartServers starts every server's daemon(s) concurrently, like a rack powering up.
func (l *Lab) StartServers(ctx context.Context, extraArgs ...string) error {
	errs := make([]error, len(l.servers))
	var wg sync.WaitGroup
	for i, s := range l.servers {
		wg.Go(func() { errs[i] = s.Start(ctx, extraArgs...) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (l *Lab) logf(format string, args ...any) {
	if l.opts.Logf != nil {
		l.opts.Logf(format, args...)
	}
}

// addNamespace creates ns and records it for Close. A failed `ip netns add` leaves
// nothing (iproute2 removes its half-made mount point), and a name that already exists
// is someone else's namespace, which Close must not delete.
func (l *Lab) addNamespace(ctx context.Context, ns string) error {
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, ns)
	l.mu.Unlock()
	return nil
}
