package installer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommandUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"bogus"}, {"status", "extra"}, {"install", "--bogus"}} {
		var stdout, stderr bytes.Buffer
		if code := Command(context.Background(), args, Options{}, nil, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if !strings.Contains(stderr.String(), "usage") {
			t.Errorf("%q: no usage in %q", args, stderr.String())
		}
	}
	for name := range Commands() {
		if _, ok := commands[name]; !ok {
			t.Errorf("Commands lists %q", name)
		}
	}
}

func TestCommandInstall(t *testing.T) {
	root := t.TempDir()
	o := Options{Executable: "/usr/bin/pdmp-agent", DefaultConfig: []byte("# default\n"), Root: root}
	var stdout, stderr bytes.Buffer
	args := []string{"install", "--config", "/etc/clinic/agent.yaml", "--state-dir", "/var/lib/clinic", "--allow-devices"}
	if code := Command(context.Background(), args, o, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "wrote a default configuration to /etc/clinic/agent.yaml") {
		t.Errorf("output: %s", stdout.String())
	}
	unit, err := os.ReadFile(filepath.Join(root, "/etc/systemd/system/pdmp-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"run --config /etc/clinic/agent.yaml\n", "StateDirectory=clinic\n", "DeviceAllow=char-hidraw rw\n"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
}

func TestCommandStatusNotInstalled(t *testing.T) {
	var stdout, stderr bytes.Buffer
	o := Options{Name: "pdmp-agent-test-not-installed"}
	if code := Command(context.Background(), []string{"status"}, o, nil, &stdout, &stderr); code != exitNotInstalled {
		t.Errorf("exit %d, want %d; stdout %q stderr %q", code, exitNotInstalled, stdout.String(), stderr.String())
	}
}

func TestCommandRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the program stops at once
	var got string
	p := ProgramFunc(func(ctx context.Context, s Service) error {
		got = s.ConfigPath
		<-ctx.Done()
		return nil
	})
	var stdout, stderr bytes.Buffer
	if code := Command(ctx, []string{"run", "--config", "/x/y.yaml"}, Options{}, p, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got != "/x/y.yaml" {
		t.Errorf("program got config %q", got)
	}
}
