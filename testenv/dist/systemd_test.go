// Package disttest runs what is shipped against an FRR ToR of the lab
// (package testenv): the .deb under a real systemd (this file) and the
// container image under podman (podman_test.go).
//
// The .deb test installs fabricd into a real systemd and checks the unit's
// Type=notify start, STATUS line, reload, graceful restart, watchdog,
// hardening and stop, fabricd-wait-online.service's ordering, and the
// package's maintainer scripts on install, upgrade, removal and purge.
//
// systemd runs as PID 1 in new PID, mount, cgroup, UTS and IPC namespaces
// that share the network namespace of the lab's server c1 (its uplink ens3
// is a veth to the ToR's swp1, its pod hangs off a cali* veth). The .deb
// is installed with dpkg into overlays over /etc, /usr and /var that exist
// only in that mount namespace: the host's package database, files and
// units are never touched (see bootScript).
//
// It needs root, systemd, dpkg and FRR; without them it skips.
package disttest

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

func skipReason() string {
	if os.Geteuid() != 0 {
		return "needs root"
	}
	for _, p := range []string{"/lib/systemd/systemd", "/usr/lib/frr/bgpd"} {
		if _, err := os.Stat(p); err != nil {
			return "needs " + p
		}
	}
	for _, tool := range []string{"unshare", "nsenter", "dpkg", "ping"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "needs " + tool
		}
	}
	return ""
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// packages are two .debs of the same binaries with increasing versions,
// for an upgrade.
type packages struct {
	bin    string // the static binaries packaged
	v1, v2 string // .deb paths
}

// releaseBinaries returns a directory with the static fabricd and
// fabricctl as packaged: FABRICD_RELEASE_BIN (make passes bin/release, what
// make deb and make image package) or binaries built for this test.
func releaseBinaries(t *testing.T, repo string) string {
	t.Helper()
	if dir := os.Getenv("FABRICD_RELEASE_BIN"); dir != "" {
		return dir
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dir+"/", "./cmd/fabricd", "./cmd/fabricctl")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building fabricd: %v\n%s", err, out)
	}
	return dir
}

// buildDebs packages the release binaries twice, with the program make deb
// runs.
func buildDebs(t *testing.T) packages {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := packages{bin: releaseBinaries(t, repo)}
	for i, v := range []string{"0.0.1~e2e1", "0.0.1~e2e2"} {
		out := filepath.Join(dir, fmt.Sprintf("fabricd_%s_amd64.deb", v))
		cmd := exec.Command("go", "-C", filepath.Join(repo, "packaging"), "run", "./cmd/fabricd-dist",
			"--repo", repo, "--bin", p.bin, "--version", v, "--out", out, "deb")
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building the .deb: %v\n%s", err, msg)
		}
		if i == 0 {
			p.v1 = out
		} else {
			p.v2 = out
		}
	}
	return p
}

const baseConfig = `# written by the systemd end-to-end test
asn = 65001
router-id = "1.1.1.1"

[[neighbor]]
interface = "ens3"

[[announce]]
prefix = "1.1.1.1/32"

[[announce]]
prefix = "10.1.8.192/26"
blackhole = true

[api]
group = "adm"
`

// reloadPrefix is announced by the configuration the reload applies.
var reloadPrefix = netip.MustParsePrefix("10.1.9.0/24")

// dependentUnit stands for kubelet: it needs the fabric and records the
// routes it found when it started.
const dependentUnit = `[Unit]
Description=needs the fabric (stands for kubelet)
Wants=fabricd-wait-online.service
After=fabricd-wait-online.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'ip -4 route show proto bgp > /run/fabricd-e2e/routes-at-dependent-start'
`

type env struct {
	c    *container
	lab  *testenv.Lab
	tor  *testenv.Router
	s    *testenv.Server
	pkgs packages
}

func TestPackagedUnitUnderSystemd(t *testing.T) {
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	ctx := ctxFor(t, 10*time.Minute)
	e := &env{pkgs: buildDebs(t)}
	labDir, err := os.MkdirTemp("", "fabricd-systemd-lab-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(labDir, 0o755) // user frr writes the ToR's logs below it
	lab, err := testenv.New(ctx, testenv.Options{
		Role:           testenv.RoleFabricd,
		FabricdBinary:  filepath.Join(e.pkgs.bin, "fabricd"), // not started: systemd runs the packaged one
		Servers:        testenv.SeedServers()[:1],
		ToRExtraConfig: "bgp graceful-restart",
		Dir:            labDir,
		Logf:           t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.lab, e.tor, e.s = lab, lab.ToR(0), lab.Server("c1")
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
		os.RemoveAll(labDir)
	})
	// Registered after the lab's Close, so it runs first: fabricd leaves
	// the namespace before the namespace goes.
	e.c = boot(ctx, t, e.s.Namespace())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- journal ----\n%s", tail(e.c.journal(context.Background(), "fabricd.service"), 80))
			t.Logf("---- ToR log ----\n%s", tail(e.tor.Log(), 40))
		}
	})

	for _, step := range []struct {
		name string
		run  func(context.Context, *testing.T, *env)
	}{
		{"install enables but does not start", testInstall},
		{"start returns when ready, session established", testStart},
		{"reload adds an announcement, session kept", testReload},
		{"restart loses no packet", testRestart},
		{"hung fabricd is killed by the watchdog, no packet lost", testWatchdog},
		{"stop withdraws the routes", testStop},
		{"wait-online orders a dependent unit after the routes", testWaitOnline},
		{"upgrade restarts gracefully, keeps the config", testUpgrade},
		{"hardening: no permission errors", testHardening},
		{"remove stops and withdraws, purge cleans up", testRemove},
	} {
		if !t.Run(step.name, func(t *testing.T) { step.run(ctx, t, e) }) {
			return // every step builds on the one before
		}
	}
}

func testInstall(ctx context.Context, t *testing.T, e *env) {
	out, err := e.c.exec(ctx, nil, "dpkg", "-i", "/run/fabricd-e2e/"+relWork(t, e, e.pkgs.v1))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "enabled but not started") {
		t.Errorf("postinst did not tell that fabricd needs configuring:\n%s", out)
	}
	if got, _ := e.c.systemctl(ctx, "is-enabled", "fabricd.service"); strings.TrimSpace(got) != "enabled" {
		t.Errorf("fabricd.service is %q after a fresh install, want enabled", strings.TrimSpace(got))
	}
	if got, _ := e.c.systemctl(ctx, "is-enabled", "fabricd-wait-online.service"); strings.TrimSpace(got) != "disabled" {
		t.Errorf("fabricd-wait-online.service is %q after a fresh install, want disabled", strings.TrimSpace(got))
	}
	if st := e.c.show(ctx, "fabricd.service", "ActiveState"); st != "inactive" {
		t.Errorf("fabricd.service is %s after a fresh install: it must not start with the example config", st)
	}
	if out, err := e.c.exec(ctx, nil, "stat", "-c", "%a %U:%G", "/etc/fabricd/fabricd.toml"); err != nil || strings.TrimSpace(out) != "640 root:root" {
		t.Errorf("/etc/fabricd/fabricd.toml: %q %v", out, err)
	}
	// The host's package database knows nothing of it.
	if out, err := exec.Command("dpkg-query", "-W", "fabricd").CombinedOutput(); err == nil {
		t.Errorf("the host's dpkg now lists fabricd: %s", out)
	}
	if err := e.c.writeFile(ctx, "/etc/fabricd/fabricd.toml", []byte(baseConfig)); err != nil {
		t.Fatal(err)
	}
}

// relWork is path relative to the work directory, bind-mounted at
// /run/fabricd-e2e; packages are copied there first.
func relWork(t *testing.T, e *env, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(path)
	if err := os.WriteFile(filepath.Join(e.c.work, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func testStart(ctx context.Context, t *testing.T, e *env) {
	begin := time.Now()
	if _, err := e.c.systemctl(ctx, "start", "fabricd.service"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	// Type=notify: start returned after READY=1, so the service is running
	// and its API answers now, without retrying.
	if st := e.c.show(ctx, "fabricd.service", "ActiveState") + "/" + e.c.show(ctx, "fabricd.service", "SubState"); st != "active/running" {
		t.Fatalf("after systemctl start: %s", st)
	}
	if out, err := e.c.exec(ctx, nil, "fabricctl", "show", "bgp", "summary"); err != nil {
		t.Fatalf("the API does not answer right after start returned: %v", err)
	} else if !strings.Contains(out, "local AS number 65001") {
		t.Errorf("show bgp summary:\n%s", out)
	}
	// [api] group: fabricd chowns its socket, which the unit's system call
	// filter must allow.
	if out, err := e.c.exec(ctx, nil, "stat", "-c", "%a %U:%G", "/run/fabricd/fabricd.sock"); err != nil || strings.TrimSpace(out) != "660 root:adm" {
		t.Errorf("API socket: %q %v, want 660 root:adm", out, err)
	}
	if status := e.c.show(ctx, "fabricd.service", "StatusText"); !strings.Contains(status, "uplinks forwarding") {
		t.Errorf("no STATUS= with READY=1: %q", status)
	}
	t.Logf("systemctl start took %v", took.Round(time.Millisecond))
	waitEstablished(ctx, t, e)
	established := time.Since(begin)
	waitStatus(ctx, t, e, "1 of 1 uplinks forwarding")
	out, _ := e.c.systemctl(ctx, "status", "fabricd.service")
	if !regexp.MustCompile(`Status: "1 of 1 uplinks forwarding, \d+ routes installed"`).MatchString(out) {
		t.Errorf("systemctl status shows no STATUS line:\n%s", out)
	}
	t.Logf("session Established at the ToR %v after systemctl start; systemctl status:\n%s", established.Round(time.Millisecond), out)
}

func testReload(ctx context.Context, t *testing.T, e *env) {
	before := torPeer(ctx, t, e)
	cfg := baseConfig + fmt.Sprintf("\n[[announce]]\nprefix = %q\n", reloadPrefix)
	if err := e.c.writeFile(ctx, "/etc/fabricd/fabricd.toml", []byte(cfg)); err != nil {
		t.Fatal(err)
	}
	pid := e.c.show(ctx, "fabricd.service", "MainPID")
	if _, err := e.c.systemctl(ctx, "reload", "fabricd.service"); err != nil {
		t.Fatal(err)
	}
	waitToRPrefix(ctx, t, e, reloadPrefix, true)
	after := torPeer(ctx, t, e)
	if after.State != "Established" || after.ConnectionsEstablished != before.ConnectionsEstablished {
		t.Errorf("the reload reset the session: before %+v, after %+v", before, after)
	}
	if got := e.c.show(ctx, "fabricd.service", "MainPID"); got != pid {
		t.Errorf("the reload replaced the process (%s -> %s)", pid, got)
	}

	// A broken file is refused, by systemctl reload itself, and nothing
	// changes.
	if err := e.c.writeFile(ctx, "/etc/fabricd/fabricd.toml", []byte(cfg+"\nbogus-key = 1\n")); err != nil {
		t.Fatal(err)
	}
	out, err := e.c.systemctl(ctx, "reload", "fabricd.service")
	if err == nil {
		t.Errorf("systemctl reload of an invalid configuration succeeded:\n%s", out)
	}
	if st := e.c.show(ctx, "fabricd.service", "ActiveState"); st != "active" {
		t.Errorf("after a refused reload fabricd is %s", st)
	}
	if err := e.c.writeFile(ctx, "/etc/fabricd/fabricd.toml", []byte(cfg)); err != nil {
		t.Fatal(err)
	}
	if p := torPeer(ctx, t, e); p.ConnectionsEstablished != before.ConnectionsEstablished || p.State != "Established" {
		t.Errorf("the refused reload reset the session: %+v", p)
	}
	waitToRPrefix(ctx, t, e, reloadPrefix, true)
}

func testRestart(ctx context.Context, t *testing.T, e *env) {
	pid := e.c.show(ctx, "fabricd.service", "MainPID")
	sent, received := pingFlood(ctx, t, e, func() {
		if _, err := e.c.systemctl(ctx, "restart", "fabricd.service"); err != nil {
			t.Error(err)
			return
		}
		waitEstablished(ctx, t, e)
		waitStatus(ctx, t, e, "1 of 1 uplinks forwarding")
	})
	if got := e.c.show(ctx, "fabricd.service", "MainPID"); got == pid {
		t.Errorf("systemctl restart did not replace fabricd (pid %s)", pid)
	}
	if j := e.c.journal(ctx, "fabricd.service"); !strings.Contains(j, "stopping for a restart") {
		t.Errorf("fabricd did not stop for a restart (SIGUSR1) on systemctl restart")
	}
	t.Logf("ping through c1 every 10 ms during systemctl restart: %d sent, %d received", sent, received)
	if sent < 100 || received != sent {
		t.Errorf("lost %d of %d packets", sent-received, sent)
	}
}

func testWatchdog(ctx context.Context, t *testing.T, e *env) {
	pid := e.c.show(ctx, "fabricd.service", "MainPID")
	watchdog := e.c.show(ctx, "fabricd.service", "WatchdogUSec")
	var took time.Duration
	sent, received := pingFlood(ctx, t, e, func() {
		begin := time.Now()
		if _, err := e.c.exec(ctx, nil, "kill", "-STOP", pid); err != nil {
			t.Error(err)
			return
		}
		err := testenv.WaitFor(ctx, 3*time.Minute, "systemd to replace the hung fabricd", func() error {
			if got := e.c.show(ctx, "fabricd.service", "MainPID"); got == pid || got == "0" {
				return fmt.Errorf("MainPID %s", got)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
			return
		}
		took = time.Since(begin)
		waitEstablished(ctx, t, e)
		waitStatus(ctx, t, e, "1 of 1 uplinks forwarding")
	})
	j := e.c.journal(ctx, "fabricd.service")
	if !strings.Contains(j, "Watchdog timeout") {
		t.Errorf("the journal does not say the watchdog fired")
	}
	t.Logf("WatchdogSec %s: hung fabricd replaced after %v; ping every 10 ms meanwhile: %d sent, %d received",
		watchdog, took.Round(time.Millisecond), sent, received)
	if sent < 100 || received != sent {
		t.Errorf("lost %d of %d packets while fabricd hung", sent-received, sent)
	}
}

func testStop(ctx context.Context, t *testing.T, e *env) {
	begin := time.Now()
	if _, err := e.c.systemctl(ctx, "stop", "fabricd.service"); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	// Withdrawn at once, not after the ToR's hold time.
	for _, p := range []string{"1.1.1.1/32", "10.1.8.192/26", reloadPrefix.String()} {
		present, err := torHasPrefix(ctx, e, netip.MustParsePrefix(p))
		if err != nil {
			t.Fatal(err)
		}
		if present {
			t.Errorf("the ToR still has %s right after systemctl stop", p)
		}
	}
	if out, _ := e.s.Exec(ctx, "ip", "route", "show", "proto", "bgp"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left in the kernel after stop:\n%s", out)
	}
	t.Logf("systemctl stop took %v", took.Round(time.Millisecond))
}

func testWaitOnline(ctx context.Context, t *testing.T, e *env) {
	if err := e.c.writeFile(ctx, "/run/systemd/system/fabricd-e2e-dependent.service", []byte(dependentUnit)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.systemctl(ctx, "daemon-reload"); err != nil {
		t.Fatal(err)
	}
	// fabricd is stopped: the dependent unit pulls in wait-online, which
	// pulls in fabricd, and starts only once the routes are in.
	if _, err := e.c.systemctl(ctx, "start", "fabricd-e2e-dependent.service"); err != nil {
		t.Fatal(err)
	}
	seen, err := os.ReadFile(filepath.Join(e.c.work, "routes-at-dependent-start"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(seen), "4.4.4.4 ") {
		t.Errorf("the dependent unit started before the fabric's routes were in; it saw:\n%s", seen)
	}
	if st := e.c.show(ctx, "fabricd.service", "ActiveState"); st != "active" {
		t.Errorf("fabricd is %s", st)
	}
	waitStatus(ctx, t, e, "1 of 1 uplinks forwarding")
}

func testUpgrade(ctx context.Context, t *testing.T, e *env) {
	pid := e.c.show(ctx, "fabricd.service", "MainPID")
	admin, err := e.c.exec(ctx, nil, "cat", "/etc/fabricd/fabricd.toml")
	if err != nil {
		t.Fatal(err)
	}
	deb := relWork(t, e, e.pkgs.v2)
	var out string
	sent, received := pingFlood(ctx, t, e, func() {
		var err error
		if out, err = e.c.exec(ctx, nil, "dpkg", "-i", "/run/fabricd-e2e/"+deb); err != nil {
			t.Error(err)
			return
		}
		waitEstablished(ctx, t, e)
		waitStatus(ctx, t, e, "1 of 1 uplinks forwarding")
	})
	if v, _ := e.c.exec(ctx, nil, "dpkg-query", "-W", "-f", "${Version}", "fabricd"); v != "0.0.1~e2e2" {
		t.Errorf("installed version %q after the upgrade", v)
	}
	if got := e.c.show(ctx, "fabricd.service", "MainPID"); got == pid {
		t.Errorf("the upgrade did not restart fabricd (pid %s)", pid)
	}
	if now, _ := e.c.exec(ctx, nil, "cat", "/etc/fabricd/fabricd.toml"); now != admin {
		t.Errorf("the upgrade changed the administrator's /etc/fabricd/fabricd.toml:\n%s", now)
	}
	if n := strings.Count(e.c.journal(ctx, "fabricd.service"), "stopping for a restart"); n < 2 {
		t.Errorf("the upgrade did not restart fabricd gracefully (SIGUSR1)")
	}
	t.Logf("dpkg -i of the next version:\n%s\nping every 10 ms meanwhile: %d sent, %d received", out, sent, received)
	if sent < 100 || received != sent {
		t.Errorf("lost %d of %d packets during the upgrade", sent-received, sent)
	}
}

// permissionErrors are what a sandboxing option that takes away something
// fabricd needs would cause.
var permissionErrors = regexp.MustCompile(`(?i)operation not permitted|permission denied|read-only file system|EPERM|EACCES|EROFS|bad system call|SIGSYS`)

func testHardening(ctx context.Context, t *testing.T, e *env) {
	j := e.c.journal(ctx, "fabricd.service")
	for _, line := range strings.Split(j, "\n") {
		if permissionErrors.MatchString(line) {
			t.Errorf("journal: %s", line)
		}
	}
	// Everything the unit promises is in force in the running process.
	pid := e.c.show(ctx, "fabricd.service", "MainPID")
	status, err := e.c.exec(ctx, nil, "cat", "/proc/"+pid+"/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapBnd:\t0000000000003401", "CapEff:\t0000000000003401"} {
		if !strings.Contains(status, want) {
			t.Errorf("fabricd's /proc/PID/status lacks %q", want)
		}
	}
	sec, err := e.c.exec(ctx, nil, "systemd-analyze", "security", "--no-pager", "fabricd.service")
	if err != nil {
		t.Logf("systemd-analyze security: %v", err)
	}
	if i := strings.Index(sec, "→ Overall exposure level"); i >= 0 {
		t.Logf("systemd-analyze security fabricd.service: %s", strings.TrimSpace(sec[i:]))
	}
	if os.Getenv("FABRICD_SYSTEMD_SECURITY") != "" {
		t.Logf("systemd-analyze security fabricd.service:\n%s", sec)
	}
}

func testRemove(ctx context.Context, t *testing.T, e *env) {
	if _, err := e.c.exec(ctx, nil, "dpkg", "-r", "fabricd"); err != nil {
		t.Fatal(err)
	}
	if st := e.c.show(ctx, "fabricd.service", "ActiveState"); st == "active" {
		t.Errorf("fabricd still runs after dpkg -r")
	}
	if present, _ := torHasPrefix(ctx, e, netip.MustParsePrefix("1.1.1.1/32")); present {
		t.Error("the ToR still has 1.1.1.1/32 after dpkg -r")
	}
	if _, err := e.c.exec(ctx, nil, "test", "-e", "/usr/sbin/fabricd"); err == nil {
		t.Error("/usr/sbin/fabricd is still there after dpkg -r")
	}
	if _, err := e.c.exec(ctx, nil, "test", "-e", "/etc/fabricd/fabricd.toml"); err != nil {
		t.Error("dpkg -r removed the conffile; only purge may")
	}
	if _, err := e.c.exec(ctx, nil, "dpkg", "-P", "fabricd"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/etc/fabricd/fabricd.toml", "/etc/systemd/system/multi-user.target.wants/fabricd.service"} {
		if _, err := e.c.exec(ctx, nil, "test", "-e", p); err == nil {
			t.Errorf("%s is still there after dpkg -P", p)
		}
	}
}

// pingFlood pings the ToR's loopback from c1's pod every 10 ms while fn
// runs: c1 forwards the pod's packets by the routes fabricd installed, and
// the ToR sends the replies back by the route it learned from c1.
func pingFlood(ctx context.Context, t *testing.T, e *env, fn func()) (sent, received int) {
	t.Helper()
	pod := e.s.Pod(0)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", pod.Namespace(), "ping", "-q", "-i", "0.01", "-W", "1", "4.4.4.4")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // some traffic before
	fn()
	time.Sleep(500 * time.Millisecond) // and after
	cmd.Process.Signal(os.Interrupt)   // ping prints its summary and exits
	cmd.Wait()
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no ping summary in %q", out.String())
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received
}

func torPeer(ctx context.Context, t *testing.T, e *env) testenv.BGPPeer {
	t.Helper()
	peers, err := e.tor.BGPPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return peers[e.tor.PortFor("c1")]
}

func waitEstablished(ctx context.Context, t *testing.T, e *env) {
	t.Helper()
	err := testenv.WaitFor(ctx, 60*time.Second, "the ToR's session with c1", func() error {
		peers, err := e.tor.BGPPeers(ctx)
		if err != nil {
			return err
		}
		if p := peers[e.tor.PortFor("c1")]; p.State != "Established" || p.PfxRcd < 2 {
			return fmt.Errorf("%+v", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func waitStatus(ctx context.Context, t *testing.T, e *env, want string) {
	t.Helper()
	err := testenv.WaitFor(ctx, 60*time.Second, "fabricd's STATUS "+want, func() error {
		if s := e.c.show(ctx, "fabricd.service", "StatusText"); !strings.Contains(s, want) {
			return fmt.Errorf("StatusText %q", s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func torHasPrefix(ctx context.Context, e *env, p netip.Prefix) (bool, error) {
	var table struct {
		Routes map[string]any `json:"routes"`
	}
	if err := e.tor.VtyshJSON(ctx, "show bgp ipv4 unicast json", &table); err != nil {
		return false, err
	}
	_, ok := table.Routes[p.String()]
	return ok, nil
}

func waitToRPrefix(ctx context.Context, t *testing.T, e *env, p netip.Prefix, present bool) {
	t.Helper()
	err := testenv.WaitFor(ctx, 30*time.Second, fmt.Sprintf("the ToR to have %v: %v", p, present), func() error {
		ok, err := torHasPrefix(ctx, e, p)
		if err != nil {
			return err
		}
		if ok != present {
			return fmt.Errorf("present: %v", ok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
