package smart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/pdmp-agent/pdmp-agent/vault"
)

// maxBody bounds what we read from a token or discovery response.
const maxBody = 1 << 20

// skewWarn is the clock offset past which assertions risk rejection.
const skewWarn = 30 * time.Second

func (c *Client) httpFor(reg *Registration) *http.Client {
	if reg.HTTP != nil {
		return reg.HTTP
	}
	return c.http
}

// endpoint returns reg's token endpoint, discovering it from
// {FHIRBase}/.well-known/smart-configuration (the path sits under the FHIR
// base, not the host root) and caching the answer.
func (c *Client) endpoint(ctx context.Context, reg *Registration) (string, error) {
	if reg.TokenEndpoint != "" {
		return reg.TokenEndpoint, nil
	}
	c.mu.Lock()
	ep, ok := c.endpoints[reg.FHIRBase]
	c.mu.Unlock()
	if ok {
		return ep, nil
	}
	fail := func(status int, permanent bool, format string, args ...any) error {
		return &TokenError{Registration: reg.Name, Status: status, Permanent: permanent,
			Err: fmt.Errorf("SMART discovery: "+format, args...)}
	}
	u := strings.TrimSuffix(reg.FHIRBase, "/") + "/.well-known/smart-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fail(0, true, "%v", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpFor(reg).Do(req)
	if err != nil {
		return "", fail(0, false, "%v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return "", fail(0, false, "read: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		transient := resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests
		return "", fail(resp.StatusCode, !transient, "GET %s: HTTP %d", u, resp.StatusCode)
	}
	var doc struct {
		TokenEndpoint string   `json:"token_endpoint"`
		GrantTypes    []string `json:"grant_types_supported"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
		SigningAlgs   []string `json:"token_endpoint_auth_signing_alg_values_supported"`
		Capabilities  []string `json:"capabilities"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fail(resp.StatusCode, false, "%s is not JSON", u)
	}
	if doc.TokenEndpoint == "" {
		return "", fail(resp.StatusCode, true, "%s has no token_endpoint", u)
	}
	if tu, err := url.Parse(doc.TokenEndpoint); err != nil || !tu.IsAbs() {
		return "", fail(resp.StatusCode, true, "token_endpoint %q is not an absolute URL", doc.TokenEndpoint)
	}
	// Real servers omit optional fields; say so, but carry on.
	if len(doc.GrantTypes) > 0 && !contains(doc.GrantTypes, "client_credentials") {
		c.log.Warn("SMART configuration does not list client_credentials", "registration", reg.Name)
	}
	if len(doc.Capabilities) > 0 && !contains(doc.Capabilities, "client-confidential-asymmetric") {
		c.log.Warn("SMART configuration does not list client-confidential-asymmetric", "registration", reg.Name)
	}
	c.mu.Lock()
	c.endpoints[reg.FHIRBase] = doc.TokenEndpoint
	c.mu.Unlock()
	return doc.TokenEndpoint, nil
}

func contains(ss []string, s string) bool {
	for _, v := range ss {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// assertion signs a fresh client assertion for one HTTP attempt.
func (c *Client) assertion(ctx context.Context, endpoint string, reg *Registration) (string, error) {
	key, err := reg.Keys.Current(ctx)
	if err != nil {
		// A key store that is away (a removed token, a locked keychain) may
		// come back: retry later. Anything else needs a person.
		return "", &TokenError{Registration: reg.Name, Permanent: !errors.Is(err, vault.ErrUnavailable), Err: err}
	}
	life := reg.AssertionLifetime
	if life <= 0 {
		life = DefaultAssertionLifetime
	}
	life = min(life, MaxAssertionLifetime)
	tok, err := jwt.NewBuilder().
		Issuer(reg.ClientID).
		Subject(reg.ClientID).
		Audience([]string{endpoint}).
		Expiration(c.now().Add(life)).
		JwtID(newJTI()).
		Build()
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	for k, v := range map[string]string{jws.KeyIDKey: key.KID(), jws.TypeKey: "JWT"} {
		if err := hdr.Set(k, v); err != nil {
			return "", err
		}
	}
	if reg.JKU != "" {
		if err := hdr.Set(jws.JWKSetURLKey, reg.JKU); err != nil {
			return "", err
		}
	}
	// aud as a single string, as some servers compare it literally.
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.SignatureAlgorithm(key.Alg()), key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", &TokenError{Registration: reg.Name, Permanent: false, Err: fmt.Errorf("sign assertion with %s: %w", key.KID(), err)}
	}
	return string(signed), nil
}

// exchange makes one token request.
func (c *Client) exchange(ctx context.Context, endpoint string, reg *Registration) (Token, error) {
	assertion, err := c.assertion(ctx, endpoint, reg)
	if err != nil {
		return Token{}, err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {reg.Scope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, &TokenError{Registration: reg.Name, Permanent: true, Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	sent := c.now()
	resp, err := c.httpFor(reg).Do(req)
	if err != nil {
		// Network errors can embed the request URL, never the body, so
		// the assertion cannot leak through them.
		return Token{}, &TokenError{Registration: reg.Name, Err: err}
	}
	defer resp.Body.Close()
	c.checkSkew(resp, sent, reg)
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return Token{}, &TokenError{Registration: reg.Name, Status: resp.StatusCode, Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return Token{}, errorResponse(reg.Name, resp, body, c.now())
	}
	return c.parseToken(reg, body)
}

// errorResponse classifies a non-200 token response. 4xx other than 408
// and 429 are credential or configuration faults.
func errorResponse(name string, resp *http.Response, body []byte, now time.Time) *TokenError {
	var oe struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &oe)
	s := resp.StatusCode
	return &TokenError{
		Registration: name,
		Status:       s,
		Code:         printable(oe.Error, 64),
		Description:  printable(oe.Description, 300),
		Permanent:    s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests,
		RetryAfter:   RetryAfter(resp.Header.Get("Retry-After"), now),
	}
}

// printable bounds and sanitises server-supplied text before it reaches
// logs: no control characters, no unbounded length.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		s = s[:n] + "…"
	}
	return s
}

// RetryAfter parses a Retry-After header (delta-seconds or HTTP-date).
func RetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// parseToken reads a token response defensively: token_type in any case,
// expires_in as number, string or missing, scope possibly narrower.
func (c *Client) parseToken(reg *Registration, body []byte) (Token, error) {
	var raw struct {
		AccessToken string          `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		Scope       string          `json:"scope"`
	}
	bad := func(msg string) error {
		return &TokenError{Registration: reg.Name, Status: http.StatusOK, Err: errors.New("token response: " + msg)}
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return Token{}, bad("not JSON")
	}
	if raw.AccessToken == "" {
		return Token{}, bad("no access_token")
	}
	if !strings.EqualFold(raw.TokenType, "bearer") {
		return Token{}, bad(fmt.Sprintf("token_type %q, want bearer", printable(raw.TokenType, 32)))
	}
	now := c.now()
	life, ok := expiresIn(raw.ExpiresIn)
	if !ok {
		// Fall back to the token's own exp if it is a JWT, then to 300 s.
		life = 300 * time.Second
		if t, err := jwt.ParseInsecure([]byte(raw.AccessToken)); err == nil && !t.Expiration().IsZero() {
			life = t.Expiration().Sub(now)
		}
	}
	if life <= 0 {
		return Token{}, bad("token already expired")
	}
	t := Token{AccessToken: raw.AccessToken, Scope: raw.Scope, Expires: now.Add(life)}
	if t.Scope == "" {
		t.Scope = reg.Scope
	} else if narrower(reg.Scope, t.Scope) {
		c.log.Warn("token grants fewer scopes than requested", "registration", reg.Name, "requested", reg.Scope, "granted", t.Scope)
	}
	return t, nil
}

func expiresIn(m json.RawMessage) (time.Duration, bool) {
	s := strings.Trim(strings.TrimSpace(string(m)), `"`)
	if s == "" || s == "null" {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		return 0, false
	}
	return time.Duration(f * float64(time.Second)), true
}

func narrower(requested, granted string) bool {
	g := strings.Fields(granted)
	for _, s := range strings.Fields(requested) {
		if !contains(g, s) {
			return true
		}
	}
	return false
}

// checkSkew compares the server's Date header with the midpoint of our
// request, and warns when the clocks differ enough to fail assertions.
func (c *Client) checkSkew(resp *http.Response, sent time.Time, reg *Registration) {
	d, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return
	}
	recv := c.now()
	mid := sent.Add(recv.Sub(sent) / 2)
	skew := d.Sub(mid).Truncate(time.Second)
	c.mu.Lock()
	c.skew = skew
	c.mu.Unlock()
	if skew > skewWarn || skew < -skewWarn {
		c.log.Warn("clock skew with token server; assertions may be rejected — check NTP",
			"registration", reg.Name, "skew", skew)
	}
}
