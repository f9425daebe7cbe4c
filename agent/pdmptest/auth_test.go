package pdmptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const (
	inlineClient = "inline-client"
	urlClient    = "url-client"
	anyScope     = "system/*.read"
)

// Keys are generated once: RSA-3072 generation is slow under -race.
var testKeys = sync.OnceValues(func() (*ecdsa.PrivateKey, *rsa.PrivateKey) {
	ec, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		panic(err)
	}
	return ec, rk
})

// clock is a settable server clock, so exp boundaries are exact.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	srv   *Server
	clock *clock
	ec    *ecdsa.PrivateKey
	rsa   *rsa.PrivateKey

	jwksURL     string
	jwksFetches atomic.Int32
	jwksAccept  atomic.Value // string: Accept header of the last fetch
}

// newFixture starts a server with inlineClient and urlClient registered,
// both holding an ES384 key "ec-1" and an RS384 key "rsa-1".
func newFixture(t *testing.T, opts ...Option) *fixture {
	t.Helper()
	f := &fixture{clock: &clock{t: time.Now().Truncate(time.Second)}}
	f.ec, f.rsa = testKeys()
	jwks := jwksJSON(t, publicJWK(t, f.ec, "ec-1", jwa.ES384), publicJWK(t, f.rsa, "rsa-1", jwa.RS384))

	keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.jwksFetches.Add(1)
		f.jwksAccept.Store(r.Header.Get("Accept"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(keys.Close)
	f.jwksURL = keys.URL + "/jwks.json"

	f.srv = NewServer(append([]Option{WithClock(f.clock.now)}, opts...)...)
	t.Cleanup(f.srv.Close)
	must(t, f.srv.RegisterClient(Client{ID: inlineClient, JWKS: jwks}))
	must(t, f.srv.RegisterClient(Client{ID: urlClient, JWKSURL: f.jwksURL}))
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func publicJWK(t *testing.T, raw any, kid string, alg jwa.SignatureAlgorithm) jwk.Key {
	t.Helper()
	k, err := jwk.PublicKeyOf(raw)
	must(t, err)
	must(t, k.Set(jwk.KeyIDKey, kid))
	if alg != "" {
		must(t, k.Set(jwk.AlgorithmKey, alg))
	}
	return k
}

func jwksJSON(t *testing.T, keys ...jwk.Key) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		must(t, set.AddKey(k))
	}
	b, err := json.Marshal(set)
	must(t, err)
	return b
}

func randomJTI() string { return rand.Text() }

// assertion signs a valid assertion for clientID with alg (ES384 or RS384)
// after edit has had its way with header and claims. The signing key follows
// the final header alg, so edit can switch to RS256, HS256 or none.
func (f *fixture) assertion(t *testing.T, clientID, alg string, edit func(h, c map[string]any)) string {
	t.Helper()
	kid := map[string]string{"ES384": "ec-1", "RS384": "rsa-1"}[alg]
	h := map[string]any{"alg": alg, "typ": "JWT", "kid": kid}
	c := map[string]any{
		"iss": clientID,
		"sub": clientID,
		"aud": f.srv.TokenURL,
		"exp": f.clock.now().Add(4 * time.Minute).Unix(),
		"jti": randomJTI(),
	}
	if edit != nil {
		edit(h, c)
	}
	return f.sign(t, h, c)
}

func (f *fixture) sign(t *testing.T, h, c map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(c)
	must(t, err)
	alg, _ := h["alg"].(string)
	if alg == "none" {
		hdr, err := json.Marshal(h)
		must(t, err)
		return b64(hdr) + "." + b64(payload) + "."
	}
	var key any
	switch alg {
	case "ES384":
		key = f.ec
	case "RS256", "RS384":
		key = f.rsa
	case "HS256":
		key = []byte("a shared secret that is long enough")
	default:
		t.Fatalf("no test key for alg %s", alg)
	}
	hdrs := jws.NewHeaders()
	for k, v := range h {
		if k != "alg" { // set by WithKey
			must(t, hdrs.Set(k, v))
		}
	}
	out, err := jws.Sign(payload, jws.WithKey(jwa.SignatureAlgorithm(alg), key, jws.WithProtectedHeaders(hdrs)))
	must(t, err)
	return string(out)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func tokenForm(assertion, scope string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {scope},
		"client_assertion_type": {assertionType},
		"client_assertion":      {assertion},
	}
}

type tokenResult struct {
	status int
	header http.Header
	body   map[string]any
}

// doToken posts form to the token endpoint after edit, if any, has
// changed the form or request. It is safe to call from any goroutine.
func (f *fixture) doToken(form url.Values, edit func(url.Values, *http.Request)) (tokenResult, error) {
	req, err := http.NewRequest(http.MethodPost, f.srv.TokenURL, nil)
	if err != nil {
		return tokenResult{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if edit != nil {
		edit(form, req)
	}
	body := form.Encode()
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return tokenResult{}, err
	}
	defer resp.Body.Close()
	res := tokenResult{status: resp.StatusCode, header: resp.Header}
	if resp.Header.Get("Content-Type") == "application/json" {
		if err := json.NewDecoder(resp.Body).Decode(&res.body); err != nil {
			return res, fmt.Errorf("decode token response (status %d): %w", resp.StatusCode, err)
		}
	}
	return res, nil
}

func (f *fixture) postToken(t *testing.T, form url.Values, edit func(url.Values, *http.Request)) tokenResult {
	t.Helper()
	res, err := f.doToken(form, edit)
	must(t, err)
	return res
}

// token requests an access token and fails the test unless one is issued.
func (f *fixture) token(t *testing.T, clientID, alg, scope string) string {
	t.Helper()
	res := f.postToken(t, tokenForm(f.assertion(t, clientID, alg, nil), scope), nil)
	if res.status != http.StatusOK {
		t.Fatalf("token: status %d %v", res.status, res.body)
	}
	return res.body["access_token"].(string)
}

func TestSMARTConfiguration(t *testing.T) {
	f := newFixture(t)
	resp, err := f.srv.Client().Get(f.srv.FHIRBase + "/.well-known/smart-configuration")
	must(t, err)
	defer resp.Body.Close()
	var cfg struct {
		TokenEndpoint string   `json:"token_endpoint"`
		GrantTypes    []string `json:"grant_types_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
		Algs          []string `json:"token_endpoint_auth_signing_alg_values_supported"`
		Scopes        []string `json:"scopes_supported"`
		Capabilities  []string `json:"capabilities"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&cfg))
	if resp.StatusCode != http.StatusOK || cfg.TokenEndpoint != f.srv.TokenURL ||
		strings.Join(cfg.GrantTypes, " ") != "client_credentials" ||
		strings.Join(cfg.AuthMethods, " ") != "private_key_jwt" ||
		strings.Join(cfg.Algs, " ") != "RS384 ES384" ||
		strings.Join(cfg.Scopes, " ") != "system/*.read system/*.rs" ||
		strings.Join(cfg.Capabilities, " ") != "client-confidential-asymmetric permission-v1 permission-v2" {
		t.Errorf("status %d, config %+v", resp.StatusCode, cfg)
	}
	if f.srv.FHIRBase != f.srv.URL+"/fhir" || f.srv.TokenURL != f.srv.URL+"/auth/token" || !strings.HasPrefix(f.srv.URL, "http://127.0.0.1:") {
		t.Errorf("URLs %q %q %q", f.srv.URL, f.srv.FHIRBase, f.srv.TokenURL)
	}
}

func TestTokenSuccess(t *testing.T) {
	f := newFixture(t)
	// A key without an alg member is matched by kty and curve instead.
	noAlg := jwksJSON(t, publicJWK(t, f.ec, "ec-1", ""), publicJWK(t, f.rsa, "rsa-1", ""))
	must(t, f.srv.RegisterClient(Client{ID: "no-alg-client", JWKS: noAlg}))

	for _, clientID := range []string{inlineClient, urlClient, "no-alg-client"} {
		for _, alg := range []string{"ES384", "RS384"} {
			t.Run(clientID+"/"+alg, func(t *testing.T) {
				fetches := f.jwksFetches.Load()
				res := f.postToken(t, tokenForm(f.assertion(t, clientID, alg, nil), "system/*.read system/*.rs"), nil)
				if res.status != http.StatusOK {
					t.Fatalf("status %d %v", res.status, res.body)
				}
				tok, _ := res.body["access_token"].(string)
				if raw, err := base64.RawURLEncoding.DecodeString(tok); err != nil || len(raw) != 32 {
					t.Errorf("access_token %q is not 32 random bytes base64url", tok)
				}
				if res.body["token_type"] != "bearer" || res.body["expires_in"] != 300.0 || res.body["scope"] != "system/*.read system/*.rs" {
					t.Errorf("body %v", res.body)
				}
				if cc := res.header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q", cc)
				}
				info, ok := f.srv.Introspect(tok)
				if !ok || info.ClientID != clientID || info.Scope != "system/*.read system/*.rs" || !info.Expires.Equal(f.clock.now().Add(300*time.Second)) {
					t.Errorf("Introspect = %+v, %v", info, ok)
				}
				if clientID == urlClient {
					if f.jwksFetches.Load() != fetches+1 || f.jwksAccept.Load() != "application/json" {
						t.Errorf("JWKS fetched %d times with Accept %q; want once per request with application/json",
							f.jwksFetches.Load()-fetches, f.jwksAccept.Load())
					}
				}
			})
		}
	}
	if got := f.srv.TokensIssued(); got != 6 {
		t.Errorf("TokensIssued = %d, want 6", got)
	}
}

func TestTokenLifetimeAndExpBoundary(t *testing.T) {
	f := newFixture(t, WithTokenLifetime(90*time.Second))
	// exp exactly 5 minutes ahead is the last one allowed.
	a := f.assertion(t, inlineClient, "ES384", func(_, c map[string]any) {
		c["exp"] = f.clock.now().Add(maxAssertionLifetime).Unix()
	})
	res := f.postToken(t, tokenForm(a, anyScope), nil)
	if res.status != http.StatusOK || res.body["expires_in"] != 90.0 {
		t.Errorf("status %d body %v", res.status, res.body)
	}
}

type rejection struct {
	name   string
	client string                                // default inlineClient
	alg    string                                // default ES384
	edit   func(f *fixture, h, c map[string]any) // header and claims before signing
	post   func(f *fixture, a string) string     // the signed assertion
	form   func(v url.Values, r *http.Request)
	replay bool // send the request twice; the second must fail

	auth   bool   // authentication failure, answered per ErrorStyle
	status int    // otherwise
	code   string // otherwise
	desc   string
}

var rejections = []rejection{
	{name: "alg none", edit: setHeader("alg", "none"), auth: true, desc: "alg none not allowed"},
	{name: "alg HS256", edit: setHeader("alg", "HS256"), auth: true, desc: "alg HS256 not allowed"},
	{name: "alg RS256", alg: "RS384", edit: setHeader("alg", "RS256"), auth: true, desc: "alg RS256 not allowed"},
	{name: "missing typ", edit: setHeader("typ", nil), auth: true, desc: "typ header missing"},
	{name: "wrong typ", edit: setHeader("typ", "JOSE"), auth: true, desc: "typ JOSE not allowed"},
	{name: "crit", edit: setHeader("crit", []string{"b64"}), auth: true, desc: "crit header not supported"},
	{name: "missing kid", edit: setHeader("kid", nil), auth: true, desc: "kid header missing"},
	{name: "unknown kid", edit: setHeader("kid", "ec-2"), auth: true, desc: "no key with kid ec-2"},
	{name: "kid alg mismatch", alg: "RS384", edit: setHeader("kid", "ec-1"), auth: true, desc: "kid ec-1 does not fit alg RS384"},
	{
		name: "jku mismatch", client: urlClient,
		edit: setHeader("jku", "https://attacker.example/jwks.json"),
		auth: true, desc: "does not match registered JWKS URL",
	},
	{
		name: "jku for inline client",
		edit: func(f *fixture, h, _ map[string]any) { h["jku"] = f.jwksURL },
		auth: true, desc: "jku not allowed",
	},
	{name: "iss not sub", edit: setClaim("sub", "someone-else"), auth: true, desc: `sub "someone-else" must equal iss`},
	{name: "missing iss", edit: setClaim("iss", nil), auth: true, desc: "iss missing"},
	{
		name: "unknown client", client: "stranger",
		status: http.StatusUnauthorized, code: "invalid_client", desc: `unknown client "stranger"`,
	},
	{
		name: "wrong aud",
		edit: func(f *fixture, _, c map[string]any) { c["aud"] = f.srv.URL + "/token" },
		auth: true, desc: "must equal token endpoint",
	},
	{
		name: "aud array of two",
		edit: func(f *fixture, _, c map[string]any) { c["aud"] = []string{f.srv.TokenURL, f.srv.URL} },
		auth: true, desc: "must equal token endpoint",
	},
	{name: "missing exp", edit: setClaim("exp", nil), auth: true, desc: "exp missing"},
	{
		name: "exp now", // zero leeway
		edit: func(f *fixture, _, c map[string]any) { c["exp"] = f.clock.now().Unix() },
		auth: true, desc: "expired",
	},
	{
		name: "exp over 5 min ahead",
		edit: func(f *fixture, _, c map[string]any) {
			c["exp"] = f.clock.now().Add(maxAssertionLifetime + time.Second).Unix()
		},
		auth: true, desc: "5m1s ahead of server time",
	},
	{name: "missing jti", edit: setClaim("jti", nil), auth: true, desc: "jti missing"},
	{name: "replayed jti", replay: true, auth: true, desc: "replayed"},
	{
		name: "bad signature",
		post: func(_ *fixture, a string) string {
			head, sig, _ := cutLast(a)
			b, _ := base64.RawURLEncoding.DecodeString(sig)
			b[10] ^= 0xff
			return head + "." + b64(b)
		},
		auth: true, desc: "signature invalid",
	},
	{
		name: "DER ES384 signature",
		post: func(f *fixture, a string) string {
			head, _, _ := cutLast(a)
			digest := sha512.Sum384([]byte(head))
			der, err := ecdsa.SignASN1(rand.Reader, f.ec, digest[:])
			if err != nil {
				panic(err)
			}
			return head + "." + b64(der)
		},
		auth: true, desc: "DER",
	},
	{name: "malformed assertion", post: func(*fixture, string) string { return "not.a-jws" }, auth: true, desc: "malformed client_assertion"},
	{name: "missing scope", form: delParam("scope"), status: 400, code: "invalid_scope", desc: "scope missing"},
	{name: "user scope", form: setParam("scope", "user/*.read"), status: 400, code: "invalid_scope", desc: "not a system/ scope"},
	{name: "bogus scope", form: setParam("scope", "system/Patient.sr"), status: 400, code: "invalid_scope", desc: "not a valid SMART system scope"},
	{name: "missing grant_type", form: delParam("grant_type"), status: 400, code: "invalid_request", desc: "grant_type missing"},
	{name: "wrong grant_type", form: setParam("grant_type", "password"), status: 400, code: "unsupported_grant_type", desc: `"password" not supported`},
	{name: "wrong assertion type", form: setParam("client_assertion_type", "urn:x"), status: 400, code: "invalid_request", desc: "client_assertion_type"},
	{name: "missing assertion", form: delParam("client_assertion"), status: 400, code: "invalid_request", desc: "client_assertion missing"},
	{name: "client_secret", form: setParam("client_secret", "s3cret"), status: 400, code: "invalid_request", desc: "use private_key_jwt"},
	{
		name:   "basic auth",
		form:   func(_ url.Values, r *http.Request) { r.SetBasicAuth(inlineClient, "s3cret") },
		status: 400, code: "invalid_request", desc: "use private_key_jwt",
	},
	{
		name:   "repeated parameter",
		form:   func(v url.Values, _ *http.Request) { v.Add("scope", anyScope) },
		status: 400, code: "invalid_request", desc: "parameter scope repeated",
	},
	{
		name:   "JSON body",
		form:   func(_ url.Values, r *http.Request) { r.Header.Set("Content-Type", "application/json") },
		status: 400, code: "invalid_request", desc: "Content-Type",
	},
}

func setHeader(k string, v any) func(*fixture, map[string]any, map[string]any) {
	return func(_ *fixture, h, _ map[string]any) { setOrDelete(h, k, v) }
}

func setClaim(k string, v any) func(*fixture, map[string]any, map[string]any) {
	return func(_ *fixture, _, c map[string]any) { setOrDelete(c, k, v) }
}

func setOrDelete(m map[string]any, k string, v any) {
	if v == nil {
		delete(m, k)
	} else {
		m[k] = v
	}
}

func setParam(k, v string) func(url.Values, *http.Request) {
	return func(vs url.Values, _ *http.Request) { vs.Set(k, v) }
}

func delParam(k string) func(url.Values, *http.Request) {
	return func(vs url.Values, _ *http.Request) { vs.Del(k) }
}

// cutLast splits a compact JWS into signing input and signature.
func cutLast(a string) (head, sig string, ok bool) {
	i := strings.LastIndexByte(a, '.')
	return a[:i], a[i+1:], i >= 0
}

func TestTokenRejections(t *testing.T) {
	styles := []struct {
		style  ErrorStyle
		status int
		code   string
	}{
		{InvalidClient401, http.StatusUnauthorized, "invalid_client"},
		{InvalidGrant400, http.StatusBadRequest, "invalid_grant"},
	}
	for _, st := range styles {
		f := newFixture(t)
		f.srv.SetErrorStyle(st.style)
		for _, tc := range rejections {
			t.Run(st.code+"/"+tc.name, func(t *testing.T) {
				client := cmpOr(tc.client, inlineClient)
				a := f.assertion(t, client, cmpOr(tc.alg, "ES384"), func(h, c map[string]any) {
					if tc.edit != nil {
						tc.edit(f, h, c)
					}
				})
				if tc.post != nil {
					a = tc.post(f, a)
				}
				send := func() tokenResult { return f.postToken(t, tokenForm(a, anyScope), tc.form) }
				if tc.replay {
					if res := send(); res.status != http.StatusOK {
						t.Fatalf("first use: status %d %v", res.status, res.body)
					}
				}
				issued := f.srv.TokensIssued()
				res := send()
				if f.srv.TokensIssued() != issued {
					t.Error("token issued")
				}

				status, code := tc.status, tc.code
				if tc.auth {
					status, code = st.status, st.code
				}
				desc, _ := res.body["error_description"].(string)
				if res.status != status || res.body["error"] != code || !strings.Contains(desc, tc.desc) {
					t.Errorf("got %d %v; want %d %s with description containing %q", res.status, res.body, status, code, tc.desc)
				}
				log := f.srv.TokenLog()
				if last := log[len(log)-1]; last.Status != res.status || last.ErrorCode != code || last.ErrorDescription != desc {
					t.Errorf("log entry %+v does not match response", last)
				}
			})
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestBadSignatureDoesNotBurnJTI(t *testing.T) {
	f := newFixture(t)
	jti := randomJTI()
	useJTI := func(_, c map[string]any) { c["jti"] = jti }
	good := f.assertion(t, inlineClient, "ES384", useJTI)
	head, sig, _ := cutLast(good)
	b, _ := base64.RawURLEncoding.DecodeString(sig)
	b[0] ^= 1
	if res := f.postToken(t, tokenForm(head+"."+b64(b), anyScope), nil); res.status != http.StatusUnauthorized {
		t.Fatalf("forged: status %d", res.status)
	}
	if res := f.postToken(t, tokenForm(good, anyScope), nil); res.status != http.StatusOK {
		t.Fatalf("genuine after forged: status %d %v", res.status, res.body)
	}
}

func TestScopeAllowList(t *testing.T) {
	f := newFixture(t)
	jwks := jwksJSON(t, publicJWK(t, f.ec, "ec-1", jwa.ES384))
	must(t, f.srv.RegisterClient(Client{ID: "narrow", JWKS: jwks, Scopes: []string{"system/MedicationDispense.rs"}}))

	res := f.postToken(t, tokenForm(f.assertion(t, "narrow", "ES384", nil), "system/Patient.rs system/MedicationDispense.rs"), nil)
	if res.status != http.StatusOK || res.body["scope"] != "system/MedicationDispense.rs" {
		t.Errorf("narrowed: %d %v", res.status, res.body)
	}
	res = f.postToken(t, tokenForm(f.assertion(t, "narrow", "ES384", nil), "system/Patient.rs"), nil)
	if res.status != http.StatusBadRequest || res.body["error"] != "invalid_scope" {
		t.Errorf("nothing left: %d %v", res.status, res.body)
	}
}

func TestKeyRotation(t *testing.T) {
	f := newFixture(t)
	newKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(t, err)
	must(t, f.srv.SetClientJWKS(inlineClient, jwksJSON(t, publicJWK(t, newKey, "ec-2", jwa.ES384))))

	res := f.postToken(t, tokenForm(f.assertion(t, inlineClient, "ES384", nil), anyScope), nil)
	if res.status != http.StatusUnauthorized || !strings.Contains(res.body["error_description"].(string), "no key with kid ec-1") {
		t.Errorf("old key: %d %v", res.status, res.body)
	}
	f.ec = newKey
	a := f.assertion(t, inlineClient, "ES384", func(h, _ map[string]any) { h["kid"] = "ec-2" })
	if res := f.postToken(t, tokenForm(a, anyScope), nil); res.status != http.StatusOK {
		t.Errorf("new key: %d %v", res.status, res.body)
	}
}

func TestRegisterClientErrors(t *testing.T) {
	f := newFixture(t)
	ec, rk := testKeys()
	priv, err := jwk.FromRaw(ec)
	must(t, err)
	for name, c := range map[string]Client{
		"no id":       {JWKS: []byte(`{"keys":[]}`)},
		"no keys":     {ID: "x"},
		"both":        {ID: "x", JWKS: []byte(`{"keys":[]}`), JWKSURL: "http://x"},
		"garbage":     {ID: "x", JWKS: []byte(`nope`)},
		"bare JWK":    {ID: "x", JWKS: mustJSON(t, publicJWK(t, rk, "k", jwa.RS384))},
		"private key": {ID: "x", JWKS: jwksJSON(t, priv)},
		"duplicate":   {ID: inlineClient, JWKS: []byte(`{"keys":[]}`)},
	} {
		if err := f.srv.RegisterClient(c); err == nil {
			t.Errorf("%s: RegisterClient succeeded", name)
		}
	}
	if err := f.srv.SetClientJWKS("nobody", []byte(`{"keys":[]}`)); err == nil {
		t.Error("SetClientJWKS for unknown client succeeded")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	return b
}

func TestFaults(t *testing.T) {
	f := newFixture(t)
	f.srv.InjectTokenFault(Fault{Status: http.StatusServiceUnavailable, RetryAfter: "2", Times: 2})
	f.srv.InjectTokenFault(Fault{Status: http.StatusTooManyRequests, Body: "<html><body>busy</body></html>"})

	want := []int{503, 503, 429, 200}
	for i, status := range want {
		res := f.postToken(t, tokenForm(f.assertion(t, inlineClient, "ES384", nil), anyScope), nil)
		if res.status != status {
			t.Fatalf("request %d: status %d, want %d", i, res.status, status)
		}
		switch status {
		case 503:
			if res.header.Get("Retry-After") != "2" || res.body["error"] != "temporarily_unavailable" {
				t.Errorf("request %d: headers %v body %v", i, res.header, res.body)
			}
		case 429:
			if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
				t.Errorf("raw body Content-Type %q", ct)
			}
		}
	}
	if f.srv.TokenRequests() != 4 || f.srv.TokensIssued() != 1 {
		t.Errorf("TokenRequests %d, TokensIssued %d", f.srv.TokenRequests(), f.srv.TokensIssued())
	}
	log := f.srv.TokenLog()
	seen := map[string]bool{}
	for i, e := range log {
		if e.Status != want[i] || e.ClientID != inlineClient || e.JTI == "" || seen[e.JTI] || e.Scope != anyScope {
			t.Errorf("log[%d] = %+v", i, e)
		}
		seen[e.JTI] = true
	}
	if log[0].ErrorCode != "temporarily_unavailable" || log[2].ErrorCode != "" {
		t.Errorf("fault error codes %q, %q", log[0].ErrorCode, log[2].ErrorCode)
	}
}

func TestFaultDelay(t *testing.T) {
	f := newFixture(t)
	const delay = 200 * time.Millisecond
	f.srv.InjectTokenFault(Fault{Delay: delay})
	start := time.Now()
	f.token(t, inlineClient, "ES384", anyScope) // a delay-only fault still issues a token
	if took := time.Since(start); took < delay {
		t.Errorf("answered after %v, want at least %v", took, delay)
	}

	// A client giving up cuts the delay short.
	f.srv.InjectTokenFault(Fault{Delay: time.Minute, Status: 500})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.srv.TokenURL,
		strings.NewReader(tokenForm(f.assertion(t, inlineClient, "ES384", nil), anyScope).Encode()))
	must(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if _, err := f.srv.Client().Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if e := f.srv.TokenLog()[1]; e.ErrorDescription != "" {
			if e.Status != 0 {
				t.Errorf("abandoned request logged as %+v", e)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("delayed handler did not notice the client leaving")
		}
	}
	// The queue is empty again.
	f.token(t, inlineClient, "ES384", anyScope)
}

func TestDateSkew(t *testing.T) {
	f := newFixture(t)
	f.srv.SetDateSkew(-10 * time.Minute)
	for _, path := range []string{"/fhir/.well-known/smart-configuration", "/no/such/route"} {
		resp, err := f.srv.Client().Get(f.srv.URL + path)
		must(t, err)
		resp.Body.Close()
		got, err := http.ParseTime(resp.Header.Get("Date"))
		if want := f.clock.now().Add(-10 * time.Minute); err != nil || !got.Equal(want) {
			t.Errorf("%s: Date %q, want %v", path, resp.Header.Get("Date"), want.UTC())
		}
	}
}

func TestIntrospectExpireAuthorize(t *testing.T) {
	f := newFixture(t)
	v1 := f.token(t, inlineClient, "ES384", "system/*.read")
	v2 := f.token(t, inlineClient, "RS384", "system/MedicationDispense.rs system/Patient.r")

	bearer := func(tok string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, f.srv.FHIRBase+"/$pdmp-history", nil)
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		return r
	}
	for _, tc := range []struct {
		token, want string
		err         error
	}{
		{v1, "system/MedicationDispense.rs", nil},
		{v1, "system/MedicationDispense.read", nil},
		{v1, "system/Patient.r", nil},
		{v1, "system/MedicationDispense.c", ErrInsufficientScope},
		{v2, "system/MedicationDispense.read", nil},
		{v2, "system/Patient.read", ErrInsufficientScope}, // .r only, no search
		{v2, "system/Observation.r", ErrInsufficientScope},
		{"", "system/Patient.r", ErrInvalidToken},
		{"made-up", "system/Patient.r", ErrInvalidToken},
	} {
		info, err := f.srv.Authorize(bearer(tc.token), tc.want)
		if !errors.Is(err, tc.err) || (err == nil && info.ClientID != inlineClient) {
			t.Errorf("Authorize(%.8s…, %s) = %+v, %v; want %v", tc.token, tc.want, info, err, tc.err)
		}
	}

	f.clock.advance(299 * time.Second)
	if _, ok := f.srv.Introspect(v1); !ok {
		t.Error("token invalid before expiry")
	}
	f.clock.advance(time.Second)
	if _, ok := f.srv.Introspect(v1); ok {
		t.Error("token valid at expiry")
	}

	f.clock.advance(-time.Minute)
	f.srv.ExpireTokens()
	if _, err := f.srv.Authorize(bearer(v2), "system/Patient.r"); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("after ExpireTokens: %v", err)
	}
}

func TestParseScope(t *testing.T) {
	for s, want := range map[string]bool{
		"system/*.read":                             true,
		"system/Patient.write":                      true,
		"system/*.*":                                true,
		"system/*.cruds":                            true,
		"system/MedicationDispense.rs":              true,
		"system/Observation.rs?category=laboratory": true,
		"system/Patient.sr":                         false, // v2 letters must be in cruds order
		"system/Patient.rr":                         false,
		"system/Patient.":                           false,
		"system/patient.rs":                         false,
		"system/Patient":                            false,
		"patient/*.read":                            false,
		"system/*.reed":                             false,
	} {
		if _, ok := parseScope(s); ok != want {
			t.Errorf("parseScope(%q) ok = %v, want %v", s, ok, want)
		}
	}
}

func TestConcurrentTokenRequests(t *testing.T) {
	f := newFixture(t)
	// Even requests replay one assertion, odd ones send fresh assertions.
	shared := f.assertion(t, urlClient, "ES384", nil)
	assertions := make([]string, 100)
	for i := range assertions {
		assertions[i] = shared
		if i%2 == 1 {
			assertions[i] = f.assertion(t, urlClient, "ES384", nil)
		}
	}
	var wg sync.WaitGroup
	var fresh, replayed atomic.Int32
	for i, a := range assertions {
		wg.Go(func() {
			res, err := f.doToken(tokenForm(a, anyScope), nil)
			switch {
			case err != nil:
				t.Error(err)
			case res.status != http.StatusOK:
			case i%2 == 0:
				replayed.Add(1)
			default:
				fresh.Add(1)
			}
		})
	}
	wg.Wait()
	if fresh.Load() != 50 || replayed.Load() != 1 {
		t.Errorf("%d fresh assertions and %d uses of one assertion succeeded; want 50 and 1", fresh.Load(), replayed.Load())
	}
	if f.srv.TokenRequests() != 100 || f.srv.TokensIssued() != 51 {
		t.Errorf("TokenRequests %d, TokensIssued %d", f.srv.TokenRequests(), f.srv.TokensIssued())
	}
}

func TestTLS(t *testing.T) {
	f := newFixture(t, WithTLS())
	if !strings.HasPrefix(f.srv.URL, "https://127.0.0.1:") || f.srv.Certificate() == nil {
		t.Fatalf("URL %q, certificate %v", f.srv.URL, f.srv.Certificate())
	}
	f.token(t, urlClient, "RS384", anyScope)
	if _, err := http.Get(f.srv.FHIRBase + "/.well-known/smart-configuration"); err == nil {
		t.Error("untrusting client accepted the test certificate")
	}
}

func TestMatchKeyAmbiguous(t *testing.T) {
	ec, _ := testKeys()
	other, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(t, err)
	set, err := parseJWKS(jwksJSON(t, publicJWK(t, ec, "k", jwa.ES384), publicJWK(t, other, "k", "")))
	must(t, err)
	if _, err := matchKey(set, "k", "ES384"); err == nil || !strings.Contains(err.Error(), "matches 2 keys") {
		t.Errorf("err = %v", err)
	}
}
