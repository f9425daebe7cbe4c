package client

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The client's conversations with a real server are tested in package
// ipc's transport tests; these are its local checks.

func TestNewRefuses(t *testing.T) {
	for name, c := range map[string]Config{
		"unknown network":      {Network: "udp", Address: "127.0.0.1:1"},
		"no socket":            {Network: "unix"},
		"tcp, no credential":   {Network: "tcp", Address: "127.0.0.1:7333"},
		"tcp, not loopback":    {Network: "tcp", Address: "192.0.2.1:7333", CredentialFile: "/x"},
		"tcp, a name":          {Network: "tcp", Address: "pdmp-agent:7333", CredentialFile: "/x"},
		"tcp, no port":         {Network: "tcp", Address: "127.0.0.1", CredentialFile: "/x"},
		"pipe, squattable":     {Network: "pipe", Address: `\\.\pipe\pdmp-agent`},
		"pipe, remote machine": {Network: "pipe", Address: `\\server\pipe\ProtectedPrefix\Administrators\pdmp-agent\api`},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: New(%+v) succeeded", name, c)
		}
	}
	for _, c := range []Config{
		{Network: "unix", Address: "/run/pdmp-agent/api.sock"},
		{Network: "pipe"},
		{Network: "tcp", Address: "localhost:7333", CredentialFile: "/x"},
		{Network: "tcp", Address: "[::1]:7333", CredentialFile: "/x"},
	} {
		if _, err := New(c); err != nil {
			t.Errorf("New(%+v): %v", c, err)
		}
	}
}

func TestLoopbackAddrPinsLocalhost(t *testing.T) {
	if got, err := loopbackAddr("LocalHost:7333"); err != nil || got != "127.0.0.1:7333" {
		t.Errorf("loopbackAddr = %q, %v", got, err)
	}
}

func TestReadCredential(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("abc\n"), 0o600)
	if got, err := readCredential(good); err != nil || got != "abc" {
		t.Errorf("readCredential = %q, %v", got, err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, []byte(strings.Repeat("a", 5000)), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, p := range []string{big, empty, dir, filepath.Join(dir, "missing")} {
		if _, err := readCredential(p); err == nil {
			t.Errorf("readCredential(%s) succeeded", p)
		}
	}
}

func TestErrorKeepsResponderTextOut(t *testing.T) {
	body := []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","diagnostics":"no record for Jane Doe, 1970-01-01"}]}`)
	job := &Error{StatusCode: 404, Body: body, State: "failed"}
	if s := job.Error(); strings.Contains(s, "Jane") || !strings.Contains(s, "not-found") || !strings.Contains(s, "failed") {
		t.Errorf("job error: %s", s)
	}
	own := &Error{StatusCode: 403, Body: []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"forbidden","diagnostics":"this caller may not use status"}]}`)}
	if s := own.Error(); !strings.Contains(s, "may not use status") {
		t.Errorf("agent error: %s", s)
	}
}
