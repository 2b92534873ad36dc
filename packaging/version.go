package packaging

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// GitVersion derives the package version and the build time from the git
// repository at repo: the time is the last commit's (so the same commit
// always gives the same artefacts), the version comes from the nearest
// v-tag (see versionFrom).
func GitVersion(repo string) (version string, commitTime time.Time, err error) {
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", repo}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("packaging: git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	ct, err := git("log", "-1", "--format=%ct")
	if err != nil {
		return "", time.Time{}, err
	}
	secs, err := strconv.ParseInt(ct, 10, 64)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("packaging: commit time %q: %w", ct, err)
	}
	commitTime = time.Unix(secs, 0).UTC()
	hash, err := git("rev-parse", "--short=12", "HEAD")
	if err != nil {
		return "", time.Time{}, err
	}
	status, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return "", time.Time{}, err
	}
	// No tag is not an error: describe fails and the version is a snapshot.
	describe, _ := git("describe", "--tags", "--long", "--match", "v[0-9]*")
	return versionFrom(describe, commitTime, hash, status != ""), commitTime, nil
}

var describeRE = regexp.MustCompile(`^v(.+)-(\d+)-g([0-9a-f]+)$`)

// versionFrom makes a version that dpkg and rpm both order correctly:
//
//	v1.2.3 exactly             1.2.3
//	4 commits after v1.2.3     1.2.3+git4.gabcdef012345
//	v1.3.0-rc1 (a pre-release) 1.3.0~rc1, which sorts before 1.3.0
//	no tag at all              0~git20261201213300.gabcdef012345 (commit time)
//	uncommitted changes        any of these plus "+dirty"
func versionFrom(describe string, commitTime time.Time, hash string, dirty bool) string {
	var v string
	if m := describeRE.FindStringSubmatch(describe); m != nil {
		v = strings.ReplaceAll(m[1], "-", "~")
		if m[2] != "0" {
			v += fmt.Sprintf("+git%s.g%s", m[2], m[3])
		}
	} else {
		v = fmt.Sprintf("0~git%s.g%s", commitTime.UTC().Format("20060102150405"), hash)
	}
	if dirty {
		v += "+dirty"
	}
	return v
}
