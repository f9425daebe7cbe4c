//go:build !linux && !windows

package installer

import (
	"context"
	"errors"
	"fmt"
	"runtime"
)

func install(context.Context, Options) error {
	return fmt.Errorf("installing a service on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func uninstall(context.Context, Options, bool) error {
	return fmt.Errorf("uninstalling a service on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
