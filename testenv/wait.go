package testenv

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// pollInterval is how often WaitFor retries: fast enough that measured convergence
// times are not dominated by the polling, slow enough to leave the CPUs to the daemons.
const pollInterval = 50 * time.Millisecond

// permanentError marks a condition that can no longer become true.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent wraps err so that WaitFor gives up at once instead of polling on, for
// conditions that cannot recover (the daemon under test has exited, for example).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// WaitFor calls cond every 50 ms until it returns nil, returns a Permanent error, or
// ctx is done or timeout has passed. The error names what was waited for and wraps
// cond's last error (and context.DeadlineExceeded or the context's error).
func WaitFor(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var last error
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if p, ok := errors.AsType[permanentError](err); ok {
			return fmt.Errorf("waiting for %s: gave up after %v: %w", what, time.Since(start).Round(time.Millisecond), p.err)
		}
		// A cond cut short by the context's end ("signal: killed") says nothing about
		// the condition: keep the error from before.
		if last == nil || ctx.Err() == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w after %v: %w", what, ctx.Err(), time.Since(start).Round(time.Millisecond), last)
		case <-deadline.C:
			return fmt.Errorf("waiting for %s: %w after %v: %w", what, context.DeadlineExceeded, timeout, last)
		case <-tick.C:
		}
	}
}
