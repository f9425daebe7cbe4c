//go:build !linux && !darwin

package ipc

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// ListenUnix is not available here: without peer credentials the agent
// could not tell its callers apart. On Windows use ListenPipe.
func ListenUnix(ctx context.Context, path string, mode os.FileMode, group string) (*Listener, error) {
	return nil, fmt.Errorf("ipc: unix socket listener: %w", errors.ErrUnsupported)
}
