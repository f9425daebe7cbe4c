package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const reloadBase = `responders:
  - name: a
    fhir_base: https://a.example/fhir
registrations:
  - name: first
    responder: a
    client_id: c1
    key: %q
`

func keyURI(t *testing.T, dir, name string) string {
	t.Helper()
	pass := filepath.Join(dir, "pass")
	if _, err := os.Stat(pass); err != nil {
		if err := os.WriteFile(pass, []byte("pw"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return fmt.Sprintf("keyring:%s?backend=file&dir=%s&passphrase-file=%s", name, filepath.Join(dir, "kr"), pass)
}

func startService(t *testing.T) (*Service, string, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	uri := keyURI(t, dir, "first")
	if err := os.WriteFile(path, fmt.Appendf(nil, reloadBase, uri), 0o640); err != nil {
		t.Fatal(err)
	}
	s, err := NewService(context.Background(), path, nil, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Watch(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	time.Sleep(50 * time.Millisecond) // let the watch start
	return s, path, uri
}

// waitReload waits until the reload status changes from before.
func waitReload(t *testing.T, s *Service, before ReloadStatus) ReloadStatus {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st := s.LastReload(); !st.Time.Equal(before.Time) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no reload happened")
	return ReloadStatus{}
}

func writeInPlace(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(content)
	f.Close()
}

func writeByRename(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".swp"
	if err := os.WriteFile(tmp, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestReloadAppliesValidChange(t *testing.T) {
	for name, write := range map[string]func(*testing.T, string, string){"in place": writeInPlace, "rename": writeByRename} {
		t.Run(name, func(t *testing.T) {
			s, path, uri := startService(t)
			before := s.LastReload()
			old := s.Agent()
			next := fmt.Sprintf(reloadBase, uri) + fmt.Sprintf(`  - name: second
    responder: a
    client_id: c2
    key: %q
`, uri)
			write(t, path, next)
			st := waitReload(t, s, before)
			if !st.OK || st.Version == before.Version {
				t.Fatalf("reload status %+v", st)
			}
			if _, ok := s.Agent().Registration("second"); !ok {
				t.Fatal("new registration not live")
			}
			if _, ok := old.Registration("second"); ok {
				t.Fatal("old Agent was mutated instead of replaced")
			}
			// Key rings are shared, not reopened.
			a, _ := old.Registration("first")
			b, _ := s.Agent().Registration("first")
			if a.Ring != b.Ring {
				t.Error("reload reopened an unchanged key ring")
			}
		})
	}
}

func TestReloadKeepsOldOnError(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
	}{
		{"syntax error", "responders: [\n", "config.yaml:"},
		{"unknown field", "responderz: []\n", `unknown field "responderz"`},
		{"bad key URI", strings.Replace(fmt.Sprintf(reloadBase, "x"), `"x"`, "tpm:x", 1), "registrations[0].key"},
		{"unknown responder", strings.Replace(fmt.Sprintf(reloadBase, "keyring:x"), "responder: a", "responder: b", 1), `no responder named "b"`},
		{"key store does not open", fmt.Sprintf(reloadBase, "keyring:k?backend=file&dir="+dir+"&passphrase-file="+dir+"/missing"), "passphrase file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path, _ := startService(t)
			before := s.LastReload()
			old := s.Agent()
			writeByRename(t, path, tt.content)
			st := waitReload(t, s, before)
			if st.OK || !strings.Contains(st.Error, tt.want) {
				t.Fatalf("status %+v, want an error containing %q", st, tt.want)
			}
			if !strings.Contains(st.Error, path) {
				t.Errorf("error %q does not name the file", st.Error)
			}
			if s.Agent() != old {
				t.Fatal("a bad configuration replaced the running one")
			}
			if st.Version != before.Version {
				t.Error("version changed on a failed reload")
			}
		})
	}
}

func TestReloadReportsRestartOnlySettings(t *testing.T) {
	s, path, uri := startService(t)
	before := s.LastReload()
	writeInPlace(t, path, "state_dir: /elsewhere\nlisten:\n  tcp: 127.0.0.1:7999\n"+fmt.Sprintf(reloadBase, uri))
	st := waitReload(t, s, before)
	if !st.OK || strings.Join(st.NeedsRestart, ",") != "state_dir,listen" {
		t.Fatalf("status %+v, want needs_restart state_dir,listen", st)
	}
}

func TestReloadChangesLogLevelLive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	uri := keyURI(t, dir, "first")
	os.WriteFile(path, fmt.Appendf(nil, reloadBase, uri), 0o640)
	level := new(slog.LevelVar)
	s, err := NewService(context.Background(), path, level, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if level.Level() != slog.LevelInfo {
		t.Fatalf("initial level %v", level.Level())
	}
	os.WriteFile(path, append([]byte("log: {level: debug}\n"), fmt.Appendf(nil, reloadBase, uri)...), 0o640)
	if err := s.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if level.Level() != slog.LevelDebug {
		t.Fatalf("level after reload %v, want debug", level.Level())
	}
}
