package vault

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Thumbprint returns the RFC 7638 SHA-256 thumbprint of a public key,
// base64url without padding: stable across rotations and unique per key.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	k, err := jwk.FromRaw(pub)
	if err != nil {
		return "", fmt.Errorf("vault: public key: %w", err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("vault: thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// PublicJWK returns k's public key as a JWK for registration: kid, alg and
// key_ops ["verify"]. It never carries "sign": some servers reject keys that
// advertise it, and a published key only ever verifies.
func PublicJWK(k Key) (jwk.Key, error) {
	j, err := jwk.FromRaw(k.Public())
	if err != nil {
		return nil, fmt.Errorf("vault: public key: %w", err)
	}
	for name, v := range map[string]any{
		jwk.KeyIDKey:     k.KID(),
		jwk.AlgorithmKey: jwa.SignatureAlgorithm(k.Alg()),
		jwk.KeyOpsKey:    jwk.KeyOperationList{jwk.KeyOpVerify},
	} {
		if err := j.Set(name, v); err != nil {
			return nil, fmt.Errorf("vault: set %s: %w", name, err)
		}
	}
	return j, nil
}

// JWKSet returns the JWK Set JSON of keys, the document a responder
// registers or fetches.
func JWKSet(keys ...Key) ([]byte, error) {
	set := jwk.NewSet()
	for _, k := range keys {
		j, err := PublicJWK(k)
		if err != nil {
			return nil, err
		}
		if err := set.AddKey(j); err != nil {
			return nil, err
		}
	}
	return json.MarshalIndent(set, "", "  ")
}
