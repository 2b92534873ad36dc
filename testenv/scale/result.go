package scale

import (
	"time"

	"github.com/fabricd/fabricd/testenv"
	"github.com/fabricd/fabricd/testenv/bench"
)

// Kind is one of the three disturbances, in the order a run makes them.
type Kind int

const (
	// ToRKill: SIGKILL of one ToR's FRR (zebra, bgpd, bfdd), its links up; it
	// stays dead until the servers have stopped using it, then starts again.
	ToRKill Kind = iota
	// ToRFreeze: SIGSTOP of one ToR's bgpd and zebra for Timing.Freeze (past
	// the hold time), links up, then SIGCONT.
	ToRFreeze
	// ToRPortsDown: every port of one ToR down for Timing.PortsDown, then up.
	ToRPortsDown
)

// Kinds lists the disturbances in run order. Ports-down comes last: FRR
// servers may never regain full ECMP after it.
var Kinds = []Kind{ToRKill, ToRFreeze, ToRPortsDown}

func (k Kind) String() string {
	switch k {
	case ToRKill:
		return "ToR BGP killed"
	case ToRFreeze:
		return "ToR frozen"
	case ToRPortsDown:
		return "ToR ports down"
	}
	return "unknown"
}

// Loss is what the flood lost in a window: requests sent in it that got no
// reply within the probe's timeout. Unsent ones (the sender had no route) are
// among Lost.
type Loss struct {
	Lost, Sent, Unsent int
}

// Disturbance is what one disturbance did to the fabric. Times are in
// milliseconds, per server (or per session of the disturbed ToR, in server
// order); +Inf is "never" (not within the bound), NaN not measured.
type Disturbance struct {
	Kind Kind
	ToR  string
	// Degraded: the fabric had not recovered from the previous disturbance
	// when this one began.
	Degraded bool
	// Failover: from the disturbance's start (the signal) until the server's
	// kernel routes nothing through the ToR; ToRPortsDown: from the server's
	// own carrier loss (the ports go down one after the other).
	Failover []float64
	// Listen (ToRKill): from the restart of the killed ToR's FRR until its
	// bgpd listens on port 179.
	Listen float64
	// Recovery: from the reference moment (ToRKill: bgpd listening; ToRFreeze:
	// SIGCONT; ToRPortsDown: ports up) until the server has full ECMP again.
	Recovery []float64
	// LostAgain counts servers that had full ECMP again after the reference
	// moment and lost it again before the next disturbance.
	LostAgain int
	// Sessions: from the reference moment until the ToR logs its session with
	// the server Established for good.
	Sessions []float64
	// During is the flood's loss from the start to the end of the disturbance
	// (ToRKill: until the restart begins); After from then until the next
	// disturbance (or the end of the flood).
	During, After Loss
	Err           string
	// Start, End and Ref are the disturbance's start (the kill, the SIGSTOP,
	// the ports down), its end (the restart, the SIGCONT, the ports up) and the
	// reference moment of Recovery (bgpd listening, SIGCONT, ports up), for
	// reading the daemons' logs next to the figures.
	Start, End, Ref time.Time
}

// Sample is everything one run of one server role at one size measured, in one
// fresh lab.
type Sample struct {
	Role      testenv.Role
	N         int
	Run       int
	LabPrefix string
	LabDir    string // kept only with Config.Dir
	Build     time.Duration

	// Launch is how long starting every server's daemon(s) took (RoleFRR:
	// until each daemon answers vtysh).
	// Start is the first daemon start, the origin of the bring-up figures.
	Start  time.Time
	Launch time.Duration
	// BringUp: per server, from the first daemon start to the moment it had
	// full ECMP for good (ms).
	BringUp []float64
	// BringUpFlaps counts the times a server lost full ECMP again during the
	// bring-up and the settle time.
	BringUpFlaps int
	// BringUpCPU: per server, the CPU time its daemons used from their start
	// until every server had full ECMP (or the bring-up bound), in seconds.
	BringUpCPU []float64
	// DaemonUp (fabricd): per server, from the first daemon start until its
	// log says "fabricd is up" (ms; NaN for FRR).
	DaemonUp []float64
	// SessionsUp: per ToR session (tor's, then tor2's, in server order), from
	// the first daemon start until the ToR logged it Established (ms).
	SessionsUp []float64

	// RSS and PSS per server, summed over its daemons (MB), after Settle.
	RSS, PSS []float64
	// RSSByDaemon is RSS per server of each daemon ("zebra", "bgpd", ...), MB.
	RSSByDaemon map[string][]float64
	// CPU is the CPU time of all server daemons together over the idle
	// window, as a percentage of one CPU; CPUPerServer per server.
	CPU          float64
	CPUPerServer []float64
	// Wakeups: per server, context switches of its daemons' threads per minute
	// over the idle window.
	Wakeups []float64
	// ToRCPU is both ToRs' FRR over the same window, % of one CPU.
	ToRCPU float64
	// Idle is the window's actual length.
	Idle time.Duration

	// Flows describes the flood's flows: "c1 → c9 (requests via ens4)".
	Flows []string
	// Baseline is the flood's loss before the first disturbance.
	Baseline     Loss
	Disturbances []Disturbance

	// Notes are problems of the run that do not void it (a monitor that
	// disagrees with the kernel, a daemon that died, an unclean teardown).
	Notes []string
}

// disturbance returns the sample's disturbance of kind k, or nil.
func (s *Sample) disturbance(k Kind) *Disturbance {
	for i := range s.Disturbances {
		if s.Disturbances[i].Kind == k {
			return &s.Disturbances[i]
		}
	}
	return nil
}

// Results is a whole benchmark: every size, role and run.
type Results struct {
	Command   string
	Machine   bench.Machine
	LoadStart string // /proc/loadavg's first three fields
	LoadEnd   string
	Started   time.Time
	Took      time.Duration
	Timing    Timing
	Sizes     []int
	Roles     []testenv.Role
	Runs      int
	Flows     int
	LogLevel  string
	Samples   []*Sample
	Failures  []string // runs that could not be completed
}
