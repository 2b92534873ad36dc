package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its namespace handles.
const netnsDir = "/var/run/netns"

// inNamespace runs f on an OS thread that has joined network namespace ns. Sockets
// and /proc/thread-self/net files opened by f stay bound to ns after it returns,
// which is how the monitor, the packet capture and the FIB statistics reader see
// the lab's namespaces from this process.
func inNamespace(ns string, f func() error) error {
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
		target, err := unix.Open(filepath.Join(netnsDir, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
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

// FIBPrefixes reads the number of IPv4 prefixes in namespace ns's FIB from
// /proc/net/fib_triestat (the "Main:" trie; without policy routing rules it also
// holds the local table). The kernel counts without dumping a route.
func FIBPrefixes(ns string) (int, error) {
	var text []byte
	err := inNamespace(ns, func() error {
		var err error
		text, err = os.ReadFile("/proc/thread-self/net/fib_triestat")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("reading fib_triestat of %s: %w", ns, err)
	}
	return parseTrieStat(string(text))
}

// parseTrieStat returns the Prefixes count of the "Main:" section.
func parseTrieStat(text string) (int, error) {
	inMain := false
	for line := range strings.SplitSeq(text, "\n") {
		switch {
		case strings.HasPrefix(line, "Main:"):
			inMain = true
		case !strings.HasPrefix(line, "\t") && !strings.HasPrefix(line, " ") && strings.HasSuffix(line, ":"):
			inMain = false
		case inMain && strings.HasPrefix(strings.TrimSpace(line), "Prefixes:"):
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "Prefixes:")))
			if err != nil {
				return 0, fmt.Errorf("parsing fib_triestat line %q: %w", line, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("fib_triestat has no Main: Prefixes line")
}
