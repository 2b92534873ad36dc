package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/api/fabricdpb"
)

// JSON output is stable: protojson varies its whitespace on purpose, and
// scripts grep fabricctl's output.
func TestMarshalJSONIsStable(t *testing.T) {
	s := &fabricdpb.Summary{RouterId: "1.1.1.1", As: 65001, FibInSync: true,
		Peers: []*fabricdpb.Peer{{Interface: "ens3", State: "Established", PfxRcd: 5}}}
	out, err := marshalJSON(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\n  \"fibInSync\": true,\n", "\n      \"pfxRcd\": \"5\",\n", "\n  \"routerId\": \"1.1.1.1\",\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestSummaryLayout(t *testing.T) {
	var b bytes.Buffer
	writeSummary(&b, &fabricdpb.Summary{RouterId: "1.1.1.1", As: 65001, RibCount: 5, InstalledCount: 6, Peers: []*fabricdpb.Peer{
		{Interface: "ens3", State: "Established", RemoteAs: 65004, MsgRcvd: 12, MsgSent: 10, EverUp: true,
			PeerUptimeMsec: (83 * time.Second).Milliseconds(), PfxRcd: 5, PfxSnt: 2},
		{Interface: "ens4", State: "Active"},
	}})
	want := `IPv4 Unicast Summary:
BGP router identifier 1.1.1.1, local AS number 65001
RIB entries 5, installed routes 6
Peers 2

Neighbor        V         AS   MsgRcvd   MsgSent   TblVer  InQ OutQ  Up/Down State/PfxRcd   PfxSnt
ens3            4      65004        12        10        0    0    0 00:01:23            5        2
ens4            4          0         0         0        0    0    0    never       Active        0

Total number of neighbors 2
`
	if b.String() != want {
		t.Errorf("summary:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestFormatUptime(t *testing.T) {
	for d, want := range map[time.Duration]string{
		83 * time.Second:                           "00:01:23",
		26*time.Hour + 3*time.Minute:               "1d02h03m",
		9*24*time.Hour + 3*time.Hour + time.Minute: "01w2d03h",
	} {
		if got := formatUptime(d); got != want {
			t.Errorf("formatUptime(%v) = %q, want %q", d, got, want)
		}
	}
}
