package chaos

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Class is a kind of fault.
type Class string

// The fault classes, in the order of the report.
const (
	LinkFlap      Class = "link-flap"       // one carrier flap of a server link, 10 ms to 5 s down
	LinkFlapBurst Class = "link-flap-burst" // several short flaps in a row (first: 20 x 150 ms down / 250 ms up)
	ToRPortsDown  Class = "tor-ports-down"  // every port of one ToR down for 2-3 s, then up
	ToRKill       Class = "tor-kill"        // the ToR's FRR killed with SIGKILL and started again
	ToRFreeze     Class = "tor-freeze"      // the ToR's FRR stopped (SIGSTOP) past the hold time, then resumed
	ToRNoRA       Class = "tor-ra-suppress" // the ToR sends no router advertisement for 5-25 s
	ServerKill    Class = "server-kill"     // a server's daemon killed with SIGKILL and started again
	ServerRestart Class = "server-restart"  // a server's daemon restarted as `systemctl restart` does
	GatewayDelete Class = "gateway-delete"  // a server's 169.254.0.1 neighbour entry deleted
)

// Classes lists every class, in report order.
var Classes = []Class{LinkFlap, LinkFlapBurst, ToRPortsDown, ToRKill, ToRFreeze, ToRNoRA, ServerKill, ServerRestart, GatewayDelete}

// serverLevel reports whether a class disturbs a server (both of its uplinks)
// rather than one ToR or one link.
func (c Class) serverLevel() bool { return c == ServerKill || c == ServerRestart }

// linkLevel reports whether a class disturbs one server link.
func (c Class) linkLevel() bool { return c == LinkFlap || c == LinkFlapBurst || c == GatewayDelete }

// Step is one planned fault.
type Step struct {
	Class  Class
	ToR    int // the disturbed ToR; -1 for server-level classes
	Server int // the server concerned; -1 for ToR-level classes
	// Down is how long the fault lasts: a flap's down time, the ports' down
	// time, the freeze, the RA suppression.
	Down  time.Duration
	Up    time.Duration // time up between the flaps of a burst
	Count int           // flaps in a burst
	// Gap is the wait before the step: after the previous step ended, or, with
	// Overlap, after the previous step started.
	Gap     time.Duration
	Overlap bool // runs while the previous step still does (same ToR)
}

// Describe says what the step does, for logs and the report.
func (s Step) Describe(servers []string) string {
	srv := func() string {
		if s.Server >= 0 && s.Server < len(servers) {
			return servers[s.Server]
		}
		return "?"
	}
	tor := fmt.Sprintf("tor%d", s.ToR+1)
	switch s.Class {
	case LinkFlap:
		return fmt.Sprintf("%s-%s down %v", tor, srv(), s.Down)
	case LinkFlapBurst:
		return fmt.Sprintf("%s-%s %d x (%v down, %v up)", tor, srv(), s.Count, s.Down, s.Up)
	case ToRPortsDown:
		return fmt.Sprintf("%s all ports down %v", tor, s.Down)
	case ToRKill:
		return tor + " zebra+bgpd+bfdd SIGKILL, restart"
	case ToRFreeze:
		return fmt.Sprintf("%s SIGSTOP %v, SIGCONT", tor, s.Down)
	case ToRNoRA:
		return fmt.Sprintf("%s no RAs for %v", tor, s.Down)
	case ServerKill:
		return srv() + " daemon SIGKILL, start"
	case ServerRestart:
		return srv() + " daemon restart"
	case GatewayDelete:
		return fmt.Sprintf("%s 169.254.0.1 deleted on its uplink to %s", srv(), tor)
	}
	return string(s.Class)
}

// nominal is how long a step takes, with the recovery it usually needs, for
// fitting a plan into a duration. It only shapes the plan: the run waits for
// what really happens.
func (s Step) nominal() time.Duration {
	switch s.Class {
	case LinkFlap:
		return s.Down + 2*time.Second
	case LinkFlapBurst:
		return time.Duration(s.Count)*(s.Down+s.Up) + 3*time.Second
	case ToRPortsDown:
		return s.Down + 5*time.Second
	case ToRKill:
		return 10 * time.Second
	case ToRFreeze:
		return s.Down + 8*time.Second
	case ToRNoRA:
		return s.Down + 2*time.Second
	case ServerKill, ServerRestart:
		return 6 * time.Second
	default:
		return time.Second
	}
}

// Plan draws the schedule for a seed: the same seed gives the same steps, for
// every role. Its nominal length is about duration.
//
// The first steps visit every class once, in a random order, so that even a
// short run covers all of them; then classes are drawn at random. A ToR-level
// fault or a flap burst is sometimes overlapped by a flap of another link of
// the same ToR (a flap during a ToR restart is realistic); two ToRs are never
// disturbed at once, and server-level faults run alone.
func Plan(seed uint64, duration time.Duration, servers, tors int) []Step {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	uniform := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	// Log-uniform: short flaps are as common as long ones per decade.
	logUniform := func(lo, hi time.Duration) time.Duration {
		l := math.Log(float64(lo)) + rng.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))
		return time.Duration(math.Exp(l)).Round(time.Millisecond)
	}
	var order []Class
	order = append(order, Classes...)
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })

	var plan []Step
	var used time.Duration
	firstBurst := true
	for i := 0; used < duration; i++ {
		c := Classes[rng.IntN(len(Classes))]
		if i < len(order) {
			c = order[i]
		}
		st := Step{Class: c, ToR: rng.IntN(tors), Server: rng.IntN(servers)}
		switch c {
		case LinkFlap:
			st.Down = logUniform(10*time.Millisecond, 5*time.Second)
		case LinkFlapBurst:
			if firstBurst {
				// The burst of issue 11's first observation.
				st.Count, st.Down, st.Up = 20, 150*time.Millisecond, 250*time.Millisecond
				firstBurst = false
			} else {
				st.Count = 5 + rng.IntN(16)
				st.Down = uniform(50*time.Millisecond, 250*time.Millisecond).Round(time.Millisecond)
				st.Up = uniform(100*time.Millisecond, 400*time.Millisecond).Round(time.Millisecond)
			}
		case ToRPortsDown:
			st.Down = uniform(2*time.Second, 3*time.Second).Round(10 * time.Millisecond)
		case ToRFreeze:
			st.Down = uniform(10*time.Second, 12*time.Second).Round(10 * time.Millisecond)
		case ToRNoRA:
			st.Down = uniform(5*time.Second, 25*time.Second).Round(100 * time.Millisecond)
		}
		switch {
		case c.serverLevel():
			st.ToR = -1
		case !c.linkLevel():
			st.Server = -1
		}
		// Quiet gaps now and then; otherwise the next fault follows soon.
		if rng.IntN(10) < 3 {
			st.Gap = uniform(5*time.Second, 15*time.Second).Round(100 * time.Millisecond)
		} else {
			st.Gap = uniform(500*time.Millisecond, 2*time.Second).Round(10 * time.Millisecond)
		}
		plan = append(plan, st)
		used += st.Gap + st.nominal()

		// An overlapping flap on the same ToR, during a fault that lasts.
		var window time.Duration
		switch c {
		case ToRKill:
			window = time.Second // the restart itself takes about that long
		case ToRFreeze, ToRNoRA:
			window = st.Down - time.Second
		case LinkFlapBurst:
			window = time.Duration(st.Count) * (st.Down + st.Up)
		}
		if window <= 0 || servers < 2 || rng.IntN(10) >= 3 {
			continue
		}
		ov := Step{Class: LinkFlap, ToR: st.ToR, Server: rng.IntN(servers), Overlap: true}
		if c == LinkFlapBurst {
			// Another server's link: two flaps of one link cannot overlap.
			ov.Server = (st.Server + 1 + rng.IntN(servers-1)) % servers
		}
		ov.Gap = uniform(0, window).Round(10 * time.Millisecond)
		ov.Down = logUniform(10*time.Millisecond, 2*time.Second)
		plan = append(plan, ov)
	}
	return plan
}
