// Package vaulttest holds the conformance suite every vault backend must
// pass. Only tests import it.
package vaulttest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/pdmp-agent/pdmp-agent/vault"
)

// NewURI returns a URI naming a fresh, empty key ring in the backend under
// test. Each call must return a different ring.
type NewURI func(t *testing.T) string

// Run runs the conformance suite. Key generation is slow on some backends
// (RSA-3072), so each subtest creates only what it needs.
func Run(t *testing.T, newURI NewURI) {
	for _, alg := range []vault.Alg{vault.ES384, vault.RS384} {
		t.Run(string(alg), func(t *testing.T) {
			t.Run("CreateSignVerify", func(t *testing.T) { testCreateSignVerify(t, newURI(t), alg) })
			t.Run("RotateListPrune", func(t *testing.T) { testRotate(t, newURI(t), alg) })
			t.Run("ConcurrentSign", func(t *testing.T) { testConcurrent(t, newURI(t), alg) })
		})
	}
	t.Run("UnsupportedAlg", func(t *testing.T) {
		r := open(t, newURI(t), nil)
		for _, alg := range []vault.Alg{"RS256", "ES256", "HS256", "none", "PS384"} {
			if _, err := r.Create(context.Background(), alg); !errors.Is(err, vault.ErrUnsupportedAlg) {
				t.Errorf("Create(%s) = %v, want ErrUnsupportedAlg", alg, err)
			}
		}
	})
}

func open(t *testing.T, uri string, now func() time.Time) *vault.Ring {
	t.Helper()
	opts := []vault.RingOption{vault.WithRotation(vault.RotationPolicy{PublishDelay: time.Hour, Overlap: time.Hour})}
	if now != nil {
		opts = append(opts, vault.WithClock(now))
	}
	r, err := vault.Open(context.Background(), uri, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Verify checks sig over msg with pub as the JOSE algorithm alg does.
func Verify(pub crypto.PublicKey, alg vault.Alg, msg, sig []byte) error {
	h := sha512.Sum384(msg)
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if alg != vault.ES384 || !ecdsa.VerifyASN1(p, h[:], sig) {
			return errors.New("bad ECDSA signature")
		}
		return nil
	case *rsa.PublicKey:
		if alg != vault.RS384 {
			return errors.New("RSA key for non-RSA alg")
		}
		return rsa.VerifyPKCS1v15(p, crypto.SHA384, h[:], sig)
	}
	return fmt.Errorf("unexpected public key %T", pub)
}

func sign(t *testing.T, k vault.Key, msg []byte) []byte {
	t.Helper()
	h := sha512.Sum384(msg)
	sig, err := k.Sign(rand.Reader, h[:], crypto.SHA384)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return sig
}

func testCreateSignVerify(t *testing.T, uri string, alg vault.Alg) {
	ctx := context.Background()
	r := open(t, uri, nil)
	if _, err := r.Current(ctx); !errors.Is(err, vault.ErrNotFound) {
		t.Fatalf("Current on empty ring = %v, want ErrNotFound", err)
	}
	k, err := r.Create(ctx, alg)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if k.Alg() != alg {
		t.Errorf("Alg = %s, want %s", k.Alg(), alg)
	}
	if _, err := r.Create(ctx, alg); !errors.Is(err, vault.ErrExists) {
		t.Errorf("second Create = %v, want ErrExists", err)
	}

	// A second Ring over the same URI sees the same key: it was stored.
	r2 := open(t, uri, nil)
	k2, err := r2.Current(ctx)
	if err != nil {
		t.Fatalf("Current after reopen: %v", err)
	}
	if k2.KID() != k.KID() {
		t.Fatalf("reopened kid %s, want %s", k2.KID(), k.KID())
	}
	msg := []byte("assertion signing input")
	if err := Verify(k.Public(), alg, msg, sign(t, k2, msg)); err != nil {
		t.Fatalf("signature from reloaded key does not verify with created key's public key: %v", err)
	}

	// The published JWK round-trips to the same public key and kid, and
	// advertises verification only.
	set, err := vault.JWKSet(k)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := jwk.Parse(set)
	if err != nil {
		t.Fatalf("parse JWK Set: %v", err)
	}
	j, ok := parsed.Key(0)
	if !ok || parsed.Len() != 1 {
		t.Fatalf("JWK Set has %d keys", parsed.Len())
	}
	if j.KeyID() != k.KID() || j.Algorithm().String() != string(alg) {
		t.Errorf("JWK kid/alg = %s/%s, want %s/%s", j.KeyID(), j.Algorithm(), k.KID(), alg)
	}
	if ops := j.KeyOps(); len(ops) != 1 || ops[0] != jwk.KeyOpVerify {
		t.Errorf("key_ops = %v, want [verify]", ops)
	}
	if isPriv, _ := jwk.IsPrivateKey(j); isPriv {
		t.Fatal("JWK Set carries a private key")
	}
	var raw any
	if err := j.Raw(&raw); err != nil {
		t.Fatal(err)
	}
	if err := Verify(raw, alg, msg, sign(t, k, msg)); err != nil {
		t.Errorf("signature does not verify with the published JWK: %v", err)
	}
	if tp, _ := vault.Thumbprint(raw); tp != k.KID() {
		t.Errorf("kid %s is not the RFC 7638 thumbprint %s", k.KID(), tp)
	}
	var doc map[string]any
	if err := json.Unmarshal(set, &doc); err != nil {
		t.Fatal(err)
	}

	if err := r.Delete(ctx); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := open(t, uri, nil).Current(ctx); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("Current after Delete = %v, want ErrNotFound", err)
	}
}

func testRotate(t *testing.T, uri string, alg vault.Alg) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	r := open(t, uri, clock)
	old, err := r.Create(ctx, alg)
	if err != nil {
		t.Fatal(err)
	}
	advance(2 * time.Second) // distinct creation times
	next, err := r.Rotate(ctx, "")
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if next.KID() == old.KID() {
		t.Fatal("rotation produced the same kid")
	}
	check := func(stage string, wantSigner vault.Key, wantPublished ...vault.Key) {
		t.Helper()
		cur, err := open(t, uri, clock).Current(ctx)
		if err != nil {
			t.Fatalf("%s: Current: %v", stage, err)
		}
		if cur.KID() != wantSigner.KID() {
			t.Errorf("%s: signing kid %s, want %s", stage, cur.KID(), wantSigner.KID())
		}
		pub, err := r.Published(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for _, k := range pub {
			got = append(got, k.KID())
		}
		for _, k := range wantPublished {
			want = append(want, k.KID())
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: published %v, want %v", stage, got, want)
		}
	}
	check("just rotated", old, next, old)
	advance(time.Hour)
	check("after publish delay", next, next, old)
	if gone, err := r.Prune(ctx); err != nil || len(gone) != 0 {
		t.Fatalf("Prune during overlap removed %v, %v", gone, err)
	}
	advance(time.Hour)
	check("after overlap", next, next)
	gone, err := r.Prune(ctx)
	if err != nil || len(gone) != 1 || gone[0] != old.KID() {
		t.Fatalf("Prune = %v, %v; want [%s]", gone, err, old.KID())
	}
	vs, err := r.Versions(ctx)
	if err != nil || len(vs) != 1 || vs[0].Status != vault.Active {
		t.Fatalf("Versions after prune = %v, %v", vs, err)
	}
}

func testConcurrent(t *testing.T, uri string, alg vault.Alg) {
	ctx := context.Background()
	r := open(t, uri, nil)
	if _, err := r.Create(ctx, alg); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := r.Current(ctx)
			if err != nil {
				errs <- err
				return
			}
			for j := range 4 {
				msg := fmt.Appendf(nil, "message %d/%d", i, j)
				h := sha512.Sum384(msg)
				sig, err := k.Sign(rand.Reader, h[:], crypto.SHA384)
				if err == nil {
					err = Verify(k.Public(), alg, msg, sig)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
