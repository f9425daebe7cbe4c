//go:build cgo

package smart_test

import (
	"context"
	"testing"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/agent/smart"
	"github.com/pdmp-agent/pdmp-agent/vault"
	"github.com/pdmp-agent/pdmp-agent/vault/vaulttest"
)

// TestTokenWithPKCS11Key obtains tokens with keys generated on a SoftHSM2
// token: the assertion is signed on the token, never in process.
func TestTokenWithPKCS11Key(t *testing.T) {
	h := vaulttest.NewSoftHSM(t)
	for _, alg := range []vault.Alg{vault.ES384, vault.RS384} {
		t.Run(string(alg), func(t *testing.T) {
			ctx := context.Background()
			ring, err := vault.Open(ctx, h.URI("agent-"+string(alg)))
			if err != nil {
				t.Fatal(err)
			}
			defer ring.Close()
			k, err := ring.Create(ctx, alg)
			if err != nil {
				t.Fatal(err)
			}
			srv := pdmptest.NewServer()
			defer srv.Close()
			if err := srv.RegisterClient(pdmptest.Client{ID: "hsm", JWKS: jwks(t, k)}); err != nil {
				t.Fatal(err)
			}
			c := smart.New()
			tok, err := c.Token(ctx, &smart.Registration{Name: "hsm", FHIRBase: srv.FHIRBase, ClientID: "hsm", Scope: "system/*.read", Keys: ring})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := srv.Introspect(tok.AccessToken); !ok {
				t.Fatal("server does not know the token")
			}
		})
	}
}
