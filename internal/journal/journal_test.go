package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeJournal is a unix datagram socket standing in for journald's.
type fakeJournal struct {
	path string
	conn *net.UnixConn
}

func newFakeJournal(t *testing.T) *fakeJournal {
	t.Helper()
	path := filepath.Join(t.TempDir(), "socket")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &fakeJournal{path: path, conn: conn}
}

// receive reads one entry as journald does: the datagram, or the memfd it
// carries, parsed into fields.
func (j *fakeJournal) receive(t *testing.T) (fields map[string][]string, viaMemfd bool) {
	t.Helper()
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4))
	j.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := j.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	data := buf[:n]
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			t.Fatalf("control message: %v %v", fds, err)
		}
		f := os.NewFile(uintptr(fds[0]), "memfd")
		defer f.Close()
		// journald refuses a memfd that is not sealed.
		seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
		if want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL; err != nil || seals&want != want {
			t.Fatalf("memfd seals %#x (%v), want %#x", seals, err, want)
		}
		// The descriptor shares the sender's file offset, at the end:
		// read from 0, as journald does (it maps the file).
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if data, err = io.ReadAll(io.NewSectionReader(f, 0, st.Size())); err != nil {
			t.Fatal(err)
		}
		viaMemfd = true
	}
	fields, err = parseEntry(data)
	if err != nil {
		t.Fatalf("%v in %q", err, data)
	}
	return fields, viaMemfd
}

// parseEntry decodes the native protocol.
func parseEntry(b []byte) (map[string][]string, error) {
	fields := map[string][]string{}
	for len(b) > 0 {
		nl := bytes.IndexByte(b, '\n')
		if nl < 0 {
			return nil, errors.New("field without newline")
		}
		line := b[:nl]
		if name, value, ok := bytes.Cut(line, []byte("=")); ok {
			fields[string(name)] = append(fields[string(name)], string(value))
			b = b[nl+1:]
			continue
		}
		rest := b[nl+1:]
		if len(rest) < 8 {
			return nil, errors.New("short binary field")
		}
		size := binary.LittleEndian.Uint64(rest)
		if uint64(len(rest)-8) < size+1 || rest[8+size] != '\n' {
			return nil, errors.New("bad binary field length")
		}
		fields[string(line)] = append(fields[string(line)], string(rest[8:8+size]))
		b = rest[8+size+1:]
	}
	for name := range fields {
		if !validName(name) {
			return nil, fmt.Errorf("journald would refuse the field name %q", name)
		}
	}
	return fields, nil
}

// validName is journald's rule (journal_field_valid): A-Z, 0-9 and _,
// not starting with _ or a digit, at most 64 characters.
func validName(s string) bool {
	if s == "" || len(s) > 64 || s[0] == '_' || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func newHandler(t *testing.T, j *fakeJournal, opts *slog.HandlerOptions, fallback slog.Handler) *Handler {
	t.Helper()
	h, err := New(j.path, "fabricd", opts, fallback)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func one(t *testing.T, fields map[string][]string, name string) string {
	t.Helper()
	v := fields[name]
	if len(v) != 1 {
		t.Fatalf("field %s: %q, want one value; entry %q", name, v, fields)
	}
	return v[0]
}

func TestFields(t *testing.T) {
	j := newFakeJournal(t)
	log := slog.New(newHandler(t, j, &slog.HandlerOptions{Level: slog.LevelDebug, AddSource: true}, nil))

	log.With("component", "bgp").WithGroup("peer").Info("BGP session established",
		"interface", "ens3", "remote_as", 65004, "up", true, "hold", 9*time.Second,
		slog.Group("addr", "ip", "fe80::1", "zone", "ens3"), "err", errors.New("none"), "note", "two\nlines")
	f, memfd := j.receive(t)
	if memfd {
		t.Error("a small entry went by memfd")
	}
	for name, want := range map[string]string{
		"MESSAGE": "BGP session established", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "fabricd",
		"COMPONENT": "bgp", "PEER_INTERFACE": "ens3", "PEER_REMOTE_AS": "65004", "PEER_UP": "true",
		"PEER_HOLD": "9s", "PEER_ADDR_IP": "fe80::1", "PEER_ADDR_ZONE": "ens3", "PEER_ERR": "none",
		"PEER_NOTE": "two\nlines", "CODE_FUNC": "github.com/fabricd/fabricd/internal/journal.TestFields",
	} {
		if got := one(t, f, name); got != want {
			t.Errorf("%s=%q, want %q", name, got, want)
		}
	}
	if !strings.HasSuffix(one(t, f, "CODE_FILE"), "journal_test.go") || one(t, f, "CODE_LINE") == "" {
		t.Errorf("source fields %q %q", f["CODE_FILE"], f["CODE_LINE"])
	}

	for level, want := range map[slog.Level]string{slog.LevelDebug: "7", slog.LevelWarn: "4", slog.LevelError: "3"} {
		log.Log(context.Background(), level, "x")
		if got := one(t, mustReceive(t, j), "PRIORITY"); got != want {
			t.Errorf("%v: PRIORITY=%s, want %s", level, got, want)
		}
	}
}

func mustReceive(t *testing.T, j *fakeJournal) map[string][]string {
	t.Helper()
	f, _ := j.receive(t)
	return f
}

// Attribute keys become names journald accepts, and cannot pose as the
// fields journald gives a meaning to.
func TestFieldNames(t *testing.T) {
	j := newFakeJournal(t)
	log := slog.New(newHandler(t, j, nil, nil))
	log.Info("names", "max-prefixes", 1, "Topic", 2, "_trusted", 3, "9lives", 4, "message", 5, "priority", 6,
		"", 7, "ünï côdé", 8, "COREDUMP_EXE", 9, strings.Repeat("long", 20), 10)
	f := mustReceive(t, j) // parseEntry checks every name
	for name, want := range map[string]string{
		"MAX_PREFIXES": "1", "TOPIC": "2", "TRUSTED": "3", "ATTR_9LIVES": "4", "ATTR_MESSAGE": "5",
		"ATTR_PRIORITY": "6", "ATTR": "7", "N__C_D": "8", "ATTR_COREDUMP_EXE": "9",
		strings.Repeat("LONG", 16): "10",
	} {
		if got := one(t, f, name); got != want {
			t.Errorf("%s=%q, want %q", name, got, want)
		}
	}
	if got := one(t, f, "MESSAGE"); got != "names" {
		t.Errorf("MESSAGE=%q", got)
	}
}

// An entry larger than a datagram goes through a sealed memfd.
func TestLargeEntry(t *testing.T) {
	j := newFakeJournal(t)
	log := slog.New(newHandler(t, j, nil, nil))
	big := strings.Repeat("0123456789abcdef", 1<<15) // 512 KiB, over the datagram limit
	log.Info("big", "table", big)
	f, memfd := j.receive(t)
	if !memfd {
		t.Error("a 512 KiB entry was sent as a datagram")
	}
	if got := one(t, f, "TABLE"); got != big {
		t.Errorf("TABLE has %d bytes, want %d", len(got), len(big))
	}
}

// Without journald the record goes to the fallback handler.
func TestFallback(t *testing.T) {
	var text bytes.Buffer
	fallback := slog.NewTextHandler(&text, nil)
	h, err := New(filepath.Join(t.TempDir(), "no-socket"), "fabricd", nil, fallback)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	err = slog.New(h).With("interface", "ens3").Handler().Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelWarn, "lost?", 0))
	if err == nil || !strings.Contains(text.String(), "msg=lost? interface=ens3") {
		t.Errorf("error %v, fallback got %q", err, text.String())
	}
}

// Levels below the handler's are not sent.
func TestLevel(t *testing.T) {
	j := newFakeJournal(t)
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	log := slog.New(newHandler(t, j, &slog.HandlerOptions{Level: level}, nil))
	log.Info("dropped")
	log.Warn("kept")
	if got := one(t, mustReceive(t, j), "MESSAGE"); got != "kept" {
		t.Errorf("MESSAGE=%q", got)
	}
}

func TestStreamIsJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for env, want := range map[string]bool{
		fmt.Sprintf("%d:%d", st.Dev, st.Ino):   true,
		fmt.Sprintf("%d:%d", st.Dev, st.Ino+1): false, // stderr was redirected
		"":                                     false, "garbage": false, "1:x": false,
	} {
		if got := streamIsJournal(env, f); got != want {
			t.Errorf("JOURNAL_STREAM=%q: %v, want %v", env, got, want)
		}
	}
}
