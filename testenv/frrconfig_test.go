package testenv

import (
	"slices"
	"testing"

	"github.com/fabricd/fabricd/config"
	"github.com/fabricd/fabricd/frrconf"
)

// The FRR config of every lab server translates completely, into the
// fabricd config the lab would otherwise write by hand (DefaultConfig):
// same identity, neighbors and announcements.
func TestFRRConfigImports(t *testing.T) {
	for _, tors := range []int{1, 2} {
		l := testLab(t, Options{Role: RoleFRR, ToRs: tors})
		for _, s := range l.Servers() {
			var srcs []frrconf.Source
			for _, f := range s.FRRConfig() {
				srcs = append(srcs, frrconf.Source{Name: f.Name, Text: []byte(f.Text)})
			}
			res := frrconf.Translate(srcs)
			if res.Untranslated != 0 {
				t.Errorf("%s with %d ToRs: %d lines not translated:\n%s", s.Name(), tors, res.Untranslated, res.TOML)
			}
			got, err := config.Parse("imported.toml", res.TOML)
			if err != nil {
				t.Fatalf("%s: %v\n%s", s.Name(), err, res.TOML)
			}
			want, err := config.Parse("default.toml", []byte(s.DefaultConfig()))
			if err != nil {
				t.Fatal(err)
			}
			if got.ASN != want.ASN || got.RouterID != want.RouterID || !slices.Equal(got.Neighbors, want.Neighbors) ||
				!slices.Equal(got.Announce, want.Announce) {
				t.Errorf("%s with %d ToRs: imported\n%+v\nwant as DefaultConfig\n%+v", s.Name(), tors, got, want)
			}
		}
	}
}
