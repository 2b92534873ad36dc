package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// daemon is a long-running process the lab started. It is only ever signalled through
// its own os.Process (a pidfd on current kernels), so a recycled PID can never make the
// lab signal somebody else's process.
type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once Wait has returned
	err  error         // Wait's result; read it only after done is closed
}

// startDaemon starts argv with stdout and stderr appended to logPath. argv is normally
// `ip netns exec NS PROGRAM ...`; ip execs PROGRAM in place, so the PID is the daemon's.
func startDaemon(name, logPath string, argv, env []string) (*daemon, error) {
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	defer f.Close() // the child keeps its own copy of the descriptor
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	// A process group of its own: a Ctrl-C in the terminal that runs the demo or go test
	// then reaches only us, and teardown can stop the daemons in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// exitErr describes how the daemon ended; nil for a clean exit. Only valid once done.
func (d *daemon) exitErr() error {
	if d.err != nil {
		return fmt.Errorf("%s (pid %d): %w", d.name, d.pid(), d.err)
	}
	return nil
}

// stop sends sig and waits up to grace for the daemon to exit, then kills it. It
// returns the daemon's exit error, if any; a daemon that had to be killed is an error.
func (d *daemon) stop(sig os.Signal, grace time.Duration) error {
	if d.running() {
		if err := d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signalling %s (pid %d): %w", d.name, d.pid(), err)
		}
	}
	select {
	case <-d.done:
		return d.exitErr()
	case <-time.After(grace):
	}
	if err := d.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s (pid %d): %w", d.name, d.pid(), err)
	}
	select {
	case <-d.done:
		return fmt.Errorf("%s (pid %d) did not exit within %v of %v and was killed", d.name, d.pid(), grace, sig)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s (pid %d) survives SIGKILL (stuck in the kernel?)", d.name, d.pid())
	}
}
