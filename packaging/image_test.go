package packaging

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.yaml.in/yaml/v3"
)

// openImage unpacks an image archive and returns its only image and the
// descriptor index.json gives for it.
func openImage(t *testing.T, archive []byte) (v1.Image, v1.Descriptor) {
	t.Helper()
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(h.Name, "..") {
			t.Fatalf("archive entry %q escapes the archive", h.Name)
		}
		target := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, data, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("archive entry %q has type %c", h.Name, h.Typeflag)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("not an OCI image layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json lists %d manifests, want 1", len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img, im.Manifests[0]
}

type layerFile struct {
	mode int64
	data []byte
}

// layerFiles reads a layer's entries, checking owners and times as it goes.
func layerFiles(t *testing.T, l v1.Layer) map[string]layerFile {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s is owned by %d:%d", h.Name, h.Uid, h.Gid)
		}
		if !h.ModTime.Equal(testSpec().Time) {
			t.Errorf("%s has time %v, not Spec.Time", h.Name, h.ModTime)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files["/"+strings.TrimSuffix(h.Name, "/")] = layerFile{h.Mode, data}
	}
	return files
}

func TestImage(t *testing.T) {
	t.Parallel()
	archive, err := os.ReadFile(artefact(t, "image"))
	if err != nil {
		t.Fatal(err)
	}
	img, desc := openImage(t, archive)

	if desc.Annotations["org.opencontainers.image.ref.name"] != "fabricd:1.2.3-rc1-git4.gabcdef012345" {
		t.Errorf("index.json names the image %q", desc.Annotations["org.opencontainers.image.ref.name"])
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s", mt)
	}
	want, err := testSpec().Image()
	if err != nil {
		t.Fatal(err)
	}
	wantDigest, _ := want.Digest()
	if desc.Digest != wantDigest {
		t.Errorf("the archive holds %s, the image built from the same inputs is %s", desc.Digest, wantDigest)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/sbin/fabricd", "--sigterm=restart"}) {
		t.Errorf("entrypoint %q: fabricd with --sigterm=restart, so a container stop is a graceful restart", cfg.Config.Entrypoint)
	}
	if len(cfg.Config.Cmd) != 0 {
		t.Errorf("cmd %q: fabricd reads /etc/fabricd/fabricd.toml by default", cfg.Config.Cmd)
	}
	if cfg.Config.User != "0:0" {
		t.Errorf("user %q, want 0:0 (see ImageUser)", cfg.Config.User)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	if v := cfg.Config.Labels["org.opencontainers.image.version"]; v != testSpec().Version {
		t.Errorf("version label %q, want %q", v, testSpec().Version)
	}
	if !cfg.Created.Equal(testSpec().Time) {
		t.Errorf("created %v, not Spec.Time", cfg.Created)
	}
	for _, h := range cfg.History {
		if !h.Created.Equal(testSpec().Time) {
			t.Errorf("history entry %q created %v, not Spec.Time", h.CreatedBy, h.Created)
		}
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1 on an empty base", len(layers))
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s", mt)
	}
	files := layerFiles(t, layers[0])
	var names []string
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	wantNames := []string{"/etc", "/etc/fabricd", "/run", "/run/fabricd", "/usr", "/usr/bin", "/usr/bin/fabricctl", "/usr/sbin", "/usr/sbin/fabricd"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("layer holds %q, want %q (no shell, no libc, nothing else)", names, wantNames)
	}
	for _, bin := range []string{"/usr/sbin/fabricd", "/usr/bin/fabricctl"} {
		f := files[bin]
		src, _ := os.ReadFile(filepath.Join(binDir, filepath.Base(bin)))
		if !bytes.Equal(f.data, src) {
			t.Errorf("%s is not the binary given", bin)
		}
		if f.mode&0o111 == 0 {
			t.Errorf("%s is not executable (%o)", bin, f.mode)
		}
		if err := staticELF(f.data); err != nil {
			t.Errorf("%s: %v: it cannot run on an empty base", bin, err)
		}
	}
	if cfg.Config.Entrypoint[0] != ImageFabricd || files[ImageFabricd].data == nil {
		t.Errorf("the entrypoint %s is not in the image", cfg.Config.Entrypoint[0])
	}
}

// staticELF fails for a binary that needs a dynamic loader or libraries.
func staticELF(data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("it needs a dynamic loader (PT_INTERP)")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return errors.New("it needs shared libraries " + strings.Join(libs, ", "))
	}
	return nil
}

// The DaemonSet example runs this image as built: the image's entrypoint
// (no command override), probes that exec fabricctl by a path the image
// has, without a shell, as the user the image declares.
func TestDaemonSetUsesImage(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("../deploy/kubernetes/fabricd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Name            string   `yaml:"name"`
		Image           string   `yaml:"image"`
		Command         []string `yaml:"command"`
		Args            []string `yaml:"args"`
		SecurityContext struct {
			RunAsUser *int `yaml:"runAsUser"`
		} `yaml:"securityContext"`
		ReadinessProbe map[string]any `yaml:"readinessProbe"`
		LivenessProbe  map[string]any `yaml:"livenessProbe"`
		StartupProbe   map[string]any `yaml:"startupProbe"`
	}
	var c *container
	dec := yaml.NewDecoder(bytes.NewReader(src))
	for {
		var doc struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []container `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind == "DaemonSet" && len(doc.Spec.Template.Spec.Containers) > 0 {
			c = &doc.Spec.Template.Spec.Containers[0]
		}
	}
	if c == nil {
		t.Fatal("no DaemonSet container in deploy/kubernetes/fabricd.yaml")
	}
	if !strings.Contains(c.Image, "/fabricd:") && !strings.HasPrefix(c.Image, "fabricd:") {
		t.Errorf("image %q is not fabricd's", c.Image)
	}
	if c.Command != nil {
		t.Errorf("command %q overrides the image's entrypoint %q", c.Command, ImageEntrypoint)
	}
	if c.SecurityContext.RunAsUser == nil || *c.SecurityContext.RunAsUser != 0 {
		t.Error("runAsUser must be 0, the image's user")
	}
	archive, err := os.ReadFile(artefact(t, "image"))
	if err != nil {
		t.Fatal(err)
	}
	img, _ := openImage(t, archive)
	layers, _ := img.Layers()
	files := layerFiles(t, layers[0])
	probes := 0
	for name, p := range map[string]map[string]any{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe} {
		if p == nil {
			continue
		}
		exec, ok := p["exec"].(map[string]any)
		if !ok {
			t.Errorf("%s is not an exec probe", name)
			continue
		}
		cmd, _ := exec["command"].([]any)
		if len(cmd) == 0 {
			t.Errorf("%s has no command", name)
			continue
		}
		argv0, _ := cmd[0].(string)
		if f, ok := files[argv0]; !ok || f.mode&0o111 == 0 {
			t.Errorf("%s runs %q, which is not an executable in the image (no shell there either)", name, argv0)
		}
		probes++
	}
	if probes == 0 {
		t.Error("the DaemonSet has no probes")
	}
}
