package chaos

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/nlmon"
	"github.com/fabricd/fabricd/testenv/probe"
)

func TestPlanIsSeededAndKeepsItsRules(t *testing.T) {
	a := Plan(7, 10*time.Minute, 4, 2)
	if b := Plan(7, 10*time.Minute, 4, 2); !slices.Equal(a, b) {
		t.Fatal("the same seed gave two plans")
	}
	if c := Plan(8, 10*time.Minute, 4, 2); slices.Equal(a, c) {
		t.Fatal("two seeds gave the same plan")
	}
	seen := map[Class]int{}
	var nominal time.Duration
	planned := 0 // steps that are not overlaps
	for i, st := range a {
		if !st.Overlap {
			seen[st.Class]++
			if planned++; planned <= len(Classes) && seen[st.Class] != 1 {
				t.Errorf("step %d: %s again before every class was visited", i, st.Class)
			}
		}
		switch {
		case st.Class.serverLevel():
			if st.ToR != -1 || st.Server < 0 || st.Overlap {
				t.Errorf("step %d: server-level %+v", i, st)
			}
		case st.Class.linkLevel():
			if st.ToR < 0 || st.ToR > 1 || st.Server < 0 || st.Server > 3 {
				t.Errorf("step %d: link-level %+v", i, st)
			}
		default:
			if st.ToR < 0 || st.ToR > 1 || st.Server != -1 {
				t.Errorf("step %d: ToR-level %+v", i, st)
			}
		}
		if st.Overlap {
			prev := a[i-1]
			if st.Class != LinkFlap || prev.Overlap || prev.ToR != st.ToR || prev.Class.serverLevel() || prev.Class == ToRPortsDown {
				t.Errorf("step %d overlaps %+v with %+v", i, prev, st)
			}
			if prev.Class == LinkFlapBurst && prev.Server == st.Server {
				t.Errorf("step %d flaps the link step %d is flapping", i, i-1)
			}
		} else {
			nominal += st.Gap + st.nominal()
		}
		if st.Class == LinkFlap && (st.Down < 10*time.Millisecond || st.Down > 5*time.Second) {
			t.Errorf("step %d: flap of %v", i, st.Down)
		}
		if st.Class == ToRFreeze && st.Down <= 9*time.Second {
			t.Errorf("step %d: freeze of %v is within the hold time", i, st.Down)
		}
	}
	for _, c := range Classes {
		if seen[c] == 0 {
			t.Errorf("no %s in a 10-minute plan", c)
		}
	}
	if first := slices.IndexFunc(a, func(s Step) bool { return s.Class == LinkFlapBurst }); a[first].Count != 20 || a[first].Down != 150*time.Millisecond || a[first].Up != 250*time.Millisecond {
		t.Errorf("first burst %+v, want issue 11's 20 x 150/250 ms", a[first])
	}
	if nominal < 10*time.Minute || nominal > 11*time.Minute {
		t.Errorf("nominal length %v for 10 minutes", nominal)
	}
}

func TestHashSeeds(t *testing.T) {
	seen := map[uint32]bool{}
	for k := range 8 {
		s := hashSeed(1, k)
		if s == 0 || seen[s] {
			t.Errorf("server %d: seed %d is 0 or repeated", k, s)
		}
		seen[s] = true
	}
	if hashSeed(1, 0) == hashSeed(2, 0) {
		t.Error("the run seed does not change the hash seeds")
	}
}

func at(ms int) time.Time { return time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond) }

func TestAllFullAndNextFull(t *testing.T) {
	hist := [][]nlmon.Transition{
		{{At: at(0), On: true}, {At: at(100), On: false}, {At: at(300), On: true}},
		{{At: at(0), On: true}, {At: at(200), On: false}, {At: at(400), On: true}, {At: at(900), On: false}},
	}
	ivs := allFull(hist)
	want := []interval{{from: at(0), to: at(100)}, {from: at(400), to: at(900)}}
	if !slices.Equal(ivs, want) {
		t.Fatalf("allFull = %v, want %v", ivs, want)
	}
	for _, c := range []struct {
		t, want int
	}{{50, 50}, {100, 400}, {250, 400}, {500, 500}} {
		if got := nextFull(ivs, at(c.t)); !got.Equal(at(c.want)) {
			t.Errorf("nextFull(%d) = %v, want %d", c.t, got, c.want)
		}
	}
	if got := nextFull(ivs, at(950)); !got.IsZero() {
		t.Errorf("nextFull after the last interval = %v, want zero", got)
	}
}

// testResult is a three-server run with one flap of c1's link to tor1 (carrier
// lost at 1000 ms, back at 1200 ms, full ECMP at 1500 ms, the session up
// again at 1800 ms) and one freeze of tor2 from 5000 ms to 15000 ms that
// never recovers.
func testResult() *Result {
	eps := []probe.Endpoint{{Name: "c1", Server: "c1"}, {Name: "c2", Server: "c2"}, {Name: "c3", Server: "c3"}}
	r := &Result{
		Servers: []string{"c1", "c2", "c3"},
		Ports:   []string{"swp1", "swp2", "swp3"},
		T0:      at(0),
		End:     at(30000),
		Flood:   &probe.Result{Endpoints: eps, FlowList: []probe.Flow{{From: 0, To: 1}, {From: 1, To: 0}, {From: 1, To: 2}}},
		Events: []Event{
			{Index: 0, Step: Step{Class: LinkFlap, ToR: 0, Server: 0, Down: 200 * time.Millisecond}, Start: at(1000), End: at(1200)},
			{Index: 1, Step: Step{Class: ToRFreeze, ToR: 1, Server: -1, Down: 10 * time.Second}, Start: at(5000), End: at(15000)},
		},
		Trackers: Trackers{
			Full: [][]nlmon.Transition{
				{{At: at(-100), On: true}, {At: at(1001), On: false}, {At: at(1500), On: true}, {At: at(14000), On: false}},
				{{At: at(-100), On: true}},
				{{At: at(-100), On: true}},
			},
			Carrier: [][][]nlmon.Transition{
				{{{At: at(-100), On: true}, {At: at(1000), On: false}, {At: at(1200), On: true}}, {{At: at(-100), On: true}}},
				{{{At: at(-100), On: true}}, {{At: at(-100), On: true}}},
				{{{At: at(-100), On: true}}, {{At: at(-100), On: true}}},
			},
			Sessions: [][]nlmon.Transition{
				{{At: at(-100), On: true}, {At: at(1000), On: false}, {At: at(1800), On: true}}, // tor1-c1
				{{At: at(-100), On: true}}, {{At: at(-100), On: true}},
				{{At: at(-100), On: true}, {At: at(14000), On: false}}, // tor2-c1
				{{At: at(-100), On: true}}, {{At: at(-100), On: true}},
			},
		},
	}
	// 10 packets a second through each ToR port, in and out, from 0 to 30 s.
	for ms := 0; ms <= 30000; ms += 100 {
		n := uint64(ms / 100)
		c := map[string]nlmon.Count{"swp1": {In: n, Out: n}, "swp2": {In: n, Out: n}}
		r.Samples.List = append(r.Samples.List, CounterSample{At: at(ms), ToR: []map[string]nlmon.Count{c, c}})
	}
	return r
}

func TestAnalyseAttributesLosses(t *testing.T) {
	r := testResult()
	r.FinalHealthy = true
	losses := []probe.Loss{
		{Flow: 1, Sent: at(1050)},  // c2 -> c1 just after c1's carrier loss: in flight
		{Flow: 0, Sent: at(1150)},  // 150 ms after: the flap's, beyond the rule
		{Flow: 0, Sent: at(3700)},  // within the flap's 2 s grace after its session is back (1800 + 2000)
		{Flow: 0, Sent: at(3900)},  // in no window
		{Flow: 2, Sent: at(1100)},  // c2 -> c3: a flap of c1's link cannot cost it
		{Flow: 1, Sent: at(20000)}, // the freeze never recovered: its window runs to the end
	}
	r.analyseWith(losses)

	flap, freeze := r.Outcomes[0], r.Outcomes[1]
	if flap.InFlight != 1 || flap.InFlightLatest != 50*time.Millisecond {
		t.Errorf("flap in flight %d (latest %v), want 1 (50ms)", flap.InFlight, flap.InFlightLatest)
	}
	if flap.Lost != 2 || flap.LostFlows["c1 -> c2"] != 2 {
		t.Errorf("flap lost %d %v, want 2 of c1 -> c2", flap.Lost, flap.LostFlows)
	}
	if flap.LostDuring != 1 {
		t.Errorf("flap lost %d while it lasted, want 1", flap.LostDuring)
	}
	var tsv strings.Builder
	if err := r.WriteLosses(&tsv); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(tsv.String()), "\n"); len(lines) != 7 || lines[1] != "1.050\tc2 -> c1\t0\tin-flight" || lines[4] != "3.900\tc1 -> c2\t-\tlost" {
		t.Errorf("losses file:\n%s", tsv.String())
	}
	if flap.Never || flap.ToFull != 300*time.Millisecond {
		t.Errorf("flap back to full ECMP after %v (never %v), want 300ms", flap.ToFull, flap.Never)
	}
	if !freeze.Never || freeze.Lost != 1 {
		t.Errorf("freeze: never %v, lost %d; want never and 1", freeze.Never, freeze.Lost)
	}
	if len(r.Unattributed) != 2 || !r.Unattributed[0].Sent.Equal(at(3900)) || r.Unattributed[1].Flow != 2 {
		t.Errorf("unattributed %v, want the loss at 3900 ms and c2 -> c3's", r.Unattributed)
	}
	if flap.ToSessions != 600*time.Millisecond || !freeze.SessionsNever {
		t.Errorf("sessions back after the flap: %v, want 600ms; after the freeze never %v, want never", flap.ToSessions, freeze.SessionsNever)
	}
	// Share before the flap: tor1's swp1, in and out, 20 of the 40 packets both
	// ToRs forwarded in that second.
	if flap.CrossBefore != 20 || flap.TotalBefore != 40 {
		t.Errorf("flap crossing before %d of %d, want 20 of 40", flap.CrossBefore, flap.TotalBefore)
	}
	if freeze.CrossBefore != 20 || freeze.TotalBefore != 40 {
		t.Errorf("freeze crossing before %d of %d, want 20 of 40", freeze.CrossBefore, freeze.TotalBefore)
	}
	var rows = map[string]Row{}
	for _, row := range r.Rows {
		rows[row.Class] = row
	}
	if rows[string(LinkFlap)].Lost != 2 || rows[string(ToRFreeze)].Never != 1 || rows[noEvent].Lost != 2 {
		t.Errorf("rows %+v", r.Rows)
	}
	if r.Passed() || len(r.Failures) != 5 {
		t.Errorf("failures %q, want the flap's and the freeze's losses, the freeze's FIB and sessions and the unattributed loss", r.Failures)
	}
	table := Table([]*Result{r})
	for _, want := range []string{"link-flap", "1 (<= 50 ms)", "never (1 of 1)", noEvent} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestAnnouncedAndDiff(t *testing.T) {
	var tor1, tor2 torTable
	tor1.Routes = map[string][]struct {
		Valid    bool   `json:"valid"`
		Bestpath bool   `json:"bestpath"`
		Path     string `json:"path"`
	}{
		"4.4.4.4/32":  {{Valid: true, Bestpath: true, Path: ""}},
		"10.0.0.2/32": {{Valid: true, Bestpath: true, Path: "65102"}},
		"10.0.0.1/32": {{Valid: true, Bestpath: true, Path: "65101"}},
		"10.0.0.3/32": {{Valid: true, Bestpath: false, Path: "65103"}},
	}
	tor2.Routes = map[string][]struct {
		Valid    bool   `json:"valid"`
		Bestpath bool   `json:"bestpath"`
		Path     string `json:"path"`
	}{
		"10.0.0.2/32": {{Valid: true, Bestpath: true, Path: "65102"}},
		"10.0.0.3/32": {{Valid: true, Bestpath: true, Path: "65101 65103"}}, // contains our AS
	}
	own := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}
	want, err := announced([]torTable{tor1, tor2}, []string{"ens3", "ens4"}, 65101, own)
	if err != nil {
		t.Fatal(err)
	}
	exp := map[netip.Prefix][]string{
		netip.MustParsePrefix("4.4.4.4/32"):  {"ens3"},
		netip.MustParsePrefix("10.0.0.2/32"): {"ens3", "ens4"},
	}
	if d := diffTables(want, exp); len(d) > 0 {
		t.Errorf("announced: %v", d)
	}
	have := map[netip.Prefix][]string{
		netip.MustParsePrefix("10.0.0.2/32"): {"ens4"},
		netip.MustParsePrefix("10.9.9.9/32"): {"ens3"},
	}
	d := diffTables(have, exp)
	if len(d) != 3 || !strings.Contains(d[0], "4.4.4.4/32 missing") || !strings.Contains(d[1], "10.0.0.2/32 via [ens4]") || !strings.Contains(d[2], "not announced") {
		t.Errorf("diff %q", d)
	}
}

func TestParseGoroutines(t *testing.T) {
	resp := "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 44\ngo_threads 9\n"
	if n, err := parseGoroutines(strings.NewReader(resp)); err != nil || n != 44 {
		t.Errorf("parseGoroutines = %d, %v; want 44", n, err)
	}
	if _, err := parseGoroutines(strings.NewReader("HTTP/1.0 404 Not Found\r\n\r\n")); err == nil {
		t.Error("no sample, no error")
	}
}

func TestLeak(t *testing.T) {
	base := &ProcSample{FDs: 18, Goroutines: 44}
	for _, c := range []struct {
		final *ProcSample
		leak  bool
	}{
		{&ProcSample{FDs: 20, Goroutines: 49}, false},
		{&ProcSample{FDs: 21, Goroutines: 44}, true},
		{&ProcSample{FDs: 18, Goroutines: 50}, true},
		{nil, false},
	} {
		if got := (ProcTrack{Baseline: base, Final: c.final}).Leak() != ""; got != c.leak {
			t.Errorf("final %+v: leak %v, want %v", c.final, got, c.leak)
		}
	}
}

func TestSessionsFromToRLogs(t *testing.T) {
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "tor.log"), filepath.Join(dir, "tor2.log")}
	base := time.Now().Truncate(time.Microsecond)
	stamp := func(ms int) string {
		return base.Add(time.Duration(ms) * time.Millisecond).Format(testenv.FRRTimeLayout)
	}
	for _, p := range paths {
		// Written before the following begins: not read.
		if err := os.WriteFile(p, []byte(stamp(-5000)+" BGP: [N9HHH-F8H1M] %ADJCHANGE: neighbor swp1(vm) in vrf default Down\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := followSessions(paths, []string{"swp1", "swp10"}, time.Millisecond)
	appendLog := func(p, text string) {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(text)
		f.Close()
	}
	appendLog(paths[0], stamp(100)+" BGP: [PXVXG-TFNNT] %ADJCHANGE: neighbor swp10(vm) in vrf default Down Waiting for NHT\n"+
		stamp(150)+" BGP: [M59KS-A3ZXZ] bgp_update_receive: rcvd End-of-RIB for IPv4 Unicast from swp1 in vrf default\n"+
		stamp(300)+" BGP: [N9HHH-F8H1M] %ADJCHANGE: neighbor swp10(vm) in vrf")
	waitFor(t, func() bool { return !s.allUp() })
	if d := s.down([]string{"tor", "tor2"}); !slices.Equal(d, []string{"tor swp10"}) {
		t.Errorf("down %q, want tor swp10 (swp1 is another port)", d)
	}
	appendLog(paths[0], " default Up\n") // the rest of the line
	waitFor(t, s.allUp)
	kill := base.Add(time.Second)
	s.killed(1, kill)
	if d := s.down([]string{"tor", "tor2"}); len(d) != 2 {
		t.Errorf("after tor2's kill, down %q", d)
	}
	// tor is frozen and resumed: its sessions are down until it logs them up.
	resumed := base.Add(2 * time.Second)
	s.frozen(0, resumed)
	appendLog(paths[0], stamp(2100)+" BGP: [PXVXG-TFNNT] %ADJCHANGE: neighbor swp1(vm) in vrf default Down Hold Timer Expired\n"+
		stamp(2900)+" BGP: [N9HHH-F8H1M] %ADJCHANGE: neighbor swp1(vm) in vrf default Up\n")
	waitFor(t, func() bool { return len(s.down(nil)) == 3 })
	if d := s.down([]string{"tor", "tor2"}); !slices.Equal(d, []string{"tor swp10", "tor2 swp1", "tor2 swp10"}) {
		t.Errorf("after the freeze and swp1's return, down %q", d)
	}
	h := s.stop()
	if len(h) != 4 || len(h[0]) != 3 || len(h[1]) != 4 || h[1][1].On || !h[1][2].On || h[1][3].On || len(h[2]) != 2 || !h[2][1].At.Equal(kill) {
		t.Fatalf("histories %v", h)
	}
	if h[0][1].On || !h[0][1].At.Equal(resumed) || !h[0][2].On || !h[0][2].At.Equal(base.Add(2900*time.Millisecond)) || !h[1][3].At.Equal(resumed) {
		t.Errorf("after the freeze: swp1 %v, swp10 %v", h[0], h[1])
	}
	if !h[1][1].At.Equal(base.Add(100*time.Millisecond)) || !h[1][2].At.Equal(base.Add(300*time.Millisecond)) {
		t.Errorf("session down at %v and up at %v, want the log's times", h[1][1].At, h[1][2].At)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("condition not met within a second")
}
