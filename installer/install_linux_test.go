package installer

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// fakeSystem records what Install asks of the accounts and systemd.
type fakeSystem struct {
	running  bool
	failVerb string // systemctl verb that fails
	uid, gid int
	calls    []string
}

func newFakeSystem(running bool) *fakeSystem {
	f := &fakeSystem{running: running, uid: os.Getuid(), gid: os.Getgid()}
	if os.Geteuid() == 0 {
		// Distinct ids, so ownership is checked and not merely inherited.
		f.uid, f.gid = 4242, 4243
	}
	return f
}

func (f *fakeSystem) ensureGroup(_ context.Context, name string) (int, bool, error) {
	f.calls = append(f.calls, "group "+name)
	return f.gid, true, nil
}

func (f *fakeSystem) ensureUser(_ context.Context, name, group, home string) (int, bool, error) {
	f.calls = append(f.calls, "user "+name+" "+group+" "+home)
	return f.uid, true, nil
}

func (f *fakeSystem) deleteUser(_ context.Context, name string) error {
	f.calls = append(f.calls, "userdel "+name)
	return nil
}

func (f *fakeSystem) deleteGroup(_ context.Context, name string) error {
	f.calls = append(f.calls, "groupdel "+name)
	return nil
}

func (f *fakeSystem) systemdRunning() bool { return f.running }

func (f *fakeSystem) systemctl(_ context.Context, args ...string) error {
	f.calls = append(f.calls, "systemctl "+strings.Join(args, " "))
	if args[0] == f.failVerb {
		return errors.New("systemctl " + args[0] + " failed")
	}
	return nil
}

func (f *fakeSystem) systemctlCalls() []string {
	var s []string
	for _, c := range f.calls {
		if rest, ok := strings.CutPrefix(c, "systemctl "); ok {
			s = append(s, rest)
		}
	}
	return s
}

const defaultConfig = "# pdmp-agent configuration\nregistrations: []\n"

func testOptions(t *testing.T) Options {
	o := Options{
		Executable:    "/usr/bin/pdmp-agent",
		DefaultConfig: []byte(defaultConfig),
		Root:          t.TempDir(),
		Logf:          t.Logf,
	}
	return o.withDefaults()
}

// wantPerm checks path's type, mode and owner under root.
func wantPerm(t *testing.T, root, path string, mode fs.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, gid)
	}
}

func TestInstallLaysDownFiles(t *testing.T) {
	o := testOptions(t)
	sys := newFakeSystem(false)
	if err := installWith(context.Background(), o, sys); err != nil {
		t.Fatal(err)
	}
	root := os.Getuid()
	wantPerm(t, o.Root, "/etc/pdmp-agent", fs.ModeDir|0o750, root, sys.gid)
	wantPerm(t, o.Root, "/etc/pdmp-agent/config.yaml", 0o640, root, sys.gid)
	wantPerm(t, o.Root, "/var/lib/pdmp-agent", fs.ModeDir|0o750, sys.uid, sys.gid)
	wantPerm(t, o.Root, "/etc/systemd/system/pdmp-agent.service", 0o644, root, os.Getgid())

	if b, _ := os.ReadFile(filepath.Join(o.Root, o.ConfigPath)); string(b) != defaultConfig {
		t.Errorf("config = %q, want the default", b)
	}
	if b, _ := os.ReadFile(filepath.Join(o.Root, unitPath(o))); string(b) != SystemdUnit(o) {
		t.Errorf("unit file differs from SystemdUnit:\n%s", b)
	}
	want := []string{"group pdmp-agent", "user pdmp-agent pdmp-agent /var/lib/pdmp-agent", "systemctl enable pdmp-agent.service"}
	if !slices.Equal(sys.calls, want) {
		t.Errorf("calls %q, want %q (no systemd: enable only)", sys.calls, want)
	}
	// No temporary files are left behind.
	for _, dir := range []string{"/etc/pdmp-agent", "/etc/systemd/system"} {
		entries, _ := os.ReadDir(filepath.Join(o.Root, dir))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".install-") {
				t.Errorf("left %s/%s", dir, e.Name())
			}
		}
	}
}

func TestInstallKeepsConfigAndTightens(t *testing.T) {
	o := testOptions(t)
	dir := filepath.Join(o.Root, "/etc/pdmp-agent")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	mine := "# edited by the clinic\n"
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(mine), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	sys := newFakeSystem(false)
	for range 2 { // and idempotent
		if err := installWith(context.Background(), o, sys); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "config.yaml")); string(b) != mine {
		t.Errorf("config overwritten: %q", b)
	}
	wantPerm(t, o.Root, "/etc/pdmp-agent", fs.ModeDir|0o750, os.Getuid(), sys.gid)
	wantPerm(t, o.Root, "/etc/pdmp-agent/config.yaml", 0o640, os.Getuid(), sys.gid)
}

func TestInstallRefusesSymlinks(t *testing.T) {
	o := testOptions(t)
	elsewhere := t.TempDir()
	if err := os.MkdirAll(filepath.Join(o.Root, "/etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(o.Root, "/etc/pdmp-agent")); err != nil {
		t.Fatal(err)
	}
	err := installWith(context.Background(), o, newFakeSystem(false))
	if err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("install through a symlink: %v", err)
	}
}

func TestInstallServiceManager(t *testing.T) {
	for name, c := range map[string]struct {
		running, configured, noStart, fromPackage bool
		failVerb                                  string
		want                                      []string
		wantErr                                   bool
	}{
		"no systemd":               {want: []string{"enable pdmp-agent.service"}},
		"fresh config":             {running: true, want: []string{"daemon-reload", "enable pdmp-agent.service"}},
		"configured":               {running: true, configured: true, want: []string{"daemon-reload", "enable pdmp-agent.service", "restart pdmp-agent.service"}},
		"no start":                 {running: true, configured: true, noStart: true, want: []string{"daemon-reload", "enable pdmp-agent.service"}},
		"failure":                  {running: true, configured: true, failVerb: "enable", want: []string{"daemon-reload", "enable pdmp-agent.service"}, wantErr: true},
		"failure in package":       {running: true, configured: true, fromPackage: true, failVerb: "enable", want: []string{"daemon-reload", "enable pdmp-agent.service", "restart pdmp-agent.service"}},
		"no systemd, no systemctl": {failVerb: "enable", want: []string{"enable pdmp-agent.service"}},
	} {
		t.Run(name, func(t *testing.T) {
			o := testOptions(t)
			o.NoStart, o.FromPackage = c.noStart, c.fromPackage
			if c.configured {
				if err := os.MkdirAll(filepath.Join(o.Root, "/etc/pdmp-agent"), 0o750); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(o.Root, o.ConfigPath), []byte("x: 1\n"), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			sys := newFakeSystem(c.running)
			sys.failVerb = c.failVerb
			err := installWith(context.Background(), o, sys)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v", err, c.wantErr)
			}
			if got := sys.systemctlCalls(); !slices.Equal(got, c.want) {
				t.Errorf("systemctl %q, want %q", got, c.want)
			}
		})
	}
}

func TestInstallWithoutDefaultConfig(t *testing.T) {
	o := testOptions(t)
	o.DefaultConfig = nil
	sys := newFakeSystem(true)
	if err := installWith(context.Background(), o, sys); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(o.Root, o.ConfigPath)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a config was written: %v", err)
	}
	if slices.Contains(sys.systemctlCalls(), "restart pdmp-agent.service") {
		t.Error("started without a configuration")
	}
}

func TestUninstall(t *testing.T) {
	o := testOptions(t)
	sys := newFakeSystem(true)
	ctx := context.Background()
	if err := installWith(ctx, o, sys); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(o.Root, o.StateDir, "queue.db")
	if err := os.WriteFile(state, []byte("q"), 0o600); err != nil {
		t.Fatal(err)
	}

	sys.calls = nil
	if err := uninstallWith(ctx, o, sys, false); err != nil {
		t.Fatal(err)
	}
	if want := []string{"disable --now pdmp-agent.service", "daemon-reload"}; !slices.Equal(sys.systemctlCalls(), want) {
		t.Errorf("systemctl %q, want %q", sys.systemctlCalls(), want)
	}
	if _, err := os.Stat(filepath.Join(o.Root, unitPath(o))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unit file kept: %v", err)
	}
	for _, p := range []string{state, filepath.Join(o.Root, o.ConfigPath)} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("uninstall removed %s: %v", p, err)
		}
	}

	// Again, now with purge: the unit is gone, so systemd is left alone.
	sys.calls = nil
	if err := uninstallWith(ctx, o, sys, true); err != nil {
		t.Fatal(err)
	}
	if want := []string{"userdel pdmp-agent", "groupdel pdmp-agent"}; !slices.Equal(sys.calls, want) {
		t.Errorf("calls %q, want %q", sys.calls, want)
	}
	for _, p := range []string{o.StateDir, "/etc/pdmp-agent"} {
		if _, err := os.Stat(filepath.Join(o.Root, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("purge kept %s: %v", p, err)
		}
	}
}

func TestInstallValidates(t *testing.T) {
	for name, o := range map[string]Options{
		"relative config":    {ConfigPath: "config.yaml"},
		"config in /etc":     {ConfigPath: "/etc/pdmp-agent.yaml"},
		"state is /var/lib":  {StateDir: "/var/lib"},
		"state in home":      {StateDir: "/home/alice/pdmp"},
		"executable in home": {Executable: "/root/pdmp-agent"},
		"same dirs":          {StateDir: "/etc/pdmp-agent"},
		"newline":            {ConfigPath: "/etc/pdmp-agent/c\n.yaml"},
		"bad name":           {Name: "pdmp agent"},
		"bad user":           {User: "pdmp:agent"},
	} {
		t.Run(name, func(t *testing.T) {
			o.Root = t.TempDir()
			if o.Executable == "" {
				o.Executable = "/usr/bin/pdmp-agent"
			}
			if err := Install(context.Background(), o); err == nil {
				t.Error("Install accepted it")
			} else {
				t.Log(err)
			}
		})
	}
}

func TestCheckExecutable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the check wants root-owned files")
	}
	dir := t.TempDir() // in /tmp: sticky, so accepted
	exe := filepath.Join(dir, "pdmp-agent")
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := checkExecutable(exe); err != nil {
		t.Errorf("root-owned 0755 binary refused: %v", err)
	}
	if err := os.Chmod(exe, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := checkExecutable(exe); err == nil {
		t.Error("group-writable binary accepted")
	}
	if err := os.Chmod(exe, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := checkExecutable(exe); err == nil {
		t.Error("binary in a directory owned by another user accepted")
	}
}

func TestUninstallWithoutSystemd(t *testing.T) {
	o := testOptions(t)
	sys := newFakeSystem(false)
	ctx := context.Background()
	if err := installWith(ctx, o, sys); err != nil {
		t.Fatal(err)
	}
	sys.calls, sys.failVerb = nil, "disable"
	if err := uninstallWith(ctx, o, sys, false); err != nil {
		t.Fatalf("a failed offline disable is only a warning: %v", err)
	}
	if want := []string{"disable pdmp-agent.service"}; !slices.Equal(sys.systemctlCalls(), want) {
		t.Errorf("systemctl %q, want %q", sys.systemctlCalls(), want)
	}
	if _, err := os.Stat(filepath.Join(o.Root, unitPath(o))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("unit file kept: %v", err)
	}
}
