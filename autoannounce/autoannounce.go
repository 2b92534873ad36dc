// Package autoannounce derives the prefixes a server announces from the
// kernel, so that no per-node configuration is needed.
//
// Two kinds of source are followed live over netlink:
//
//   - Pod blocks. Calico's CNI plugin gives every pod a host route on the
//     pod's host-side veth (10.1.8.195 dev calib7851807e18 scope link). For
//     each configured pool, the block (e.g. the /26) containing a pod route's
//     address is announced while at least one such route exists, and
//     withdrawn a hold-down after the last one goes. Calico's datastore is
//     never consulted: the kernel's routing table is the truth about which
//     pods run here.
//   - Addresses on chosen interfaces (lo, kube-ipvs0, ...), each announced as
//     a host prefix (/32, /128).
//
// A Watcher sends the complete set on every change (level-triggered), so a
// consumer only ever needs the latest value. It watches the network
// namespace of the process and needs no privileges beyond reading netlink.
//
// The package has two halves. state.go is the pure logic: kernel objects in,
// announcement set out, with time passed in; it is unit-tested without a
// kernel. netlink_linux.go is the only part that talks to the kernel, behind
// the source interface.
package autoannounce

import (
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultHoldDown is how long a pod block stays announced after its last
// pod route is gone. A pod that is recreated (a rolling restart, an evicted
// pod rescheduled on the same node) usually gets an address in the same
// block within a second or two; withdrawing and re-announcing the block in
// between would make the whole fabric churn for nothing.
const DefaultHoldDown = 2 * time.Second

// PodPool is a Calico IP pool whose blocks are announced when pods of this
// server have addresses in them.
type PodPool struct {
	Pool       netip.Prefix
	BlockSize  int    // prefix length of a block, e.g. 26; must be >= Pool.Bits() and <= 32 (128 for v6)
	Interfaces string // glob (path.Match) for the pod-facing interfaces, e.g. "cali*"
	Blackhole  bool   // passed on in the Announcement
}

// AddressSource announces the addresses found on matching interfaces.
type AddressSource struct {
	Interfaces string         // glob (path.Match), e.g. "lo" or "kube-ipvs0"
	Exclude    []netip.Prefix // addresses inside these are not announced
}

// Config configures a Watcher.
type Config struct {
	Pools     []PodPool
	Addresses []AddressSource
	HoldDown  time.Duration // zero means DefaultHoldDown
	// Logger is taken from the Config given to New; SetConfig does not
	// change it. Nil means slog.Default().
	Logger *slog.Logger
}

// Announcement is one prefix to originate.
type Announcement struct {
	Prefix    netip.Prefix
	Blackhole bool
	// Source says where the prefix came from, for operators: "pods on
	// cali* (pool 10.1.0.0/16)" or "address on lo".
	Source string
}

// Watcher follows the kernel and maintains the set of announcements.
type Watcher struct {
	log *slog.Logger
	src source

	mu      sync.Mutex
	cfg     Config
	cur     []Announcement
	version uint64 // incremented on every change of cur; 0: nothing published yet

	// cfgChanged and published carry no data, only "look again": the data
	// is read under mu. Capacity 1, so a signal is never lost and a sender
	// never blocks.
	cfgChanged chan struct{}
	published  chan struct{}

	running atomic.Bool

	// Tunables, fixed after construction; tests shorten them.
	settle   time.Duration // quiet time after a change before publishing
	maxDelay time.Duration // publish at the latest this long after the first unpublished change
	resync   time.Duration // full re-dump interval
}

// New returns a Watcher for cfg. It does nothing until Run.
func New(cfg Config) *Watcher {
	return newWatcher(cfg, defaultSource())
}

func newWatcher(cfg Config, src source) *Watcher {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Watcher{
		log:        log.With("component", "autoannounce"),
		src:        src,
		cfg:        cloneConfig(cfg),
		cfgChanged: make(chan struct{}, 1),
		published:  make(chan struct{}, 1),
		// A burst of pod creations (a deployment scaled up) arrives as
		// hundreds of netlink messages within a few milliseconds: 20 ms of
		// quiet covers the gaps inside such a burst, and the cap keeps a
		// steady trickle from postponing the update forever.
		settle:   20 * time.Millisecond,
		maxDelay: 200 * time.Millisecond,
		// Netlink does not report everything (see state.applyLink) and
		// separate sockets are not ordered with each other; an occasional
		// full re-read bounds the time any resulting error can last.
		resync: 5 * time.Minute,
	}
}

// SetConfig replaces the configuration of a running (or not yet running)
// watcher, e.g. on a config reload, and re-evaluates. Invalid entries are
// logged and skipped; use Config.Validate first to refuse them. Blocks of a
// pool that is no longer configured are withdrawn at once, without
// hold-down: the operator asked for it.
func (w *Watcher) SetConfig(cfg Config) {
	w.mu.Lock()
	w.cfg = cloneConfig(cfg)
	w.mu.Unlock()
	select {
	case w.cfgChanged <- struct{}{}:
	default:
	}
}

// Current returns the latest set, sorted by prefix. It is empty until Run
// has read the kernel's initial state, and keeps the last set after Run
// returns. The caller owns the returned slice.
func (w *Watcher) Current() []Announcement {
	set, _ := w.latest()
	return set
}

func (w *Watcher) config() Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg
}

// latest returns a copy of the current set and its version.
func (w *Watcher) latest() ([]Announcement, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.cur), w.version
}

// publish makes set the current set and wakes the sender. set must not be
// modified afterwards.
func (w *Watcher) publish(set []Announcement) {
	w.mu.Lock()
	w.cur = set
	w.version++
	w.mu.Unlock()
	select {
	case w.published <- struct{}{}:
	default:
	}
}

// cloneConfig copies the slices, so a caller reusing its Config cannot
// change ours behind the lock.
func cloneConfig(c Config) Config {
	c.Pools = slices.Clone(c.Pools)
	c.Addresses = slices.Clone(c.Addresses)
	for i := range c.Addresses {
		c.Addresses[i].Exclude = slices.Clone(c.Addresses[i].Exclude)
	}
	return c
}
