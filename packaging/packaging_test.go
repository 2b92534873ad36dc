package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDir holds the static binaries the tests package: FABRICD_RELEASE_BIN
// (make passes bin/release, which make deb packages too) or, without it,
// binaries built once for this run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	defer func() {
		for _, c := range cleanups {
			c()
		}
	}()
	if dir := os.Getenv("FABRICD_RELEASE_BIN"); dir != "" {
		binDir = dir
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "fabricd-packaging-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dir+"/", "./cmd/fabricd", "./cmd/fabricctl")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building fabricd: %v\n%s", err, out)
		return 1
	}
	binDir = dir
	return m.Run()
}

func testSpec() Spec {
	return Spec{
		Repo:       "..",
		BinDir:     binDir,
		Version:    "1.2.3~rc1+git4.gabcdef012345",
		Time:       time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),
		Arch:       "amd64",
		Maintainer: "fabricd maintainers <fabricd@example.org>",
	}
}

// artefact builds format once per test binary run (the checks share it)
// and returns its path.
var (
	artefactMu   sync.Mutex
	artefactPath = map[string]string{}
)

func artefact(t *testing.T, format string) string {
	t.Helper()
	artefactMu.Lock()
	defer artefactMu.Unlock()
	if p, ok := artefactPath[format]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "fabricd-artefact-")
	if err != nil {
		t.Fatal(err)
	}
	// Shared by the tests: removed when the process exits (see cleanups).
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, testSpec().FileName(format))
	if err := os.WriteFile(p, build(t, testSpec(), format), 0o644); err != nil {
		t.Fatal(err)
	}
	artefactPath[format] = p
	return p
}

var cleanups []func()

func build(t *testing.T, s Spec, format string) []byte {
	t.Helper()
	var b bytes.Buffer
	if format == "image" {
		if _, err := s.WriteImage(&b); err != nil {
			t.Fatal(err)
		}
	} else if err := s.Package(format, &b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (make deps installs it)", name)
	}
	return p
}

func runTool(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

// Two builds of the same inputs, a second apart and from different
// staging directories, give the same bytes; for the image that is the same
// digest. (That Spec.Time is what gets written is checked per format.)
func TestReproducible(t *testing.T) {
	t.Parallel()
	formats := []string{"deb", "rpm", "image"}
	first := map[string][]byte{}
	for _, format := range formats {
		b, err := os.ReadFile(artefact(t, format))
		if err != nil {
			t.Fatal(err)
		}
		first[format] = b
	}
	time.Sleep(1100 * time.Millisecond) // a clock that leaks in would show
	for _, format := range formats {
		if again := build(t, testSpec(), format); !bytes.Equal(first[format], again) {
			t.Errorf("two %s builds of the same inputs differ (%d and %d bytes)", format, len(first[format]), len(again))
		}
	}
	a, _ := openImage(t, first["image"])
	da, _ := a.Digest()
	t.Logf("image digest for the test inputs, twice: %s", da)
}

type debEntry struct {
	mode, owner string
}

func TestDebContents(t *testing.T) {
	t.Parallel()
	dpkgDeb := lookTool(t, "dpkg-deb")
	deb := artefact(t, "deb")
	listing, err := runTool(dpkgDeb, "--contents", deb)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]debEntry{}
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		// -rwxr-xr-x root/root 21360802 2026-12-01 12:00 ./usr/sbin/fabricd
		if len(f) < 6 {
			t.Fatalf("dpkg-deb listing line %q", line)
		}
		if f[3]+" "+f[4] != "2026-12-01 12:00" {
			t.Errorf("%s has time %s %s, not Spec.Time", f[5], f[3], f[4])
		}
		got[strings.TrimPrefix(f[5], ".")] = debEntry{f[0], f[1]}
	}
	want := map[string]debEntry{
		"/usr/sbin/fabricd":                                                       {"-rwxr-xr-x", "root/root"},
		"/usr/bin/fabricctl":                                                      {"-rwxr-xr-x", "root/root"},
		"/lib/systemd/system/fabricd.service":                                     {"-rw-r--r--", "root/root"},
		"/lib/systemd/system/fabricd-wait-online.service":                         {"-rw-r--r--", "root/root"},
		"/etc/fabricd/fabricd.toml":                                               {"-rw-r-----", "root/root"},
		"/usr/share/bash-completion/completions/fabricctl":                        {"-rw-r--r--", "root/root"},
		"/usr/share/man/man8/fabricd.8.gz":                                        {"-rw-r--r--", "root/root"},
		"/usr/share/man/man8/fabricctl.8.gz":                                      {"-rw-r--r--", "root/root"},
		"/usr/share/man/man5/fabricd.toml.5.gz":                                   {"-rw-r--r--", "root/root"},
		"/usr/share/doc/fabricd/copyright":                                        {"-rw-r--r--", "root/root"},
		"/usr/share/doc/fabricd/changelog.gz":                                     {"-rw-r--r--", "root/root"},
		"/usr/share/lintian/overrides/fabricd":                                    {"-rw-r--r--", "root/root"},
		"/usr/share/doc/fabricd/examples/kubelet.service.d/10-after-fabricd.conf": {"-rw-r--r--", "root/root"},
	}
	for path, w := range want {
		g, ok := got[path]
		if !ok {
			t.Errorf("the .deb lacks %s", path)
		} else if g != w {
			t.Errorf("%s: %s %s, want %s %s", path, g.mode, g.owner, w.mode, w.owner)
		}
	}
	for path, g := range got {
		if _, ok := want[path]; !ok && !strings.HasPrefix(g.mode, "d") {
			t.Errorf("the .deb holds %s, which this test does not know", path)
		}
	}

	control, err := runTool(dpkgDeb, "--field", deb, "Package", "Version", "Architecture", "Maintainer")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Package: fabricd", "Version: " + testSpec().Version, "Architecture: amd64"} {
		if !strings.Contains(control, w) {
			t.Errorf("control fields %q lack %q", control, w)
		}
	}

	ctrlDir := t.TempDir()
	if _, err := runTool(dpkgDeb, "--control", deb, ctrlDir); err != nil {
		t.Fatal(err)
	}
	conffiles, err := os.ReadFile(filepath.Join(ctrlDir, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(conffiles)) != "/etc/fabricd/fabricd.toml" {
		t.Errorf("conffiles: %q, want only /etc/fabricd/fabricd.toml (dpkg then never overwrites the administrator's copy)", conffiles)
	}
	for _, script := range []string{"postinst", "prerm", "postrm"} {
		fi, err := os.Stat(filepath.Join(ctrlDir, script))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s has mode %v", script, fi.Mode())
		}
		if out, err := runTool("sh", "-n", filepath.Join(ctrlDir, script)); err != nil {
			t.Errorf("%s is not valid sh: %v %s", script, err, out)
		}
	}

	data := t.TempDir()
	if _, err := runTool(dpkgDeb, "--extract", deb, data); err != nil {
		t.Fatal(err)
	}
	for _, u := range Units {
		src, err := os.ReadFile(filepath.Join(data, "lib/systemd/system", u))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(src), "/usr/local") {
			t.Errorf("%s still names /usr/local:\n%s", u, src)
		}
		if !strings.Contains(string(src), "Documentation=man:") {
			t.Errorf("%s's Documentation= does not point at the man pages", u)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(data, "lib/systemd/system/fabricd.service"))
	for _, want := range []string{"ExecStart=" + sbinFabricd + " ", "RestartKillSignal=SIGUSR1"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("fabricd.service lacks %q", want)
		}
	}
	wait, _ := os.ReadFile(filepath.Join(data, "lib/systemd/system/fabricd-wait-online.service"))
	if !strings.Contains(string(wait), "ExecStart="+binFabricctl+" wait-online") {
		t.Errorf("fabricd-wait-online.service does not run %s wait-online:\n%s", binFabricctl, wait)
	}
	// The packaged binaries are the ones given, byte for byte.
	for _, p := range [][2]string{{"usr/sbin/fabricd", "fabricd"}, {"usr/bin/fabricctl", "fabricctl"}} {
		a, _ := os.ReadFile(filepath.Join(data, p[0]))
		b, _ := os.ReadFile(filepath.Join(binDir, p[1]))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s in the .deb is not %s", p[0], filepath.Join(binDir, p[1]))
		}
	}
	// Man pages carry the version and render without warnings.
	if man, err := exec.LookPath("man"); err == nil {
		for _, m := range ManPages {
			page := filepath.Join(data, "usr/share/man/man"+m.Section, m.Name+".gz")
			cmd := exec.Command(man, "--warnings", "-l", page)
			cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=0", "LC_ALL=C.UTF-8")
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Run(); err != nil || errOut.Len() > 0 {
				t.Errorf("man %s: %v %s", m.Name, err, errOut.String())
			}
			src, _ := runTool("zcat", page)
			if th := strings.SplitN(src, "\n", 2)[0]; !strings.Contains(th, `"2026-12-01" "fabricd `+testSpec().Version+`"`) {
				t.Errorf("man %s: %q does not give the build's date and version", m.Name, th)
			}
		}
	}
}

// lintian: no error, warning, info or pedantic tag that the package's
// overrides (packaging/debian/lintian-overrides, each explained there) do
// not cover.
func TestLintian(t *testing.T) {
	t.Parallel()
	lintian := lookTool(t, "lintian")
	deb := artefact(t, "deb")
	out, err := runTool(lintian, "--pedantic", "--display-info", "--display-experimental", "--fail-on", "error,warning,info,pedantic,experimental", deb)
	var tags []string
	for _, line := range strings.Split(out, "\n") {
		if len(line) > 2 && line[1] == ':' && line[0] != 'N' && line[0] != 'O' {
			tags = append(tags, line)
		}
	}
	if err != nil || len(tags) > 0 {
		t.Errorf("lintian: %v\n%s", err, strings.Join(tags, "\n"))
	}
	// Listed for the log only; its exit status reflects the overridden tags.
	shown, _ := exec.Command(lintian, "--show-overrides", "--pedantic", "--display-info", deb).CombinedOutput()
	var overrides []string
	for _, line := range strings.Split(string(shown), "\n") {
		if strings.HasPrefix(line, "O: ") {
			overrides = append(overrides, line)
		}
	}
	t.Logf("lintian overrides in use (each explained in packaging/debian/lintian-overrides):\n%s", strings.Join(overrides, "\n"))
}

func TestRPMContents(t *testing.T) {
	t.Parallel()
	rpm := lookTool(t, "rpm")
	p := artefact(t, "rpm")
	out, err := runTool(rpm, "-qp", "--qf", "[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME} %{FILEFLAGS:fflags}\n]", p)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/etc/fabricd/fabricd.toml -rw-r----- root cn", // %config(noreplace)
		"/usr/sbin/fabricd -rwxr-xr-x root ",
		"/usr/bin/fabricctl -rwxr-xr-x root ",
		"/usr/lib/systemd/system/fabricd.service -rw-r--r-- root ",
		"/usr/lib/systemd/system/fabricd-wait-online.service -rw-r--r-- root ",
		"/usr/share/man/man8/fabricd.8.gz -rw-r--r-- root ",
		"/usr/share/man/man8/fabricctl.8.gz -rw-r--r-- root ",
		"/usr/share/man/man5/fabricd.toml.5.gz -rw-r--r-- root ",
		"/usr/share/bash-completion/completions/fabricctl -rw-r--r-- root ",
	}
	lines := strings.Split(out, "\n")
	for _, w := range want {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l+" ", w) || l == strings.TrimSpace(w) }) {
			t.Errorf("rpm lacks %q in:\n%s", w, out)
		}
	}
	scripts, err := runTool(rpm, "-qp", "--scripts", p)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet", "try-restart fabricd.service", "preset fabricd.service"} {
		if !strings.Contains(scripts, w) {
			t.Errorf("rpm scripts lack %q:\n%s", w, scripts)
		}
	}
	info, err := runTool(rpm, "-qp", "--qf", "%{VERSION} %{BUILDTIME} %{BUILDHOST}", p)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%s %d fabricd-build", testSpec().Version, testSpec().Time.Unix()); info != want {
		t.Errorf("rpm version, build time, host: %q, want %q", info, want)
	}
}
