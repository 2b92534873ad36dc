package systemd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen stands in for the service manager: a datagram socket in
// NOTIFY_SOCKET, as systemd creates for a Type=notify unit.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestStateMessages(t *testing.T) {
	conn := listen(t)
	n := New(quiet())

	n.Ready("2/2 sessions established")
	if got, want := receive(t, conn), "READY=1\nSTATUS=2/2 sessions established"; got != want {
		t.Errorf("Ready sent %q, want %q", got, want)
	}
	// Type=notify-reload needs MONOTONIC_USEC with RELOADING=1.
	n.Reloading()
	got := receive(t, conn)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Errorf("Reloading sent %q", got)
	} else if _, err := strconv.ParseUint(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64); err != nil {
		t.Errorf("Reloading sent a bad timestamp: %q", got)
	}
	n.Stopping()
	if got := receive(t, conn); got != "STOPPING=1" {
		t.Errorf("Stopping sent %q", got)
	}
}

func TestWatchdogPingsOnlyWhileAlive(t *testing.T) {
	conn := listen(t)
	const interval = 200 * time.Millisecond // pings every 100 ms
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(interval.Microseconds())))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	var wedged atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- New(quiet()).Watchdog(ctx, func(context.Context) error {
			if wedged.Load() {
				return errors.New("control loop busy")
			}
			return nil
		})
	}()

	for range 2 {
		if got := receive(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("watchdog sent %q", got)
		}
	}
	// A wedged control loop: no pings, so systemd restarts the daemon.
	// One ping may have been sent just before the switch.
	wedged.Store(true)
	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(interval / 2))
	conn.Read(buf)
	conn.SetReadDeadline(time.Now().Add(3 * interval / 2))
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("watchdog pinged (%q) while the control loop did not answer", buf[:n])
	}
	wedged.Store(false)
	if got := receive(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("after recovery the watchdog sent %q", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watchdog returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return after cancel")
	}
}

func TestOutsideSystemdIsSilent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := New(quiet())
	n.Ready("up") // must not fail or block
	done := make(chan error, 1)
	go func() { done <- n.Watchdog(context.Background(), func(context.Context) error { return nil }) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watchdog = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog without WATCHDOG_USEC does not return at once")
	}
}
