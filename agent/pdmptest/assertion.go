package pdmptest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const (
	assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// maxAssertionLifetime is the SMART Backend Services limit on how far
	// ahead an assertion's exp may be.
	maxAssertionLifetime = 5 * time.Minute
	// es384SigLen is the JWS (RFC 7518 §3.4) R||S length for P-384.
	es384SigLen = 96
)

type joseHeader struct {
	Alg  string          `json:"alg"`
	Typ  string          `json:"typ"`
	Kid  string          `json:"kid"`
	Jku  string          `json:"jku"`
	Crit json.RawMessage `json:"crit"`
}

type assertionClaims struct {
	Iss string          `json:"iss"`
	Sub string          `json:"sub"`
	Aud json.RawMessage `json:"aud"`
	Exp *float64        `json:"exp"`
	JTI string          `json:"jti"`
}

// assertion is a client assertion decoded but not verified.
type assertion struct {
	raw    string
	header joseHeader
	claims assertionClaims
	sig    []byte
}

// parseAssertion decodes a compact JWS without verifying it. The header is
// decoded by hand rather than by jws.Parse so that an unsupported alg is
// reported as such instead of as a parse error. Claims are decoded first so
// the token log can name the client and jti of otherwise malformed
// assertions; on error the fields decoded so far are set.
func parseAssertion(raw string) (assertion, error) {
	a := assertion{raw: raw}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return a, errors.New("not a compact JWS")
	}
	if err := decodeSegment(parts[1], &a.claims); err != nil {
		return a, fmt.Errorf("payload: %w", err)
	}
	if err := decodeSegment(parts[0], &a.header); err != nil {
		return a, fmt.Errorf("header: %w", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return a, fmt.Errorf("signature: %w", err)
	}
	a.sig = sig
	return a, nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// authenticate validates a client assertion and returns the client it
// authenticates. Only iss is used before the signature is verified, to find
// the client's keys; every other claim is checked afterwards, and the jti is
// recorded last so that forged assertions cannot burn jtis.
func (s *Server) authenticate(ctx context.Context, a assertion, parseErr error, style ErrorStyle) (*client, *oauthError) {
	fail := func(format string, args ...any) *oauthError {
		return style.failure(fmt.Sprintf(format, args...))
	}
	if parseErr != nil {
		return nil, fail("malformed client_assertion: %v", parseErr)
	}
	h, c := a.header, a.claims

	if h.Alg != "RS384" && h.Alg != "ES384" {
		return nil, fail("alg %s not allowed; want RS384 or ES384", h.Alg)
	}
	if h.Crit != nil {
		// RFC 7515 §4.1.11: unknown critical extensions must be rejected,
		// and b64=false would change what the signature covers.
		return nil, fail("crit header not supported")
	}
	switch {
	case h.Typ == "":
		return nil, fail("typ header missing; want JWT")
	case !strings.EqualFold(h.Typ, "JWT"): // RFC 7515 §4.1.9: compared case-insensitively
		return nil, fail("typ %s not allowed; want JWT", h.Typ)
	}
	if h.Kid == "" {
		return nil, fail("kid header missing")
	}
	if c.Iss == "" {
		return nil, fail("iss missing")
	}
	if c.Sub != c.Iss {
		return nil, fail("sub %q must equal iss %q", c.Sub, c.Iss)
	}
	cl := s.lookupClient(c.Iss)
	if cl == nil {
		return nil, &oauthError{http.StatusUnauthorized, "invalid_client", fmt.Sprintf("unknown client %q", c.Iss)}
	}
	if h.Jku != "" {
		if cl.jwksURL == "" {
			return nil, fail("jku not allowed: client %q has an inline JWKS", cl.id)
		}
		if h.Jku != cl.jwksURL {
			return nil, fail("jku %s does not match registered JWKS URL %s", h.Jku, cl.jwksURL)
		}
	}
	set, err := s.clientKeys(ctx, cl)
	if err != nil {
		return nil, fail("client JWKS: %v", err)
	}
	key, err := matchKey(set, h.Kid, h.Alg)
	if err != nil {
		return nil, fail("%v", err)
	}
	// jwx would also reject DER, but only as "invalid signature"; DER is a
	// common client bug worth naming.
	if h.Alg == "ES384" && len(a.sig) != es384SigLen {
		return nil, fail("ES384 signature is %d bytes, want %d-byte R||S (DER-encoded?)", len(a.sig), es384SigLen)
	}
	if _, err := jws.Verify([]byte(a.raw), jws.WithKey(jwa.SignatureAlgorithm(h.Alg), key), jws.WithCompact()); err != nil {
		return nil, fail("signature invalid for kid %s", h.Kid)
	}

	switch {
	case c.Aud == nil:
		return nil, fail("aud missing")
	case !audIs(c.Aud, s.TokenURL):
		return nil, fail("aud %s must equal token endpoint %s", c.Aud, s.TokenURL)
	}
	if c.Exp == nil {
		return nil, fail("exp missing")
	}
	now, exp := s.now(), numericDate(*c.Exp)
	if !exp.After(now) {
		return nil, fail("exp %s expired (server time %s)", exp.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if ahead := exp.Sub(now); ahead > maxAssertionLifetime {
		return nil, fail("exp %v ahead of server time; at most %v allowed", ahead.Round(time.Second), maxAssertionLifetime)
	}
	if c.JTI == "" {
		return nil, fail("jti missing")
	}
	if !s.useJTI(c.JTI, exp, now) {
		return nil, fail("jti %s replayed", c.JTI)
	}
	return cl, nil
}

// clientKeys returns the client's inline set or fetches it, as real servers
// do on every request, so tests can rotate keys behind a JWKS URL.
func (s *Server) clientKeys(ctx context.Context, c *client) (jwk.Set, error) {
	if c.jwks != nil {
		return c.jwks, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.jwksURL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.jwksClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", c.jwksURL, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", c.jwksURL, err)
	}
	return parseJWKS(b)
}

// parseJWKS parses a JWK Set of public keys. jwk.Parse alone would also
// accept a bare JWK; a client serving one would fail against real servers.
func parseJWKS(b []byte) (jwk.Set, error) {
	var probe struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &probe); err != nil || probe.Keys == nil {
		return nil, errors.New("not a JWK Set: want a JSON object with a keys array")
	}
	set, err := jwk.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("JWK Set: %w", err)
	}
	for i := range set.Len() {
		k, _ := set.Key(i)
		if private, err := jwk.IsPrivateKey(k); err != nil || private {
			return nil, fmt.Errorf("JWK Set key %d (kid %q) is not a public key", i, k.KeyID())
		}
	}
	return set, nil
}

// matchKey finds the one key in set with the given kid that can verify alg.
func matchKey(set jwk.Set, kid, alg string) (jwk.Key, error) {
	var found []jwk.Key
	sawKid := false
	for i := range set.Len() {
		k, _ := set.Key(i)
		if k.KeyID() != kid {
			continue
		}
		sawKid = true
		if keyFits(k, alg) {
			found = append(found, k)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return nil, fmt.Errorf("kid %s with alg %s matches %d keys; must be unique", kid, alg, len(found))
	case sawKid:
		return nil, fmt.Errorf("key with kid %s does not fit alg %s", kid, alg)
	default:
		return nil, fmt.Errorf("no key with kid %s in client JWKS", kid)
	}
}

// keyFits reports whether k may verify alg: its own alg must match when it
// declares one, otherwise its type (and curve) must suit alg.
func keyFits(k jwk.Key, alg string) bool {
	if ka := k.Algorithm().String(); ka != "" {
		return ka == alg
	}
	switch alg {
	case "RS384":
		return k.KeyType() == jwa.RSA
	case "ES384":
		ec, ok := k.(jwk.ECDSAPublicKey)
		return ok && ec.Crv() == jwa.P384
	}
	return false
}

// audIs reports whether aud, a string or single-element array, is want.
func audIs(aud json.RawMessage, want string) bool {
	var one string
	if json.Unmarshal(aud, &one) == nil {
		return one == want
	}
	var list []string
	return json.Unmarshal(aud, &list) == nil && len(list) == 1 && list[0] == want
}

// numericDate converts a JWT NumericDate, which may carry a fraction.
func numericDate(v float64) time.Time {
	sec, frac := math.Modf(v)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// useJTI records jti until exp and reports whether it was unused.
func (s *Server) useJTI(jti string, exp, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for j, e := range s.jtis {
		// An assertion past its exp is rejected on exp alone, so its jti
		// no longer needs remembering.
		if !e.After(now) {
			delete(s.jtis, j)
		}
	}
	if _, seen := s.jtis[jti]; seen {
		return false
	}
	s.jtis[jti] = exp
	return true
}
