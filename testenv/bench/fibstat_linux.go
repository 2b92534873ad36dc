package bench

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/fabricd/fabricd/testenv/netns"
)

// FIBPrefixes reads the number of IPv4 prefixes in namespace ns's FIB from
// /proc/net/fib_triestat (the "Main:" trie; without policy routing rules it also
// holds the local table). The kernel counts without dumping a route.
func FIBPrefixes(ns string) (int, error) {
	var text []byte
	err := netns.Do(ns, func() error {
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
