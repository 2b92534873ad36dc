//go:build linux

package autoannounce

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// kernelLab is a network namespace of the test's own, with helpers to
// change it and to watch a Watcher's updates.
type kernelLab struct {
	t  *testing.T
	ns string
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// addNetns creates a uniquely named namespace, deleted when the test ends
// (unless the test deleted it already).
func addNetns(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err != nil {
			return // the test deleted it
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
}

// ip runs "ip -n NS args...".
func (l *kernelLab) ip(args ...string) {
	l.t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", l.ns}, args...)...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip -n %s %s: %v: %s", l.ns, strings.Join(args, " "), err, out)
	}
}

// calicoName is a host-side veth name as Calico makes them: "cali" and 11
// hex digits of a hash.
func calicoName(t *testing.T) string { return "cali" + randomHex(t, 6)[:11] }

// waitSet reads updates until one equals want, and returns how long after
// since it came. Anything else on the way is logged; check(set) is called
// on every set read, for invariants over the wait.
func waitSet(t *testing.T, updates <-chan []Announcement, since time.Time, what string, want []Announcement, check func([]Announcement)) time.Duration {
	t.Helper()
	timeout := time.After(5 * time.Second)
	var last []Announcement
	for {
		select {
		case set := <-updates:
			if check != nil {
				check(set)
			}
			if slices.Equal(set, want) {
				return time.Since(since)
			}
			last = set
			t.Logf("%s: intermediate set %v", what, set)
		case <-timeout:
			t.Fatalf("%s: no matching update in 5 s\nlast: %v\nwant: %v", what, last, want)
		}
	}
}

// without returns set minus the given prefixes.
func without(set []Announcement, prefixes ...string) []Announcement {
	return slices.DeleteFunc(slices.Clone(set), func(a Announcement) bool {
		return slices.Contains(prefixes, a.Prefix.String())
	})
}

// with returns set plus as, sorted.
func with(set []Announcement, as ...Announcement) []Announcement {
	out := append(slices.Clone(set), as...)
	slices.SortFunc(out, func(a, b Announcement) int { return comparePrefix(a.Prefix, b.Prefix) })
	return out
}

// runNamespaceWatcher runs w (see runWatcher) with a channel of its own
// for the updates.
func runNamespaceWatcher(t *testing.T, w *Watcher) (<-chan []Announcement, func()) {
	t.Helper()
	updates := make(chan []Announcement, 16)
	return updates, runWatcher(t, w, updates)
}

func TestKernelNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("ip not found: %v", err)
	}

	// Other test runs may share the machine: every name is random.
	prefix := "au" + randomHex(t, 4)
	lab := &kernelLab{t: t, ns: prefix}
	podNS := prefix + "p"
	addNetns(t, lab.ns)
	addNetns(t, podNS)
	lab.ip("link", "set", "lo", "up")

	// Before the watcher starts, to be found by the initial dump:
	//   pod A: caliA, its peer in the same namespace, 10.1.8.195;
	//   pod C: caliC, its peer ("eth0") in the pod's own namespace, as
	//          Calico does it, 10.1.12.3;
	//   svc0: a veth standing in for kube-ipvs0 (no dummy devices on this
	//         kernel), left down as kube-proxy leaves kube-ipvs0, 10.96.0.10;
	//   lo: 198.51.100.1.
	caliA, caliB, caliC := calicoName(t), calicoName(t), calicoName(t)
	lab.ip("link", "add", caliA, "type", "veth", "peer", "name", "pa"+caliA[4:])
	lab.ip("link", "add", caliC, "type", "veth", "peer", "name", "eth0", "netns", podNS)
	for _, l := range []string{caliA, "pa" + caliA[4:], caliC} {
		lab.ip("link", "set", l, "up")
	}
	lab.ip("route", "add", "10.1.8.195/32", "dev", caliA, "scope", "link")
	lab.ip("route", "add", "10.1.12.3/32", "dev", caliC, "scope", "link")
	lab.ip("link", "add", "svc0", "type", "veth", "peer", "name", "xsvc0")
	lab.ip("addr", "add", "10.96.0.10/32", "dev", "svc0")
	lab.ip("addr", "add", "198.51.100.1/32", "dev", "lo")

	handle, err := netns.GetFromName(lab.ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { handle.Close() })

	const v4Src, v6Src = "pods on cali* (pool 10.1.0.0/16)", "pods on cali* (pool fd00:10::/48)"
	cfg := Config{
		Pools: []PodPool{
			{Pool: netip.MustParsePrefix("10.1.0.0/16"), BlockSize: 26, Interfaces: "cali*", Blackhole: true},
			{Pool: netip.MustParsePrefix("fd00:10::/48"), BlockSize: 122, Interfaces: "cali*", Blackhole: true},
		},
		Addresses: []AddressSource{
			{Interfaces: "svc*", Exclude: []netip.Prefix{netip.MustParsePrefix("10.96.99.0/24")}},
			{Interfaces: "lo"},
		},
		HoldDown: 500 * time.Millisecond,
		Logger:   quiet,
	}
	if testing.Verbose() {
		cfg.Logger = nil // slog.Default: the Watcher's own account in the test output
	}
	w := newWatcher(cfg, netlinkSource{ns: handle})
	started := time.Now()
	updates, stop := runNamespaceWatcher(t, w)

	timing := func(what string, d time.Duration) { t.Logf("TIMING %-55s %v", what, d.Round(100*time.Microsecond)) }
	// The hold-down with the settle time and scheduling on top.
	holdOK := func(what string, d time.Duration) {
		t.Helper()
		if d < cfg.HoldDown || d > cfg.HoldDown+300*time.Millisecond {
			t.Errorf("%s after %v, want %v plus a little", what, d, cfg.HoldDown)
		}
	}

	blockA := pod("10.1.8.192/26", true, v4Src)
	blockC := pod("10.1.12.0/26", true, v4Src)
	want := []Announcement{blockA, blockC, addr("10.96.0.10/32", "svc0"), addr("198.51.100.1/32", "lo")}
	timing("initial set after Run started", waitSet(t, updates, started, "initial set", want, nil))

	// A second pod in pod A's block, then one in a new block.
	lab.ip("link", "add", caliB, "type", "veth", "peer", "name", "pb"+caliB[4:])
	lab.ip("link", "set", caliB, "up")
	lab.ip("link", "set", "pb"+caliB[4:], "up")
	lab.ip("route", "add", "10.1.8.200/32", "dev", caliB, "scope", "link")
	t0 := time.Now()
	lab.ip("route", "add", "10.1.9.7/32", "dev", caliB, "scope", "link")
	want = with(want, pod("10.1.9.0/26", true, v4Src))
	timing("route add -> block announced", waitSet(t, updates, t0, "new block", want, nil))

	// Routes that must not count, then one that must: it comes on the same
	// socket after them, so once it is seen they have been read.
	lab.ip("link", "add", "vx0", "type", "veth", "peer", "name", "vx1")
	lab.ip("link", "set", "vx0", "up")
	lab.ip("route", "add", "10.2.0.5/32", "dev", caliB, "scope", "link")  // outside the pool
	lab.ip("route", "add", "10.1.20.5/32", "dev", "vx0", "scope", "link") // interface does not match
	lab.ip("route", "add", "10.1.30.5/32", "dev", caliB, "proto", "bgp")  // fabricd's own
	lab.ip("route", "add", "10.1.40.0/24", "dev", caliB)                  // not a host route
	lab.ip("route", "add", "10.1.50.5/32", "dev", caliB, "table", "100")  // not the main table
	lab.ip("route", "add", "blackhole", "10.1.60.5/32")                   // not unicast
	lab.ip("-6", "route", "add", "fd00:11::5/128", "dev", caliB)          // outside the v6 pool
	t0 = time.Now()
	lab.ip("-6", "route", "add", "fd00:10::1:5/128", "dev", caliB) // counts
	want = with(want, pod("fd00:10::1:0/122", true, v6Src))
	timing("v6 route add -> block announced", waitSet(t, updates, t0, "v6 block after ignored routes", want, nil))

	// The last pod of 10.1.9.0/26 goes: withdrawn after the hold-down.
	t0 = time.Now()
	lab.ip("route", "del", "10.1.9.7/32", "dev", caliB)
	want = without(want, "10.1.9.0/26")
	d := waitSet(t, updates, t0, "block withdrawn", want, nil)
	timing("route del -> block withdrawn (hold-down 500ms)", d)
	holdOK("withdrawn", d)

	// Pod A's block loses pod B's route, then pod A itself: deleting its
	// interface flushes the route without any RTM_DELROUTE. A new pod in
	// the block within the hold-down keeps it announced throughout.
	lab.ip("route", "del", "10.1.8.200/32", "dev", caliB)
	lab.ip("link", "del", caliA)
	time.Sleep(cfg.HoldDown / 2)
	lab.ip("route", "add", "10.1.8.201/32", "dev", caliB, "scope", "link")
	watchUntil := time.After(cfg.HoldDown + 500*time.Millisecond)
	for waiting := true; waiting; {
		select {
		case set := <-updates:
			if !slices.Contains(set, blockA) {
				t.Errorf("block withdrawn although a pod came back within the hold-down: %v", set)
			}
		case <-watchUntil:
			waiting = false
		}
	}
	if cur := w.Current(); !slices.Equal(cur, want) {
		t.Errorf("after a returning pod: %v, want %v", cur, want)
	}

	// The same without a returning pod: the interface goes, the block
	// follows after the hold-down.
	t0 = time.Now()
	lab.ip("link", "del", caliB)
	want = without(want, "10.1.8.192/26", "fd00:10::1:0/122")
	d = waitSet(t, updates, t0, "pod interface deleted", want, nil)
	timing("link del -> blocks withdrawn (hold-down 500ms)", d)
	holdOK("withdrawn", d)

	// Deleting the pod's namespace takes its veth pair with it, as when
	// the kubelet removes a pod. The namespace's cleanup runs
	// asynchronously in the kernel.
	t0 = time.Now()
	if out, err := exec.Command("ip", "netns", "del", podNS).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", podNS, err, out)
	}
	want = without(want, "10.1.12.0/26")
	timing("pod netns del -> block withdrawn (hold-down 500ms)", waitSet(t, updates, t0, "pod namespace deleted", want, nil))

	// Addresses: announced and withdrawn at once. 10.96.99.1 is excluded;
	// fd00:96::2 is tentative (DAD waits for svc0 to come up) until then.
	t0 = time.Now()
	lab.ip("addr", "add", "10.96.0.11/32", "dev", "svc0")
	want = with(want, addr("10.96.0.11/32", "svc0"))
	timing("addr add -> announced", waitSet(t, updates, t0, "address added", want, nil))
	lab.ip("addr", "add", "10.96.99.1/32", "dev", "svc0")
	lab.ip("addr", "add", "fd00:96::2/128", "dev", "svc0")
	lab.ip("addr", "add", "fd00:96::1/128", "dev", "svc0", "nodad")
	want = with(want, addr("fd00:96::1/128", "svc0"))
	waitSet(t, updates, t0, "v6 address (not the excluded, not the tentative one)", want, nil)
	t0 = time.Now()
	lab.ip("addr", "del", "10.96.0.11/32", "dev", "svc0")
	want = without(want, "10.96.0.11/32")
	timing("addr del -> withdrawn", waitSet(t, updates, t0, "address removed", want, nil))

	lab.ip("link", "set", "xsvc0", "up")
	t0 = time.Now()
	lab.ip("link", "set", "svc0", "up")
	want = with(want, addr("fd00:96::2/128", "svc0"))
	timing("link up -> DAD done -> tentative address announced", waitSet(t, updates, t0, "DAD done", want, nil))

	// A reload: pods now on vx*, no blackhole, no v6 pool. The routes on
	// vx0 that did not count before do now, except the v6 one.
	lab.ip("-6", "route", "add", "fd00:10::2:5/128", "dev", "vx0")
	lab.ip("route", "add", "10.1.20.6/32", "dev", "vx0", "scope", "link")
	newCfg := cfg
	newCfg.Pools = []PodPool{{Pool: netip.MustParsePrefix("10.1.0.0/16"), BlockSize: 26, Interfaces: "vx*"}}
	t0 = time.Now()
	w.SetConfig(newCfg)
	want = with(want, pod("10.1.20.0/26", false, "pods on vx* (pool 10.1.0.0/16)"))
	timing("SetConfig -> new set", waitSet(t, updates, t0, "reload", want, nil))

	// A second watcher that re-reads everything every 100 ms agrees, and
	// has nothing new to say.
	w2 := newWatcher(newCfg, netlinkSource{ns: handle})
	w2.resync = 100 * time.Millisecond
	updates2, stop2 := runNamespaceWatcher(t, w2)
	waitSet(t, updates2, time.Now(), "second watcher", want, nil)
	select {
	case set := <-updates2:
		t.Errorf("resync produced an update: %v", set)
	case <-time.After(500 * time.Millisecond):
	}
	stop2()

	t0 = time.Now()
	stop()
	timing("cancel -> Run returned", time.Since(t0))
	if cur := w.Current(); !slices.Equal(cur, want) {
		t.Errorf("Current() after Run = %v, want the last set %v", cur, want)
	}
}
