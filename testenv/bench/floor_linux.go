package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/fabricd/fabricd/testenv/netns"
	"github.com/fabricd/fabricd/testenv/nlmon"
)

// floorDev is the interface the floor's routes point at: one end of a veth pair
// whose other end stays in the same namespace, so that it has carrier.
const floorDev = "fl0"

// runFloor inserts n routes of the shape fabricd writes into a fresh namespace
// with one `ip -batch` and returns how long ip took: what the kernel needs for
// them when nothing else happens. With nhid, the routes share one nexthop object,
// the form zebra and fabricd's FIB write.
func (b *Bench) runFloor(ctx context.Context, n int, nhid bool) (_ time.Duration, err error) {
	ns, err := floorNamespace()
	if err != nil {
		return 0, err
	}
	if _, err := runCmd(ctx, "ip", "netns", "add", ns); err != nil {
		return 0, err
	}
	defer func() {
		// Teardown must happen even when ctx is cancelled (Ctrl-C).
		if _, derr := runCmd(context.Background(), "ip", "netns", "delete", ns); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	for _, args := range [][]string{
		// lo first: without a local table the kernel refuses onlink gateways.
		{"link", "set", "lo", "up"},
		{"link", "add", floorDev, "type", "veth", "peer", "name", "fl1"},
		{"link", "set", floorDev, "up"},
		{"link", "set", "fl1", "up"},
		{"neigh", "add", "169.254.0.1", "lladdr", "02:00:5e:00:53:01", "dev", floorDev, "nud", "permanent"},
	} {
		if _, err := runCmd(ctx, "ip", append([]string{"-n", ns}, args...)...); err != nil {
			return 0, err
		}
	}
	file, err := b.floorBatch(n, nhid)
	if err != nil {
		return 0, err
	}
	before, err := FIBPrefixes(ns)
	if err != nil {
		return 0, err
	}
	// The daemons' runs have the benchmark's monitor listening; so does this one.
	mon, err := nlmon.Open(ns, nlmon.Options{Watch: b.base(), Poll: monitorPoll})
	if err != nil {
		return 0, err
	}
	defer mon.Close()
	begin := time.Now()
	if _, err := runCmd(ctx, "ip", "-n", ns, "-batch", file); err != nil {
		return 0, err
	}
	took := time.Since(begin)
	after, err := FIBPrefixes(ns)
	if err != nil {
		return 0, err
	}
	if after-before < n {
		return 0, fmt.Errorf("floor namespace %s gained %d prefixes, want %d", ns, after-before, n)
	}
	return took, nil
}

// floorNamespace picks an unused namespace name in the labs' style.
func floorNamespace() (string, error) {
	for range 100 {
		var r [2]byte
		if _, err := rand.Read(r[:]); err != nil {
			return "", err
		}
		ns := "fdb" + hex.EncodeToString(r[:]) + "-floor"
		if _, err := os.Stat(filepath.Join(netns.Dir, ns)); errors.Is(err, os.ErrNotExist) {
			return ns, nil
		}
	}
	return "", errors.New("no free namespace name for the kernel floor")
}

// floorBatch writes (once per shape and size) the ip -batch file.
func (b *Bench) floorBatch(n int, nhid bool) (string, error) {
	name := fmt.Sprintf("floor-%d-inline.batch", n)
	if nhid {
		name = fmt.Sprintf("floor-%d-nhid.batch", n)
	}
	path := filepath.Join(b.tmp, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	if nhid {
		fmt.Fprintf(w, "nexthop add id 1 via 169.254.0.1 dev %s onlink\n", floorDev)
	}
	a := b.base().Addr()
	for range n {
		if nhid {
			fmt.Fprintf(w, "route add %s/32 nhid 1 proto bgp metric 20\n", a)
		} else {
			fmt.Fprintf(w, "route add %s/32 via 169.254.0.1 dev %s onlink proto bgp metric 20\n", a, floorDev)
		}
		a = a.Next()
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}

// runCmd runs a command and returns its output; the error carries its stderr.
func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			return string(out), fmt.Errorf("%s %v: %w: %s", name, args, err, ee.Stderr)
		}
		return string(out), fmt.Errorf("%s %v: %w", name, args, err)
	}
	return string(out), nil
}
