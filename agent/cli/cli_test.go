package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
)

func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb, Hooks{})
	return out.String(), errb.String(), code
}

func TestConfigValidate(t *testing.T) {
	out, _, code := run(t, "config", "validate", "../config/testdata/good.yaml")
	if code != 0 || !strings.Contains(out, "valid (2 responders, 3 registrations)") {
		t.Fatalf("good config: code %d, %q", code, out)
	}
	_, errOut, code := run(t, "config", "validate", "../config/testdata/bad-unknown-responder.yaml")
	if code != 1 || !strings.Contains(errOut, "bad-unknown-responder.yaml:7:16: registrations[0].responder") {
		t.Fatalf("bad config: code %d, %q", code, errOut)
	}
}

func TestUsage(t *testing.T) {
	_, errOut, code := run(t)
	if code != 2 || !strings.Contains(errOut, "demo") || !strings.Contains(errOut, "keys") {
		t.Fatalf("usage: %d %q", code, errOut)
	}
	if _, _, code := run(t, "frobnicate"); code != 2 {
		t.Fatal("unknown command did not exit 2")
	}
}

// TestKeysLifecycle drives keys create/list/rotate/prune/delete and jwks
// on a file keyring, as IT staff would.
func TestKeysLifecycle(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("pw"), 0o600)
	uri := fmt.Sprintf("keyring:reg?backend=file&dir=%s&passphrase-file=%s", url.QueryEscape(filepath.Join(dir, "kr")), url.QueryEscape(pass))

	out, errOut, code := run(t, "keys", "create", "-uri", uri, "-alg", "ES384")
	if code != 0 || !strings.Contains(out, "created ES384 key") {
		t.Fatalf("create: %d %q %q", code, out, errOut)
	}
	if _, _, code := run(t, "keys", "create", "-uri", uri); code != 1 {
		t.Fatal("second create succeeded")
	}
	out, _, _ = run(t, "keys", "rotate", "-uri", uri, "-publish-delay", "1h")
	if !strings.Contains(out, "signs from") {
		t.Fatalf("rotate: %q", out)
	}
	out, _, _ = run(t, "jwks", "-uri", uri)
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal([]byte(out), &set); err != nil || len(set.Keys) != 2 {
		t.Fatalf("jwks after rotation: %v %q", err, out)
	}
	for _, k := range set.Keys {
		if k["d"] != nil || k["alg"] != "ES384" {
			t.Fatalf("published key %v", k)
		}
	}
	out, _, _ = run(t, "keys", "list", "-uri", uri, "-publish-delay", "1h")
	if !strings.Contains(out, "pending") || !strings.Contains(out, "active") {
		t.Fatalf("list: %q", out)
	}
	if _, _, code := run(t, "keys", "delete", "-uri", uri); code != 1 {
		t.Fatal("delete without -yes succeeded")
	}
	if out, _, code := run(t, "keys", "delete", "-uri", uri, "-yes"); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("delete: %d %q", code, out)
	}
}

func TestDemoOnce(t *testing.T) {
	out, errOut, code := run(t, "demo", "-once")
	if code != 0 || !strings.Contains(out, "demo OK") || !strings.Contains(out, "dispenses") {
		t.Fatalf("demo: %d\n%s\n%s", code, out, errOut)
	}
	for _, secret := range []string{"eyJ", "Bearer", "PRIVATE KEY"} {
		if strings.Contains(out+errOut, secret) {
			t.Errorf("demo printed %q", secret)
		}
	}
}

func TestDoctor(t *testing.T) {
	srv := pdmptest.NewServer()
	defer srv.Close()
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("pw"), 0o600)
	uri := fmt.Sprintf("keyring:doc?backend=file&dir=%s&passphrase-file=%s", url.QueryEscape(filepath.Join(dir, "kr")), url.QueryEscape(pass))
	if _, _, code := run(t, "keys", "create", "-uri", uri); code != 0 {
		t.Fatal("keys create failed")
	}
	set, _, _ := run(t, "jwks", "-uri", uri)
	if err := srv.RegisterClient(pdmptest.Client{ID: "doc", JWKS: []byte(set)}); err != nil {
		t.Fatal(err)
	}
	write := func(clientID string) string {
		p := filepath.Join(dir, clientID+".yaml")
		os.WriteFile(p, fmt.Appendf(nil, `responders:
  - name: sandbox
    fhir_base: %s
registrations:
  - name: doc
    responder: sandbox
    client_id: %s
    key: %q
`, srv.FHIRBase, clientID, uri), 0o600)
		return p
	}
	out, errOut, code := run(t, "doctor", "-config", write("doc"))
	if code != 0 || strings.Contains(out, "FAIL") || !strings.Contains(out, "token doc") || !strings.Contains(out, "responder sandbox") {
		t.Fatalf("healthy setup: %d\n%s%s", code, out, errOut)
	}
	out, _, code = run(t, "doctor", "-config", write("stranger"))
	if code != 1 || !strings.Contains(out, "FAIL  token doc") {
		t.Fatalf("unregistered client: %d\n%s", code, out)
	}
}
