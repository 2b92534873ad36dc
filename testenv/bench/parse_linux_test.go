package bench

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseTrieStat(t *testing.T) {
	text := `Basic info: size of leaf: 48 bytes, size of tnode: 40 bytes.
Main:
	Aver depth:     2.00
	Max depth:      3
	Leaves:         100003
	Prefixes:       100005
	Internal nodes: 4
Local:
	Prefixes:       7
`
	n, err := parseTrieStat(text)
	if err != nil || n != 100005 {
		t.Fatalf("parseTrieStat = %d, %v; want 100005", n, err)
	}
	if _, err := parseTrieStat("Local:\n\tPrefixes: 3\n"); err == nil {
		t.Error("no Main section: want an error")
	}
}

func TestSessionUp(t *testing.T) {
	log := `2026/11/25 17:18:40.728172 BGP: [N9HHH-F8H1M] %ADJCHANGE: neighbor swp10(vm) in vrf default Up
2026/11/25 17:18:40.740812 BGP: [N9HHH-F8H1M] %ADJCHANGE: neighbor swp1(vm) in vrf default Down Waiting for NHT
2026/11/25 17:18:40.755100 BGP: [N9HHH-F8H1M] %ADJCHANGE: neighbor swp1(vm) in vrf default Up
`
	got, ok := sessionUp(log, "swp1")
	want := time.Date(2026, 11, 25, 17, 18, 40, 755100000, time.Local)
	if !ok || !got.Equal(want) {
		t.Errorf("sessionUp = %v, %v; want %v", got, ok, want)
	}
	if _, ok := sessionUp(log, "swp2"); ok {
		t.Error("swp2 has no Up line")
	}
}

func TestParseFabricdLog(t *testing.T) {
	log := `time=2026-11-25T17:28:25.689Z level=INFO msg="fabricd is up" asn=65001 router_id=1.1.1.1
time=2026-11-25T17:28:25.690Z level=INFO msg="ToR discovered" interface=ens3 address=fe80::1%ens3
time=2026-11-25T17:28:25.691Z level=INFO msg="BGP peer configured" component=bgp interface=ens3
time=2026-11-25T17:28:25.693Z level=INFO msg="BGP session established" component=bgp interface=ens3
time=2026-11-25T17:28:26.763Z level=DEBUG msg="fib batch applied" component=fib changes=1002 ops=1003 duration=8.056296ms
time=2026-11-25T17:28:26.863Z level=DEBUG msg="fib batch applied" component=fib changes=10 ops=10 duration=1.5ms
not a log line
time=garbage msg=x
`
	ph := parseFabricdLog(log)
	if ph.Up.IsZero() || ph.Discovered.Sub(ph.Up) != time.Millisecond || ph.Established.IsZero() {
		t.Errorf("phases = %+v", ph)
	}
	if ph.Batches != 2 || ph.Ops != 1013 || ph.BatchTime != 9556296*time.Nanosecond {
		t.Errorf("batches %d ops %d time %v", ph.Batches, ph.Ops, ph.BatchTime)
	}
	rec, ok := parseSlogLine(`time=2026-11-25T17:28:25.689Z level=WARN msg="a \"quoted\" word" k=v`)
	if !ok || rec.msg != `a "quoted" word` || rec.attrs["k"] != "v" {
		t.Errorf("parseSlogLine = %+v, %v", rec, ok)
	}
}

func TestParseBGPSegment(t *testing.T) {
	pkt := func(srcPort uint16, payload []byte) []byte {
		tcp := make([]byte, 20)
		tcp[0], tcp[1] = byte(srcPort>>8), byte(srcPort)
		tcp[2], tcp[3] = 0xc0, 0x01
		tcp[12] = 5 << 4
		ip := make([]byte, 40)
		ip[0] = 6 << 4
		l := len(tcp) + len(payload)
		ip[4], ip[5], ip[6] = byte(l>>8), byte(l), 6
		return append(append(ip, tcp...), payload...)
	}
	bgp := func(typ byte, length int) []byte {
		b := make([]byte, length)
		for i := range 16 {
			b[i] = 0xff
		}
		b[16], b[17], b[18] = byte(length>>8), byte(length), typ
		return b
	}
	if s, ok := parseBGPSegment(pkt(179, bgp(2, 60))); !ok || !s.update || s.payload != 60 {
		t.Errorf("UPDATE: %+v %v", s, ok)
	}
	if s, ok := parseBGPSegment(pkt(179, bgp(2, 23))); !ok || s.update {
		t.Errorf("End-of-RIB counted as an UPDATE with routes: %+v %v", s, ok)
	}
	if s, ok := parseBGPSegment(pkt(179, bgp(4, 19))); !ok || s.update {
		t.Errorf("KEEPALIVE: %+v %v", s, ok)
	}
	if _, ok := parseBGPSegment(pkt(22, bgp(2, 60))); ok {
		t.Error("not BGP: accepted")
	}
	if _, ok := parseBGPSegment(pkt(179, nil)); ok {
		t.Error("bare ACK: accepted")
	}
	for i := range 70 {
		parseBGPSegment(pkt(179, bgp(2, 60))[:i]) // no panic on truncation
	}
}

func TestSummarizeAndVerdict(t *testing.T) {
	s := Summarize([]float64{5, 1, 3, 2})
	if s.Median != 2.5 || s.Min != 1 || s.Max != 5 || s.N != 4 {
		t.Errorf("Summarize = %+v", s)
	}
	if s := Summarize([]float64{math.NaN(), 4, math.Inf(1)}); s.N != 2 || s.Median != math.Inf(1) || s.Min != 4 {
		t.Errorf("Summarize with NaN and Inf = %+v", s)
	}
	if !math.IsNaN(Summarize(nil).Median) {
		t.Error("median of nothing is not NaN")
	}
	for _, c := range []struct {
		s    Series
		want string
	}{
		{Series{FRR: []float64{100}, Fabricd: []float64{80}, Target: Target{Text: "x", Ratio: 0.8}}, "yes"},
		{Series{FRR: []float64{100}, Fabricd: []float64{81}, Target: Target{Text: "x", Ratio: 0.8}}, "no"},
		{Series{Fabricd: []float64{200}, Target: Target{Text: "x", Max: 200, Strict: true}}, "no"},
		{Series{Fabricd: []float64{100, 100, 2000}, Target: Target{Text: "x", Max: 1000}}, "yes"},
		{Series{Fabricd: []float64{100, 100, 2000}, Target: Target{Text: "x", Max: 1000, Every: true}}, "no"},
		{Series{Fabricd: []float64{math.Inf(1)}, Target: Target{Text: "x", Max: 1000, Every: true}}, "no"},
		{Series{Fabricd: []float64{1}}, ""},
	} {
		if got := c.s.Verdict(); got != c.want {
			t.Errorf("Verdict(%+v) = %q, want %q", c.s, got, c.want)
		}
	}
}

func TestTableMarkdown(t *testing.T) {
	tb := Table{Title: "T", Rows: []Series{
		{Name: "a", Unit: "ms", FRR: []float64{2376, 2349, 2443}, Fabricd: []float64{1800, 1700, 1900}, Target: Target{Text: "≤ 0.8× FRR", Ratio: 0.8}},
		{Name: "b", Unit: "ms", FRR: []float64{math.Inf(1)}, Fabricd: []float64{0.94}},
	}}
	md := tb.Markdown()
	for _, want := range []string{
		"| a (ms) | **2376** (2349–2443) | **1800** (1700–1900) | 0.76× | ≤ 0.8× FRR | yes |",
		"| b (ms) | **never** (never–never) | **0.9** (0.9–0.9) | – | – | – |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if thousands(100000) != "100,000" || thousands(999) != "999" || thousands(1234567) != "1,234,567" {
		t.Error("thousands")
	}
}

func TestProfileParsing(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "script.txt")
	os.WriteFile(script, []byte(`
	          4a5b6c runtime.scanobject+0x12
	          4a5b00 runtime.gcDrain+0x40
	          4a5a00 runtime.gcBgMarkWorker+0x1

	ffffffff81000000 netlink_sendmsg+0x5
	          5a0000 syscall.Syscall6+0x1
	          6a0000 github.com/fabricd/fabricd/fib.(*NetlinkKernel).Apply+0x10

	          7a0000 github.com/osrg/gobgp/v4/pkg/packet/bgp.(*BGPMessage).Serialize+0x1
	          4a5000 runtime.mallocgc+0x1
	          4a5001 runtime.gcAssistAlloc+0x1
`), 0o644)
	p := &Profile{}
	if err := p.classify(script); err != nil {
		t.Fatal(err)
	}
	if p.Samples != 3 || math.Abs(p.Kernel-100.0/3) > 0.01 {
		t.Errorf("samples %d kernel %.1f%%", p.Samples, p.Kernel)
	}
	got := map[string]float64{}
	for _, c := range p.Categories {
		got[c.Name] = c.Percent
	}
	if math.Abs(got[categories[0].name]-200.0/3) > 0.01 || math.Abs(got[categories[1].name]-100.0/3) > 0.01 {
		t.Errorf("categories %v", got)
	}
	// Equal shares sort by name.
	if len(p.Top) != 3 || p.Top[0].Name != "github.com/osrg/gobgp/v4/pkg/packet/bgp.(*BGPMessage).Serialize" || p.Top[2].Name != "runtime.scanobject" {
		t.Errorf("top %v", p.Top)
	}
	for _, c := range p.Inclusive {
		want := 0.0
		switch c.Name {
		case inclusiveFuncs[9].label, inclusiveFuncs[10].label, inclusiveFuncs[11].label: // mallocgc, bg worker, assist
			want = 100.0 / 3
		}
		if math.Abs(c.Percent-want) > 0.01 {
			t.Errorf("inclusive %s = %.1f%%, want %.1f%%", c.Name, c.Percent, want)
		}
	}
}
