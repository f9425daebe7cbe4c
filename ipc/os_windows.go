package ipc

import (
	"errors"

	"github.com/Microsoft/go-winio"
)

// osAccounts resolves account names with LookupAccountName.
type osAccounts struct{}

// user maps a configured account name or SID to a SID.
func (osAccounts) user(s string) (uid int, sid string, err error) {
	sid, err = lookupSID(winSIDs{}, s)
	return -1, sid, err
}

// group maps a configured group name or SID to a SID.
func (osAccounts) group(s string) (gid int, sid string, err error) {
	sid, err = lookupSID(winSIDs{}, s)
	return -1, sid, err
}

// setFileGroup refuses a group: Windows files have ACLs, not a group, and
// the credential file takes its ACL from its directory, which the
// installer restricts to SYSTEM, Administrators and the callers' group.
func setFileGroup(path, group string) error {
	if group != "" {
		return errors.New("a file group is not supported on Windows: restrict the directory's ACL instead")
	}
	return nil
}

// syncDir does nothing: Windows has no fsync for a directory; NTFS
// journals the rename as a metadata operation.
func syncDir(string) error { return nil }

// winSIDs looks accounts up with LookupAccountName.
type winSIDs struct{}

func (winSIDs) LookupSID(account string) (string, error) {
	return winio.LookupSidByName(account)
}
