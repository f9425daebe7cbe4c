//go:build !windows

package ipc_test

import "testing"

// pipeTransport: named pipes exist only on Windows.
func pipeTransport(*testing.T) (transport, bool) { return transport{}, false }
