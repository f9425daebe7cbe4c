//go:build !windows

package ipc

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
)

// osAccounts resolves user and group names in the user database.
type osAccounts struct{}

// user maps a configured user, a name or a numeric uid, to its uid.
func (osAccounts) user(s string) (uid int, sid string, err error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, "", nil
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, "", err
	}
	n, err := strconv.Atoi(u.Uid)
	return n, "", err
}

// group maps a configured group, a name or a numeric gid, to its gid.
func (osAccounts) group(s string) (gid int, sid string, err error) {
	gid, err = lookupGID(s)
	return gid, "", err
}

func lookupGID(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// setFileGroup gives path to group (a name or gid), so that the group's
// members, and nobody else besides the owner, get the group permission bits.
func setFileGroup(path, group string) error {
	if group == "" {
		return nil
	}
	gid, err := lookupGID(group)
	if err != nil {
		return fmt.Errorf("group %q: %w", group, err)
	}
	return os.Chown(path, -1, gid)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
