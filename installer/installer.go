// Package installer installs pdmp-agent as an operating-system service and
// runs it under the service manager: a hardened systemd unit with its own
// system user on Linux, a Service Control Manager service with recovery
// actions and ACL-protected directories on Windows.
//
// It must never reach into the agent's internals: it runs whatever Program
// it is given and knows the configuration only as a file path. It must never
// weaken permissions: directories and files it lays down get exactly the
// owners and modes (or ACLs) documented in docs/install.md, existing ones
// are tightened to them, and it refuses to manage shared system
// directories. It must never print secrets: it does not read the
// configuration, and it reports only paths, account names and service
// states.
package installer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/kardianos/service"
)

// Options describe the service. The zero value installs the default
// pdmp-agent service; see withDefaults for the defaults.
type Options struct {
	// Name is the service's name: the systemd unit and Windows service
	// name and the last element of the default paths (default
	// "pdmp-agent").
	Name        string
	DisplayName string // default Name
	Description string

	// Executable is the absolute path of the binary the service runs
	// (default: this process's executable).
	Executable string
	// ConfigPath is the configuration file passed to "run --config"
	// (default /etc/pdmp-agent/config.yaml or
	// %ProgramData%\pdmp-agent\config.yaml).
	ConfigPath string
	// StateDir is where the agent keeps its queue and file key rings
	// (default /var/lib/pdmp-agent or %ProgramData%\pdmp-agent\state).
	StateDir string

	// User is the Linux system user the service runs as (default Name).
	// Windows services run as the virtual account NT SERVICE\<Name>.
	User string
	// Group is, on Linux, the service's system group (default Name); on
	// Windows, the local group whose members may call the agent's API
	// (default "<Name>-users").
	Group string

	// AllowDevices lets the Linux service open USB and hidraw devices,
	// for PKCS#11 tokens whose module talks to the device directly
	// rather than through pcscd.
	AllowDevices bool
	// NoStart lays down files and registers or enables the service
	// without starting it.
	NoStart bool
	// FromPackage is set by a package's maintainer scripts: a service
	// manager that fails (or is absent) is reported as a warning, because
	// a failing maintainer script leaves the package half-configured.
	FromPackage bool

	// DefaultConfig is written to ConfigPath when no file exists there.
	// An existing configuration is never overwritten.
	DefaultConfig []byte

	// Root prefixes every file path Install and Uninstall touch; tests
	// set it to a temporary directory. Accounts and the service manager
	// are only touched when Root is empty.
	Root string

	// Logf reports progress to the person installing; nil discards it.
	Logf func(format string, args ...any)
}

// withDefaults fills in the defaults. It cannot fail: a missing
// executable is reported by validate.
func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "pdmp-agent"
	}
	if o.DisplayName == "" {
		o.DisplayName = o.Name
	}
	if o.Description == "" {
		o.Description = "PDMP requester: answers the EHR's prescription drug monitoring queries"
	}
	if o.Executable == "" {
		if exe, err := os.Executable(); err == nil {
			o.Executable = exe
		}
	}
	if runtime.GOOS == "windows" {
		data := os.Getenv("ProgramData")
		if data == "" {
			data = `C:\ProgramData`
		}
		if o.ConfigPath == "" {
			o.ConfigPath = filepath.Join(data, o.Name, "config.yaml")
		}
		if o.StateDir == "" {
			o.StateDir = filepath.Join(data, o.Name, "state")
		}
		if o.Group == "" {
			o.Group = o.Name + "-users"
		}
	} else {
		if o.ConfigPath == "" {
			o.ConfigPath = "/etc/" + o.Name + "/config.yaml"
		}
		if o.StateDir == "" {
			o.StateDir = "/var/lib/" + o.Name
		}
		if o.Group == "" {
			o.Group = o.Name
		}
	}
	if o.User == "" {
		o.User = o.Name
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// validate rejects options that would produce a broken service or make
// Install change permissions on directories other software shares.
func (o Options) validate() error {
	if !validName(o.Name, "-_.") {
		return fmt.Errorf("service name %q: use letters, digits, '-', '_' and '.'", o.Name)
	}
	if o.Executable == "" {
		return errors.New("cannot find this program's executable: set Options.Executable")
	}
	for _, p := range []struct{ what, path string }{
		{"executable", o.Executable},
		{"configuration file", o.ConfigPath},
		{"state directory", o.StateDir},
	} {
		if !filepath.IsAbs(p.path) {
			return fmt.Errorf("%s %q is not an absolute path", p.what, p.path)
		}
		if strings.ContainsFunc(p.path, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return fmt.Errorf("%s %q contains a control character", p.what, p.path)
		}
		if home := underHome(p.path); home != "" {
			return fmt.Errorf("%s %s is under %s, which the service cannot see", p.what, p.path, home)
		}
	}
	configDir := filepath.Dir(o.ConfigPath)
	for _, d := range []struct{ what, dir string }{
		{"configuration directory", configDir},
		{"state directory", o.StateDir},
	} {
		if sharedDir(d.dir) {
			return fmt.Errorf("%s %s is shared with other software: use a directory of the service's own", d.what, d.dir)
		}
	}
	if filepath.Clean(configDir) == filepath.Clean(o.StateDir) {
		return fmt.Errorf("the state directory must not be the configuration directory %s", configDir)
	}
	if runtime.GOOS != "windows" && (!validName(o.User, "-_") || !validName(o.Group, "-_")) {
		return fmt.Errorf("user %q and group %q: use letters, digits, '-' and '_'", o.User, o.Group)
	}
	return nil
}

func validName(s, punct string) bool {
	if s == "" || len(s) > 32 || strings.ContainsRune(punct, rune(s[0])) {
		return false
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune(punct, r)) {
			return false
		}
	}
	return true
}

// underHome returns the home-directory tree path lies in, if any: systemd's
// ProtectHome=yes hides those trees from the service.
func underHome(path string) string {
	if runtime.GOOS == "windows" {
		return ""
	}
	for _, h := range []string{"/home", "/root", "/run/user"} {
		if path == h || strings.HasPrefix(path, h+"/") {
			return h
		}
	}
	return ""
}

// sharedDir reports whether dir belongs to the system rather than to one
// service: Install sets exact permissions on its directories and purge
// deletes them, which must never happen to /etc or C:\ProgramData.
func sharedDir(dir string) bool {
	dir = filepath.Clean(dir)
	rest := strings.TrimPrefix(dir, filepath.VolumeName(dir))
	if strings.Count(strings.Trim(rest, `/\`), string(filepath.Separator)) < 1 {
		return true // the root or one level below it
	}
	shared := []string{"/var/lib", "/var/cache", "/var/log", "/var/tmp", "/usr/local", "/usr/lib", "/usr/share", "/usr/bin", "/usr/sbin", "/run/user"}
	if runtime.GOOS == "windows" {
		shared = nil
		for _, env := range []string{"SystemRoot", "ProgramFiles", "ProgramFiles(x86)", "ProgramData", "USERPROFILE", "PUBLIC"} {
			if v := os.Getenv(env); v != "" {
				shared = append(shared, filepath.Clean(v))
			}
		}
		if root := os.Getenv("SystemRoot"); root != "" && strings.HasPrefix(strings.ToLower(dir), strings.ToLower(filepath.Clean(root))+`\`) {
			return true
		}
	}
	for _, s := range shared {
		if strings.EqualFold(dir, s) {
			return true
		}
	}
	return false
}

// Install installs the service: its accounts, its configuration and state
// directories with their permissions, a commented default configuration
// when there is none, and the service registration. It starts the service
// unless o.NoStart is set or the configuration was only just written (it
// must be edited first). Install is idempotent: running it again repairs
// permissions and rewrites the registration, never the configuration.
func Install(ctx context.Context, o Options) error {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return err
	}
	return install(ctx, o)
}

// Uninstall stops the service and removes its registration. It keeps the
// configuration, the state and the accounts unless purge is set.
func Uninstall(ctx context.Context, o Options, purge bool) error {
	o = o.withDefaults()
	if err := o.validate(); err != nil {
		return err
	}
	return uninstall(ctx, o, purge)
}

// Control starts, stops or restarts the installed service through the
// service manager.
func Control(ctx context.Context, o Options, action string) error {
	o = o.withDefaults()
	s, err := manager(o)
	if err != nil {
		return err
	}
	var do func() error
	switch action {
	case "start":
		do = s.Start
	case "stop":
		do = s.Stop
	case "restart":
		do = s.Restart
	default:
		return fmt.Errorf("unknown action %q (want start, stop or restart)", action)
	}
	// The service manager's own calls take no context, and kardianos'
	// Windows stop polls without a deadline: bound the wait here.
	done := make(chan error, 1)
	go func() { done <- do() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("%s %s: %w", action, o.Name, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", action, o.Name, context.Cause(ctx))
	}
}

// Service states reported by Status.
const (
	StateRunning      = "running"
	StateStopped      = "stopped"
	StateNotInstalled = "not installed"
)

// Status reports whether the service is running, stopped or not
// installed.
func Status(o Options) (string, error) {
	o = o.withDefaults()
	s, err := manager(o)
	if err != nil {
		return "", err
	}
	st, err := s.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return StateNotInstalled, nil
	case err != nil:
		return "", fmt.Errorf("status of %s: %w", o.Name, err)
	case st == service.StatusRunning:
		return StateRunning, nil
	case st == service.StatusStopped:
		return StateStopped, nil
	}
	return "", fmt.Errorf("status of %s: unknown", o.Name)
}

// errNoServiceManager is returned when the operating system's service
// manager is not running (a container, a chroot, a package build).
var errNoServiceManager = errors.New("no service manager is running")

// manager returns the kardianos handle used to control the service. On
// Linux only systemd is supported, because Install writes a systemd unit;
// kardianos would otherwise pick SysV scripts that do not exist.
func manager(o Options) (service.Service, error) {
	if runtime.GOOS == "linux" && service.Platform() != "linux-systemd" {
		return nil, fmt.Errorf("%w: systemd is not running (PID 1 is %s); run %q in the foreground instead",
			errNoServiceManager, pid1(), o.Executable+" run")
	}
	// Control and Status never run the program, so no service.Interface
	// is needed.
	return service.New(nil, serviceConfig(o))
}

// serviceConfig is the registration kardianos installs on Windows and
// controls everywhere. Linux ignores the Windows options.
func serviceConfig(o Options) *service.Config {
	return &service.Config{
		Name:        o.Name,
		DisplayName: o.DisplayName,
		Description: o.Description,
		Executable:  o.Executable,
		Arguments:   []string{"run", "--config", o.ConfigPath},
		UserName:    serviceAccount(o),
		Option: service.KeyValue{
			"StartType":        "automatic",
			"DelayedAutoStart": true,
		},
	}
}

// serviceAccount is the account the service runs as: the system user on
// Linux; on Windows the virtual account NT SERVICE\<Name>, which has no
// password, no interactive logon and a SID of its own that the directory
// ACLs name.
func serviceAccount(o Options) string {
	if runtime.GOOS == "windows" {
		return `NT SERVICE\` + o.Name
	}
	return o.User
}

// pid1 names the init process, for messages explaining why the service
// manager cannot be used.
func pid1() string {
	b, err := os.ReadFile("/proc/1/comm")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// stopTimeout bounds Control in Command: longer than systemd's default
// TimeoutStopSec (90s) so a slow but working stop is not reported as
// failed.
const stopTimeout = 2 * time.Minute
