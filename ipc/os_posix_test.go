//go:build !windows

package ipc

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestCredentialGroup(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chown needs root")
	}
	path := filepath.Join(t.TempDir(), "api.credential")
	if _, err := NewCredential(path, "4243"); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != 4243 {
		t.Errorf("group %d, want 4243", gid)
	}
}

func TestOSAccounts(t *testing.T) {
	if uid, _, err := (osAccounts{}).user("root"); err != nil || uid != 0 {
		t.Errorf("user root: %d, %v", uid, err)
	}
	if gid, _, err := (osAccounts{}).group("4243"); err != nil || gid != 4243 {
		t.Errorf("group 4243: %d, %v", gid, err)
	}
	for _, name := range []string{"no-such-user-pdmp", "-1"} {
		if _, _, err := (osAccounts{}).user(name); err == nil {
			t.Errorf("user %q resolved", name)
		}
	}
	if _, _, err := (osAccounts{}).group("no-such-group-pdmp"); err == nil {
		t.Error("unknown group resolved")
	}
}
