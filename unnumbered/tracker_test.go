package unnumbered

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

const (
	tor1 = "fe80::1"
	tor2 = "fe80::2"
	mac1 = "02:00:00:00:00:01"
	mac2 = "02:00:00:00:00:02"
)

// trStep is one thing that happens to a tracker in a test: an RA (ra true)
// or a look at the clock (expire).
type trStep struct {
	at       time.Duration // since the start of the test
	ra       bool
	src, mac string // mac "" means the RA has no source link-layer option
	lifetime time.Duration

	want     verdict // for RAs
	wantDown bool    // for expire steps

	// The neighbor after the step; wantAddr "" means none.
	wantAddr, wantMAC string
}

func ra(at time.Duration, src, mac string, lifetime time.Duration, want verdict, wantAddr, wantMAC string) trStep {
	return trStep{at: at, ra: true, src: src, mac: mac, lifetime: lifetime, want: want, wantAddr: wantAddr, wantMAC: wantMAC}
}

func expire(at time.Duration, wantDown bool, wantAddr, wantMAC string) trStep {
	return trStep{at: at, wantDown: wantDown, wantAddr: wantAddr, wantMAC: wantMAC}
}

func TestTracker(t *testing.T) {
	const s = time.Second
	lt := 15 * s
	tests := []struct {
		name  string
		steps []trStep
	}{
		{
			name: "first RA, then refresh",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(5*s, tor1, mac1, lt, raRefresh, tor1, mac1),
			},
		},
		{
			name: "same address new MAC is followed at once",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(1*s, tor1, mac2, lt, raUp, tor1, mac2),
			},
		},
		{
			name: "RA without option keeps the known MAC",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(1*s, tor1, "", lt, raRefresh, tor1, mac1),
			},
		},
		{
			name: "MAC learned later is news",
			steps: []trStep{
				ra(0, tor1, "", lt, raUp, tor1, ""),
				ra(1*s, tor1, mac1, lt, raUp, tor1, mac1),
			},
		},
		{
			name: "same MAC new address is followed at once",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(1*s, tor2, mac1, lt, raUp, tor2, mac1),
				ra(2*s, tor1, mac2, lt, raSecondRouter, tor2, mac1),
			},
		},
		{
			name: "second router ignored while fresh, replaces stale neighbor",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(5*s, tor1, mac1, lt, raRefresh, tor1, mac1),
				ra(10*s, tor1, mac1, lt, raRefresh, tor1, mac1),
				// Interval 5 s: fresh for 7.5 s after the RA at 10 s.
				ra(17*s, tor2, mac2, lt, raSecondRouter, tor1, mac1),
				ra(17*s+600*time.Millisecond, tor2, mac2, lt, raUp, tor2, mac2),
			},
		},
		{
			name: "second router without MAC option is a second router",
			steps: []trStep{
				ra(0, tor1, "", lt, raUp, tor1, ""),
				ra(1*s, tor2, "", lt, raSecondRouter, tor1, ""),
			},
		},
		{
			name: "freshness has a 3 s floor",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(1*s, tor1, mac1, lt, raRefresh, tor1, mac1),
				ra(2*s, tor1, mac1, lt, raRefresh, tor1, mac1),
				ra(4900*time.Millisecond, tor2, mac2, lt, raSecondRouter, tor1, mac1),
				ra(5100*time.Millisecond, tor2, mac2, lt, raUp, tor2, mac2),
			},
		},
		{
			name: "unknown interval assumes 10 s",
			steps: []trStep{
				ra(0, tor1, mac1, 0, raUp, tor1, mac1),
				ra(14*s, tor2, mac2, 0, raSecondRouter, tor1, mac1),
				ra(16*s, tor2, mac2, 0, raUp, tor2, mac2),
			},
		},
		{
			name: "a solicited RA does not shrink the interval estimate",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(5*s, tor1, mac1, lt, raRefresh, tor1, mac1),
				ra(10*s, tor1, mac1, lt, raRefresh, tor1, mac1),
				ra(10*s+10*time.Millisecond, tor1, mac1, lt, raRefresh, tor1, mac1),
				ra(17*s, tor2, mac2, lt, raSecondRouter, tor1, mac1),
			},
		},
		{
			// At start-up the ToR answers our two solicitations at once:
			// that is not its period, and its place holds as for an
			// unknown interval (10 s assumed, fresh for 15 s).
			name: "answers to our solicitations say nothing of the period",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(5*time.Millisecond, tor1, mac1, lt, raRefresh, tor1, mac1),
				ra(4*s, tor2, mac2, lt, raSecondRouter, tor1, mac1),
				ra(16*s, tor2, mac2, lt, raUp, tor2, mac2),
			},
		},
		{
			name: "replacement starts a new interval estimate",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(10*s, tor1, mac1, lt, raRefresh, tor1, mac1),
				ra(30*s, tor2, mac2, lt, raUp, tor2, mac2),
				ra(31*s, tor2, mac2, lt, raRefresh, tor2, mac2),
				// Interval now 1 s: fresh for 3 s only.
				ra(34100*time.Millisecond, tor1, mac1, lt, raUp, tor1, mac1),
			},
		},
		{
			name: "expires after router lifetime",
			steps: []trStep{
				ra(0, tor1, mac1, lt, raUp, tor1, mac1),
				ra(5*s, tor1, mac1, lt, raRefresh, tor1, mac1),
				expire(19900*time.Millisecond, false, tor1, mac1),
				expire(20*s, true, "", ""),
				expire(21*s, false, "", ""),
				ra(22*s, tor1, mac1, lt, raUp, tor1, mac1),
			},
		},
		{
			name: "lifetime 0 expires after 3 intervals",
			steps: []trStep{
				ra(0, tor1, mac1, 0, raUp, tor1, mac1),
				ra(12*s, tor1, mac1, 0, raRefresh, tor1, mac1),
				expire(47900*time.Millisecond, false, tor1, mac1),
				expire(48*s, true, "", ""),
			},
		},
		{
			// FRR answers a solicitation at once and sends its first RAs a
			// second apart: short gaps must not make it expire before its
			// regular RAs (every 5-10 s) come.
			name: "lifetime 0 after quick first RAs expires after 3 usual intervals",
			steps: []trStep{
				ra(0, tor1, mac1, 0, raUp, tor1, mac1),
				ra(1*s, tor1, mac1, 0, raRefresh, tor1, mac1),
				ra(2*s, tor1, mac1, 0, raRefresh, tor1, mac1),
				expire(31*s, false, tor1, mac1),
				expire(32*s, true, "", ""),
			},
		},
		{
			name: "lifetime 0 with unknown interval expires after 30 s",
			steps: []trStep{
				ra(0, tor1, mac1, 0, raUp, tor1, mac1),
				expire(29*s, false, tor1, mac1),
				expire(30*s, true, "", ""),
			},
		},
		{
			name: "lifetime shorter than the interval is not honoured",
			steps: []trStep{
				ra(0, tor1, mac1, 3*s, raUp, tor1, mac1),
				ra(5*s, tor1, mac1, 3*s, raRefresh, tor1, mac1),
				expire(9*s, false, tor1, mac1),
				expire(35*s, true, "", ""),
			},
		},
		{
			name: "lifetime follows the latest RA",
			steps: []trStep{
				ra(0, tor1, mac1, 30*s, raUp, tor1, mac1),
				ra(1*s, tor1, mac1, 5*s, raRefresh, tor1, mac1),
				expire(6*s, true, "", ""),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var tr tracker
			tr.setLink("swp1", 7)
			for i, st := range tt.steps {
				now := t0.Add(st.at)
				if st.ra {
					got := tr.observe(now, addr(t, st.src), mac(t, st.mac), st.lifetime)
					if got != st.want {
						t.Fatalf("step %d (RA from %s %s at %v): verdict %v, want %v", i, st.src, st.mac, st.at, got, st.want)
					}
				} else {
					n, down := tr.expire(now)
					if down != st.wantDown {
						t.Fatalf("step %d (expire at %v): down %v, want %v", i, st.at, down, st.wantDown)
					}
					if down && !n.Addr.IsValid() {
						t.Fatalf("step %d: expired neighbor %+v has no address", i, n)
					}
				}
				checkCurrent(t, i, &tr, st.wantAddr, st.wantMAC)
			}
		})
	}
}

func checkCurrent(t *testing.T, step int, tr *tracker, wantAddr, wantMAC string) {
	t.Helper()
	n, ok := tr.current()
	if wantAddr == "" {
		if ok {
			t.Fatalf("step %d: neighbor %v %v, want none", step, n.Addr, n.MAC)
		}
		if !tr.deadline().IsZero() {
			t.Fatalf("step %d: deadline %v without neighbor", step, tr.deadline())
		}
		return
	}
	if !ok {
		t.Fatalf("step %d: no neighbor, want %s %s", step, wantAddr, wantMAC)
	}
	if n.Addr != addr(t, wantAddr) || n.MAC.String() != wantMAC {
		t.Fatalf("step %d: neighbor %v %v, want %s %s", step, n.Addr, n.MAC, wantAddr, wantMAC)
	}
	if n.Interface != "swp1" || n.Index != 7 {
		t.Fatalf("step %d: neighbor on %s/%d, want swp1/7", step, n.Interface, n.Index)
	}
}

func TestTrackerReturnsCopies(t *testing.T) {
	var tr tracker
	m := mac(t, mac1)
	tr.observe(time.Now(), addr(t, tor1), m, time.Minute)
	m[0] = 0xff
	n, _ := tr.current()
	if n.MAC.String() != mac1 {
		t.Fatalf("tracker kept the caller's slice: %v", n.MAC)
	}
	n.MAC[0] = 0xff
	if n2, _ := tr.current(); n2.MAC.String() != mac1 {
		t.Fatalf("current returned the tracker's slice: %v", n2.MAC)
	}
}

func addr(t *testing.T, s string) netip.Addr {
	t.Helper()
	return netip.MustParseAddr(s).WithZone("swp1")
}

func mac(t *testing.T, s string) net.HardwareAddr {
	t.Helper()
	if s == "" {
		return nil
	}
	m, err := net.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
