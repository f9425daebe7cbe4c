//go:build linux || darwin

package ipc_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/pdmp-agent/pdmp-agent/ipc"
)

func TestListenUnix(t *testing.T) {
	path := socketPath(t)
	l, err := ipc.ListenUnix(t.Context(), path, 0o660, "")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket %v %v, want a socket with mode 0660", fi.Mode(), err)
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o750 {
		t.Errorf("created directory mode %v, want 0750", di.Mode().Perm())
	}

	// A live agent is detected, and its socket left alone.
	if _, err := ipc.ListenUnix(t.Context(), path, 0o660, ""); !errors.Is(err, ipc.ErrAlreadyRunning) {
		t.Errorf("second ListenUnix: %v, want ErrAlreadyRunning", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the live socket was removed: %v", err)
	}
	l.Close()

	// A stale socket left by a crash is replaced.
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	l, err = ipc.ListenUnix(t.Context(), path, 0o600, "")
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	l.Close()

	// Anything else at the path is never removed.
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ipc.ListenUnix(t.Context(), path, 0o660, ""); err == nil {
		t.Error("ListenUnix replaced a regular file")
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Error("the regular file was changed")
	}
}

func TestListenUnixGroup(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chown needs root")
	}
	path := socketPath(t)
	l, err := ipc.ListenUnix(t.Context(), path, 0o660, "4243")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, _ := os.Stat(p)
		if gid := fi.Sys().(*syscall.Stat_t).Gid; gid != 4243 {
			t.Errorf("%s: group %d, want 4243", p, gid)
		}
	}
}

// TestUnixGroups: a rule can admit by the peer's group, and a group the
// peer is not in admits nothing.
func TestUnixGroups(t *testing.T) {
	tr := transports(t)[1]
	rule := func(groups ...string) ipc.Rule {
		return ipc.Rule{Name: "g", Groups: groups, Operations: []ipc.Permission{ipc.PermStatus}}
	}
	e := start(t, tr, &ipc.FakeBackend{}, rule(strconv.Itoa(os.Getgid())))
	if a := e.do(t, "GET", "/status", ""); a.status != 200 {
		t.Errorf("own group: %d %s", a.status, a.body)
	}
	e = start(t, tr, &ipc.FakeBackend{}, rule("4243"))
	refused(t, e.do(t, "GET", "/status", ""), 403)
}

func TestListenPipeUnsupported(t *testing.T) {
	if _, err := ipc.ListenPipe("", ""); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("ListenPipe: %v", err)
	}
}
