//go:build unix

package installer

import (
	"context"
	"syscall"
	"testing"
	"time"
)

func TestRunSignals(t *testing.T) {
	started := make(chan Service, 1)
	done := make(chan error, 1)
	go func() { done <- runForeground(context.Background(), Options{}.withDefaults(), serve(started), discard) }()
	s := <-started

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Reload:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not request a reload")
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not stop the program")
	}
}
