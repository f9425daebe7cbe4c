package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// system is what Install and Uninstall change outside their files: the
// accounts and the service manager. Tests substitute a fake, so nothing
// outside the test's Root is touched.
type system interface {
	// ensureGroup creates the system group unless it exists.
	ensureGroup(ctx context.Context, name string) (gid int, created bool, err error)
	// ensureUser creates the system user unless it exists.
	ensureUser(ctx context.Context, name, group, home string) (uid int, created bool, err error)
	deleteUser(ctx context.Context, name string) error
	deleteGroup(ctx context.Context, name string) error
	// systemdRunning reports whether systemd is PID 1 (sd_booted).
	systemdRunning() bool
	// systemctl runs systemctl; "enable" and "disable" work without a
	// running systemd.
	systemctl(ctx context.Context, args ...string) error
}

func install(ctx context.Context, o Options) error {
	if os.Geteuid() != 0 && o.Root == "" {
		return errors.New("install must run as root")
	}
	if o.Root == "" {
		if err := checkExecutable(o.Executable); err != nil {
			return err
		}
	}
	return installWith(ctx, o, hostSystem(o))
}

func uninstall(ctx context.Context, o Options, purge bool) error {
	if os.Geteuid() != 0 && o.Root == "" {
		return errors.New("uninstall must run as root")
	}
	return uninstallWith(ctx, o, hostSystem(o), purge)
}

// hostSystem is the real system, or with a Root one where accounts and the
// service manager are left alone.
func hostSystem(o Options) system {
	if o.Root != "" {
		return rootedSystem{}
	}
	return realSystem{}
}

func unitPath(o Options) string {
	return "/etc/systemd/system/" + o.Name + ".service"
}

func installWith(ctx context.Context, o Options, sys system) error {
	gid, created, err := sys.ensureGroup(ctx, o.Group)
	if err != nil {
		return fmt.Errorf("group %s: %w", o.Group, err)
	}
	if created {
		o.Logf("created system group %s", o.Group)
	}
	uid, created, err := sys.ensureUser(ctx, o.User, o.Group, o.StateDir)
	if err != nil {
		return fmt.Errorf("user %s: %w", o.User, err)
	}
	if created {
		o.Logf("created system user %s", o.User)
	}

	// root owns the configuration so that the service, if compromised,
	// cannot rewrite it; its group may read it. Under a test Root the
	// files belong to whoever runs the test.
	rootUID := 0
	if o.Root != "" {
		rootUID = os.Getuid()
	}
	r := rootFS(o.Root)
	if err := r.mkdir(filepath.Dir(o.ConfigPath), perm{0o750, rootUID, gid}); err != nil {
		return fmt.Errorf("configuration directory: %w", err)
	}
	configured, err := r.layConfig(o, perm{0o640, rootUID, gid})
	if err != nil {
		return err
	}
	if err := r.mkdir(o.StateDir, perm{0o750, uid, gid}); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	unit := unitPath(o)
	if err := r.writeFile(unit, []byte(SystemdUnit(o)), perm{0o644, rootUID, -1}); err != nil {
		return fmt.Errorf("systemd unit: %w", err)
	}
	o.Logf("wrote %s", unit)

	name := o.Name + ".service"
	steps := [][]string{{"enable", name}}
	if !sys.systemdRunning() {
		o.Logf("systemd is not running (PID 1 is %s): the unit is enabled, to start when the machine boots with systemd", pid1())
	} else {
		steps = [][]string{{"daemon-reload"}, {"enable", name}}
		switch {
		case o.NoStart:
		case !configured:
			o.Logf("not starting %s until it is configured", o.Name)
		default:
			// restart, not start: after an upgrade the old binary may
			// still be running.
			steps = append(steps, []string{"restart", name})
		}
	}
	for _, args := range steps {
		if err := sys.systemctl(ctx, args...); err != nil {
			// Without a running systemd, enabling is a courtesy for the
			// next boot; the files are in place either way.
			if !o.FromPackage && sys.systemdRunning() {
				return err
			}
			o.Logf("warning: %v", err)
			continue
		}
		o.Logf("systemctl %s: done", strings.Join(args, " "))
	}
	return nil
}

func uninstallWith(ctx context.Context, o Options, sys system, purge bool) error {
	r := rootFS(o.Root)
	unit := unitPath(o)
	name := o.Name + ".service"
	if _, err := os.Stat(r.path(unit)); err == nil {
		args := []string{"disable", name}
		if sys.systemdRunning() {
			args = []string{"disable", "--now", name}
		}
		if err := sys.systemctl(ctx, args...); err != nil {
			if !o.FromPackage && sys.systemdRunning() {
				return err
			}
			o.Logf("warning: %v", err)
		}
		if err := os.Remove(r.path(unit)); err != nil {
			return err
		}
		o.Logf("removed %s", unit)
		if sys.systemdRunning() {
			if err := sys.systemctl(ctx, "daemon-reload"); err != nil {
				o.Logf("warning: %v", err)
			}
		}
	}
	if !purge {
		o.Logf("kept %s, %s and the %s user", filepath.Dir(o.ConfigPath), o.StateDir, o.User)
		return nil
	}
	for _, dir := range []string{o.StateDir, filepath.Dir(o.ConfigPath)} {
		if err := r.removeAll(dir); err != nil {
			return err
		}
		o.Logf("removed %s", dir)
	}
	if err := sys.deleteUser(ctx, o.User); err != nil {
		return fmt.Errorf("user %s: %w", o.User, err)
	}
	if err := sys.deleteGroup(ctx, o.Group); err != nil {
		return fmt.Errorf("group %s: %w", o.Group, err)
	}
	o.Logf("removed the %s user and group %s", o.User, o.Group)
	return nil
}

// writeFile replaces file atomically: write a temporary file, fsync, rename,
// fsync the directory.
func (r rootFS) writeFile(file string, data []byte, p perm) error {
	full := r.path(file)
	dir := filepath.Dir(full)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := writeTemp(dir, data, p)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Rename(tmp, full); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkExecutable refuses a binary that someone other than root could
// replace: the service would run their code with its keys.
func checkExecutable(exe string) error {
	for p := exe; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("executable: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		switch {
		case !ok:
		case st.Uid != 0:
			return fmt.Errorf("%s is owned by uid %d: the service's binary and its directories must belong to root", p, st.Uid)
		case fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0:
			return fmt.Errorf("%s is writable by others (%v): the service's binary and its directories must be writable by root only", p, fi.Mode().Perm())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// realSystem changes the machine's accounts with the shadow utilities and
// drives systemd through systemctl.
type realSystem struct{}

func (realSystem) ensureGroup(ctx context.Context, name string) (int, bool, error) {
	if g, err := user.LookupGroup(name); err == nil {
		gid, err := strconv.Atoi(g.Gid)
		return gid, false, err
	}
	if err := run(ctx, "groupadd", "--system", name); err != nil {
		return 0, false, err
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, false, err
	}
	gid, err := strconv.Atoi(g.Gid)
	return gid, true, err
}

func (realSystem) ensureUser(ctx context.Context, name, group, home string) (int, bool, error) {
	if u, err := user.Lookup(name); err == nil {
		uid, err := strconv.Atoi(u.Uid)
		return uid, false, err
	}
	// --gid: Debian's useradd would otherwise try to create a group named
	// after the user, which exists.
	if err := run(ctx, "useradd", "--system", "--no-create-home", "--home-dir", home,
		"--shell", "/usr/sbin/nologin", "--gid", group, "--comment", "pdmp-agent service", name); err != nil {
		return 0, false, err
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, false, err
	}
	uid, err := strconv.Atoi(u.Uid)
	return uid, true, err
}

func (realSystem) deleteUser(ctx context.Context, name string) error {
	if _, err := user.Lookup(name); err != nil {
		return nil
	}
	return run(ctx, "userdel", name)
}

func (realSystem) deleteGroup(ctx context.Context, name string) error {
	if _, err := user.LookupGroup(name); err != nil {
		return nil
	}
	return run(ctx, "groupdel", name)
}

func (realSystem) systemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func (realSystem) systemctl(ctx context.Context, args ...string) error {
	if _, err := exec.LookPath("systemctl"); err != nil {
		return fmt.Errorf("systemctl %s: systemd is not installed", strings.Join(args, " "))
	}
	return run(ctx, "systemctl", args...)
}

// rootedSystem stands in for the machine when Options.Root is set: it
// creates no accounts (files are owned by the current user) and there is
// no service manager to tell.
type rootedSystem struct{}

func (rootedSystem) ensureGroup(context.Context, string) (int, bool, error) {
	return os.Getgid(), false, nil
}

func (rootedSystem) ensureUser(context.Context, string, string, string) (int, bool, error) {
	return os.Getuid(), false, nil
}

func (rootedSystem) deleteUser(context.Context, string) error   { return nil }
func (rootedSystem) deleteGroup(context.Context, string) error  { return nil }
func (rootedSystem) systemdRunning() bool                       { return false }
func (rootedSystem) systemctl(context.Context, ...string) error { return nil }

// run runs a command, returning its output in the error when it fails.
func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}
