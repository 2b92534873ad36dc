package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

const knownRace = `==================
WARNING: DATA RACE
Read at 0x00c0003a6f08 by goroutine 41:
  github.com/osrg/gobgp/v4/pkg/server.newWatchEventPeer()
      /root/go/pkg/mod/github.com/osrg/gobgp/v4@v4.8.0/pkg/server/server.go:989 +0x8c4
  github.com/osrg/gobgp/v4/pkg/server.(*BgpServer).broadcastPeerState()
      /root/go/pkg/mod/github.com/osrg/gobgp/v4@v4.8.0/pkg/server/server.go:1018 +0x1b0

Previous write at 0x00c0003a6f08 by goroutine 77:
  github.com/osrg/gobgp/v4/pkg/server.(*fsmHandler).opensent()
      /root/go/pkg/mod/github.com/osrg/gobgp/v4@v4.8.0/pkg/server/fsm.go:1537 +0x1d24
  github.com/osrg/gobgp/v4/pkg/server.(*fsmHandler).loop()
      /root/go/pkg/mod/github.com/osrg/gobgp/v4@v4.8.0/pkg/server/fsm.go:1990 +0x2a8

Goroutine 41 (running) created at:
  github.com/osrg/gobgp/v4/pkg/server.(*BgpServer).Serve()
      /root/go/pkg/mod/github.com/osrg/gobgp/v4@v4.8.0/pkg/server/server.go:402 +0x64
==================
`

const ourRace = `==================
WARNING: DATA RACE
Write at 0x00c000118a30 by goroutine 12:
  github.com/fabricd/fabricd/daemon.(*Daemon).applyReload()
      /work/main/daemon/reload.go:88 +0x44

Previous read at 0x00c000118a30 by goroutine 9:
  github.com/fabricd/fabricd/daemon.(*Daemon).serveStatus()
      /work/main/daemon/api.go:51 +0x9c

Goroutine 12 (running) created at:
  main.main()
      /work/main/cmd/fabricd/main.go:40 +0x1c
==================
`

// The same GoBGP function on one side only is not the known race.
const halfKnownRace = `==================
WARNING: DATA RACE
Read at 0x00c0003a6f08 by goroutine 41:
  github.com/osrg/gobgp/v4/pkg/server.newWatchEventPeer()
      server.go:989 +0x8c4

Previous write at 0x00c0003a6f08 by goroutine 5:
  github.com/fabricd/fabricd/bgp.(*Speaker).onPeer()
      speaker.go:570 +0x10
==================
`

func TestParseRaceReports(t *testing.T) {
	log := "fabricd: starting\n" + knownRace + ourRace + halfKnownRace + "Found 3 data race(s)\n"
	reports := parseRaceReports(log)
	if len(reports) != 3 {
		t.Fatalf("parsed %d reports, want 3", len(reports))
	}
	want := []struct {
		top0, top1 string
		known      bool
	}{
		{"github.com/osrg/gobgp/v4/pkg/server.newWatchEventPeer()", "github.com/osrg/gobgp/v4/pkg/server.(*fsmHandler).opensent()", true},
		{"github.com/fabricd/fabricd/daemon.(*Daemon).applyReload()", "github.com/fabricd/fabricd/daemon.(*Daemon).serveStatus()", false},
		{"github.com/osrg/gobgp/v4/pkg/server.newWatchEventPeer()", "github.com/fabricd/fabricd/bgp.(*Speaker).onPeer()", false},
	}
	for i, w := range want {
		r := reports[i]
		if len(r.TopFrames) != 2 || r.TopFrames[0] != w.top0 || r.TopFrames[1] != w.top1 {
			t.Errorf("report %d: top frames %q, want [%s %s]", i, r.TopFrames, w.top0, w.top1)
		}
		if got := r.KnownUpstream() != ""; got != w.known {
			t.Errorf("report %d: known upstream = %v, want %v", i, got, w.known)
		}
	}
	if got := reports[1].Text; got[:len("WARNING: DATA RACE")] != "WARNING: DATA RACE" {
		t.Errorf("report text starts %q, want the banner", got[:30])
	}
}

func TestReadRaceReports(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "race.4242"), []byte(knownRace+ourRace), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "race.4243"), []byte("nothing here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reports, err := ReadRaceReports(filepath.Join(dir, "race*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 2 || reports[0].File != filepath.Join(dir, "race.4242") {
		t.Fatalf("got %d reports (%+v), want 2 from race.4242", len(reports), reports)
	}
}
