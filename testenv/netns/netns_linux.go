// Package netns runs code of this process inside the lab's network namespaces
// (the ones `ip netns` keeps under /var/run/netns), so that the test tools can
// open sockets there without starting a process per action: the netlink
// monitors, packet captures, traffic probes and counters of testenv's
// benchmarks and soaks.
package netns

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Dir is where `ip netns` keeps its namespace handles.
const Dir = "/var/run/netns"

// Do runs f on an OS thread that has joined network namespace ns. Sockets and
// /proc/thread-self/net files opened by f stay bound to ns after it returns;
// f must not start goroutines that expect to be in ns (they run on other
// threads).
func Do(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Not unlocked if the thread cannot be returned to its own namespace: the
		// runtime then discards the thread when this goroutine exits, instead of
		// handing a thread in the wrong namespace to other goroutines.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening own network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join(Dir, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening network namespace %s: %w", ns, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering network namespace %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leaving network namespace %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
