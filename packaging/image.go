package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's layout. The binaries are where the packages put them, so
// `kubectl exec ... -- fabricctl show bgp summary` finds fabricctl on PATH;
// probes name it by its full path, which needs no shell and no PATH.
const (
	ImageFabricd   = sbinFabricd
	ImageFabricctl = binFabricctl
	// ImageUser is root. fabricd needs CAP_NET_ADMIN, CAP_NET_RAW and
	// CAP_NET_BIND_SERVICE in its effective set. A non-root process gets
	// capabilities a runtime adds only through file capabilities on the
	// binary, which the kernel ignores under no_new_privs
	// (allowPrivilegeEscalation: false), or ambient capabilities, which
	// Kubernetes cannot set. Root with every other capability dropped,
	// no_new_privs and a read-only root file system is the tighter of the
	// two; the DaemonSet example does exactly that.
	ImageUser = "0:0"
)

// ImageEntrypoint makes SIGTERM, which container runtimes send on every
// stop and so on every rolling update, a graceful restart: routes stay in
// the kernel and the ToRs keep the server's routes until the new fabricd
// has taken over. The configuration is read from the default
// /etc/fabricd/fabricd.toml, which the image does not contain: without a
// mounted configuration fabricd refuses to start rather than announcing an
// example's prefixes.
var ImageEntrypoint = []string{ImageFabricd, "--sigterm=restart"}

// ImageTag is Version as a registry tag: those allow only letters, digits,
// '_', '.' and '-', so the '~' and '+' of package versions become '-'
// (1.3.0~rc1 is tagged 1.3.0-rc1).
func (s Spec) ImageTag() string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, s.Version)
}

// imageRef names the image in the archive: podman load and skopeo take it
// as the image's name.
func (s Spec) imageRef() string { return "fabricd:" + s.ImageTag() }

// Image builds the image: one layer holding the two static binaries and
// the directories fabricd uses, on an empty base. No shell, no libc.
func (s Spec) Image() (v1.Image, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	layerTar, err := s.layerTar()
	if err != nil {
		return nil, err
	}
	// Compressed once, here: given gzip, ggcr keeps those bytes (and so
	// the digest) as they are instead of compressing on every read.
	// The default level: 9 would make it 0.4% smaller and take three
	// times as long.
	compressed, err := gzipBytes(layerTar, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: s.Time.UTC()}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   created,
			CreatedBy: "fabricd-dist image: " + ImageFabricd + ", " + ImageFabricctl,
		},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = created
	cfg.Architecture = s.Arch
	cfg.OS = "linux"
	cfg.Config = v1.Config{
		Entrypoint: ImageEntrypoint,
		User:       ImageUser,
		Env:        []string{"PATH=/usr/sbin:/usr/bin"},
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "fabricd",
			"org.opencontainers.image.description": "BGP unnumbered routing daemon for servers in a pure-L3 fabric",
			"org.opencontainers.image.version":     s.Version,
			"org.opencontainers.image.created":     created.Format("2006-01-02T15:04:05Z"),
		},
	}
	return mutate.ConfigFile(img, cfg)
}

// layerTar is the layer's uncompressed tar, entries in a fixed order with
// fixed times and owners.
func (s Spec) layerTar() ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: s.Time, Format: tar.FormatPAX})
	}
	file := func(name, src string) error {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(len(data)), ModTime: s.Time, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	}
	steps := []error{
		dir("etc", 0o755),
		// The configuration's mount point (a ConfigMap in the example).
		dir("etc/fabricd", 0o755),
		// The API socket's directory; mounted from the host so that the
		// host's fabricctl reaches the daemon.
		dir("run", 0o755),
		dir("run/fabricd", 0o750),
		dir("usr", 0o755),
		dir("usr/bin", 0o755),
		file("usr/bin/fabricctl", filepath.Join(s.BinDir, "fabricctl")),
		dir("usr/sbin", 0o755),
		file("usr/sbin/fabricd", filepath.Join(s.BinDir, "fabricd")),
	}
	for _, err := range steps {
		if err != nil {
			return nil, fmt.Errorf("packaging: image layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteImage writes the image as an OCI image layout in a tar archive
// ("oci-archive", which podman load and skopeo read) and returns the
// image's digest.
func (s Spec) WriteImage(w io.Writer) (v1.Hash, error) {
	img, err := s.Image()
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	dir, err := os.MkdirTemp("", "fabricd-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": s.imageRef(),
	})); err != nil {
		return v1.Hash{}, err
	}
	if err := s.tarDir(dir, w); err != nil {
		return v1.Hash{}, err
	}
	return digest, nil
}

// tarDir archives dir's files in name order with fixed times and owners.
func (s Spec) tarDir(dir string, w io.Writer) error {
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			names = append(names, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(names)
	tw := tar.NewWriter(w)
	for _, path := range names {
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: s.Time, Format: tar.FormatPAX}
		if fi.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			continue
		}
		h.Typeflag, h.Size = tar.TypeReg, fi.Size()
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}
