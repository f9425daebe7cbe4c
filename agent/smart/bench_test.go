package smart

import (
	"context"
	"testing"
	"time"

	"github.com/pdmp-agent/pdmp-agent/vault"
)

type benchKey struct{ k vault.Key }

func (b benchKey) Current(context.Context) (vault.Key, error) { return b.k, nil }

// BenchmarkAssertion measures building and signing one client assertion
// with an in-process key, per algorithm.
func BenchmarkAssertion(b *testing.B) {
	for _, alg := range []vault.Alg{vault.ES384, vault.RS384} {
		b.Run(string(alg), func(b *testing.B) {
			s, err := vault.GenerateSigner(alg)
			if err != nil {
				b.Fatal(err)
			}
			k, err := vault.NewKey(s, alg, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			c := New()
			reg := &Registration{Name: "bench", ClientID: "c", Scope: "system/*.read", Keys: benchKey{k}}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.assertion(ctx, "https://auth.example/token", reg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
