// Command fabricd-dist builds fabricd's release artefacts from static
// binaries: `fabricd-dist deb`, `fabricd-dist rpm` and `fabricd-dist image`
// (an OCI image archive). make deb, make rpm and make image run it as
// `go -C packaging run ./cmd/fabricd-dist ...`.
//
// The version and every timestamp default to what git says about the
// checked-out commit (SOURCE_DATE_EPOCH overrides the time), so building
// the same commit twice gives the same bytes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/fabricd/fabricd/packaging"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fabricd-dist:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fabricd-dist", flag.ContinueOnError)
	repo := fs.String("repo", "..", "the fabricd repository's root")
	bin := fs.String("bin", "", "directory with the static fabricd and fabricctl (default REPO/bin/release)")
	out := fs.String("out", "", "output file (default REPO/bin/ and the conventional name)")
	version := fs.String("version", "", "package version (default: from git describe, see packaging.GitVersion)")
	arch := fs.String("arch", runtime.GOARCH, "the binaries' GOARCH")
	maintainer := fs.String("maintainer", "fabricd maintainers <fabricd@example.org>", "package maintainer")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: fabricd-dist [flags] deb|rpm|image")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("one of deb, rpm, image is required")
	}
	format := fs.Arg(0)
	if format != "deb" && format != "rpm" && format != "image" {
		return fmt.Errorf("unknown artefact %q: want deb, rpm or image", format)
	}

	root, err := filepath.Abs(*repo)
	if err != nil {
		return err
	}
	spec := packaging.Spec{
		Repo:       root,
		BinDir:     *bin,
		Version:    *version,
		Arch:       *arch,
		Maintainer: *maintainer,
	}
	if spec.BinDir == "" {
		spec.BinDir = filepath.Join(root, "bin", "release")
	}
	if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
		secs, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
		}
		spec.Time = time.Unix(secs, 0).UTC()
	}
	// git is asked only for what was not given, so a source tree without
	// .git builds with --version and SOURCE_DATE_EPOCH.
	if spec.Version == "" || spec.Time.IsZero() {
		gitVersion, commitTime, err := packaging.GitVersion(root)
		if err != nil {
			return fmt.Errorf("%w (or give --version and SOURCE_DATE_EPOCH)", err)
		}
		if spec.Version == "" {
			spec.Version = gitVersion
		}
		if spec.Time.IsZero() {
			spec.Time = commitTime
		}
	}
	path := *out
	if path == "" {
		path = filepath.Join(root, "bin", spec.FileName(format))
	}

	// Written beside the target and renamed: an interrupted build never
	// leaves a truncated package where a finished one is expected.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fabricd-dist-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	var digest string
	switch format {
	case "image":
		h, err := spec.WriteImage(tmp)
		if err != nil {
			tmp.Close()
			return err
		}
		digest = " " + h.String()
	default:
		if err := spec.Package(format, tmp); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s%s\n", path, spec.Version, digest)
	return nil
}
