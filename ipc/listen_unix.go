//go:build linux || darwin

package ipc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// ListenUnix listens on a Unix domain socket at path, in the manner of
// tailscale's safesocket:
//   - if an agent answers at path, it fails with ErrAlreadyRunning;
//     otherwise a stale socket left by a crash is removed (but never a
//     file that is not a socket);
//   - a missing directory is created 0750 with group group, so that only
//     the owner and the group can even reach the socket;
//   - the socket is chmod'ed to mode and given group group (a name or gid;
//     "" leaves it alone). 0660 with the callers' group is typical.
//
// The file mode is only the first gate: every connection is identified
// by the kernel (SO_PEERCRED, LOCAL_PEERCRED) and checked against the
// policy, so a mode wider than needed does not admit anyone.
func ListenUnix(ctx context.Context, path string, mode os.FileMode, group string) (*Listener, error) {
	d := net.Dialer{Timeout: time.Second}
	if c, err := d.DialContext(ctx, "unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w at %s", ErrAlreadyRunning, path)
	}
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("ipc: %s exists and is not a socket", path)
	case err == nil:
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("ipc: removing stale socket: %w", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("ipc: %w", err)
	}
	if err := makeSocketDir(filepath.Dir(path), group); err != nil {
		return nil, fmt.Errorf("ipc: socket directory: %w", err)
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("ipc: %w", err)
	}
	// Until the chmod the socket has whatever mode the umask left;
	// connections in that window are still checked against the policy.
	if err := os.Chmod(path, mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("ipc: %w", err)
	}
	if err := setFileGroup(path, group); err != nil {
		l.Close()
		return nil, fmt.Errorf("ipc: socket: %w", err)
	}
	return &Listener{Listener: l, transport: TransportUnix, peer: unixPeer}, nil
}

// makeSocketDir creates dir 0750 with group group when it is missing. An
// existing directory is left as it is: the installer or systemd
// (RuntimeDirectory=) owns its permissions.
func makeSocketDir(dir, group string) error {
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	// MkdirAll's mode is filtered by the umask; set it exactly.
	if err := os.Chmod(dir, 0o750); err != nil {
		return err
	}
	return setFileGroup(dir, group)
}

// unixPeer identifies the process at the other end of a Unix socket. The
// kernel recorded its credentials at connect(2), so they cannot be forged
// and do not change if the process later changes user or exits.
func unixPeer(c net.Conn) (Caller, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Caller{}, fmt.Errorf("ipc: unexpected connection type %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Caller{}, err
	}
	var pc peerCreds
	var perr error
	if err := raw.Control(func(fd uintptr) { pc, perr = readPeerCreds(int(fd)) }); err != nil {
		return Caller{}, err
	}
	if perr != nil {
		return Caller{}, fmt.Errorf("ipc: peer credentials: %w", perr)
	}
	gids := slices.Clone(pc.gids)
	for _, g := range userGroups(pc.uid) {
		if !slices.Contains(gids, g) {
			gids = append(gids, g)
		}
	}
	return Caller{Transport: TransportUnix, UID: pc.uid, GIDs: gids, PID: pc.pid}, nil
}

type peerCreds struct {
	uid, pid int
	gids     []int // the primary gid first
}

// userGroups lists the groups of uid in the user database. A uid without
// an entry (common in containers) simply has no supplementary groups.
func userGroups(uid int) []int {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var gids []int
	for _, s := range ids {
		if g, err := strconv.Atoi(s); err == nil {
			gids = append(gids, g)
		}
	}
	return gids
}
