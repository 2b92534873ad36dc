// Package journal is an slog.Handler that writes to systemd-journald by its
// native protocol, so every attribute of a record becomes a journal field
// (interface=ens3 is INTERFACE=ens3, `journalctl INTERFACE=ens3` finds
// it) instead of text inside MESSAGE, as it is through stderr.
//
// The protocol (systemd's "Native Journal Protocol"): one datagram per
// entry on the unix socket /run/systemd/journal/socket, fields as
// "NAME=value\n", or "NAME\n" + the value's length as a little-endian
// uint64 + value + "\n" when the value holds a newline. An entry too large
// for a datagram goes in a sealed memfd whose descriptor is sent instead.
package journal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocket is journald's native socket.
const DefaultSocket = "/run/systemd/journal/socket"

// StderrIsJournal reports whether systemd connected stderr to the journal:
// JOURNAL_STREAM holds the device and inode of that stream, and stderr is
// still it (not redirected by a wrapper script).
func StderrIsJournal() bool {
	return streamIsJournal(os.Getenv("JOURNAL_STREAM"), os.Stderr)
}

func streamIsJournal(env string, f *os.File) bool {
	dev, ino, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	d, err1 := strconv.ParseUint(dev, 10, 64)
	i, err2 := strconv.ParseUint(ino, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == d && st.Ino == i
}

// Handler sends records to journald. It is safe for concurrent use.
type Handler struct {
	out      *output
	level    slog.Leveler
	source   bool
	prefix   string // field name prefix of the open groups, "PEER_"
	preset   []byte // fields of WithAttrs, already encoded
	fallback slog.Handler
}

// output is the socket all handlers derived from one New share.
type output struct {
	conn  *net.UnixConn
	addr  *net.UnixAddr
	ident string
	pool  sync.Pool
}

// New returns a handler that writes to the journal socket at path (normally
// DefaultSocket) with SYSLOG_IDENTIFIER=ident. opts.Level and
// opts.AddSource are honoured (the source goes to CODE_FILE, CODE_LINE and
// CODE_FUNC). A record the journal does not take (journald restarting, say)
// goes to fallback instead (if not nil), so it is not lost silently.
func New(path, ident string, opts *slog.HandlerOptions, fallback slog.Handler) (*Handler, error) {
	// An unbound datagram socket with the address given per message: a
	// restarted journald is found again at its path.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("journal socket: %w", err)
	}
	if fallback == nil {
		fallback = slog.DiscardHandler
	}
	h := &Handler{
		out:      &output{conn: conn, addr: &net.UnixAddr{Name: path, Net: "unixgram"}, ident: ident},
		level:    slog.LevelInfo,
		fallback: fallback,
	}
	// Buffers for one entry; most are a few hundred bytes.
	h.out.pool.New = func() any { b := make([]byte, 0, 1024); return &b }
	if opts != nil {
		if opts.Level != nil {
			h.level = opts.Level
		}
		h.source = opts.AddSource
	}
	return h, nil
}

// Close closes the socket of h and of every handler derived from it.
func (h *Handler) Close() error { return h.out.conn.Close() }

// Enabled implements slog.Handler.
func (h *Handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.preset = append([]byte(nil), h.preset...)
	for _, a := range attrs {
		h2.preset = appendAttr(h2.preset, h.prefix, a)
	}
	h2.fallback = h.fallback.WithAttrs(attrs)
	return &h2
}

// WithGroup implements slog.Handler: later attributes' fields are
// prefixed with the group's name, "PEER_ADDR" for peer.addr.
func (h *Handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + fieldName(name) + "_"
	h2.fallback = h.fallback.WithGroup(name)
	return &h2
}

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	bp := h.out.pool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 64<<10 { // a huge entry's buffer is not kept
			h.out.pool.Put(bp)
		}
	}()
	b := (*bp)[:0]
	b = appendField(b, "MESSAGE", r.Message)
	b = appendField(b, "PRIORITY", priority(r.Level))
	b = appendField(b, "SYSLOG_IDENTIFIER", h.out.ident)
	if h.source && r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		b = appendField(b, "CODE_FILE", f.File)
		b = appendField(b, "CODE_LINE", strconv.Itoa(f.Line))
		b = appendField(b, "CODE_FUNC", f.Function)
	}
	b = append(b, h.preset...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, h.prefix, a)
		return true
	})
	*bp = b
	if err := h.out.send(b); err != nil {
		// Journald is gone or refuses the entry: keep the record.
		return errors.Join(fmt.Errorf("journal: %w", err), h.fallback.Handle(ctx, r))
	}
	return nil
}

func (o *output) send(b []byte) error {
	_, _, err := o.conn.WriteMsgUnix(b, nil, o.addr)
	if errors.Is(err, syscall.EMSGSIZE) || errors.Is(err, syscall.ENOBUFS) {
		return o.sendMemfd(b)
	}
	return err
}

// sendMemfd passes an entry too large for a datagram as a sealed memfd,
// which journald reads instead of the datagram's payload.
func (o *output) sendMemfd(b []byte) error {
	fd, err := unix.MemfdCreate("journal-entry", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("entry of %d bytes: memfd: %w", len(b), err)
	}
	f := os.NewFile(uintptr(fd), "journal-entry")
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("entry of %d bytes: memfd: %w", len(b), err)
	}
	// journald takes a memfd only once nobody can change it any more.
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		return fmt.Errorf("entry of %d bytes: sealing memfd: %w", len(b), err)
	}
	_, _, err = o.conn.WriteMsgUnix(nil, unix.UnixRights(int(f.Fd())), o.addr)
	return err
}

// priority maps slog's levels to syslog's: debug 7, info 6, warning 4,
// err 3.
func priority(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "7"
	case l < slog.LevelWarn:
		return "6"
	case l < slog.LevelError:
		return "4"
	}
	return "3"
}

// appendAttr encodes an attribute as a field named prefix + its key;
// groups are flattened, "peer" {"addr"} becoming PEER_ADDR.
func appendAttr(b []byte, prefix string, a slog.Attr) []byte {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		attrs := v.Group()
		if len(attrs) == 0 {
			return b
		}
		if a.Key != "" {
			prefix += fieldName(a.Key) + "_"
		}
		for _, ga := range attrs {
			b = appendAttr(b, prefix, ga)
		}
		return b
	}
	if a.Equal(slog.Attr{}) {
		return b
	}
	return appendField(b, safeName(prefix+fieldName(a.Key)), valueString(v))
}

func valueString(v slog.Value) string {
	switch v.Kind() {
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return err.Error()
		}
	}
	return v.String()
}

// fieldName turns a key into journal field characters: upper-case letters,
// digits and underscores; anything else becomes an underscore.
func fieldName(key string) string {
	var s strings.Builder
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z':
			s.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			s.WriteRune(r)
		default:
			s.WriteByte('_')
		}
	}
	return s.String()
}

// reserved are fields with a meaning to journald that an attribute must
// not fake: an attribute "message" becomes ATTR_MESSAGE.
var reserved = map[string]bool{"MESSAGE": true, "MESSAGE_ID": true, "PRIORITY": true, "CODE_FILE": true,
	"CODE_LINE": true, "CODE_FUNC": true, "ERRNO": true, "SYSLOG_IDENTIFIER": true, "SYSLOG_FACILITY": true,
	"SYSLOG_PID": true, "SYSLOG_TIMESTAMP": true, "SYSLOG_RAW": true, "DOCUMENTATION": true, "TID": true,
	"INVOCATION_ID": true, "USER_INVOCATION_ID": true, "UNIT": true, "USER_UNIT": true}

// safeName makes a field name journald accepts: not empty, not starting
// with an underscore (fields the journal itself sets) or a digit, at most
// 64 characters.
func safeName(name string) string {
	name = strings.TrimLeft(name, "_")
	if name == "" || name[0] >= '0' && name[0] <= '9' || reserved[name] || strings.HasPrefix(name, "COREDUMP") {
		name = "ATTR_" + name
	}
	return strings.TrimRight(name[:min(len(name), 64)], "_")
}

func appendField(b []byte, name, value string) []byte {
	b = append(b, name...)
	if !strings.ContainsRune(value, '\n') {
		b = append(b, '=')
		b = append(b, value...)
		return append(b, '\n')
	}
	b = append(b, '\n')
	b = binary.LittleEndian.AppendUint64(b, uint64(len(value)))
	b = append(b, value...)
	return append(b, '\n')
}
