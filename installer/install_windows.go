package installer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"
	"unsafe"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc/mgr"
)

func install(ctx context.Context, o Options) error {
	r := rootFS(o.Root)
	// Windows has no uid and gid: the ACLs set below decide access.
	dirPerm, filePerm := perm{0o750, -1, -1}, perm{0o640, -1, -1}
	secure := func(string, string) error { return nil }
	var configDirSD, configSD, stateSD string
	if o.Root == "" {
		created, err := ensureLocalGroup(o.Group, o.Name)
		if err != nil {
			return err
		}
		if created {
			o.Logf("created local group %s: add the accounts that may call the API", o.Group)
		}
		group, _, _, err := windows.LookupSID("", o.Group)
		if err != nil {
			return fmt.Errorf("look up group %s: %w", o.Group, err)
		}
		configDirSD, configSD, stateSD = securityDescriptors(serviceSID(o.Name), group.String())
		secure = setSecurity
	}

	// The directory's ACL is set before the configuration is written in
	// it, so the file is never readable under C:\ProgramData's defaults.
	configDir := filepath.Dir(o.ConfigPath)
	if err := r.mkdir(configDir, dirPerm); err != nil {
		return fmt.Errorf("configuration directory: %w", err)
	}
	if err := secure(r.path(configDir), configDirSD); err != nil {
		return fmt.Errorf("configuration directory: %w", err)
	}
	configured, err := r.layConfig(o, filePerm)
	if err != nil {
		return err
	}
	if configured || o.DefaultConfig != nil {
		if err := secure(r.path(o.ConfigPath), configSD); err != nil {
			return fmt.Errorf("configuration: %w", err)
		}
	}
	if err := r.mkdir(o.StateDir, dirPerm); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := secure(r.path(o.StateDir), stateSD); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if o.Root != "" {
		return nil
	}

	s, err := service.New(nil, serviceConfig(o))
	if err != nil {
		return err
	}
	switch _, err := s.Status(); {
	case errors.Is(err, service.ErrNotInstalled):
		if err := s.Install(); err != nil {
			return fmt.Errorf("register service %s: %w", o.Name, err)
		}
		o.Logf("registered service %s (automatic, delayed start) running as %s", o.Name, serviceAccount(o))
	case err != nil:
		return fmt.Errorf("service %s: %w", o.Name, err)
	default:
		o.Logf("service %s is already registered: keeping its registration", o.Name)
	}
	if err := setRecovery(o.Name); err != nil {
		return fmt.Errorf("service %s recovery actions: %w", o.Name, err)
	}
	switch {
	case o.NoStart:
	case !configured:
		o.Logf("not starting %s until it is configured", o.Name)
	default:
		// restart when running: after an upgrade the old binary may be.
		action := "start"
		if st, err := s.Status(); err == nil && st == service.StatusRunning {
			action = "restart"
		}
		if err := Control(ctx, o, action); err != nil {
			if !o.FromPackage {
				return err
			}
			o.Logf("warning: %v", err)
		} else {
			o.Logf("%s: done", action)
		}
	}
	return nil
}

func uninstall(ctx context.Context, o Options, purge bool) error {
	r := rootFS(o.Root)
	if o.Root == "" {
		s, err := service.New(nil, serviceConfig(o))
		if err != nil {
			return err
		}
		st, err := s.Status()
		switch {
		case errors.Is(err, service.ErrNotInstalled):
		case err != nil:
			return fmt.Errorf("service %s: %w", o.Name, err)
		default:
			if st == service.StatusRunning {
				if err := Control(ctx, o, "stop"); err != nil {
					return err
				}
			}
			if err := s.Uninstall(); err != nil {
				return fmt.Errorf("unregister service %s: %w", o.Name, err)
			}
			o.Logf("removed service %s", o.Name)
		}
	}
	if !purge {
		o.Logf("kept %s, %s and the local group %s", filepath.Dir(o.ConfigPath), o.StateDir, o.Group)
		return nil
	}
	for _, dir := range []string{o.StateDir, filepath.Dir(o.ConfigPath)} {
		if err := r.removeAll(dir); err != nil {
			return err
		}
		o.Logf("removed %s", dir)
	}
	if o.Root == "" {
		if err := deleteLocalGroup(o.Group); err != nil {
			return err
		}
		o.Logf("removed the local group %s", o.Group)
	}
	return nil
}

// setRecovery makes the SCM restart the service after it fails, whether
// it crashes or stops with an error: kardianos sets one action and leaves
// out the second case, which is how a failing program ends (see
// scmHandler).
func setRecovery(name string) error {
	m, err := mgr.Connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(name)
	if err != nil {
		return err
	}
	defer s.Close()
	actions := []mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 2 * time.Minute}, // and for every later failure
	}
	const resetPeriod = 24 * 60 * 60 // seconds without failure before counting anew
	if err := s.SetRecoveryActions(actions, resetPeriod); err != nil {
		return err
	}
	return s.SetRecoveryActionsOnNonCrashFailures(true)
}

// setSecurity replaces path's owner and DACL with those of the SDDL, and
// protects the DACL from inheriting its parent's entries.
func setSecurity(path, sddl string) error {
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("security descriptor %q: %w", sddl, err)
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return err
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return err
	}
	err = windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.OWNER_SECURITY_INFORMATION|windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION,
		owner, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("set ACL on %s: %w", path, err)
	}
	return nil
}

// x/sys/windows has no local group management; netapi32 does.
var (
	netapi32             = windows.NewLazySystemDLL("netapi32.dll")
	procNetLocalGroupAdd = netapi32.NewProc("NetLocalGroupAdd")
	procNetLocalGroupDel = netapi32.NewProc("NetLocalGroupDel")
)

// localGroupInfo1 is LOCALGROUP_INFO_1.
type localGroupInfo1 struct {
	name, comment *uint16
}

const (
	errorNoSuchAlias  = 1376
	errorAliasExists  = 1379
	nerrGroupNotFound = 2220
	nerrGroupExists   = 2223
)

// ensureLocalGroup creates the local group unless it exists.
func ensureLocalGroup(group, service string) (created bool, err error) {
	name, err := windows.UTF16PtrFromString(group)
	if err != nil {
		return false, err
	}
	comment, err := windows.UTF16PtrFromString("Members may call the " + service + " local API")
	if err != nil {
		return false, err
	}
	info := localGroupInfo1{name: name, comment: comment}
	r, _, _ := procNetLocalGroupAdd.Call(0, 1, uintptr(unsafe.Pointer(&info)), 0)
	switch r {
	case 0:
		return true, nil
	case errorAliasExists, nerrGroupExists:
		return false, nil
	}
	return false, fmt.Errorf("create local group %s: %w", group, syscall.Errno(r))
}

// deleteLocalGroup deletes the local group if it exists.
func deleteLocalGroup(group string) error {
	name, err := windows.UTF16PtrFromString(group)
	if err != nil {
		return err
	}
	r, _, _ := procNetLocalGroupDel.Call(0, uintptr(unsafe.Pointer(name)))
	switch r {
	case 0, errorNoSuchAlias, nerrGroupNotFound:
		return nil
	}
	return fmt.Errorf("delete local group %s: %w", group, syscall.Errno(r))
}
