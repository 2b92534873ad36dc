// Package api serves fabricd's gRPC API on a Unix socket and dials it for
// fabricctl. There is deliberately no TCP listener: access control is the
// socket file's permission.
package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"

	"github.com/fabricd/fabricd/api/fabricdpb"
)

// SocketConfig says where and with which permissions to serve.
type SocketConfig struct {
	Path string
	// Group, when set, owns the socket and may use it (mode 0660);
	// otherwise only the owner may (0600).
	Group string
}

// Listen creates the socket. It refuses to replace a socket another
// process is serving on, and any file that is not a socket.
func Listen(cfg SocketConfig) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if fi, err := os.Lstat(cfg.Path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", cfg.Path)
		}
		if c, err := net.DialTimeout("unix", cfg.Path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s is in use: is another fabricd running?", cfg.Path)
		}
		// A stale socket from a process that died.
		if err := os.Remove(cfg.Path); err != nil {
			return nil, fmt.Errorf("removing stale socket: %w", err)
		}
	}
	gid := -1
	mode := os.FileMode(0o600)
	if cfg.Group != "" {
		g, err := user.LookupGroup(cfg.Group)
		if err != nil {
			return nil, fmt.Errorf("API socket group: %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
		mode = 0o660
	}
	ln, err := net.Listen("unix", cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Path, err)
	}
	// The socket exists with umask-derived permissions until chmod; with
	// any sane umask nobody else can connect in that window (connecting
	// needs write permission).
	if err := os.Chmod(cfg.Path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("setting socket permissions: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(cfg.Path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("setting socket group: %w", err)
		}
	}
	return ln, nil
}

// Serve serves srv on ln until ctx is cancelled.
func Serve(ctx context.Context, ln net.Listener, srv fabricdpb.FabricdServer, log *slog.Logger) error {
	gs := grpc.NewServer()
	fabricdpb.RegisterFabricdServer(gs, srv)
	// Server reflection, so that generic clients work on the socket without
	// the .proto file: grpcurl -plaintext -unix /run/fabricd/fabricd.sock list
	reflection.Register(gs)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("API server: %w", err)
	case <-ctx.Done():
	}
	// Let a running reload or query finish, but not forever.
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		log.Warn("API calls still running at shutdown; closing them")
		gs.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("API server: %w", err)
	}
	return nil
}

// Dial connects to fabricd's socket. gRPC connects lazily; the first call
// reports a missing daemon.
func Dial(path string) (fabricdpb.FabricdClient, func() error, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to %s: %w", path, err)
	}
	return fabricdpb.NewFabricdClient(conn), conn.Close, nil
}
