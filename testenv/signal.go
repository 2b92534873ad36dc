package testenv

import (
	"fmt"
	"os"
	"slices"
)

// Signal sends sig to the ToR's running FRR daemons named in daemons ("zebra",
// "bgpd", "bfdd"; all of them if none are named) without waiting, through the
// processes the lab started (never by a PID that may have been reused). Fault
// injection uses it: SIGSTOP and SIGCONT freeze and resume a ToR.
func (r *Router) Signal(sig os.Signal, daemons ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.frr == nil || len(r.frr.procs) == 0 {
		return fmt.Errorf("signalling FRR on %s: not running", r.name)
	}
	sent := 0
	for _, d := range r.frr.procs {
		if len(daemons) > 0 && !slices.Contains(daemons, d.name) || !d.running() {
			continue
		}
		if err := d.cmd.Process.Signal(sig); err != nil {
			return fmt.Errorf("signalling %s on %s: %w", d.name, r.name, err)
		}
		sent++
	}
	if sent == 0 {
		return fmt.Errorf("signalling FRR on %s: none of %q is running", r.name, daemons)
	}
	return nil
}

// PIDs returns the process IDs of the ToR's running FRR daemons by name.
func (r *Router) PIDs() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	pids := map[string]int{}
	if r.frr != nil {
		for _, d := range r.frr.procs {
			if d.running() {
				pids[d.name] = d.pid()
			}
		}
	}
	return pids
}
