package disttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// bootScript runs inside fresh PID, mount, cgroup, UTS and IPC namespaces
// that share a lab server's network namespace, and becomes systemd. Every
// write systemd, dpkg or the units make lands in tmpfs or in overlays, so
// the host's files, package database and units stay as they are:
//
//   - /etc, /usr and /var are overlays whose upper layers live in a tmpfs:
//     dpkg -i installs for real, maintainer scripts and all, into this
//     namespace only;
//   - /run and /tmp are new tmpfs (systemd-tmpfiles would otherwise clean
//     the host's /tmp); the test's work directory is bind-mounted at
//     /run/fabricd-e2e to pass packages and configs in;
//   - /sys is a new sysfs (so it shows this network namespace) with the
//     cgroup2 hierarchy of the test's own cgroup at /sys/fs/cgroup;
//   - the host's units would reach global state (systemd-sysctl sets
//     kernel.* sysctls, modules-load, binfmt, udev): every *.wants link but
//     the journal's is removed, generators too, so the boot target pulls in
//     only what the test asks for;
//   - a /usr/sbin/policy-rc.d, which container images such as this
//     machine's carry to keep maintainer scripts from starting anything, is
//     removed, so deb-systemd-invoke acts as on an ordinary Debian host.
const bootScript = `#!/bin/sh
set -eu
work=$1
mount -t tmpfs -o mode=0700 fabricd-e2e-overlays "$work/ovl"
for d in etc usr var; do
	mkdir "$work/ovl/$d.upper" "$work/ovl/$d.work"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/ovl/$d.upper,workdir=$work/ovl/$d.work" "/$d"
done
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/fabricd-e2e /run/systemd/system
mount --bind "$work" /run/fabricd-e2e
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t sysfs sysfs /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for d in /etc/systemd/system/*.wants /lib/systemd/system/*.wants; do
	for u in "$d"/*; do
		case "${u##*/}" in
		systemd-journald.service|systemd-journald.socket|systemd-journald-dev-log.socket) ;;
		*) rm -f "$u" ;;
		esac
	done
done
rm -f /lib/systemd/system-generators/*
rm -f /usr/sbin/policy-rc.d
cat > /run/systemd/system/fabricd-e2e.target <<'EOF'
[Unit]
Description=fabricd end-to-end test
Requires=sysinit.target
After=sysinit.target
EOF
exec env container=fabricd-e2e /lib/systemd/systemd --system --unit=fabricd-e2e.target
`

// container is a systemd running as PID 1 in its own namespaces.
type container struct {
	t      *testing.T
	work   string // host path, /run/fabricd-e2e inside
	cgroup string // its cgroup2 directory on the host
	cmd    *exec.Cmd
	pid    int // systemd's PID in the host's PID namespace
}

// cgroup2Root finds where the cgroup2 hierarchy is mounted
// (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host) and this
// process's cgroup in it.
func cgroup2Root() (string, error) {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	mnt := ""
	for _, line := range strings.Split(string(mounts), "\n") {
		// ... mount-point ... - fstype source options
		pre, post, ok := strings.Cut(line, " - ")
		if ok && strings.HasPrefix(post, "cgroup2 ") {
			mnt = strings.Fields(pre)[4]
			break
		}
	}
	if mnt == "" {
		return "", errors.New("no cgroup2 hierarchy is mounted")
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(self), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(mnt, path), nil
		}
	}
	return "", errors.New("this process has no cgroup2 cgroup")
}

// boot starts systemd in the network namespace netns and waits until it
// has reached its target.
func boot(ctx context.Context, t *testing.T, netns string) *container {
	t.Helper()
	root, err := cgroup2Root()
	if err != nil {
		t.Skipf("systemd needs a cgroup2 hierarchy: %v", err)
	}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	c := &container{t: t, work: t.TempDir(), cgroup: filepath.Join(root, "fabricd-e2e-"+hex.EncodeToString(suffix))}
	if err := os.Mkdir(c.cgroup, 0o755); err != nil {
		t.Fatalf("creating a cgroup for systemd: %v", err)
	}
	if err := os.Mkdir(filepath.Join(c.work, "ovl"), 0o700); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(c.work, "boot.sh")
	if err := os.WriteFile(script, []byte(bootScript), 0o755); err != nil {
		t.Fatal(err)
	}
	console, err := os.Create(filepath.Join(c.work, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	// The shell moves itself into the new cgroup, which the cgroup
	// namespace then makes systemd's root: systemd builds its tree there
	// and cleanup can kill everything in it at once.
	c.cmd = exec.Command("sh", "-c", `echo $$ > "$1/cgroup.procs" && exec nsenter --net="/run/netns/$2" -- `+
		`unshare --cgroup --pid --fork --kill-child --mount --uts --ipc --mount-proc /bin/sh "$3" "$4"`,
		"sh", c.cgroup, netns, script, c.work)
	c.cmd.Stdout, c.cmd.Stderr = console, console
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)

	err = testenv.WaitFor(ctx, 20*time.Second, "systemd to boot", func() error {
		if c.pid == 0 {
			pid, err := c.findSystemd()
			if err != nil {
				return err
			}
			c.pid = pid
		}
		out, err := c.systemctl(ctx, "is-system-running")
		if strings.TrimSpace(out) == "running" {
			return nil
		}
		return fmt.Errorf("is-system-running: %q %v", strings.TrimSpace(out), err)
	})
	if err != nil {
		log, _ := os.ReadFile(console.Name())
		failed, _ := c.systemctl(ctx, "--failed", "--no-legend")
		t.Fatalf("%v\nconsole:\n%s\nfailed units:\n%s", err, log, failed)
	}
	return c
}

// findSystemd returns the PID of the process unshare forked, once it is
// systemd.
func (c *container) findSystemd() (int, error) {
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.cmd.Process.Pid, c.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(children))
	if len(f) != 1 {
		return 0, fmt.Errorf("unshare has children %q", f)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, err
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
		return 0, fmt.Errorf("process %d is %q, not systemd yet", pid, comm)
	}
	return pid, nil
}

// close kills everything in the container's cgroup (systemd, the units'
// processes, unshare) and removes the cgroups systemd made.
func (c *container) close() {
	if err := os.WriteFile(filepath.Join(c.cgroup, "cgroup.kill"), []byte("1"), 0); err != nil {
		c.t.Errorf("killing the container: %v", err)
		if c.pid != 0 {
			syscall.Kill(c.pid, syscall.SIGKILL)
		}
	}
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.t.Errorf("unshare (pid %d) did not exit", c.cmd.Process.Pid)
	}
	// Leaves first; a cgroup is removable once its processes are gone.
	err := testenv.WaitFor(context.Background(), 10*time.Second, "the container's cgroups to empty", func() error {
		var dirs []string
		filepath.WalkDir(c.cgroup, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		var errs []error
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		c.t.Errorf("removing the container's cgroups: %v", err)
	}
}

// exec runs argv inside the container's namespaces (as systemd's
// children see them) with stdin, and returns its combined output.
func (c *container) exec(ctx context.Context, stdin []byte, argv ...string) (string, error) {
	args := append([]string{"-t", strconv.Itoa(c.pid), "-m", "-u", "-i", "-n", "-p", "--"}, argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
		"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb"}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func (c *container) systemctl(ctx context.Context, args ...string) (string, error) {
	return c.exec(ctx, nil, append([]string{"systemctl", "--no-pager"}, args...)...)
}

// writeFile writes a file inside the container.
func (c *container) writeFile(ctx context.Context, path string, data []byte) error {
	_, err := c.exec(ctx, data, "sh", "-c", `cat > "$1"`, "sh", path)
	return err
}

// show returns a unit's property.
func (c *container) show(ctx context.Context, unit, prop string) string {
	out, _ := c.systemctl(ctx, "show", "--value", "-p", prop, unit)
	return strings.TrimSpace(out)
}

// journal returns the journal of unit since the given cursor-free point
// (all of it).
func (c *container) journal(ctx context.Context, unit string) string {
	out, _ := c.exec(ctx, nil, "journalctl", "--no-pager", "-o", "short-precise", "-u", unit)
	return out
}
