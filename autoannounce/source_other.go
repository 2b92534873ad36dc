//go:build !linux

package autoannounce

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

func defaultSource() source { return unsupportedSource{} }

// unsupportedSource lets the package build elsewhere (for tools and
// editors); watching needs Linux netlink.
type unsupportedSource struct{}

func (unsupportedSource) run(context.Context, chan<- event, *slog.Logger, time.Duration) error {
	return errors.New("autoannounce: watching the kernel needs Linux")
}
