//go:build linux

package unnumbered

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The namespace test runs in two halves. The outer half (the ordinary test
// run) builds two namespaces joined by a veth pair, "tor" with FRR and
// "server", then runs this test binary again inside "server" with
// childEnv set. The inner half runs a Link and drives and checks the
// scenario. Re-executing is the only sound way to put a whole Go process
// into a namespace: setns affects one OS thread, and goroutines move
// between threads.
const (
	childEnv  = "UNNUMBERED_NETNS_CHILD"
	torNSEnv  = "UNNUMBERED_TOR_NS"
	torLLEnv  = "UNNUMBERED_TOR_LL"
	torMACEnv = "UNNUMBERED_TOR_MAC"

	frrDir   = "/usr/lib/frr"
	torIf    = "swp1"
	serverIf = "ens3"
)

func TestNamespaceFRR(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		serverHalf(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	if _, err := os.Stat(filepath.Join(frrDir, "zebra")); err != nil {
		t.Skipf("FRR not installed: %v", err)
	}
	for _, tool := range []string{"ip", "vtysh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: %v", tool, err)
		}
	}

	// Other tests may run on this machine at the same time: every name we
	// create carries a random per-run prefix.
	prefix := "un" + randomHex(t, 3)
	tor, server := prefix+"t", prefix+"s"
	for _, ns := range []string{tor, server} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("deleting namespace %s: %v: %s", ns, err, out)
			}
		})
		// Without lo up the kernel rejects some onlink routes; keep the
		// namespaces like a real host.
		mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	// Created directly inside the namespaces: the names never exist in the
	// root namespace, where they could clash with someone else's.
	//
	// Distinct ifindexes on purpose. The kernel's linkwatch reports carrier
	// changes of a device whose ifindex equals its iflink (a physical NIC,
	// or a veth whose peer happens to have the same index in its own
	// namespace) only once per second, globally; a flap inside that window
	// is not reported at all. A veth with different indexes is "urgent" and
	// reported at once, which keeps the timing checks below deterministic.
	mustRun(t, "ip", "link", "add", torIf, "index", "10", "netns", tor, "type", "veth",
		"peer", "name", serverIf, "index", "20", "netns", server)
	mustRun(t, "ip", "-n", tor, "link", "set", torIf, "up")
	mustRun(t, "ip", "-n", server, "link", "set", serverIf, "up")

	startFRR(t, tor, prefix)

	torLL, torMAC := waitLinkLocal(t, tor, torIf)
	waitLinkLocal(t, server, serverIf)
	waitFor(t, 10*time.Second, "FRR sending RAs on "+torIf, func() bool {
		out, err := exec.Command("vtysh", "-N", tor, "-c", "show interface "+torIf).CombinedOutput()
		return err == nil && bytes.Contains(out, []byte("ND router advertisements are sent every 5 seconds"))
	})

	exe, err := os.Executable() // not /proc/self/exe: ip would resolve that to itself
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", server, exe,
		"-test.run", "^TestNamespaceFRR$", "-test.v", "-test.count=1", "-test.timeout=50s")
	cmd.Env = append(os.Environ(),
		childEnv+"=1",
		torNSEnv+"="+tor,
		torLLEnv+"="+torLL.String(),
		torMACEnv+"="+torMAC.String(),
	)
	out, err := cmd.CombinedOutput()
	var timings []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "TIMING") {
			timings = append(timings, strings.TrimSpace(line))
		}
	}
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestNamespaceFRR")) {
		t.Fatalf("server half failed: %v\n%s", err, out)
	}
	t.Logf("server half passed; timings:\n%s", strings.Join(timings, "\n"))
	if testing.Verbose() && os.Getenv("UNNUMBERED_CHILD_LOG") != "" {
		t.Logf("server half output:\n%s", out)
	}
}

// startFRR starts zebra and bgpd in namespace ns, configured like the lab
// ToR, and stops them (by PID) at cleanup.
func startFRR(t *testing.T, ns, prefix string) {
	t.Helper()
	frr, err := user.Lookup("frr")
	if err != nil {
		t.Skipf("no frr user: %v", err)
	}
	uid, _ := strconv.Atoi(frr.Uid)
	gid, _ := strconv.Atoi(frr.Gid)

	// Not t.TempDir: its parent is private to root, and the daemons run as frr.
	dir, err := os.MkdirTemp("", prefix+"-frr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	runDir := filepath.Join("/var/run/frr", ns)
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })

	confs := map[string]string{
		"zebra": fmt.Sprintf(`hostname tor
log file %s/zebra.log
log timestamp precision 6
debug zebra events
debug zebra packet
interface %s
 ipv6 nd ra-interval 5
 ipv6 nd ra-lifetime 15
 no ipv6 nd suppress-ra
`, dir, torIf),
		"bgpd": fmt.Sprintf(`frr defaults datacenter
hostname tor
log file %s/bgpd.log
log timestamp precision 6
debug bgp zebra
debug bgp neighbor-events
router bgp 65004
 bgp router-id 4.4.4.4
 neighbor %s interface remote-as external
`, dir, torIf),
	}
	for name, conf := range confs {
		if err := os.WriteFile(filepath.Join(dir, name+".conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{dir, runDir, filepath.Join(dir, "zebra.conf"), filepath.Join(dir, "bgpd.conf")} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	for _, d := range []string{"zebra", "bgpd"} {
		pidFile := filepath.Join(dir, d+".pid")
		// Registered before starting, so that a failing start still
		// stops whatever did get started.
		t.Cleanup(func() { stopDaemon(t, d, pidFile) })
		args := []string{"netns", "exec", ns, filepath.Join(frrDir, d), "-d", "-N", ns,
			"-f", filepath.Join(dir, d+".conf"), "-i", pidFile, "-P", "0"}
		if d == "zebra" {
			args = append(args, "-s", "90000000")
		}
		mustRun(t, "ip", args...)
		waitFor(t, 10*time.Second, d+" running", func() bool {
			out, err := exec.Command("vtysh", "-N", ns, "-d", d, "-c", "show version").CombinedOutput()
			return err == nil && bytes.Contains(out, []byte("FRRouting"))
		})
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, d := range []string{"zebra", "bgpd"} {
				if b, err := os.ReadFile(filepath.Join(dir, d+".log")); err == nil {
					t.Logf("%s.log:\n%s", d, b)
				}
			}
		}
	})
}

// stopDaemon stops the daemon whose PID is in pidFile, if it is still the
// process we started.
func stopDaemon(t *testing.T, name, pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return // never started
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		t.Errorf("%s: bad pid file %s: %q", name, pidFile, b)
		return
	}
	ours := func() bool {
		// The PID may have been reused after the daemon died: only
		// signal a process whose command line names our pid file.
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmdline, []byte(pidFile)) {
			return false
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		// A zombie has exited; it waits for its parent (not us) to reap it.
		return err == nil && !bytes.Contains(stat, []byte(") Z "))
	}
	if !ours() {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for ours() {
		if time.Now().After(deadline) {
			t.Logf("%s (pid %d) ignores SIGTERM, killing it", name, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLinkLocal waits until ifname in ns has a link-local address that has
// passed DAD, and returns it with the interface's MAC.
func waitLinkLocal(t *testing.T, ns, ifname string) (netip.Addr, net.HardwareAddr) {
	t.Helper()
	var ll netip.Addr
	var mac net.HardwareAddr
	waitFor(t, 10*time.Second, "link-local address on "+ifname, func() bool {
		out, err := exec.Command("ip", "-n", ns, "-j", "addr", "show", "dev", ifname).Output()
		if err != nil {
			return false
		}
		var links []struct {
			Address  string `json:"address"`
			AddrInfo []struct {
				Local     string `json:"local"`
				Scope     string `json:"scope"`
				Tentative bool   `json:"tentative"`
			} `json:"addr_info"`
		}
		if json.Unmarshal(out, &links) != nil || len(links) != 1 {
			return false
		}
		for _, a := range links[0].AddrInfo {
			if a.Scope == "link" && !a.Tentative {
				ll, err = netip.ParseAddr(a.Local)
				mac, _ = net.ParseMAC(links[0].Address)
				return err == nil
			}
		}
		return false
	})
	return ll, mac
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// serverHalf runs inside the server namespace.
func serverHalf(t *testing.T) {
	torNS := os.Getenv(torNSEnv)
	torLL := netip.MustParseAddr(os.Getenv(torLLEnv)).WithZone(serverIf)
	torMAC, err := net.ParseMAC(os.Getenv(torMACEnv))
	if err != nil {
		t.Fatal(err)
	}
	nsh, err := netns.GetFromName(torNS)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	torH, err := netlink.NewHandleAt(nsh) // manages the ToR's side from here
	if err != nil {
		t.Fatal(err)
	}
	defer torH.Close()
	torLink, err := torH.LinkByName(torIf)
	if err != nil {
		t.Fatal(err)
	}
	ourLink, err := netlink.LinkByName(serverIf)
	if err != nil {
		t.Fatal(err)
	}
	ourLL, err := usableLinkLocal(ourLink.Attrs().Index)
	if err != nil {
		t.Fatal(err)
	}

	// The server's kernel never sends RAs, so FRR cannot know us yet;
	// whatever it learns below comes from our (lifetime 0) RAs.
	if z, b := frrKnows(t, torNS, ourLL); z || b {
		t.Fatalf("FRR knows %v before we sent an RA (zebra %v, bgpd %v)", ourLL, z, b)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := NewLink(Config{Interface: serverIf, RAInterval: 2 * time.Second, Logger: log.With("interface", serverIf)})
	events := make(chan Event, 32)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	goroutines := runtime.NumGoroutine()
	begin := time.Now()
	go func() { done <- l.Run(ctx, events) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("Run did not return after cancel")
			return
		}
		// Everything Run started (netlink, socket reader) has ended. The
		// goroutine that called Run may need a moment to exit.
		deadline := time.Now().Add(time.Second)
		for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > goroutines {
			buf := make([]byte, 1<<16)
			t.Errorf("%d goroutines after Run returned, %d before:\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
		}
	}()
	// next returns the next event but a refresh: a NeighborUp for the
	// neighbor the last NeighborUp named (every RA is reported; the
	// uplink's machine decides what it means).
	var heard Neighbor
	refresh := func(ev Event) bool {
		if ev.Kind == Advertised {
			return true // after each Advertise below; not what this test is about
		}
		if ev.Kind == NeighborDown {
			heard = Neighbor{}
		}
		if ev.Kind != NeighborUp {
			return false
		}
		same := ev.Neighbor.Addr == heard.Addr && ev.Neighbor.MAC.String() == heard.MAC.String()
		heard = ev.Neighbor
		return same
	}
	next := func(timeout time.Duration) Event {
		t.Helper()
		deadline := time.After(timeout)
		for {
			select {
			case ev := <-events:
				if refresh(ev) {
					continue
				}
				t.Logf("event %v %v %v", ev.Kind, ev.Neighbor.Addr, ev.Neighbor.MAC)
				return ev
			case <-deadline:
				t.Fatalf("no event within %v", timeout)
				return Event{}
			}
		}
	}
	expect := func(kind EventKind, timeout time.Duration) Event {
		t.Helper()
		ev := next(timeout)
		if ev.Kind != kind {
			t.Fatalf("got %v, want %v", ev.Kind, kind)
		}
		return ev
	}

	// 1. Start: solicited discovery.
	expect(LinkUp, time.Second)
	ev := expect(NeighborUp, 2*time.Second)
	upAfter := time.Since(begin)
	if ev.Neighbor.Addr != torLL || ev.Neighbor.MAC.String() != torMAC.String() {
		t.Fatalf("neighbor %v %v, want %v %v", ev.Neighbor.Addr, ev.Neighbor.MAC, torLL, torMAC)
	}
	t.Logf("TIMING NeighborUp %v after Run start", upAfter)
	if upAfter > time.Second {
		t.Errorf("NeighborUp took %v; the solicited RA should come at once", upAfter)
	}
	// What the uplink's machine does once its peer is configured.
	l.Advertise()

	// RS -> RA as seen through the Link: Solicit, then wait for LastRA to move.
	last := l.Status().Neighbor.LastRA
	time.Sleep(10 * time.Millisecond)
	sol := time.Now()
	l.Solicit()
	waitFor(t, 2*time.Second, "RA answering our RS", func() bool {
		n := l.Status().Neighbor
		return n != nil && n.LastRA.After(last)
	})
	t.Logf("TIMING RS->RA (Solicit to RA read): %v", l.Status().Neighbor.LastRA.Sub(sol))

	// 2. FRR learns our address from our lifetime-0 RA.
	waitFor(t, 5*time.Second, "FRR to learn our address", func() bool {
		z, b := frrKnows(t, torNS, ourLL)
		return z && b
	})
	t.Logf("TIMING FRR (zebra and bgpd) knows %v %v after Run start", ourLL, time.Since(begin))

	// 3. The ToR's MAC changes (its link-local address stays).
	newMAC := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0}
	copy(newMAC[2:], randomBytes(t, 4))
	changed := time.Now()
	if err := torH.LinkSetHardwareAddr(torLink, newMAC); err != nil {
		t.Fatal(err)
	}
	ev = expect(NeighborUp, 7*time.Second) // FRR re-advertises by itself
	if ev.Neighbor.Addr != torLL || ev.Neighbor.MAC.String() != newMAC.String() {
		t.Fatalf("after MAC change: neighbor %v %v, want %v %v", ev.Neighbor.Addr, ev.Neighbor.MAC, torLL, newMAC)
	}
	t.Logf("TIMING NeighborUp with new ToR MAC %v after the change (unsolicited)", time.Since(changed))

	// 4. Garbage and forged packets from the ToR namespace.
	before := l.Status()
	sent := sendForged(t, torNS, torLL.WithZone(""), newMAC)
	waitFor(t, 2*time.Second, "forged packets to be counted", func() bool {
		return l.Status().RAsIgnored >= before.RAsIgnored+uint64(sent)
	})
	time.Sleep(100 * time.Millisecond) // anything more would show now
	after := l.Status()
	if got := after.RAsIgnored - before.RAsIgnored; got != uint64(sent) {
		t.Errorf("RAsIgnored grew by %d, want %d", got, sent)
	}
	if after.RAsReceived <= before.RAsReceived {
		t.Errorf("the valid RA from the second router was not counted as received")
	}
	if n := after.Neighbor; n == nil || n.Addr != torLL || n.MAC.String() != newMAC.String() {
		t.Fatalf("neighbor after forged packets: %+v", n)
	}
	for drained := false; !drained; {
		select {
		case ev := <-events:
			if !refresh(ev) {
				t.Fatalf("event %v after forged packets", ev.Kind)
			}
		default:
			drained = true
		}
	}

	// 5. Our link administratively down and up: the kernel removes our
	// link-local address and runs DAD again when it comes back.
	t0 := time.Now()
	if err := netlink.LinkSetDown(ourLink); err != nil {
		t.Fatal(err)
	}
	expect(LinkDown, time.Second)
	t.Logf("TIMING LinkDown %v after setting %s down", time.Since(t0), serverIf)
	if ev := expect(NeighborDown, time.Second); ev.Neighbor.Addr != torLL {
		t.Fatalf("NeighborDown for %v", ev.Neighbor.Addr)
	}
	if time.Since(t0) > 250*time.Millisecond {
		t.Errorf("link down took %v to report", time.Since(t0))
	}
	t0 = time.Now()
	if err := netlink.LinkSetUp(ourLink); err != nil {
		t.Fatal(err)
	}
	expect(LinkUp, time.Second)
	l.Advertise()
	t.Logf("TIMING LinkUp %v after setting %s up", time.Since(t0), serverIf)
	ev = expect(NeighborUp, 5*time.Second)
	t.Logf("TIMING NeighborUp %v after setting %s up (includes our DAD)", time.Since(t0), serverIf)
	if ev.Neighbor.Addr != torLL || ev.Neighbor.MAC.String() != newMAC.String() {
		t.Fatalf("neighbor %v %v, want %v %v", ev.Neighbor.Addr, ev.Neighbor.MAC, torLL, newMAC)
	}

	// Let FRR take our first RA after link-up before its port goes down
	// (see the FRR race below).
	time.Sleep(300 * time.Millisecond)

	// 6. Carrier loss from the ToR's side, the usual failure. When the
	// ToR's port comes back its kernel derives a new link-local address
	// from the new MAC, so the neighbor returns under a new address.
	t0 = time.Now()
	if err := torH.LinkSetDown(torLink); err != nil {
		t.Fatal(err)
	}
	expect(LinkDown, time.Second)
	t.Logf("TIMING LinkDown %v after the ToR port went down", time.Since(t0))
	expect(NeighborDown, time.Second)
	if time.Since(t0) > 250*time.Millisecond {
		t.Errorf("carrier loss took %v to report", time.Since(t0))
	}
	t0 = time.Now()
	if err := torH.LinkSetUp(torLink); err != nil {
		t.Fatal(err)
	}
	expect(LinkUp, time.Second)
	ev = expect(NeighborUp, 6*time.Second)
	l.Advertise()
	t.Logf("TIMING NeighborUp %v after the ToR port came up (includes the ToR's DAD)", time.Since(t0))
	if ev.Neighbor.Addr == torLL || ev.Neighbor.MAC.String() != newMAC.String() || !ev.Neighbor.Addr.IsLinkLocalUnicast() {
		t.Fatalf("neighbor after ToR flap %v %v, want a new address and %v", ev.Neighbor.Addr, ev.Neighbor.MAC, newMAC)
	}
	// FRR 8.4 has a race: if our RA reaches zebra in the same instant as
	// its port goes down, bgpd gets the neighbor while its peer is in
	// Active and ignores it until the connect-retry timer (10 s) fires.
	// The pause before step 6 keeps this test out of that window; the
	// timeout tolerates a periodic RA hitting it by chance.
	relearn := time.Now()
	waitFor(t, 12*time.Second, "FRR to learn our address again", func() bool {
		z, b := frrKnows(t, torNS, ourLL)
		return z && b
	})
	t.Logf("TIMING FRR (zebra and bgpd) relearned our address %v after NeighborUp", time.Since(relearn))

	st := l.Status()
	t.Logf("status: link up %v, neighbor %v %v, RAs received %d ignored %d sent %d, RSs sent %d",
		st.LinkUp, st.Neighbor.Addr, st.Neighbor.MAC, st.RAsReceived, st.RAsIgnored, st.RAsSent, st.RSsSent)
	if !st.LinkUp || st.RAsSent < 3 || st.RSsSent < 4 {
		t.Errorf("status %+v", st)
	}
}

// frrKnows reports whether zebra lists addr among swp1's neighbors and
// whether bgpd resolved its interface neighbor to it.
func frrKnows(t *testing.T, ns string, addr netip.Addr) (zebra, bgpd bool) {
	t.Helper()
	a := addr.WithZone("").String()
	out, err := exec.Command("vtysh", "-N", ns, "-c", "show interface "+torIf).Output()
	if err != nil {
		t.Fatalf("vtysh: %v", err)
	}
	if _, nbrs, ok := bytes.Cut(out, []byte("Neighbor address(s):")); ok {
		zebra = bytes.Contains(nbrs, []byte("inet6 "+a+"/128"))
	}
	out, err = exec.Command("vtysh", "-N", ns, "-c", "show bgp neighbors "+torIf).Output()
	if err != nil {
		t.Fatalf("vtysh: %v", err)
	}
	bgpd = bytes.Contains(out, []byte("BGP neighbor on "+torIf+": "+a+","))
	return zebra, bgpd
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sendForged sends bad and unwelcome ND packets to all-nodes from the ToR
// namespace, as raw Ethernet frames so that source address and hop limit
// can be anything. It returns how many of them the Link must count as
// ignored.
func sendForged(t *testing.T, ns string, torLL netip.Addr, torMAC net.HardwareAddr) int {
	t.Helper()
	rogue := netip.MustParseAddr("fe80::bad")
	rogueMAC := net.HardwareAddr{0x02, 0xba, 0xd0, 0, 0, 1}
	ra := func(lifetime time.Duration, mac net.HardwareAddr) []byte {
		b, err := ndp.MarshalMessage(&ndp.RouterAdvertisement{CurrentHopLimit: 64, RouterLifetime: lifetime, Options: llaOptions(mac)})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	validRA := ra(0, rogueMAC)
	withCode := bytes.Clone(validRA)
	withCode[1] = 7
	type forged struct {
		what     string
		src      netip.Addr
		hopLimit uint8
		icmp     []byte
		counted  bool
	}
	packets := []forged{
		{"truncated RA", torLL, 255, []byte{134, 0, 0, 0, 64, 0, 0, 15}, true},
		{"RA with zero-length option", torLL, 255, append(bytes.Clone(validRA[:16]), 1, 0, 0, 0, 0, 0, 0, 0), true},
		{"RA with option past the end", torLL, 255, append(bytes.Clone(validRA[:16]), 3, 4, 64, 0xc0), true},
		{"RS with option past the end", torLL, 255, []byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 5, 1, 2}, true},
		{"RA with hop limit 64 claiming a new ToR MAC", torLL, 64, ra(15*time.Second, rogueMAC), true},
		{"RA from a global address", netip.MustParseAddr("2001:db8::1"), 255, ra(15*time.Second, rogueMAC), true},
		{"RA with code 7", torLL, 255, withCode, true},
		{"valid RA from a second router", rogue, 255, validRA, true},
		{"random bytes typed RA", torLL, 255, append([]byte{134, 0, 0, 0}, randomBytes(t, 37)...), true},
		// Filtered by the socket's ICMPv6 filter: never seen, not counted.
		{"echo request", torLL, 255, []byte{128, 0, 0, 0, 0, 1, 0, 1}, false},
		{"neighbor advertisement garbage", torLL, 255, []byte{136, 0, 0, 0, 1, 2, 3}, false},
	}
	var frames [][]byte
	n := 0
	for _, p := range packets {
		frames = append(frames, ipv6Packet(p.src, allNodes, p.hopLimit, p.icmp))
		if p.counted {
			n++
		}
	}
	if err := sendFramesInNS(ns, torIf, frames); err != nil {
		t.Fatalf("sending forged packets: %v", err)
	}
	return n
}

// ipv6Packet builds an IPv6 packet carrying an ICMPv6 message, with a
// correct ICMPv6 checksum (the kernel drops the rest before any socket).
func ipv6Packet(src, dst netip.Addr, hopLimit uint8, icmp []byte) []byte {
	b := make([]byte, 40+len(icmp))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(icmp)))
	b[6] = unix.IPPROTO_ICMPV6
	b[7] = hopLimit
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	msg := b[40:]
	copy(msg, icmp)
	if len(msg) >= 4 {
		msg[2], msg[3] = 0, 0
		var sum uint32
		add := func(p []byte) {
			for i := 0; i+1 < len(p); i += 2 {
				sum += uint32(p[i])<<8 | uint32(p[i+1])
			}
			if len(p)%2 == 1 {
				sum += uint32(p[len(p)-1]) << 8
			}
		}
		add(s[:])
		add(d[:])
		add([]byte{0, 0, byte(len(msg) >> 8), byte(len(msg)), 0, 0, 0, unix.IPPROTO_ICMPV6})
		add(msg)
		for sum>>16 != 0 {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(msg[2:], ^uint16(sum))
	}
	return b
}

// sendFramesInNS sends IPv6 packets out of ifname in namespace ns to the
// all-nodes MAC. The socket is made on a thread that entered ns; that
// thread is never unlocked, so it dies with its goroutine instead of going
// back to the scheduler in the wrong namespace.
func sendFramesInNS(ns, ifname string, frames [][]byte) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			h, err := netns.GetFromName(ns)
			if err != nil {
				return err
			}
			defer h.Close()
			if err := netns.Set(h); err != nil {
				return fmt.Errorf("entering %s: %w", ns, err)
			}
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return err
			}
			// Protocol 0: send only, receive nothing.
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("packet socket: %w", err)
			}
			defer unix.Close(fd)
			to := &unix.SockaddrLinklayer{
				Protocol: htons(unix.ETH_P_IPV6),
				Ifindex:  ifi.Index,
				Halen:    6,
				Addr:     [8]byte{0x33, 0x33, 0, 0, 0, 1},
			}
			var errs []error
			for _, f := range frames {
				if err := unix.Sendto(fd, f, 0, to); err != nil {
					errs = append(errs, err)
				}
			}
			return errors.Join(errs...)
		}()
	}()
	return <-errc
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
