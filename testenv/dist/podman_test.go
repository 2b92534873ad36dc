package disttest

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// podman runs podman with its own storage under dir, so the test neither
// sees nor leaves images and containers on the host. vfs storage needs no
// mounts that could outlive the test.
type podman struct {
	dir string
}

func (p podman) run(ctx context.Context, args ...string) (string, error) {
	base := []string{"--root", filepath.Join(p.dir, "storage"), "--runroot", filepath.Join(p.dir, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
		// Debian 12's crun refuses hosts with both cgroup versions mounted
		// ("cgroups in hybrid mode not supported"), as this test machine
		// has them; runc runs there.
		"--runtime", "runc"}
	cmd := exec.CommandContext(ctx, "podman", append(base, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// The image as the DaemonSet runs it: in the server's network namespace,
// every capability dropped but NET_ADMIN, NET_RAW and NET_BIND_SERVICE,
// no_new_privs, a read-only root, the config mounted at /etc/fabricd and
// the socket directory shared with the host. A container stop (SIGTERM,
// as on every rolling update) followed by a start loses no packet.
func TestImageUnderPodman(t *testing.T) {
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("needs podman")
	}
	ctx := ctxFor(t, 5*time.Minute)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := releaseBinaries(t, repo)
	work := t.TempDir()
	archive := filepath.Join(work, "fabricd-image.tar")
	out, err := exec.Command("go", "-C", filepath.Join(repo, "packaging"), "run", "./cmd/fabricd-dist",
		"--repo", repo, "--bin", bin, "--version", "0.0.1~e2e1", "--out", archive, "image").CombinedOutput()
	if err != nil {
		t.Fatalf("building the image: %v\n%s", err, out)
	}
	digest := strings.Fields(string(out))[2]

	pm := podman{dir: filepath.Join(work, "podman")}
	// Before t.TempDir's removal: podman's state and the image copies.
	t.Cleanup(func() { pm.run(context.Background(), "system", "reset", "--force") })
	loaded, err := pm.run(ctx, "load", "--input", archive)
	if err != nil {
		t.Fatalf("podman cannot load the image: %v", err)
	}
	if !strings.Contains(loaded, "localhost/fabricd:0.0.1-e2e1") {
		t.Fatalf("podman load named the image otherwise:\n%s", loaded)
	}
	if got, err := pm.run(ctx, "image", "inspect", "--format", "{{.Digest}}", "localhost/fabricd:0.0.1-e2e1"); err != nil || strings.TrimSpace(got) != digest {
		t.Errorf("podman sees digest %q (%v), fabricd-dist wrote %s", strings.TrimSpace(got), err, digest)
	}

	labDir, err := os.MkdirTemp("", "fabricd-podman-lab-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(labDir, 0o755)
	lab, err := testenv.New(ctx, testenv.Options{
		Role:           testenv.RoleFabricd,
		FabricdBinary:  filepath.Join(bin, "fabricd"), // not started: podman runs the image's
		Servers:        testenv.SeedServers()[:1],
		ToRExtraConfig: "bgp graceful-restart",
		Dir:            labDir,
		Logf:           t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
		os.RemoveAll(labDir)
	})
	e := &env{lab: lab, tor: lab.ToR(0), s: lab.Server("c1")}

	conf, run := filepath.Join(work, "etc"), filepath.Join(work, "run")
	for _, d := range []string{conf, run} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := strings.Replace(baseConfig, "\n[api]\ngroup = \"adm\"\n", "", 1) // no CAP_CHOWN in the container
	if err := os.WriteFile(filepath.Join(conf, "fabricd.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "fabricd-e2e-" + lab.Prefix()
	_, err = pm.run(ctx, "run", "--detach", "--name", name,
		"--network", "ns:/run/netns/"+e.s.Namespace(),
		"--cap-drop", "all", "--cap-add", "NET_ADMIN,NET_RAW,NET_BIND_SERVICE",
		"--security-opt", "no-new-privileges", "--read-only",
		// podman's defaults raise RLIMIT_NOFILE and RLIMIT_NPROC, which
		// needs CAP_SYS_RESOURCE; this test machine's sandbox has none (and
		// refuses even this process's own values): lower ones. fabricd
		// needs a few dozen descriptors and threads.
		"--ulimit", "nofile=4096:4096", "--ulimit", "nproc=16384:16384",
		"--volume", conf+":/etc/fabricd:ro", "--volume", run+":/run/fabricd",
		"localhost/fabricd:0.0.1-e2e1")
	if err != nil && strings.Contains(err.Error(), "OCI runtime") {
		// The runtime cannot create containers on this machine at all
		// (cgroups, limits): not the image's fault.
		t.Skipf("podman cannot run containers here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pm.run(context.Background(), "rm", "--force", "--time", "0", name) })
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := pm.run(context.Background(), "logs", name)
			t.Logf("---- container log ----\n%s", tail(logs, 60))
		}
	})

	waitEstablished(ctx, t, e)
	waitToRPrefix(ctx, t, e, netip.MustParsePrefix("10.1.8.192/26"), true)
	// The probes' commands, exec'd without a shell.
	if out, err := pm.run(ctx, "exec", name, "/usr/bin/fabricctl", "--socket=/run/fabricd/fabricd.sock", "wait-online", "--timeout=30s"); err != nil {
		t.Fatalf("readiness probe: %v", err)
	} else {
		t.Logf("readiness probe: %s", strings.TrimSpace(out))
	}
	if _, err := pm.run(ctx, "exec", name, "/bin/sh", "-c", "true"); err == nil {
		t.Error("the image has a shell")
	}

	// A rolling update: SIGTERM (podman stop), then a new container.
	sent, received := pingFlood(ctx, t, e, func() {
		if _, err := pm.run(ctx, "stop", "--time", "15", name); err != nil {
			t.Error(err)
			return
		}
		if logs, _ := pm.run(ctx, "logs", name); !strings.Contains(logs, "stopping for a restart") {
			t.Error("SIGTERM did not make fabricd stop for a restart (--sigterm=restart)")
		}
		if _, err := pm.run(ctx, "start", name); err != nil {
			t.Error(err)
			return
		}
		waitEstablished(ctx, t, e)
		err := testenv.WaitFor(ctx, 30*time.Second, "routes after the container's restart", func() error {
			_, err := pm.run(ctx, "exec", name, "/usr/bin/fabricctl", "wait-online", "--timeout=1s")
			return err
		})
		if err != nil {
			t.Error(err)
		}
	})
	t.Logf("ping through c1 every 10 ms during podman stop + start: %d sent, %d received", sent, received)
	if sent < 100 || received != sent {
		t.Errorf("lost %d of %d packets", sent-received, sent)
	}
}
