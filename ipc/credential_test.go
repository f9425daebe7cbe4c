package ipc

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestNewCredential(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "api.credential")
	c1, err := NewCredential(path, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(string(b))
	if err != nil || len(raw) != 32 {
		t.Fatalf("credential %q is not 32 bytes of base64url: %v", b, err)
	}
	if !c1.matches(string(b)) || c1.matches(string(b[:len(b)-1])) || c1.matches("") {
		t.Error("matches is wrong")
	}
	if runtime.GOOS != "windows" {
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("mode %v, want 0640", fi.Mode().Perm())
		}
		di, _ := os.Stat(dir)
		if di.Mode().Perm()&0o027 != 0 {
			t.Errorf("directory mode %v is wider than 0750", di.Mode().Perm())
		}
	}

	// Each start rotates it; no temporary file is left behind.
	c2, err := NewCredential(path, "")
	if err != nil {
		t.Fatal(err)
	}
	if c2.matches(string(b)) {
		t.Error("the credential was not rotated")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(ents))
	}
	if _, err := NewCredential(filepath.Join(dir, "other"), "no-such-group-pdmp"); err == nil {
		t.Error("an unknown group was accepted")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("a failed write left %d entries", len(ents))
	}
}

func TestChallengeQuoting(t *testing.T) {
	c := &Credential{path: `C:\ProgramData\pdmp-agent\api "x".credential`}
	want := `Bearer realm="pdmp-agent", credential_file="C:\\ProgramData\\pdmp-agent\\api \"x\".credential"`
	if got := c.challenge(); got != want {
		t.Errorf("challenge\n got %s\nwant %s", got, want)
	}
}
