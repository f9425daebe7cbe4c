//go:build !windows

package ipc

import (
	"errors"
	"fmt"
)

// ListenPipe is only available on Windows.
func ListenPipe(name, sddl string) (*Listener, error) {
	return nil, fmt.Errorf("ipc: named pipe listener: %w", errors.ErrUnsupported)
}
