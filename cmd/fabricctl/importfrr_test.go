package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabricd/fabricd/config"
)

func TestImportFRRExitStatus(t *testing.T) {
	lab := "../../frrconf/testdata/lab-c1-two-tors/"
	seed, err := os.ReadFile("../../frrconf/testdata/seed-c1/frr.conf")
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nope.conf")
	for _, tc := range []struct {
		name   string
		args   []string
		stdin  string
		status int
		stdout string // contained in the output; "" for none
		stderr string
	}{
		{"seed from stdin", []string{"import-frr", "-"}, string(seed), 0, "[[neighbor]]\ninterface = \"ens3\"\n", ""},
		{"lab's split files", []string{"import-frr", lab + "zebra.conf", lab + "staticd.conf", lab + "bgpd.conf"}, "", 0,
			"prefix = \"10.1.8.192/26\"\nblackhole = true\n", ""},
		{"a line fabricd cannot do", []string{"import-frr", "-"}, "router bgp 65001\n neighbor 192.0.2.1 remote-as 65000\n", 1,
			"# not translated (line 2): neighbor 192.0.2.1 remote-as 65000 — ", "1 FRR lines not translated"},
		{"unreadable", []string{"import-frr", missing}, "", 2, "", "no such file"},
		{"no file", []string{"import-frr"}, "", 2, "", "usage: fabricctl import-frr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := run(tc.args, strings.NewReader(tc.stdin), &stdout, &stderr)
			if status != tc.status || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Fatalf("status %d, want %d\nstdout:\n%s\nstderr:\n%s", status, tc.status, stdout.String(), stderr.String())
			}
			if status == 2 {
				if stdout.Len() != 0 {
					t.Errorf("printed a configuration for unreadable input:\n%s", stdout.String())
				}
				return
			}
			if _, err := config.Parse("out.toml", stdout.Bytes()); err != nil {
				t.Errorf("output does not validate: %v", err)
			}
		})
	}
}
