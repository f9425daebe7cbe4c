package smart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/agent/smart"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

// staticKey is a KeySource holding one in-process key.
type staticKey struct{ k vault.Key }

func (s staticKey) Current(context.Context) (vault.Key, error) { return s.k, nil }

var (
	keysMu sync.Mutex
	keys   = map[vault.Alg]vault.Key{}
)

// testKey returns a process-wide key per algorithm: RSA-3072 generation is
// slow enough to be worth sharing.
func testKey(t testing.TB, alg vault.Alg) vault.Key {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k, ok := keys[alg]; ok {
		return k
	}
	s, err := vault.GenerateSigner(alg)
	if err != nil {
		t.Fatal(err)
	}
	k, err := vault.NewKey(s, alg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keys[alg] = k
	return k
}

func jwks(t testing.TB, ks ...vault.Key) []byte {
	t.Helper()
	b, err := vault.JWKSet(ks...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logBuf collects every log line so tests can scan them for secrets.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}
func (l *logBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.buf.String() }

type env struct {
	srv  *pdmptest.Server
	c    *smart.Client
	reg  *smart.Registration
	logs *logBuf
}

func setup(t *testing.T, alg vault.Alg, opts ...smart.Option) *env {
	t.Helper()
	srv := pdmptest.NewServer()
	t.Cleanup(srv.Close)
	k := testKey(t, alg)
	if err := srv.RegisterClient(pdmptest.Client{ID: "client-" + string(alg), JWKS: jwks(t, k)}); err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	opts = append([]smart.Option{
		smart.WithLogger(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
		smart.WithRetry(4, 10*time.Millisecond),
	}, opts...)
	e := &env{srv: srv, c: smart.New(opts...), logs: logs, reg: &smart.Registration{
		Name: "test", FHIRBase: srv.FHIRBase, ClientID: "client-" + string(alg),
		Scope: "system/*.read", Keys: staticKey{k},
	}}
	t.Cleanup(func() { e.assertNoSecretsLogged(t) })
	return e
}

// assertNoSecretsLogged fails if any log line holds a token or something
// shaped like a JWS (every assertion starts "eyJ").
func (e *env) assertNoSecretsLogged(t *testing.T) {
	logs := e.logs.String()
	if strings.Contains(logs, "eyJ") {
		t.Errorf("a JWS appears in the logs:\n%s", logs)
	}
	for _, r := range e.srv.TokenLog() {
		if r.JTI != "" && strings.Contains(logs, r.JTI) {
			t.Errorf("an assertion's jti appears in the logs")
		}
	}
}

func TestTokenBothAlgs(t *testing.T) {
	for _, alg := range []vault.Alg{vault.ES384, vault.RS384} {
		t.Run(string(alg), func(t *testing.T) {
			e := setup(t, alg)
			tok, err := e.c.Token(context.Background(), e.reg)
			if err != nil {
				t.Fatal(err)
			}
			info, ok := e.srv.Introspect(tok.AccessToken)
			if !ok || info.ClientID != e.reg.ClientID {
				t.Fatalf("server does not know the token: %+v %v", info, ok)
			}
			if strings.Contains(tok.String(), tok.AccessToken) || strings.Contains(fmt.Sprint(tok), tok.AccessToken) {
				t.Error("Token's String shows the access token")
			}
			if strings.Contains(e.logs.String(), tok.AccessToken) {
				t.Error("access token logged")
			}
		})
	}
}

func TestSingleFlightColdCache(t *testing.T) {
	e := setup(t, vault.ES384)
	var wg sync.WaitGroup
	toks := make([]string, 100)
	errs := make([]error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := e.c.Token(context.Background(), e.reg)
			toks[i], errs[i] = tok.AccessToken, err
		}()
	}
	wg.Wait()
	for i := range 100 {
		if errs[i] != nil || toks[i] != toks[0] {
			t.Fatalf("caller %d: %v (token equal: %v)", i, errs[i], toks[i] == toks[0])
		}
	}
	if n := e.srv.TokenRequests(); n != 1 {
		t.Fatalf("100 concurrent callers caused %d token requests, want 1", n)
	}
}

// fakeClock is shared by client and server so assertion exp stays valid.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time          { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Advance(d time.Duration) { f.mu.Lock(); f.now = f.now.Add(d); f.mu.Unlock() }

func TestReuseThenRenew(t *testing.T) {
	clk := &fakeClock{now: time.Now()}
	srv := pdmptest.NewServer(pdmptest.WithClock(clk.Now), pdmptest.WithTokenLifetime(300*time.Second))
	defer srv.Close()
	k := testKey(t, vault.ES384)
	srv.RegisterClient(pdmptest.Client{ID: "c", JWKS: jwks(t, k)})
	c := smart.New(smart.WithClock(clk.Now))
	reg := &smart.Registration{Name: "r", FHIRBase: srv.FHIRBase, ClientID: "c", Scope: "system/*.rs", Keys: staticKey{k}}
	ctx := context.Background()

	first, err := c.Token(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	// Renewal margin for a 300 s token is 30 s: up to 269 s it is reused.
	clk.Advance(269 * time.Second)
	if tok, _ := c.Token(ctx, reg); tok.AccessToken != first.AccessToken || srv.TokenRequests() != 1 {
		t.Fatalf("token not reused before the margin (requests: %d)", srv.TokenRequests())
	}
	// Inside the margin the old token is still served while a renewal runs.
	clk.Advance(2 * time.Second)
	if tok, _ := c.Token(ctx, reg); tok.AccessToken != first.AccessToken {
		t.Fatal("still-valid token not served during renewal")
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.TokensIssued() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	second, err := c.Token(ctx, reg)
	if err != nil {
		t.Fatal(err)
	}
	if second.AccessToken == first.AccessToken || srv.TokenRequests() != 2 {
		t.Fatalf("no renewal inside the margin (requests: %d)", srv.TokenRequests())
	}
	// Past expiry with no renewal possible in the background, callers wait
	// for a fresh one.
	clk.Advance(400 * time.Second)
	third, err := c.Token(ctx, reg)
	if err != nil || third.AccessToken == second.AccessToken {
		t.Fatalf("expired token not replaced: %v", err)
	}
	if want := clk.Now().Add(300 * time.Second); !third.Expires.Equal(want) {
		t.Errorf("expiry %v, want %v (expires_in from the server's clock)", third.Expires, want)
	}
}

func TestInvalidate(t *testing.T) {
	e := setup(t, vault.ES384)
	ctx := context.Background()
	a, _ := e.c.Token(ctx, e.reg)
	e.c.Invalidate(e.reg, a)
	b, err := e.c.Token(ctx, e.reg)
	if err != nil || b.AccessToken == a.AccessToken || e.srv.TokenRequests() != 2 {
		t.Fatalf("Invalidate did not force a new token: %v, requests %d", err, e.srv.TokenRequests())
	}
	// Invalidating a token that was already replaced does nothing.
	e.c.Invalidate(e.reg, a)
	if c, _ := e.c.Token(ctx, e.reg); c.AccessToken != b.AccessToken {
		t.Fatal("stale Invalidate dropped the current token")
	}
}

// TestRejections drives each strict check of the sandbox server through the
// real client and expects a permanent error carrying the server's reason.
func TestRejections(t *testing.T) {
	other := testKey(t, vault.RS384)
	tests := []struct {
		name  string
		setup func(t *testing.T, e *env)
		want  string // substring of error_description
	}{
		{"unknown client", func(t *testing.T, e *env) { e.reg.ClientID = "nobody" }, "unknown client"},
		{"unknown kid", func(t *testing.T, e *env) {
			e.srv.SetClientJWKS(e.reg.ClientID, jwks(t, other))
		}, "kid"},
		{"kid with another alg", func(t *testing.T, e *env) {
			var set map[string][]map[string]any
			json.Unmarshal(jwks(t, testKey(t, vault.ES384)), &set)
			set["keys"][0]["alg"] = "ES512"
			b, _ := json.Marshal(set)
			e.srv.SetClientJWKS(e.reg.ClientID, b)
		}, "alg"},
		{"bad signature", func(t *testing.T, e *env) {
			// A different P-384 key published under our kid.
			s, _ := vault.GenerateSigner(vault.ES384)
			imp, _ := vault.NewKey(s, vault.ES384, time.Now())
			var set map[string][]map[string]any
			json.Unmarshal(jwks(t, imp), &set)
			set["keys"][0]["kid"] = testKey(t, vault.ES384).KID()
			b, _ := json.Marshal(set)
			e.srv.SetClientJWKS(e.reg.ClientID, b)
		}, "signature"},
		{"jku for an inline client", func(t *testing.T, e *env) { e.reg.JKU = "https://clinic.example/jwks.json" }, "jku"},
		{"wrong aud", func(t *testing.T, e *env) { e.reg.TokenEndpoint = e.srv.TokenURL + "?tenant=x" }, "aud"},
		{"expired (server clock ahead)", func(t *testing.T, e *env) {
			e.c = smart.New(smart.WithClock(func() time.Time { return time.Now().Add(-10 * time.Minute) }))
		}, "exp"},
		{"exp too far (server clock behind)", func(t *testing.T, e *env) {
			e.c = smart.New(smart.WithClock(func() time.Time { return time.Now().Add(2 * time.Minute) }))
		}, "exp"},
		{"scope not system/", func(t *testing.T, e *env) { e.reg.Scope = "patient/*.read" }, "scope"},
	}
	for _, style := range []pdmptest.ErrorStyle{pdmptest.InvalidClient401, pdmptest.InvalidGrant400} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/style%d", tt.name, style), func(t *testing.T) {
				e := setup(t, vault.ES384)
				e.srv.SetErrorStyle(style)
				tt.setup(t, e)
				_, err := e.c.Token(context.Background(), e.reg)
				var te *smart.TokenError
				if !errors.As(err, &te) {
					t.Fatalf("err = %v, want *TokenError", err)
				}
				if !errors.Is(err, smart.ErrCredential) || !te.Permanent {
					t.Errorf("not permanent: %v", err)
				}
				if te.Status < 400 || te.Status >= 500 || te.Code == "" {
					t.Errorf("status %d code %q", te.Status, te.Code)
				}
				if !strings.Contains(te.Description, tt.want) {
					t.Errorf("description %q does not mention %q", te.Description, tt.want)
				}
				if n := e.srv.TokenRequests(); n != 1 {
					t.Errorf("%d token requests for a permanent fault, want 1 (no retry)", n)
				}
				// Within the hard back-off, callers get the error without
				// another request.
				if _, err2 := e.c.Token(context.Background(), e.reg); !errors.Is(err2, smart.ErrCredential) || e.srv.TokenRequests() != 1 {
					t.Errorf("second call: %v after %d requests; want the cached failure", err2, e.srv.TokenRequests())
				}
				// Only the env's own client logs to e.logs.
				if logged, _ := json.Marshal(te.Description); tt.name != "expired (server clock ahead)" &&
					tt.name != "exp too far (server clock behind)" && !strings.Contains(e.logs.String(), string(logged)) {
					t.Error("error_description not logged")
				}
			})
		}
	}
}

func TestRetryAfterNewJTI(t *testing.T) {
	e := setup(t, vault.ES384)
	e.srv.InjectTokenFault(pdmptest.Fault{Status: http.StatusServiceUnavailable, RetryAfter: "1"})
	start := time.Now()
	if _, err := e.c.Token(context.Background(), e.reg); err != nil {
		t.Fatal(err)
	}
	log := e.srv.TokenLog()
	if len(log) != 2 || log[0].Status != 503 || log[1].Status != 200 {
		t.Fatalf("token log %+v", log)
	}
	if gap := log[1].Time.Sub(log[0].Time); gap < time.Second {
		t.Errorf("retried after %v, want ≥ the 1 s Retry-After", gap)
	}
	if log[0].JTI == log[1].JTI || log[1].JTI == "" {
		t.Error("retry reused the jti")
	}
	if time.Since(start) > 5*time.Second {
		t.Error("retry took far longer than asked")
	}
}

func TestTransientExhausted(t *testing.T) {
	e := setup(t, vault.ES384)
	e.srv.InjectTokenFault(pdmptest.Fault{Status: http.StatusBadGateway, Times: 10})
	_, err := e.c.Token(context.Background(), e.reg)
	var te *smart.TokenError
	if !errors.As(err, &te) || te.Permanent || errors.Is(err, smart.ErrCredential) || te.Status != 502 {
		t.Fatalf("err = %v", err)
	}
	if n := e.srv.TokenRequests(); n != 4 {
		t.Fatalf("%d attempts, want 4", n)
	}
}

func TestClockSkewWarning(t *testing.T) {
	e := setup(t, vault.ES384)
	e.srv.SetDateSkew(2 * time.Minute)
	if _, err := e.c.Token(context.Background(), e.reg); err != nil {
		t.Fatal(err)
	}
	if s := e.c.ClockSkew(); s < 119*time.Second || s > 121*time.Second {
		t.Errorf("ClockSkew = %v, want ~2m", s)
	}
	if !strings.Contains(e.logs.String(), "clock skew") {
		t.Error("no clock skew warning logged")
	}
}

func TestDiscoveryErrors(t *testing.T) {
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer down.Close()
	noEndpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"capabilities":[]}`)) }))
	defer noEndpoint.Close()
	tests := []struct {
		base      string
		permanent bool
		want      string
	}{
		{notFound.URL, true, "HTTP 404"},
		{down.URL, false, "HTTP 503"},
		{noEndpoint.URL, true, "no token_endpoint"},
	}
	for _, tt := range tests {
		c := smart.New(smart.WithRetry(1, time.Millisecond))
		_, err := c.Token(context.Background(), &smart.Registration{Name: "r", FHIRBase: tt.base, ClientID: "c", Scope: "system/*.read", Keys: staticKey{testKey(t, vault.ES384)}})
		if err == nil || errors.Is(err, smart.ErrCredential) != tt.permanent || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want permanent=%v containing %q", tt.want, err, tt.permanent, tt.want)
		}
	}
}

// TestTokenResponseParsing feeds the shapes real servers send.
func TestTokenResponseParsing(t *testing.T) {
	tests := []struct {
		name, body string
		wantLife   time.Duration
		wantScope  string
		wantErr    string
	}{
		{"number", `{"access_token":"a","token_type":"bearer","expires_in":300,"scope":"system/*.read"}`, 300 * time.Second, "system/*.read", ""},
		{"string expires_in", `{"access_token":"a","token_type":"Bearer","expires_in":"120"}`, 120 * time.Second, "system/*.read", ""},
		{"missing expires_in", `{"access_token":"a","token_type":"BEARER"}`, 300 * time.Second, "system/*.read", ""},
		{"narrower scope", `{"access_token":"a","token_type":"bearer","expires_in":60,"scope":"system/Patient.read"}`, 60 * time.Second, "system/Patient.read", ""},
		{"not bearer", `{"access_token":"a","token_type":"mac","expires_in":60}`, 0, "", "token_type"},
		{"no token", `{"token_type":"bearer"}`, 0, "", "no access_token"},
		{"not json", `<html>`, 0, "", "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(tt.body)) }))
			defer srv.Close()
			now := time.Now()
			c := smart.New(smart.WithRetry(1, time.Millisecond), smart.WithClock(func() time.Time { return now }))
			tok, err := c.Token(context.Background(), &smart.Registration{Name: "r", TokenEndpoint: srv.URL, ClientID: "c", Scope: "system/*.read", Keys: staticKey{testKey(t, vault.ES384)}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tok.Expires.Sub(now); got != tt.wantLife {
				t.Errorf("lifetime %v, want %v", got, tt.wantLife)
			}
			if tok.Scope != tt.wantScope {
				t.Errorf("scope %q, want %q", tok.Scope, tt.wantScope)
			}
		})
	}
}

func TestRetryAfterParse(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"7", 7 * time.Second}, {"-1", 0}, {"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := smart.RetryAfter(tt.in, now); got != tt.want {
			t.Errorf("RetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

type failingKeys struct{ err error }

func (f failingKeys) Current(context.Context) (vault.Key, error) { return nil, f.err }

// TestKeyStoreErrors: an unavailable key store is retried later; any
// other key fault is a configuration fault that waits for a person.
func TestKeyStoreErrors(t *testing.T) {
	for _, tt := range []struct {
		err       error
		permanent bool
	}{
		{fmt.Errorf("token removed: %w", vault.ErrUnavailable), false},
		{fmt.Errorf("wrong PIN: %w", vault.ErrPIN), true},
		{vault.ErrNotFound, true},
	} {
		e := setup(t, vault.ES384)
		e.reg.Keys = failingKeys{tt.err}
		_, err := e.c.Token(context.Background(), e.reg)
		if errors.Is(err, smart.ErrCredential) != tt.permanent {
			t.Errorf("%v: permanent = %v, want %v", tt.err, errors.Is(err, smart.ErrCredential), tt.permanent)
		}
		if e.srv.TokenRequests() != 0 {
			t.Errorf("%v: a token request was sent without a key", tt.err)
		}
	}
}

func TestShortLivedTokenNotRenewedOnEveryUse(t *testing.T) {
	srv := pdmptest.NewServer(pdmptest.WithTokenLifetime(20 * time.Second))
	defer srv.Close()
	k := testKey(t, vault.ES384)
	srv.RegisterClient(pdmptest.Client{ID: "c", JWKS: jwks(t, k)})
	c := smart.New()
	reg := &smart.Registration{Name: "r", FHIRBase: srv.FHIRBase, ClientID: "c", Scope: "system/*.read", Keys: staticKey{k}}
	for range 5 {
		if _, err := c.Token(context.Background(), reg); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // a background renewal would have started by now
	if n := srv.TokenRequests(); n != 1 {
		t.Fatalf("%d token requests for 5 uses of a 20 s token, want 1", n)
	}
}
