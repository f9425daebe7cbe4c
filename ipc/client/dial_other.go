//go:build !windows

package client

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// dialPipe fails: named pipes are a Windows transport.
func dialPipe(context.Context, string) (net.Conn, error) {
	return nil, fmt.Errorf("client: named pipes: %w", errors.ErrUnsupported)
}
