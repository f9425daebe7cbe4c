package vault_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/pdmp-agent/pdmp-agent/vault"
)

func TestPKCS11URIWarnings(t *testing.T) {
	for _, tt := range []struct {
		uri  string
		want []string // a word each warning must contain, in order
	}{
		{"pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:/etc/pin", nil},
		{"pkcs11:token=t;object=o?module-path=/m.so&pin-value=1234", []string{"pin-value"}},
		{"pkcs11:slot-id=0;object=o;pin-value=1234?module-path=/m.so", []string{"pin-value", "slot-id"}},
		{"keyring:reg-a?pin-value=1234", nil},
	} {
		u, err := vault.ParseURI(tt.uri)
		if err != nil {
			t.Fatal(err)
		}
		got := vault.PKCS11URIWarnings(u)
		if len(got) != len(tt.want) || slices.ContainsFunc(got, func(w string) bool { return strings.Contains(w, "1234") }) {
			t.Errorf("%s: warnings %q, want %d not showing the PIN", tt.uri, got, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s: warning %q does not mention %s", tt.uri, got[i], w)
			}
		}
	}
}
