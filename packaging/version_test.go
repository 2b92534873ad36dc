package packaging

import (
	"testing"
	"time"
)

func TestVersionFrom(t *testing.T) {
	ct := time.Date(2026, 12, 1, 21, 33, 0, 0, time.UTC)
	for _, tc := range []struct {
		describe string
		dirty    bool
		want     string
	}{
		{"v1.2.3-0-gabcdef012345", false, "1.2.3"},
		{"v1.2.3-4-gabcdef012345", false, "1.2.3+git4.gabcdef012345"},
		{"v1.3.0-rc1-0-gabcdef012345", false, "1.3.0~rc1"},
		{"v1.3.0-rc1-2-gabcdef012345", true, "1.3.0~rc1+git2.gabcdef012345+dirty"},
		{"", false, "0~git20261201213300.gabcdef012345"},
		{"", true, "0~git20261201213300.gabcdef012345+dirty"},
	} {
		if got := versionFrom(tc.describe, ct, "abcdef012345", tc.dirty); got != tc.want {
			t.Errorf("versionFrom(%q, dirty=%v) = %q, want %q", tc.describe, tc.dirty, got, tc.want)
		}
	}
}

// dpkg must order the versions as releases follow each other; checked
// with dpkg itself where it is installed.
func TestVersionOrder(t *testing.T) {
	dpkg := lookTool(t, "dpkg")
	ordered := []string{
		"0~git20261201213300.gabcdef012345",
		"0~git20261202080000.g0123456789ab",
		"1.3.0~rc1",
		"1.3.0~rc1+git2.gabcdef012345",
		"1.3.0",
		"1.3.0+git4.gabcdef012345",
		"1.3.0+git4.gabcdef012345+dirty",
		"1.3.1",
	}
	for i := 1; i < len(ordered); i++ {
		if out, err := runTool(dpkg, "--compare-versions", ordered[i-1], "lt", ordered[i]); err != nil {
			t.Errorf("dpkg does not order %s before %s: %v %s", ordered[i-1], ordered[i], err, out)
		}
	}
}
