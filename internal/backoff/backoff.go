// Package backoff yields exponentially growing retry delays.
package backoff

import "time"

// Backoff doubles a delay from Min up to Max. The zero value with Min and
// Max set is ready to use.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next delay: Min first, then twice the last, at most Max.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	return b.cur
}

// Reset starts again from Min.
func (b *Backoff) Reset() { b.cur = 0 }
