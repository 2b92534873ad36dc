// Package packaging builds fabricd's release artefacts from the static
// binaries and the files in dist/: a .deb and an .rpm (with nfpm, as a
// library) and an OCI image tarball (with go-containerregistry). It is a
// module of its own so that the packagers' dependencies never enter
// fabricd's: `go -C packaging run ./cmd/fabricd-dist` drives it, and
// `make deb`, `make rpm` and `make image` call that.
//
// Every output is reproducible: file times, the package and image
// timestamps and the changelog date all come from Spec.Time
// (SOURCE_DATE_EPOCH, by default the commit time), owners are root and
// archives are written in a fixed order, so the same binaries and sources
// give the same bytes.
package packaging

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Spec is what a build needs.
type Spec struct {
	Repo    string    // the repository's root: dist/ and packaging/ are read from it
	BinDir  string    // holds fabricd and fabricctl, static linux binaries for Arch
	Version string    // a Debian/RPM version, see Version
	Time    time.Time // every timestamp written
	Arch    string    // Go's name: amd64, arm64
	// Maintainer goes into the packages' metadata ("Name <address>").
	Maintainer string
}

func (s Spec) validate() error {
	var errs []error
	if s.Repo == "" || s.BinDir == "" {
		errs = append(errs, errors.New("packaging: Repo and BinDir are required"))
	}
	if s.Version == "" || strings.ContainsAny(s.Version, " -/_") || s.Version[0] < '0' || s.Version[0] > '9' {
		errs = append(errs, fmt.Errorf("packaging: version %q must start with a digit and hold no space, '-', '_' or '/'", s.Version))
	}
	if s.Time.IsZero() {
		errs = append(errs, errors.New("packaging: Time is required (SOURCE_DATE_EPOCH)"))
	}
	if s.Arch == "" {
		errs = append(errs, errors.New("packaging: Arch is required"))
	}
	if !strings.Contains(s.Maintainer, "<") {
		errs = append(errs, fmt.Errorf("packaging: maintainer %q is not \"Name <address>\"", s.Maintainer))
	}
	for _, b := range []string{"fabricd", "fabricctl"} {
		if fi, err := os.Stat(filepath.Join(s.BinDir, b)); err != nil {
			errs = append(errs, fmt.Errorf("packaging: %w (make build first)", err))
		} else if fi.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("packaging: %s is not executable", filepath.Join(s.BinDir, b)))
		}
	}
	return errors.Join(errs...)
}

// Paths inside the packages. Debian 12 keeps system units in
// /lib/systemd/system (dh_installsystemd's place there); RPM distributions
// in /usr/lib/systemd/system.
const (
	sbinFabricd   = "/usr/sbin/fabricd"
	binFabricctl  = "/usr/bin/fabricctl"
	confFile      = "/etc/fabricd/fabricd.toml"
	completionDir = "/usr/share/bash-completion/completions"
	docDir        = "/usr/share/doc/fabricd"
)

func unitDir(format string) string {
	if format == "deb" {
		return "/lib/systemd/system"
	}
	return "/usr/lib/systemd/system"
}

// Units are dist/'s, which name the binaries under /usr/local (where
// `make install` puts them), with the packages' paths.
var unitPaths = strings.NewReplacer("/usr/local/sbin/fabricd", sbinFabricd, "/usr/local/bin/fabricctl", binFabricctl)

// Units lists the systemd units the packages ship, by file name in dist/.
var Units = []string{"fabricd.service", "fabricd-wait-online.service"}

// ManPages lists dist/man's pages with their sections.
var ManPages = []struct{ Name, Section string }{
	{"fabricd.8", "8"},
	{"fabricctl.8", "8"},
	{"fabricd.toml.5", "5"},
}

// staged is a file written for the package: its bytes live in a staging
// directory because nfpm reads contents from files.
type staged struct {
	dst  string
	mode os.FileMode
	data []byte
	typ  string // nfpm content type; "" for a plain file
}

// stage renders every file that is not copied as is.
func (s Spec) stage(format string) ([]staged, error) {
	var out []staged
	for _, u := range Units {
		src, err := os.ReadFile(filepath.Join(s.Repo, "dist", u))
		if err != nil {
			return nil, err
		}
		out = append(out, staged{dst: unitDir(format) + "/" + u, mode: 0o644, data: []byte(unitPaths.Replace(string(src)))})
	}
	for _, m := range ManPages {
		src, err := os.ReadFile(filepath.Join(s.Repo, "dist", "man", m.Name))
		if err != nil {
			return nil, err
		}
		// The date and version are the build's, so the page says which
		// release it documents.
		src = bytes.Replace(src, []byte(`"" "fabricd"`), fmt.Appendf(nil, "%q \"fabricd %s\"", s.Time.UTC().Format("2006-01-02"), s.Version), 1)
		gz, err := gzipBytes(src, gzip.BestCompression)
		if err != nil {
			return nil, err
		}
		out = append(out, staged{dst: fmt.Sprintf("/usr/share/man/man%s/%s.gz", m.Section, m.Name), mode: 0o644, data: gz})
	}
	completion, err := exec.Command(filepath.Join(s.BinDir, "fabricctl"), "completion", "bash").Output()
	if err != nil {
		return nil, fmt.Errorf("packaging: fabricctl completion bash: %w", err)
	}
	out = append(out, staged{dst: completionDir + "/fabricctl", mode: 0o644, data: completion})

	conf, err := os.ReadFile(filepath.Join(s.Repo, "dist", "fabricd.toml"))
	if err != nil {
		return nil, err
	}
	// A conffile: dpkg and rpm keep the administrator's version on every
	// upgrade. 0640, as it may hold MD5 session passwords.
	confType := files.TypeConfig
	if format == "rpm" {
		confType = files.TypeConfigNoReplace
	}
	out = append(out, staged{dst: confFile, mode: 0o640, data: conf, typ: confType})

	dropin, err := os.ReadFile(filepath.Join(s.Repo, "dist", "kubelet.service.d", "10-after-fabricd.conf"))
	if err != nil {
		return nil, err
	}
	out = append(out, staged{dst: docDir + "/examples/kubelet.service.d/10-after-fabricd.conf", mode: 0o644, data: dropin})

	copyright, err := os.ReadFile(filepath.Join(s.Repo, "packaging", "debian", "copyright"))
	if err != nil {
		return nil, err
	}
	out = append(out, staged{dst: docDir + "/copyright", mode: 0o644, data: copyright})
	if format == "deb" {
		// A native package's changelog: lintian insists on one, and it
		// records which commit the package was built from.
		cl, err := gzipBytes([]byte(s.changelog()), gzip.BestCompression)
		if err != nil {
			return nil, err
		}
		out = append(out, staged{dst: docDir + "/changelog.gz", mode: 0o644, data: cl})
		overrides, err := os.ReadFile(filepath.Join(s.Repo, "packaging", "debian", "lintian-overrides"))
		if err != nil {
			return nil, err
		}
		out = append(out, staged{dst: "/usr/share/lintian/overrides/fabricd", mode: 0o644, data: overrides})
	}
	return out, nil
}

func (s Spec) changelog() string {
	return fmt.Sprintf("fabricd (%s) unstable; urgency=medium\n\n  * Built from the fabricd repository; see its git history.\n\n -- %s  %s\n",
		s.Version, s.Maintainer, s.Time.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
}

// gzipBytes compresses like `gzip -n`: no name, no time stamp, so the
// output depends on the input and level alone. Documentation gets
// gzip.BestCompression, as Debian policy asks.
func gzipBytes(data []byte, level int) ([]byte, error) {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

const description = `BGP unnumbered routing daemon for servers in a pure-L3 fabric
 fabricd peers with the server's top-of-rack switches by eBGP over IPv6
 link-local addresses (RFC 5549/8950), announces the server's own prefixes
 (loopback, Kubernetes pod blocks) and installs the fabric's routes in the
 kernel with ECMP across uplinks. It replaces a per-host FRR for this job:
 one static binary, one TOML file, a Type=notify systemd unit with a
 watchdog and graceful restarts, and fabricctl, an FRR-like CLI.`

// Package writes the package of format ("deb" or "rpm") to w.
func (s Spec) Package(format string, w io.Writer) error {
	if err := s.validate(); err != nil {
		return err
	}
	if format != "deb" && format != "rpm" {
		return fmt.Errorf("packaging: unknown package format %q", format)
	}
	stage, err := os.MkdirTemp("", "fabricd-pkg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)

	fi := func(mode os.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: s.Time}
	}
	contents := files.Contents{
		{Source: filepath.Join(s.BinDir, "fabricd"), Destination: sbinFabricd, FileInfo: fi(0o755)},
		{Source: filepath.Join(s.BinDir, "fabricctl"), Destination: binFabricctl, FileInfo: fi(0o755)},
		{Destination: "/etc/fabricd", Type: files.TypeDir, FileInfo: fi(0o755)},
	}
	staged, err := s.stage(format)
	if err != nil {
		return err
	}
	for i, f := range staged {
		src := filepath.Join(stage, fmt.Sprint(i))
		if err := os.WriteFile(src, f.data, 0o644); err != nil {
			return err
		}
		contents = append(contents, &files.Content{Source: src, Destination: f.dst, Type: f.typ, FileInfo: fi(f.mode)})
	}

	scripts := filepath.Join(s.Repo, "packaging", "scripts", format)
	info := &nfpm.Info{
		Name:          "fabricd",
		Arch:          s.Arch,
		Platform:      "linux",
		Version:       s.Version,
		VersionSchema: "none", // taken as is: Version already made it a valid one
		Section:       "net",
		Priority:      "optional",
		Maintainer:    s.Maintainer,
		Description:   description,
		Vendor:        "fabricd",
		License:       "unspecified (see copyright)",
		MTime:         s.Time,
		Overridables: nfpm.Overridables{
			Contents: contents,
			Umask:    0o022,
			RPM: nfpm.RPM{
				Summary:   "BGP unnumbered routing daemon for servers in a pure-L3 fabric",
				Group:     "System Environment/Daemons",
				BuildHost: "fabricd-build", // not the build machine's name: reproducible
			},
		},
	}
	switch format {
	case "deb":
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(scripts, "postinst"),
			PreRemove:   filepath.Join(scripts, "prerm"),
			PostRemove:  filepath.Join(scripts, "postrm"),
		}
	case "rpm":
		info.Scripts = nfpm.Scripts{
			PostInstall: filepath.Join(scripts, "post"),
			PreRemove:   filepath.Join(scripts, "preun"),
			PostRemove:  filepath.Join(scripts, "postun"),
		}
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return fmt.Errorf("packaging: %w", err)
	}
	p, err := nfpm.Get(format)
	if err != nil {
		return err
	}
	if err := p.Package(info, w); err != nil {
		return fmt.Errorf("packaging: building the %s: %w", format, err)
	}
	return nil
}

// FileName is the conventional name of the package file.
func (s Spec) FileName(format string) string {
	switch format {
	case "deb":
		return fmt.Sprintf("fabricd_%s_%s.deb", s.Version, debArch(s.Arch))
	case "rpm":
		return fmt.Sprintf("fabricd-%s-1.%s.rpm", s.Version, rpmArch(s.Arch))
	}
	return "fabricd-image.tar"
}

func debArch(goarch string) string { return goarch } // amd64, arm64 are the same names

func rpmArch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return goarch
}
