package installer

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// systemdAnalyze returns the path of systemd-analyze, skipping the test
// when it is missing unless PDMP_TEST_SYSTEMD=1 demands it.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if os.Getenv("PDMP_TEST_SYSTEMD") == "1" {
			t.Fatal("systemd-analyze is missing (Debian package systemd) and PDMP_TEST_SYSTEMD=1")
		}
		t.Skip("systemd-analyze is missing (Debian package systemd)")
	}
	return p
}

// writeUnit renders o's unit into a temporary directory, with ExecStart
// pointing at a real executable there, as `verify` requires.
func writeUnit(t *testing.T, o Options) string {
	t.Helper()
	dir := t.TempDir()
	if o.Executable == "" {
		o.Executable = filepath.Join(dir, "pdmp-agent")
	}
	if err := os.MkdirAll(filepath.Dir(o.Executable), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(o.Executable, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "pdmp-agent.service")
	if err := os.WriteFile(unit, []byte(SystemdUnit(o)), 0o644); err != nil {
		t.Fatal(err)
	}
	return unit
}

var unitCases = map[string]Options{
	"default":       {},
	"allow devices": {AllowDevices: true},
	// Quoting: spaces, a systemd specifier and a shell variable in paths,
	// and a state directory outside /var/lib.
	"odd paths": {
		ConfigPath: "/etc/pdmp agent/100%$HOME.yaml",
		StateDir:   "/srv/pdmp agent/state",
	},
}

func TestSystemdUnitVerifies(t *testing.T) {
	analyze := systemdAnalyze(t)
	for name, o := range unitCases {
		t.Run(name, func(t *testing.T) {
			if name == "odd paths" {
				o.Executable = filepath.Join(t.TempDir(), "a b", "pdmp$agent%")
			}
			unit := writeUnit(t, o)
			out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Fatalf("systemd-analyze verify: %v\n%s\n%s", err, out, SystemdUnit(o))
			}
		})
	}
}

// The exposure systemd-analyze reported when the unit was written; a
// change to the unit that raises it fails here.
var maxExposure = map[string]float64{"default": 1.2, "allow devices": 1.4, "odd paths": 1.2}

func TestSystemdUnitExposure(t *testing.T) {
	analyze := systemdAnalyze(t)
	overall := regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d+)`)
	for name, o := range unitCases {
		t.Run(name, func(t *testing.T) {
			unit := writeUnit(t, o)
			out, err := exec.Command(analyze, "security", "--offline=true", unit).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security: %v\n%s", err, out)
			}
			m := overall.FindSubmatch(out)
			if m == nil {
				t.Fatalf("no overall exposure in:\n%s", out)
			}
			score, _ := strconv.ParseFloat(string(m[1]), 64)
			t.Logf("exposure %.1f", score)
			if score > maxExposure[name] || score > 2.0 {
				t.Errorf("exposure %.1f, want at most %.1f:\n%s", score, maxExposure[name], out)
			}
		})
	}
}

func TestSystemdUnitContent(t *testing.T) {
	o := Options{Executable: "/usr/bin/pdmp-agent"}
	unit := SystemdUnit(o)
	for _, want := range []string{
		"Type=notify\n",
		"NotifyAccess=main\n",
		"ExecStart=/usr/bin/pdmp-agent run --config /etc/pdmp-agent/config.yaml\n",
		"ExecReload=/bin/kill -HUP $MAINPID\n",
		"User=pdmp-agent\nGroup=pdmp-agent\n",
		"StateDirectory=pdmp-agent\nStateDirectoryMode=0750\n",
		"RuntimeDirectory=pdmp-agent\nRuntimeDirectoryMode=0750\n",
		"PrivateDevices=yes\n",
		"CapabilityBoundingSet=\n",
		"UMask=0027\n",
		"WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	// The agent must reach PDMPs on the internet.
	if strings.Contains(unit, "\nIPAddressDeny=") || strings.Contains(unit, "\nPrivateNetwork=") {
		t.Errorf("unit restricts the network:\n%s", unit)
	}

	devices := SystemdUnit(Options{Executable: "/usr/bin/pdmp-agent", AllowDevices: true})
	if !strings.Contains(devices, "PrivateDevices=no\nDevicePolicy=closed\nDeviceAllow=char-usb_device rw\nDeviceAllow=char-hidraw rw\n") {
		t.Errorf("--allow-devices unit:\n%s", devices)
	}

	odd := SystemdUnit(Options{Executable: "/opt/a b/pdmp", ConfigPath: `/etc/x/10%$H"q.yaml`, StateDir: "/srv/p/state"})
	for _, want := range []string{
		`ExecStart="/opt/a b/pdmp" run --config "/etc/x/10%%$$H\"q.yaml"` + "\n",
		"ReadWritePaths=/srv/p/state\n",
	} {
		if !strings.Contains(odd, want) {
			t.Errorf("unit lacks %q:\n%s", want, odd)
		}
	}
}
