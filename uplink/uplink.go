// Package uplink decides what fabricd does with each uplink: whether a BGP
// peer is configured for the ToR behind it (and whether that peer waits for
// the ToR to connect or connects itself), whether the uplink carries
// traffic, and when to advertise and solicit on it.
//
// It is pure logic. Its inputs are events from the sensors (carrier,
// router advertisements, the kernel's neighbour table, BGP session states)
// and the passing of time, always given by the caller; its outputs are
// calls on the small Actions interface. machine.go holds every state and
// transition; mailbox.go coalesces BGP session events per uplink so that
// none is ever dropped.
package uplink

import (
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Family is an address family of routes.
type Family uint8

const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Source says how fabricd learned the ToR's address or MAC.
type Source uint8

const (
	SourceNone   Source = iota
	SourceKernel        // the kernel's neighbour table (the kernel ran ND)
	SourceRA            // the ToR's router advertisement
	SourceConfig        // [[neighbor]] address
)

func (s Source) String() string {
	switch s {
	case SourceKernel:
		return "kernel"
	case SourceRA:
		return "ra"
	case SourceConfig:
		return "config"
	}
	return "none"
}

// SessionState is the BGP session's state as GoBGP's FSM reports it.
type SessionState uint8

const (
	SessionIdle SessionState = iota
	SessionConnect
	SessionActive
	SessionOpenSent
	SessionOpenConfirm
	SessionEstablished
)

func (s SessionState) String() string {
	switch s {
	case SessionIdle:
		return "Idle"
	case SessionConnect:
		return "Connect"
	case SessionActive:
		return "Active"
	case SessionOpenSent:
		return "OpenSent"
	case SessionOpenConfirm:
		return "OpenConfirm"
	case SessionEstablished:
		return "Established"
	}
	return fmt.Sprintf("SessionState(%d)", uint8(s))
}

// opening: a connection is being negotiated. Connection collision
// resolution (RFC 4271 6.8) is in progress or may be: nothing may disturb
// the peer now.
func (s SessionState) opening() bool {
	return s == SessionOpenSent || s == SessionOpenConfirm
}

// EventKind says what happened.
type EventKind uint8

const (
	// CarrierUp: the interface exists, is up and has carrier (Ifindex).
	CarrierUp EventKind = iota + 1
	// CarrierDown: carrier lost, interface down or deleted.
	CarrierDown
	// ToRAdvertised: a router advertisement from the ToR (Addr, and MAC
	// when the RA carried a source link-layer address option).
	ToRAdvertised
	// ToRSilent: the ToR's router advertisements stopped for longer than
	// their lifetime (Addr).
	ToRSilent
	// NeighborSeen: the kernel's neighbour table has an entry for a
	// link-local address on the uplink (Addr, MAC when resolved, Router
	// when the neighbour said it is a router).
	NeighborSeen
	// Session: the BGP session changed state (see the Session* fields).
	Session
	// EndOfRIB: the ToR has sent its whole table of Family in session
	// Epoch.
	EndOfRIB
	// Advertised: our router advertisement asked for by Advertise went
	// out.
	Advertised
)

func (k EventKind) String() string {
	switch k {
	case CarrierUp:
		return "carrier-up"
	case CarrierDown:
		return "carrier-down"
	case ToRAdvertised:
		return "tor-advertised"
	case ToRSilent:
		return "tor-silent"
	case NeighborSeen:
		return "neighbor-seen"
	case Session:
		return "session"
	case EndOfRIB:
		return "end-of-rib"
	case Advertised:
		return "advertised"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one input. Only the fields of its Kind are meaningful.
type Event struct {
	Kind    EventKind
	Ifindex int              // CarrierUp
	Addr    netip.Addr       // ToRAdvertised, ToRSilent, NeighborSeen: link-local, zone = interface
	MAC     net.HardwareAddr // ToRAdvertised, NeighborSeen; nil when unknown
	Router  bool             // NeighborSeen

	// Session and EndOfRIB.
	State SessionState
	// Epoch numbers the session's Established periods, from 1; a Session
	// event for Established carries the new one, EndOfRIB the one it
	// belongs to.
	Epoch  uint64
	Family Family // EndOfRIB
	// Established only: the ToR preserves forwarding across its own BGP
	// restarts (the graceful restart capability's F bit) per family, and
	// its restart time (0 without graceful restart).
	PreservesForwarding [2]bool
	RestartTime         time.Duration
	// Established only: the families the session carries (both sides
	// announced them in their OPEN).
	Families [2]bool
	// Leaving Established: the session ended without a NOTIFICATION
	// (the ToR may be restarting gracefully).
	Graceful bool
	// Why the last session ended or failed, for logs and backoff.
	Reason Reason
	// Detail is GoBGP's own words for it.
	Detail string
}

// Reason classifies why a session ended or could not be established.
type Reason uint8

const (
	ReasonOther Reason = iota
	// ReasonCollision: the session failed while opening, the usual
	// outcome of both sides connecting at once.
	ReasonCollision
	// ReasonMaxPrefixes: the ToR sent more than max-prefixes.
	ReasonMaxPrefixes
	// ReasonRefused: fabricd refused the session (the ToR's AS is not
	// what remote-as allows).
	ReasonRefused
)

func (r Reason) String() string {
	switch r {
	case ReasonCollision:
		return "failed while opening"
	case ReasonMaxPrefixes:
		return "max-prefixes exceeded"
	case ReasonRefused:
		return "refused"
	}
	return "other"
}

// Peer is the BGP peer the uplink wants. The zero Peer means none.
type Peer struct {
	Addr netip.Addr // the ToR's link-local address, zone = interface
	// Passive peers only accept the ToR's connection. Most ToRs connect
	// as soon as they hear fabricd's RA; connecting at the same moment
	// only makes the two connections collide.
	Passive bool
	// Generation changes when the uplink wants a fresh peer: GoBGP keeps a
	// peer idle, refusing the ToR's connections, for 5 s after any
	// failure. A fresh peer is not made while a connection is opening or
	// the session is up.
	Generation uint32
	// Unstick changes when the session has been opening for longer than
	// the hold time: the peer is replaced even though it is opening. (GoBGP
	// holds a session in OpenSent for 240 s.)
	Unstick uint32
}

// FIB is whether, and through which ToR, the uplink carries traffic of
// each family: what the FIB is to hold of it.
type FIB struct {
	V4, V6 bool
	// Syncing: the ToR is still sending its table, so the uplink carries
	// only what no other uplink reaches (at boot, everything it has sent
	// so far; when the other ToR forwards, nothing it reaches).
	Syncing bool
	Ifindex int
	// MAC is the ToR's, for the 169.254.0.1 neighbour entry IPv4 routes
	// need; V4 is never set without it.
	MAC net.HardwareAddr
	// Addr is the ToR's link-local address, the next hop of IPv6 routes.
	Addr netip.Addr
}

func (f FIB) equal(g FIB) bool {
	return f.V4 == g.V4 && f.V6 == g.V6 && f.Syncing == g.Syncing && f.Ifindex == g.Ifindex && f.Addr == g.Addr &&
		string(f.MAC) == string(g.MAC)
}

// Actions are what the machine makes happen.
type Actions interface {
	// SetPeer makes the uplink's BGP peer p (none for the zero Peer).
	SetPeer(p Peer)
	// SetFIB puts the uplink into or out of the FIB.
	SetFIB(f FIB)
	// SweepStale removes the uplink's paths that are still stale: kept
	// from a session that ended and not sent again since.
	SweepStale()
	// Advertise sends our router advertisement now, and from then on
	// periodically: the ToR learns our address from it.
	Advertise()
	// Solicit sends a router solicitation now: the ToR answers with its
	// RA.
	Solicit()
	// SetAdvertiseInterval sets the period of our RAs.
	SetAdvertiseInterval(d time.Duration)
	// ResolveMAC asks the kernel to resolve addr's MAC by neighbour
	// solicitation; the answer comes back as NeighborSeen.
	ResolveMAC(addr netip.Addr)
}

// Config tunes a machine.
type Config struct {
	// Interface names the uplink, for logs.
	Interface string
	// Pinned is the ToR's address from [[neighbor]] address, if set: the
	// only address the peer is configured for.
	Pinned netip.Addr
	// GracefulRestart: act as RFC 4724 helper for a ToR that restarts
	// with its forwarding state preserved.
	GracefulRestart bool
	// RestartTime bounds how long paths of an ended session are kept.
	RestartTime time.Duration
	// HoldTime bounds the wait for End-of-RIB from a ToR that never sends
	// one.
	HoldTime time.Duration
	// MaxPrefixesRestart is the wait before a session ended for
	// max-prefixes is tried again.
	MaxPrefixesRestart time.Duration
}

// Status is a snapshot of an uplink for the API and logs.
type Status struct {
	Phase       Phase
	Since       time.Time // when Phase was entered
	Carrier     bool
	Ifindex     int
	ToR         netip.Addr
	ToRSource   Source
	MAC         net.HardwareAddr
	MACSource   Source
	LastHeard   time.Time // last RA or neighbour entry of the ToR
	Session     SessionState
	Epoch       uint64
	EndOfRIB    [2]bool
	FIB         FIB
	Peer        Peer
	Established time.Time // when the current session came up
	// StaleUntil is when kept paths of an ended session are swept; zero
	// when none are kept.
	StaleUntil time.Time
}
