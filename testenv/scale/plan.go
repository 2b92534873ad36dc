// Package scale is the fabric-scale benchmark of issue 13 (`make scale`): a
// leaf pair of FRR ToRs (the seed's ToR config) and N dual-homed servers, each
// announcing its /32 loopback and one /26 and learning every other server's
// two prefixes by ECMP over both ToRs. The same lab is built for each server
// role, fresh each time: fabricd on every server, then FRR 8.4 (zebra, staticd
// and bgpd with the seed's server config) on every server. For each N and role
// it measures, with medians and maxima across the servers:
//
//   - bring-up: from the first server daemon's start to the last server's full
//     ECMP (every other server's loopback and block over both uplinks in its
//     kernel), and how long launching the daemons took;
//   - idle memory per server (RSS and PSS, summed over the server's daemons)
//     once the fabric has been quiet for a while;
//   - idle CPU of all server daemons together over 30 s (utime+stime from
//     /proc/PID/stat) and their wakeups (voluntary and involuntary context
//     switches of every thread, /proc/PID/task/TID/status) per server and minute;
//   - failover when one ToR's BGP dies (SIGKILL of its FRR, links up) and when
//     it freezes (SIGSTOP past the hold time): from the signal until each
//     server's kernel no longer routes anything through that ToR;
//   - recovery once the killed ToR's bgpd listens again, and after all of one
//     ToR's ports were down for 2.5 s: until each server has full ECMP again.
//
// During the three disturbances an ICMP flood (package probe, one request
// every 10 ms per flow) runs between a sample of server pairs chosen so that
// both ToRs carry some of it, and the packets lost are reported next to each
// time. The servers' kernels are followed over one rtnetlink socket per
// namespace (package nlmon), the ToRs' sessions from their own logs, and
// processes from /proc: nothing is forked per poll.
package scale

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/fabricd/fabricd/testenv"
)

// MaxServers is the most servers a lab can have: server k's addresses are
// built from k in one byte.
const MaxServers = 250

// Timing is how long each step of a run lasts and how long each wait may take
// before its result is "never". Every wait of the benchmark is bounded by one
// of these.
type Timing struct {
	// Settle is how long the fabric stays untouched after the last server has
	// full ECMP before its memory is read and the idle window begins.
	Settle time.Duration
	// Idle is the window over which CPU time and wakeups are counted.
	Idle time.Duration
	// BringUp bounds the wait for every server's full ECMP after the start.
	BringUp time.Duration
	// Failover bounds the wait for the servers to stop using a killed ToR.
	Failover time.Duration
	// DeadFor is how long the killed ToR stays dead after the last server
	// stopped using it (or Failover ran out), before it is started again.
	DeadFor time.Duration
	// Freeze is how long the ToR's bgpd and zebra stay stopped: past the hold
	// time (9 s), so the servers' hold timers expire. A server still using the
	// ToR when it is resumed "never" failed over.
	Freeze time.Duration
	// PortsDown is how long all of the ToR's ports stay down.
	PortsDown time.Duration
	// Recovery bounds the wait for full ECMP, and for the ToR's sessions, after
	// a disturbance ends.
	Recovery time.Duration
	// Quiet is the pause between a recovered fabric and the next disturbance.
	Quiet time.Duration
}

// DefaultTiming is the timing `make scale` uses.
func DefaultTiming() Timing {
	return Timing{
		Settle:    20 * time.Second,
		Idle:      30 * time.Second,
		BringUp:   3 * time.Minute,
		Failover:  30 * time.Second,
		DeadFor:   3 * time.Second,
		Freeze:    15 * time.Second,
		PortsDown: 2500 * time.Millisecond,
		Recovery:  45 * time.Second,
		Quiet:     5 * time.Second,
	}
}

// validate rejects timings that would make a figure meaningless.
func (t Timing) validate() error {
	for name, d := range map[string]time.Duration{
		"settle": t.Settle, "idle": t.Idle, "bring-up": t.BringUp, "failover": t.Failover,
		"freeze": t.Freeze, "ports-down": t.PortsDown, "recovery": t.Recovery,
	} {
		if d <= 0 {
			return fmt.Errorf("scale: %s time %v must be positive", name, d)
		}
	}
	if t.DeadFor < 0 || t.Quiet < 0 {
		return fmt.Errorf("scale: dead-for %v and quiet %v must not be negative", t.DeadFor, t.Quiet)
	}
	if t.Freeze <= holdTime {
		return fmt.Errorf("scale: a freeze of %v does not outlast the hold time (%v)", t.Freeze, holdTime)
	}
	return nil
}

// holdTime is the BGP hold time of both ToRs and both server roles (FRR's
// datacenter profile, fabricd's default).
const holdTime = 9 * time.Second

// ServerSpecs returns n servers c1..cn without pods: AS 65100+k, loopback
// 10.0.0.k/32, block 10.1.k.0/26.
func ServerSpecs(n int) ([]testenv.ServerSpec, error) {
	if n < 2 || n > MaxServers {
		return nil, fmt.Errorf("scale: %d servers, want 2 to %d", n, MaxServers)
	}
	out := make([]testenv.ServerSpec, 0, n)
	for k := 1; k <= n; k++ {
		out = append(out, testenv.ServerSpec{
			Name:     fmt.Sprintf("c%d", k),
			ASN:      uint32(65100 + k),
			Loopback: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(k)}), 32),
			Block:    netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, byte(k), 0}), 26),
		})
	}
	return out, nil
}

// hashSeed is server i's net.ipv4.fib_multipath_hash_seed: distinct per server
// (so that the flood's flows spread over both ToRs), the same in every run and
// for both roles, never 0 (which makes the kernel pick a random one). It is
// splitmix64 of i.
func hashSeed(i int) uint32 {
	z := uint64(i+1) * 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	return uint32(z)&0x7fffffff | 1
}

// pair is a flood flow candidate: from server From's loopback to server To's.
type pair struct{ From, To int }

// flowCandidates lists every ordered server pair, in the order the flood's
// flows are chosen from them: first pairs half the fabric apart (each server
// sending once), then ever closer ones, then the remaining offsets. The choice
// (chooseFlows) takes the first ones whose requests leave by an uplink still
// short of flows.
func flowCandidates(n int) []pair {
	var offsets []int
	for d := n / 2; d >= 1; d-- {
		offsets = append(offsets, d)
	}
	for d := n/2 + 1; d < n; d++ {
		offsets = append(offsets, d)
	}
	var out []pair
	seen := map[pair]bool{}
	for _, d := range offsets {
		for i := range n {
			p := pair{i, (i + d) % n}
			if p.From != p.To && !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}

// chooseFlows picks want flows from the candidates, half whose requests leave
// through each uplink (egress returns the uplink's index, or an error for a
// pair whose route could not be read), preferring senders not yet used. It
// returns the flows and each one's uplink; fewer than want if the candidates
// run out.
func chooseFlows(cands []pair, want, uplinks int, egress func(pair) (int, error)) ([]pair, []int, error) {
	if want < 1 || uplinks < 1 {
		return nil, nil, fmt.Errorf("scale: want %d flows over %d uplinks", want, uplinks)
	}
	quota := make([]int, uplinks)
	for i := range want {
		quota[i%uplinks]++
	}
	var flows []pair
	var via []int
	sending := map[int]bool{}
	taken := map[pair]bool{}
	known := map[pair]int{} // egress asks the kernel: once per pair
	// Two passes: senders not yet used, then any.
	for pass := range 2 {
		for _, c := range cands {
			if len(flows) == want {
				return flows, via, nil
			}
			if taken[c] || (pass == 0 && sending[c.From]) {
				continue
			}
			up, ok := known[c]
			if !ok {
				var err error
				if up, err = egress(c); err != nil {
					return nil, nil, err
				}
				known[c] = up
			}
			if up < 0 || up >= uplinks || quota[up] == 0 {
				continue
			}
			quota[up]--
			taken[c], sending[c.From] = true, true
			flows, via = append(flows, c), append(via, up)
		}
	}
	return flows, via, nil
}
