package scale

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/fabricd/fabricd/testenv/netns"
)

// bgpPortHex is port 179 as /proc/net/tcp writes it.
const bgpPortHex = "00B3"

// tcpListenState is TCP_LISTEN as /proc/net/tcp writes it.
const tcpListenState = "0A"

// listensOn reports whether /proc/net/tcp or tcp6 text holds a socket
// listening on the port (upper-case hex, as the file writes it).
func listensOn(text, portHex string) bool {
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != tcpListenState {
			continue
		}
		if _, port, ok := strings.Cut(f[1], ":"); ok && port == portHex {
			return true
		}
	}
	return false
}

// bgpListener tells whether anything listens on TCP port 179 in a namespace:
// the ToR's bgpd, once it has read its config. Its /proc/net files are opened
// inside the namespace once and re-read from the start on every check (a proc
// net file stays bound to the namespace it was opened in), so a check costs
// two reads and no process or namespace switch.
type bgpListener struct{ files []*os.File }

func openBGPListener(ns string) (*bgpListener, error) {
	l := &bgpListener{}
	err := netns.Do(ns, func() error {
		for _, name := range []string{"tcp", "tcp6"} {
			f, err := os.Open("/proc/thread-self/net/" + name)
			if err != nil {
				return err
			}
			l.files = append(l.files, f)
		}
		return nil
	})
	if err != nil {
		l.close()
		return nil, fmt.Errorf("watching port 179 in %s: %w", ns, err)
	}
	return l, nil
}

func (l *bgpListener) listening() (bool, error) {
	for _, f := range l.files {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return false, err
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return false, err
		}
		if listensOn(string(b), bgpPortHex) {
			return true, nil
		}
	}
	return false, nil
}

func (l *bgpListener) close() error {
	var errs []error
	for _, f := range l.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
