package unnumbered

import (
	"bytes"
	"net"
	"net/netip"
	"time"
)

const (
	// minFresh is the shortest time after its last RA during which the
	// current neighbor counts as fresh, so that RAs from a second router
	// are ignored rather than taken as a ToR replacement. Without a floor,
	// a ToR sending RAs every second would lose its place after 1.5 s.
	minFresh = 3 * time.Second

	// assumedPeerInterval stands in for the neighbor's RA interval until we
	// have seen two of its RAs. 10 s is what FRR uses for BGP unnumbered
	// interfaces unless configured otherwise; guessing long errs on the
	// side of keeping a neighbor we just heard from.
	assumedPeerInterval = 10 * time.Second

	// minGap is the shortest gap between two RAs that says anything about
	// the neighbor's period. Closer RAs answer our solicitations (two at
	// start-up): taken as the period, they shrank the freshness window to
	// its floor until the next unsolicited RA, and a second router heard
	// then took the uplink from a ToR whose session was up.
	minGap = 500 * time.Millisecond

	// gapHistory is how many gaps between consecutive RAs we remember.
	// The interval estimate is their maximum: solicited RAs (our RS, or
	// FRR's first fast RAs after a change) shorten single gaps, and the
	// estimate must not collapse because of them.
	gapHistory = 4
)

// verdict is what the tracker made of a router advertisement.
type verdict int

const (
	// raRefresh: the current neighbor, with nothing an observer needs to
	// hear about changed.
	raRefresh verdict = iota + 1
	// raUp: a new neighbor, a changed address or MAC, or a stale neighbor
	// replaced. Emit NeighborUp.
	raUp
	// raSecondRouter: another router while the current one is fresh. Ignore.
	raSecondRouter
)

func (v verdict) String() string {
	switch v {
	case raRefresh:
		return "refresh"
	case raUp:
		return "up"
	case raSecondRouter:
		return "second-router"
	default:
		return "invalid"
	}
}

// tracker is the neighbor state machine of one uplink. It has no clock of
// its own: every method takes the current time, so tests drive it with
// plain time values.
type tracker struct {
	iface string
	index int

	cur  *Neighbor
	gaps [gapHistory]time.Duration
	ngap int // number of gaps recorded for cur; gaps is a ring indexed by ngap % gapHistory
}

// setLink records the interface that neighbors are found on.
func (t *tracker) setLink(iface string, index int) {
	t.iface, t.index = iface, index
}

// current returns the current neighbor, if any.
func (t *tracker) current() (Neighbor, bool) {
	if t.cur == nil {
		return Neighbor{}, false
	}
	return t.cur.clone(), true
}

// observe takes a valid RA from src at time now. mac is the RA's source
// link-layer address, nil when it had none.
func (t *tracker) observe(now time.Time, src netip.Addr, mac net.HardwareAddr, lifetime time.Duration) verdict {
	c := t.cur
	switch {
	case c == nil:
		t.adopt(now, src, mac, lifetime)
		return raUp

	case src == c.Addr:
		t.heard(now, lifetime)
		// An RA without the option says nothing about the MAC: keep the
		// one we know rather than flapping to nil.
		if mac != nil && !bytes.Equal(mac, c.MAC) {
			c.MAC = cloneMAC(mac)
			return raUp
		}
		return raRefresh

	case mac != nil && bytes.Equal(mac, c.MAC):
		// Same router under a new address: follow it at once, since
		// sessions to the old address will not come back.
		t.heard(now, lifetime)
		c.Addr = src
		return raUp

	case t.fresh(now):
		return raSecondRouter

	default:
		// The current neighbor has gone quiet and someone else speaks:
		// the ToR was replaced.
		t.adopt(now, src, mac, lifetime)
		return raUp
	}
}

// expire drops the current neighbor if its hold time has passed and
// returns it.
func (t *tracker) expire(now time.Time) (Neighbor, bool) {
	if t.cur == nil || now.Before(t.deadline()) {
		return Neighbor{}, false
	}
	return t.reset()
}

// reset drops the current neighbor (the link went down) and returns it.
func (t *tracker) reset() (Neighbor, bool) {
	n, ok := t.current()
	t.cur = nil
	t.ngap = 0
	return n, ok
}

// deadline is when the current neighbor expires; zero when there is none.
func (t *tracker) deadline() time.Time {
	if t.cur == nil {
		return time.Time{}
	}
	return t.cur.LastRA.Add(t.hold())
}

// interval estimates the neighbor's RA period; zero when unknown.
func (t *tracker) interval() time.Duration {
	var iv time.Duration
	for i := 0; i < min(t.ngap, gapHistory); i++ {
		iv = max(iv, t.gaps[i])
	}
	return iv
}

// fresh reports whether the current neighbor was heard from recently
// enough to defend its place against a second router.
func (t *tracker) fresh(now time.Time) bool {
	iv := t.interval()
	if iv == 0 {
		iv = assumedPeerInterval
	}
	window := max(iv*3/2, minFresh)
	return now.Sub(t.cur.LastRA) < window
}

// hold is how long the current neighbor survives without RAs.
func (t *tracker) hold() time.Duration {
	iv := t.interval()
	lt := t.cur.RouterLifetime
	// A lifetime shorter than the observed period is a misconfiguration
	// (RFC 4861 requires lifetime >= MaxRtrAdvInterval); honouring it would
	// flap the neighbor between every two RAs, so fall back to 3 intervals
	// as for lifetime 0.
	if lt > 0 && (iv == 0 || lt >= iv) {
		return lt
	}
	// Three intervals, but never less than three of the usual ones: the
	// gaps seen first are often short (a router answering our
	// solicitation, FRR's quick first RAs) and would make a ToR that
	// advertises with lifetime 0 expire between two of its regular RAs.
	return 3 * max(iv, assumedPeerInterval)
}

func (t *tracker) adopt(now time.Time, src netip.Addr, mac net.HardwareAddr, lifetime time.Duration) {
	t.cur = &Neighbor{
		Interface:      t.iface,
		Index:          t.index,
		Addr:           src,
		MAC:            cloneMAC(mac),
		LastRA:         now,
		RouterLifetime: lifetime,
	}
	t.ngap = 0
}

// heard records an RA from the current neighbor.
func (t *tracker) heard(now time.Time, lifetime time.Duration) {
	if gap := now.Sub(t.cur.LastRA); gap >= minGap {
		t.gaps[t.ngap%gapHistory] = gap
		t.ngap++
	}
	t.cur.LastRA = now
	t.cur.RouterLifetime = lifetime
}

func cloneMAC(mac net.HardwareAddr) net.HardwareAddr {
	if mac == nil {
		return nil
	}
	return append(net.HardwareAddr(nil), mac...)
}
