package scale

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture fabricd is built for.
const userHZ = 100

// statFields returns the fields of /proc/PID/stat after the command name,
// which is in parentheses and may itself hold spaces and parentheses: field 3
// (state) is element 0.
func statFields(text string) ([]string, error) {
	i := strings.LastIndexByte(text, ')')
	if i < 0 {
		return nil, errors.New("no ')' after the command name")
	}
	f := strings.Fields(text[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("%d fields after the command name, want at least 20", len(f))
	}
	return f, nil
}

// parseStatTicks returns utime+stime (fields 14 and 15) of /proc/PID/stat: the
// CPU time of every thread of the process, the exited ones included, in
// 1/userHZ s.
func parseStatTicks(text string) (uint64, error) {
	f, err := statFields(text)
	if err != nil {
		return 0, err
	}
	u, err1 := strconv.ParseUint(f[14-3], 10, 64)
	s, err2 := strconv.ParseUint(f[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("utime/stime: %w", err)
	}
	return u + s, nil
}

// parseStatStart returns the start time (field 22) of /proc/PID/stat: with the
// PID, it names a process for good (a PID may be reused, not both).
func parseStatStart(text string) (uint64, error) {
	f, err := statFields(text)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[22-3], 10, 64)
}

// parseKB returns the "Name:   N kB" field of /proc/PID/status or
// /proc/PID/smaps_rollup.
func parseKB(text, name string) (int64, error) {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s", name)
}

// parseSwitches returns voluntary plus involuntary context switches from one
// thread's /proc/PID/task/TID/status: each is a time the thread was taken off
// the CPU, so once per wakeup of an idle thread.
func parseSwitches(text string) (uint64, error) {
	var sum uint64
	found := 0
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "voluntary_ctxt_switches" && k != "nonvoluntary_ctxt_switches") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", k, err)
		}
		sum += n
		found++
	}
	if found != 2 {
		return 0, errors.New("no context switch counts")
	}
	return sum, nil
}

// cpuSample is one process's CPU time and wakeups so far.
type cpuSample struct {
	Ticks    uint64 // utime+stime, 1/userHZ s
	Switches uint64 // context switches of its threads now alive
}

// readCPU reads a process's CPU time and its threads' context switches.
// /proc/PID/status counts only the main thread's switches, so every thread's
// are summed; a thread that exited takes its count with it (Go and FRR keep
// their threads).
func readCPU(pid int) (cpuSample, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuSample{}, err
	}
	ticks, err := parseStatTicks(string(b))
	if err != nil {
		return cpuSample{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return cpuSample{}, err
	}
	s := cpuSample{Ticks: ticks}
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(fmt.Sprintf("/proc/%d/task", pid), t.Name(), "status"))
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread has just exited
		}
		if err != nil {
			return cpuSample{}, err
		}
		n, err := parseSwitches(string(b))
		if err != nil {
			return cpuSample{}, fmt.Errorf("thread %s of %d: %w", t.Name(), pid, err)
		}
		s.Switches += n
	}
	return s, nil
}

// readMem returns a process's resident set and its proportional set size
// (shared pages divided among the processes that map them), in kB.
func readMem(pid int) (rss, pss int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	if rss, err = parseKB(string(b), "VmRSS"); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0, err
	}
	if pss, err = parseKB(string(b), "Pss"); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/smaps_rollup: %w", pid, err)
	}
	return rss, pss, nil
}

// procID names a process for good: its PID and its start time.
type procID struct {
	Name  string
	PID   int
	Start uint64
}

func identify(name string, pid int) (procID, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procID{}, err
	}
	st, err := parseStatStart(string(b))
	if err != nil {
		return procID{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return procID{Name: name, PID: pid, Start: st}, nil
}

// alive reports whether the process still exists (and is not a zombie
// waiting to be reaped).
func (p procID) alive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		return false
	}
	st, err := parseStatStart(string(b))
	if err != nil || st != p.Start {
		return false
	}
	f, _ := statFields(string(b))
	return len(f) > 0 && f[0] != "Z"
}
