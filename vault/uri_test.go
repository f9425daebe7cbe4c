package vault

import (
	"errors"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in        string
		name      string
		path      map[string]string
		query     map[string]string
		redacted  string
		wantError bool
	}{
		{in: "keyring:reg-a", name: "reg-a", redacted: "keyring:reg-a"},
		{in: "keyring:reg%20a?backend=file&dir=%2Fvar%2Flib", name: "reg a",
			query: map[string]string{"backend": "file", "dir": "/var/lib"}},
		{in: "pkcs11:token=pdmp;object=agent-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234",
			path:     map[string]string{"token": "pdmp", "object": "agent-key"},
			query:    map[string]string{"module-path": "/usr/lib/softhsm/libsofthsm2.so", "pin-value": "1234"},
			redacted: "pkcs11:object=agent-key;token=pdmp?module-path=%2Fusr%2Flib%2Fsofthsm%2Flibsofthsm2.so&pin-value=REDACTED"},
		{in: "pkcs11:id=%01%02;token=a%3Bb", path: map[string]string{"id": "\x01\x02", "token": "a;b"}},
		{in: "no-scheme", wantError: true},
		{in: ":x", wantError: true},
		{in: "pkcs11:token=a;token=b", wantError: true},
		{in: "pkcs11:token=a;bare", wantError: true},
		{in: "pkcs11:token=%zz", wantError: true},
		{in: "keyring:a?x=1&x=2", wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := ParseURI(tt.in)
			if tt.wantError {
				if !errors.Is(err, ErrBadURI) {
					t.Fatalf("err = %v, want ErrBadURI", err)
				}
				if strings.Contains(err.Error(), "1234") {
					t.Fatal("error echoes an attribute value")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.Name != tt.name {
				t.Errorf("Name = %q, want %q", u.Name, tt.name)
			}
			for k, v := range tt.path {
				if u.Path[k] != v {
					t.Errorf("Path[%s] = %q, want %q", k, u.Path[k], v)
				}
			}
			for k, v := range tt.query {
				if u.Query[k] != v {
					t.Errorf("Query[%s] = %q, want %q", k, u.Query[k], v)
				}
			}
			if tt.redacted != "" && u.Redacted() != tt.redacted {
				t.Errorf("Redacted = %q, want %q", u.Redacted(), tt.redacted)
			}
			if strings.Contains(u.Redacted(), "1234") {
				t.Error("Redacted leaks the PIN")
			}
		})
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"keyring:a?backend=file", "pkcs11:token=a;object=b?pin-value=1", "x:;;==?&&"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		// A redacted URI parses back to the same attributes, secrets aside.
		back, err := ParseURI(u.Redacted())
		if err != nil {
			t.Fatalf("Redacted form %q does not parse: %v", u.Redacted(), err)
		}
		if back.Name != u.Name || len(back.Path) != len(u.Path) || len(back.Query) != len(u.Query) {
			t.Fatalf("round trip changed %q → %q", s, u.Redacted())
		}
	})
}
