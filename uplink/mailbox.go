package uplink

import (
	"slices"
	"sync"
)

// Mailbox carries one uplink's BGP session events from GoBGP's event
// goroutine, which must never block, to the goroutine that runs the
// machine. It drops nothing the machine needs and stays small however long
// the machine is busy: consecutive states of a connection attempt collapse
// into the latest, and only the last two sessions' events (Established,
// End-of-RIB, loss) are kept, since a later session supersedes an earlier
// one entirely.
type Mailbox struct {
	signal func()

	mu    sync.Mutex
	queue []Event
}

// NewMailbox returns a mailbox that calls signal (which must not block)
// whenever it holds events to take.
func NewMailbox(signal func()) *Mailbox {
	return &Mailbox{signal: signal}
}

// maxEpochs is how many sessions' events the mailbox keeps.
const maxEpochs = 2

// Push adds a Session or EndOfRIB event.
func (b *Mailbox) Push(ev Event) {
	b.mu.Lock()
	b.queue = compact(append(b.queue, ev))
	b.mu.Unlock()
	b.signal()
}

// Take returns the queued events, oldest first, and empties the mailbox.
func (b *Mailbox) Take() []Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queue
	b.queue = nil
	return q
}

// attempt: a session event that is neither Established nor the loss of an
// Established session: a connection attempt's progress or failure.
func attempt(ev Event) bool {
	return ev.Kind == Session && ev.State != SessionEstablished && ev.Epoch == 0
}

// compact applies the rules above to q, whose last element is new.
func compact(q []Event) []Event {
	n := len(q)
	last := q[n-1]
	switch {
	case last.Kind == EndOfRIB && slices.ContainsFunc(q[:n-1], func(e Event) bool { return e.Kind == EndOfRIB && e.Epoch == last.Epoch && e.Family == last.Family }):
		return q[:n-1] // said already
	case last.Kind == Session && last.State == SessionEstablished:
		// A session came up: how earlier attempts went no longer matters.
		q = slices.DeleteFunc(q, attempt)
	case n >= 2 && attempt(last) && attempt(q[n-2]):
		// The latest state wins, but a failure's reason survives later
		// progress: the machine backs off by it.
		if last.Reason == ReasonOther {
			last.Reason = q[n-2].Reason
		}
		q[n-2] = last
		q = q[:n-1]
	}
	// Sessions, newest first; drop what belongs to older ones.
	var epochs []uint64
	for i := len(q) - 1; i >= 0; i-- {
		if e := q[i].Epoch; e != 0 && !slices.Contains(epochs, e) {
			epochs = append(epochs, e)
		}
	}
	if len(epochs) <= maxEpochs {
		return q
	}
	oldest := epochs[maxEpochs-1]
	return slices.DeleteFunc(q, func(e Event) bool { return e.Epoch != 0 && e.Epoch < oldest })
}
