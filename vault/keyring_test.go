package vault_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/99designs/keyring"

	"github.com/pdmp-agent/pdmp-agent/vault"
	"github.com/pdmp-agent/pdmp-agent/vault/vaulttest"
)

var ringSeq atomic.Int64

func fileURI(t *testing.T, dir string) string {
	t.Helper()
	pass := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("keyring:ring%d?backend=file&dir=%s&passphrase-file=%s",
		ringSeq.Add(1), url.QueryEscape(dir), url.QueryEscape(pass))
}

func TestFileKeyringConformance(t *testing.T) {
	dir := t.TempDir()
	vaulttest.Run(t, func(t *testing.T) string { return fileURI(t, dir) })
}

// TestSecretServiceConformance runs against a real Secret Service
// (gnome-keyring). CI sets PDMP_TEST_SECRET_SERVICE=1 and starts one under
// dbus-run-session, so there the test fails rather than skips if it is
// missing.
func TestSecretServiceConformance(t *testing.T) {
	requireSecretService(t)
	vaulttest.Run(t, func(t *testing.T) string {
		return fmt.Sprintf("keyring:ss%d-%d?backend=secret-service&service=pdmp-agent-test", os.Getpid(), ringSeq.Add(1))
	})
}

func requireSecretService(t *testing.T) {
	t.Helper()
	if os.Getenv("PDMP_TEST_SECRET_SERVICE") == "" {
		t.Skip("set PDMP_TEST_SECRET_SERVICE=1 inside dbus-run-session with an unlocked gnome-keyring (make test does)")
	}
	for _, b := range keyring.AvailableBackends() {
		if b == keyring.SecretServiceBackend {
			return
		}
	}
	t.Fatal("PDMP_TEST_SECRET_SERVICE is set but no Secret Service is reachable on the session bus")
}

// TestFileKeyringNeverHoldsKeyInClear scans every file the file backend
// wrote for any 16-byte window of the private key's PKCS#8 encoding and of
// its secret scalar or prime factors.
func TestFileKeyringNeverHoldsKeyInClear(t *testing.T) {
	for _, alg := range []vault.Alg{vault.ES384, vault.RS384} {
		t.Run(string(alg), func(t *testing.T) {
			dir := t.TempDir()
			uri := fileURI(t, dir)
			ctx := context.Background()
			r, err := vault.Open(ctx, uri)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if _, err := r.Create(ctx, alg); err != nil {
				t.Fatal(err)
			}
			secrets := vaulttest.PrivateMaterial(t, uri)
			err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				fi, _ := d.Info()
				if fi.Mode().Perm()&0o077 != 0 {
					t.Errorf("%s has mode %v, want no group/other access", p, fi.Mode().Perm())
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				for _, s := range secrets {
					if containsWindow(b, s, 16) {
						t.Errorf("%s contains private key material", p)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func containsWindow(hay, secret []byte, w int) bool {
	for i := 0; i+w <= len(secret); i += w / 2 {
		if bytes.Contains(hay, secret[i:i+w]) {
			return true
		}
	}
	return false
}

func TestKeyRecordsFitWindowsCredentialManager(t *testing.T) {
	for _, alg := range []vault.Alg{vault.ES384, vault.RS384} {
		s, err := vault.GenerateSigner(alg)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(s)
		if err != nil {
			t.Fatal(err)
		}
		// 10 bytes of record header, plus slack for longer integer encodings.
		if size := 10 + len(der) + 16; size > vault.WinCredMaxBlob {
			t.Errorf("%s record ~%d bytes exceeds %d", alg, size, vault.WinCredMaxBlob)
		}
	}
}

func TestFileKeyringPassphraseFile(t *testing.T) {
	dir := t.TempDir()
	loose := filepath.Join(dir, "pass")
	if err := os.WriteFile(loose, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, query, want string
	}{
		{"world readable", "passphrase-file=" + loose, "readable by group or others"},
		{"empty", "passphrase-file=" + empty, "is empty"},
		{"missing file", "passphrase-file=" + filepath.Join(dir, "nope"), "no such file"},
		{"no passphrase", "", "needs passphrase-file= or passphrase-env="},
		{"unset env", "passphrase-env=PDMP_TEST_UNSET_PASSPHRASE", "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uri := "keyring:k?backend=file&dir=" + dir + "&" + tt.query
			_, err := vault.Open(context.Background(), uri)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want error containing %q", err, tt.want)
			}
		})
	}
	t.Setenv("PDMP_TEST_PASSPHRASE", "from the environment")
	r, err := vault.Open(context.Background(), "keyring:k?backend=file&dir="+dir+"&passphrase-env=PDMP_TEST_PASSPHRASE")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(context.Background(), vault.ES384); err != nil {
		t.Fatal(err)
	}
}

func TestSecret(t *testing.T) {
	ctx := context.Background()
	uri := fileURI(t, t.TempDir())
	a, err := vault.Secret(ctx, uri, 32)
	if err != nil {
		t.Fatal(err)
	}
	b, err := vault.Secret(ctx, uri, 32)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 32 || !bytes.Equal(a, b) {
		t.Fatal("Secret did not return the same 32 bytes twice")
	}
	if _, err := vault.Secret(ctx, uri, 16); err == nil {
		t.Fatal("Secret with a different size succeeded")
	}
}

func TestUnknownScheme(t *testing.T) {
	_, err := vault.Open(context.Background(), "tpm:thing")
	if !errors.Is(err, vault.ErrNoBackend) {
		t.Fatalf("Open(tpm:) = %v, want ErrNoBackend", err)
	}
}
