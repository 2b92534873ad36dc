package scale

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
)

func TestServerSpecsAreDistinctAndValid(t *testing.T) {
	specs, err := ServerSpecs(48)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Prefix]string{}
	asns := map[uint32]bool{}
	for _, s := range specs {
		for _, p := range []netip.Prefix{s.Loopback, s.Block} {
			if other, ok := seen[p]; ok {
				t.Errorf("%s and %s share %v", s.Name, other, p)
			}
			seen[p] = s.Name
		}
		if s.Block != s.Block.Masked() || s.Block.Bits() != 26 || s.Loopback.Bits() != 32 {
			t.Errorf("%s: loopback %v, block %v", s.Name, s.Loopback, s.Block)
		}
		if asns[s.ASN] {
			t.Errorf("%s: AS %d used twice", s.Name, s.ASN)
		}
		asns[s.ASN] = true
		if len(s.Pods) != 0 {
			t.Errorf("%s has pods", s.Name)
		}
	}
	if specs[47].Name != "c48" || specs[47].Loopback != netip.MustParsePrefix("10.0.0.48/32") {
		t.Errorf("last server is %+v", specs[47])
	}
	for _, n := range []int{0, 1, MaxServers + 1} {
		if _, err := ServerSpecs(n); err == nil {
			t.Errorf("ServerSpecs(%d) accepted", n)
		}
	}
}

func TestHashSeedsDifferAndAreNeverZero(t *testing.T) {
	seen := map[uint32]int{}
	for i := range MaxServers {
		s := hashSeed(i)
		if s == 0 || s > math.MaxInt32 {
			t.Errorf("server %d: seed %d", i, s)
		}
		if j, ok := seen[s]; ok {
			t.Errorf("servers %d and %d share seed %d", j, i, s)
		}
		seen[s] = i
	}
	if hashSeed(3) != hashSeed(3) {
		t.Error("seeds are not stable")
	}
}

func TestFlowCandidatesStartHalfAFabricApart(t *testing.T) {
	c := flowCandidates(16)
	if len(c) != 16*15 {
		t.Fatalf("%d candidates for 16 servers, want every ordered pair once (240)", len(c))
	}
	for i := range 16 {
		if c[i] != (pair{i, (i + 8) % 16}) {
			t.Fatalf("candidate %d is %+v, want %d → %d", i, c[i], i, (i+8)%16)
		}
	}
	seen := map[pair]bool{}
	for _, p := range c {
		if p.From == p.To || seen[p] {
			t.Fatalf("candidate %+v repeated or to itself", p)
		}
		seen[p] = true
	}
}

func TestChooseFlowsSpreadsOverUplinksAndSenders(t *testing.T) {
	cands := flowCandidates(16)
	calls := map[pair]int{}
	// Only even senders' requests leave by uplink 0, odd ones by uplink 1.
	egress := func(p pair) (int, error) {
		calls[p]++
		return p.From % 2, nil
	}
	flows, via, err := chooseFlows(cands, 8, 2, egress)
	if err != nil {
		t.Fatal(err)
	}
	if len(flows) != 8 {
		t.Fatalf("%d flows, want 8", len(flows))
	}
	per := [2]int{}
	senders := map[int]bool{}
	for i, f := range flows {
		per[via[i]]++
		if via[i] != f.From%2 {
			t.Errorf("flow %+v marked via %d", f, via[i])
		}
		if senders[f.From] {
			t.Errorf("sender %d used twice while others were free", f.From)
		}
		senders[f.From] = true
	}
	if per != [2]int{4, 4} {
		t.Errorf("flows per uplink %v, want 4 and 4", per)
	}
	for p, n := range calls {
		if n > 1 {
			t.Errorf("egress asked %d times about %+v", n, p)
		}
	}

	// All requests leave by uplink 0: only half the flows can be had.
	flows, _, err = chooseFlows(cands, 8, 2, func(pair) (int, error) { return 0, nil })
	if err != nil || len(flows) != 4 {
		t.Errorf("one-sided routes: %d flows (%v), want 4", len(flows), err)
	}
	boom := errors.New("no route")
	if _, _, err := chooseFlows(cands, 8, 2, func(pair) (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Errorf("egress error not returned: %v", err)
	}
	if _, _, err := chooseFlows(cands, 0, 2, egress); err == nil {
		t.Error("0 flows accepted")
	}
}

func TestTimingValidation(t *testing.T) {
	if err := DefaultTiming().validate(); err != nil {
		t.Fatal(err)
	}
	short := DefaultTiming()
	short.Freeze = 5 * time.Second
	if err := short.validate(); err == nil {
		t.Error("a freeze shorter than the hold time was accepted")
	}
	zero := DefaultTiming()
	zero.Idle = 0
	if err := zero.validate(); err == nil {
		t.Error("an idle window of 0 was accepted")
	}
}

func TestSummarize(t *testing.T) {
	inf := math.Inf(1)
	for _, tc := range []struct {
		in          []float64
		med, max    float64
		n, nevers   int
		description string
	}{
		{[]float64{3, 1, 2}, 2, 3, 3, 0, "odd"},
		{[]float64{4, 1, 3, 2}, 2.5, 4, 4, 0, "even"},
		{[]float64{1, math.NaN(), 5}, 3, 5, 2, 0, "NaN left out"},
		{[]float64{1, 2, inf}, 2, inf, 3, 1, "never counts"},
		{[]float64{inf, inf}, inf, inf, 2, 2, "all never"},
	} {
		d := summarize(tc.in)
		if d.Median != tc.med || d.Max != tc.max || d.N != tc.n || d.Never != tc.nevers {
			t.Errorf("%s: summarize(%v) = %+v", tc.description, tc.in, d)
		}
	}
	if d := summarize(nil); !math.IsNaN(d.Median) || !math.IsNaN(d.Max) || d.N != 0 {
		t.Errorf("summarize(nil) = %+v", d)
	}
}

func TestTrackerHistoryReadings(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return base.Add(time.Duration(s * float64(time.Second))) }
	h := []nlmon.Transition{{At: at(0), On: false}, {At: at(2), On: true}, {At: at(5), On: false}, {At: at(7), On: true}}

	if got := becameTrue(h, at(1)); !got.Equal(at(2)) {
		t.Errorf("becameTrue after 1 s = %v, want 2 s", got.Sub(base))
	}
	if got := becameTrue(h, at(3)); !got.Equal(at(3)) {
		t.Errorf("becameTrue while true = %v, want the moment asked (3 s)", got.Sub(base))
	}
	if got := becameTrue(h, at(6)); !got.Equal(at(7)) {
		t.Errorf("becameTrue after 6 s = %v, want 7 s", got.Sub(base))
	}
	if got := becameTrue(h[:3], at(6)); !got.IsZero() {
		t.Errorf("becameTrue of a condition false to the end = %v, want zero", got)
	}
	if got := lastBecameTrue(h, at(0)); !got.Equal(at(7)) {
		t.Errorf("lastBecameTrue = %v, want 7 s", got.Sub(base))
	}
	if got := lastBecameTrue(h[:3], at(0)); !got.IsZero() {
		t.Errorf("lastBecameTrue of a condition false at the end = %v", got)
	}
	if got := becameFalse(h, at(3)); !got.Equal(at(5)) {
		t.Errorf("becameFalse after 3 s = %v, want 5 s", got.Sub(base))
	}
	if got := becameFalse(h, at(0)); !got.Equal(at(0)) {
		t.Errorf("becameFalse while false = %v, want the moment asked", got.Sub(base))
	}
	if n := lostAgain(h, at(0), at(10)); n != 1 {
		t.Errorf("lostAgain = %d, want 1", n)
	}
	if n := lostAgain(h, at(0), at(4)); n != 0 {
		t.Errorf("lostAgain before the loss = %d, want 0", n)
	}
	if v := since(base, time.Time{}); !math.IsInf(v, 1) {
		t.Errorf("since of a zero time = %v, want never", v)
	}
}

func TestProcParsers(t *testing.T) {
	// A command name with spaces and a parenthesis, as Go's runtime never
	// makes but a process may.
	stat := "4242 (fab) ricd x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 " +
		"150 37 0 0 20 0 9 0 98765 1234567 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	ticks, err := parseStatTicks(stat)
	if err != nil || ticks != 187 {
		t.Errorf("parseStatTicks = %d, %v; want 150+37", ticks, err)
	}
	start, err := parseStatStart(stat)
	if err != nil || start != 98765 {
		t.Errorf("parseStatStart = %d, %v; want 98765", start, err)
	}
	if _, err := parseStatTicks("4242 (x) S 1 2"); err == nil {
		t.Error("a short stat line was accepted")
	}

	status := "Name:\tfabricd\nVmHWM:\t   40000 kB\nVmRSS:\t   34123 kB\nThreads:\t9\n" +
		"voluntary_ctxt_switches:\t1000\nnonvoluntary_ctxt_switches:\t23\n"
	if kb, err := parseKB(status, "VmRSS"); err != nil || kb != 34123 {
		t.Errorf("VmRSS = %d, %v", kb, err)
	}
	if _, err := parseKB(status, "Pss"); err == nil {
		t.Error("a missing field was found")
	}
	if n, err := parseSwitches(status); err != nil || n != 1023 {
		t.Errorf("parseSwitches = %d, %v; want 1023", n, err)
	}
	if _, err := parseSwitches("Name:\tx\nvoluntary_ctxt_switches:\t5\n"); err == nil {
		t.Error("a status without involuntary switches was accepted")
	}
	rollup := "00400000-7ffd1000 ---p 00000000 00:00 0 [rollup]\nRss:  34000 kB\nPss:  19876 kB\n"
	if kb, err := parseKB(rollup, "Pss"); err != nil || kb != 19876 {
		t.Errorf("Pss = %d, %v", kb, err)
	}
}

func TestListensOn(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:00B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000    92        0 1234 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:00B3 01 00000000:00000000 00:00000000 00000000     0        0 1235 1 0 20 4 30 10 -1
`
	if !listensOn(tcp, bgpPortHex) {
		t.Error("the listener on port 179 was not found")
	}
	established := strings.Replace(tcp, "00000000:00B3 00000000:0000 0A", "00000000:00B3 00000000:0000 01", 1)
	if listensOn(established, bgpPortHex) {
		t.Error("a connection from port 179 was taken for a listener")
	}
	tcp6 := "  sl  local_address remote_address st\n   0: 00000000000000000000000000000000:00B3 00000000000000000000000000000000:0000 0A 0\n"
	if !listensOn(tcp6, bgpPortHex) {
		t.Error("the IPv6 listener was not found")
	}
}

func TestToRLogFollowsSessions(t *testing.T) {
	l := newTorLog("", []string{"swp1", "swp2", "swp10"})
	const (
		up1   = "2026/12/01 21:59:24.866668 BGP: [H4B4J-DCW2R] %ADJCHANGE: neighbor swp1(c1) in vrf default Up\n"
		up10  = "2026/12/01 21:59:24.900000 BGP: [H4B4J-DCW2R] %ADJCHANGE: neighbor swp10(c10) in vrf default Up\n"
		down1 = "2026/12/01 21:59:30.000001 BGP: [H4B4J-DCW2R] %ADJCHANGE: neighbor swp1(c1) in vrf default Down Peer closed the session\n"
		up2   = "2026/12/01 21:59:31.500000 BGP: [H4B4J-DCW2R] %ADJCHANGE: neighbor swp2 in vrf default Up\n"
	)
	// A line split across two reads is parsed once it is whole.
	l.feed(up1 + up10[:30])
	l.feed(up10[30:] + "2026/12/01 21:59:25.000000 BGP: unrelated line\n")
	if l.upCount() != 2 || l.allUp() {
		t.Fatalf("after two Up lines: %d up, allUp %v", l.upCount(), l.allUp())
	}
	t0 := time.Date(2026, 12, 1, 21, 59, 0, 0, time.Local)
	first := l.firstUp(t0)
	if first[0].IsZero() || !first[1].IsZero() || first[2].Nanosecond() != 900000000 {
		t.Errorf("firstUp = %v", first)
	}
	l.feed(down1 + up2)
	if l.upCount() != 2 {
		t.Errorf("after swp1 down and swp2 up: %d up, want 2", l.upCount())
	}
	l.feed(strings.Replace(up1, "21:59:24.866668", "21:59:33.000000", 1))
	if !l.allUp() {
		t.Error("every session logged up, but allUp is false")
	}
	back := l.backUp(time.Date(2026, 12, 1, 21, 59, 29, 0, time.Local))
	if back[0].Second() != 33 || back[1].Second() != 31 || !back[2].IsZero() {
		t.Errorf("backUp = %v: want swp1 at :33, swp2 at :31, swp10 not down since", back)
	}
	l.down(time.Date(2026, 12, 1, 21, 59, 40, 0, time.Local))
	if l.upCount() != 0 {
		t.Errorf("after down: %d up", l.upCount())
	}
}

func TestFabricdUpAt(t *testing.T) {
	log := `time=2026-12-01T22:49:18.700Z level=INFO msg="reading config" path=/x
time=2026-12-01T22:49:18.760Z level=INFO msg="fabricd is up" asn=65107 router_id=10.0.0.7 derived="" uplinks=2 announced=2
time=2026-12-01T22:49:19.000Z level=INFO msg="fabricd is up" asn=65107
`
	at, ok := fabricdUpAt(log, time.Time{})
	if !ok || !at.Equal(time.Date(2026, 12, 1, 22, 49, 18, 760e6, time.UTC)) {
		t.Errorf("fabricdUpAt = %v, %v; want the first such line, 22:49:18.760", at, ok)
	}
	// A log appended to by a later run: that run's line.
	at, ok = fabricdUpAt(log, time.Date(2026, 12, 1, 22, 49, 18, 900e6, time.UTC))
	if !ok || !at.Equal(time.Date(2026, 12, 1, 22, 49, 19, 0, time.UTC)) {
		t.Errorf("fabricdUpAt after 22:49:18.900 = %v, %v; want 22:49:19.000", at, ok)
	}
	if _, ok := fabricdUpAt("time=2026-12-01T22:49:18.700Z level=INFO msg=\"starting\"\n", time.Time{}); ok {
		t.Error("found in a log without the line")
	}
}

func TestWithLogLevel(t *testing.T) {
	conf := "asn = 65101\n\n[log]\nlevel = \"debug\"\n"
	got, err := withLogLevel(conf, "info")
	if err != nil || !strings.Contains(got, "[log]\nlevel = \"info\"\n") || strings.Contains(got, "debug") {
		t.Errorf("withLogLevel = %q, %v", got, err)
	}
	if _, err := withLogLevel("asn = 1\n", "info"); err == nil {
		t.Error("a config without [log] level was accepted")
	}
}

func TestFormatting(t *testing.T) {
	for v, want := range map[float64]string{
		0.44: "0.4 ms", 228: "228 ms", 999.4: "999 ms", 12400: "12.4 s", 123456: "123 s",
		math.Inf(1): "never", math.NaN(): "–",
	} {
		if got := fmtMs(v); got != want {
			t.Errorf("fmtMs(%v) = %q, want %q", v, got, want)
		}
	}
	if got := thousands(1234567); got != "1,234,567" {
		t.Errorf("thousands = %q", got)
	}
	if got := fmtLoss(Loss{Lost: 12, Sent: 2400, Unsent: 3}); got != "lost 12 of 2,400 (3 unsent: no route)" {
		t.Errorf("fmtLoss = %q", got)
	}
	if got := medianLoss([]Loss{{1, 100, 0}, {5, 120, 1}, {3, 110, 0}}); got != (Loss{3, 110, 0}) {
		t.Errorf("medianLoss = %+v", got)
	}
}

// sample builds a run of n servers whose figures are easy to check.
func sample(role testenv.Role, run int, failover []float64, lost int) *Sample {
	return &Sample{
		Role: role, N: len(failover), Run: run,
		Launch:     time.Duration(run) * time.Second,
		BringUp:    []float64{1000, 2000, 3000}[:len(failover)],
		BringUpCPU: []float64{0.5, 0.25, 0.75}[:len(failover)],
		RSS:        []float64{30, 34, 32}[:len(failover)], PSS: []float64{20, 21, 22}[:len(failover)],
		RSSByDaemon: map[string][]float64{"fabricd": {30, 34, 32}},
		CPU:         float64(run), Wakeups: []float64{600, 900, 700}[:len(failover)],
		Flows: []string{"c1 → c2 (requests via ens3)"},
		Disturbances: []Disturbance{
			{Kind: ToRKill, ToR: "tor", Failover: failover, Recovery: []float64{1500, 1600, 1700}[:len(failover)],
				During: Loss{Lost: lost, Sent: 1000}, After: Loss{Sent: 2000}},
			{Kind: ToRPortsDown, ToR: "tor", Failover: []float64{1, 2, 3}[:len(failover)],
				Recovery: []float64{math.Inf(1), math.Inf(1), 500}[:len(failover)], During: Loss{Lost: 1, Sent: 250}, After: Loss{Lost: 2, Sent: 1000}},
		},
	}
}

func TestReportTables(t *testing.T) {
	res := &Results{
		Command: "fabricd-scale --sizes 3", Sizes: []int{3}, Runs: 3, Flows: 8, Timing: DefaultTiming(), LogLevel: "info",
		Roles: []testenv.Role{testenv.RoleFabricd, testenv.RoleFRR},
		Samples: []*Sample{
			sample(testenv.RoleFabricd, 1, []float64{600, 700, 800}, 4),
			sample(testenv.RoleFabricd, 2, []float64{500, 650, 900}, 2),
			sample(testenv.RoleFabricd, 3, []float64{550, 600, math.Inf(1)}, 9),
			sample(testenv.RoleFRR, 1, []float64{200, 220, 240}, 0),
		},
		Failures: []string{"N=3 frr run 2: lab build failed"},
	}
	md := res.Markdown()
	lines := strings.Split(md, "\n")
	find := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, "| "+prefix) {
				return l
			}
		}
		t.Fatalf("no row %q in:\n%s", prefix, md)
		return ""
	}
	header := find("figure at N=3")
	if strings.Index(header, "FRR servers") > strings.Index(header, "fabricd servers") {
		t.Errorf("FRR, the baseline, should come first: %s", header)
	}
	if !strings.Contains(header, "(3 runs)") || !strings.Contains(header, "(1 run)") {
		t.Errorf("run counts missing: %s", header)
	}
	// fabricd's kill row: medians of the run medians (700, 650, 600) and maxima
	// (800, 900, never), and of the losses (4, 2, 9).
	kill := find("ToR BGP killed")
	cells := strings.Split(kill, "|")
	if got := strings.TrimSpace(cells[3]); got != "650 ms / 900 ms · lost 4 of 1,000" {
		t.Errorf("fabricd kill cell = %q", got)
	}
	if got := strings.TrimSpace(cells[2]); got != "220 ms / 240 ms · lost 0 of 1,000" {
		t.Errorf("FRR kill cell = %q", got)
	}
	ports := strings.Split(find("ToR ports down"), "|")
	if got := strings.TrimSpace(ports[2]); got != "never / never (never: 2 of 3) · lost 3 of 1,250" {
		t.Errorf("FRR ports cell = %q", got)
	}
	// A disturbance a run did not reach shows as nothing measured.
	if got := strings.TrimSpace(strings.Split(find("ToR frozen"), "|")[2]); got != "– · –" {
		t.Errorf("missing freeze cell = %q", got)
	}
	if got := strings.TrimSpace(strings.Split(find("  launching"), "|")[3]); got != "2.0 s" {
		t.Errorf("fabricd launch cell = %q, want the median of 1, 2, 3 s", got)
	}
	if got := strings.TrimSpace(strings.Split(find("bring-up: CPU time"), "|")[3]); got != "0.50 s / 0.75 s (1.50 s)" {
		t.Errorf("fabricd bring-up CPU cell = %q", got)
	}
	if !strings.Contains(find("idle RSS per server by daemon"), "fabricd 32.0") {
		t.Errorf("per-daemon RSS missing: %s", find("idle RSS per server by daemon"))
	}
	for _, want := range []string{"Command: `fabricd-scale --sizes 3`", "**N=3, fabricd, run 3**", "failover 550 600 never", "lab build failed"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
