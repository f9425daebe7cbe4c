package pdmptest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Client is a backend service registered with the server.
type Client struct {
	ID      string
	JWKS    []byte   // inline JWK Set JSON with the client's public keys, or
	JWKSURL string   // URL the set is fetched from on every token request
	Scopes  []string // allow-list of grantable scopes; empty allows any system/ scope
}

// RegisterClient registers c. Exactly one of JWKS and JWKSURL must be set;
// an inline JWKS must be a parsable set of public keys.
func (s *Server) RegisterClient(c Client) error {
	if c.ID == "" {
		return errors.New("pdmptest: client ID is empty")
	}
	if (len(c.JWKS) == 0) == (c.JWKSURL == "") {
		return fmt.Errorf("pdmptest: client %q: set exactly one of JWKS and JWKSURL", c.ID)
	}
	cl := &client{id: c.ID, jwksURL: c.JWKSURL, scopes: slices.Clone(c.Scopes)}
	if len(c.JWKS) > 0 {
		set, err := parseJWKS(c.JWKS)
		if err != nil {
			return fmt.Errorf("pdmptest: client %q: %w", c.ID, err)
		}
		cl.jwks = set
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.clients[c.ID]; dup {
		return fmt.Errorf("pdmptest: client %q already registered", c.ID)
	}
	s.clients[c.ID] = cl
	return nil
}

// SetClientJWKS replaces a registered client's keys with an inline JWK Set,
// for key rotation tests. A client registered with a JWKSURL stops being
// fetched from it.
func (s *Server) SetClientJWKS(id string, jwks []byte) error {
	set, err := parseJWKS(jwks)
	if err != nil {
		return fmt.Errorf("pdmptest: client %q: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.clients[id]
	if !ok {
		return fmt.Errorf("pdmptest: client %q not registered", id)
	}
	// Clients are replaced, never mutated, so that in-flight requests can
	// keep using the *client they looked up without holding the lock.
	s.clients[id] = &client{id: id, jwks: set, scopes: old.scopes}
	return nil
}

func (s *Server) lookupClient(id string) *client {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[id]
}

// ErrorStyle selects how client authentication failures are answered; real
// servers differ, and clients must cope with both.
type ErrorStyle int

const (
	// InvalidClient401 answers 401 {"error":"invalid_client"}, like the SMART
	// app launcher (and RFC 6749 §5.2).
	InvalidClient401 ErrorStyle = iota
	// InvalidGrant400 answers 400 {"error":"invalid_grant"}, like the SMART
	// bulk-data reference server.
	InvalidGrant400
)

// SetErrorStyle sets how authentication failures are answered. An unknown
// client is answered 401 invalid_client in either style, the case RFC 6749
// §5.2 gives as the example of that code.
func (s *Server) SetErrorStyle(es ErrorStyle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errorStyle = es
}

func (es ErrorStyle) failure(desc string) *oauthError {
	if es == InvalidGrant400 {
		return &oauthError{http.StatusBadRequest, "invalid_grant", desc}
	}
	return &oauthError{http.StatusUnauthorized, "invalid_client", desc}
}

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	status int
	code   string
	desc   string
}

func invalidRequest(format string, args ...any) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, args...)}
}

func invalidScope(format string, args ...any) *oauthError {
	return &oauthError{http.StatusBadRequest, "invalid_scope", fmt.Sprintf(format, args...)}
}

func (e *oauthError) write(w http.ResponseWriter) {
	writeJSON(w, e.status, map[string]string{"error": e.code, "error_description": e.desc})
}

// Fault replaces or delays the answer to upcoming token requests.
type Fault struct {
	Status     int           // status to answer instead; 0 only delays
	Delay      time.Duration // wait before answering, cut short if the client goes away
	RetryAfter string        // Retry-After header value, if non-empty
	Body       string        // raw body; default a JSON OAuth error fitting Status
	Times      int           // how many consecutive token requests get the fault; 0 means 1
}

// InjectTokenFault queues f. Queued faults apply in order, one per token
// request, before the request is validated.
func (s *Server) InjectTokenFault(f Fault) {
	f.Times = max(f.Times, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f)
}

// nextFault pops one use of the head of the fault queue. Callers hold s.mu.
func (s *Server) nextFault() (Fault, bool) {
	if len(s.faults) == 0 {
		return Fault{}, false
	}
	f := s.faults[0]
	if s.faults[0].Times--; s.faults[0].Times == 0 {
		s.faults = s.faults[1:]
	}
	return f, true
}

// writeFault answers with an injected fault and returns the error code it
// used, if any.
func writeFault(w http.ResponseWriter, f Fault) string {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	if f.Body == "" {
		e := &oauthError{f.Status, faultCode(f.Status), "injected fault"}
		e.write(w)
		return e.code
	}
	ct := http.DetectContentType([]byte(f.Body))
	if json.Valid([]byte(f.Body)) {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(f.Status)
	_, _ = w.Write([]byte(f.Body))
	return ""
}

func faultCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid_request"
	case http.StatusUnauthorized:
		return "invalid_client"
	case http.StatusForbidden:
		return "access_denied"
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "temporarily_unavailable"
	default:
		return "server_error"
	}
}

// TokenRequest records one POST to the token endpoint. ClientID and JTI are
// read from the client assertion without verifying it, so they are what the
// client sent even when the request was rejected or faulted.
type TokenRequest struct {
	Time             time.Time // arrival, by the server clock
	ClientID         string    // assertion iss
	JTI              string    // assertion jti
	Scope            string    // scope as requested
	Status           int       // HTTP status answered; 0 while in flight or if the client left during a delay
	ErrorCode        string    // OAuth error code, empty on success
	ErrorDescription string
}

// TokenLog returns every token request so far, in arrival order.
func (s *Server) TokenLog() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.log)
}

// TokenRequests counts POSTs to the token endpoint, including rejected and
// faulted ones.
func (s *Server) TokenRequests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.log)
}

// TokensIssued counts access tokens issued, including revoked ones.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.issued
}

// TokenInfo describes an issued access token.
type TokenInfo struct {
	ClientID string
	Scope    string // granted scopes, space separated
	Expires  time.Time
}

// Introspect reports whether token was issued by s and is neither expired
// nor revoked.
func (s *Server) Introspect(token string) (TokenInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, ok := s.tokens[token]
	if !ok || !s.now().Before(info.Expires) {
		return TokenInfo{}, false
	}
	return info, true
}

// ExpireTokens revokes every token issued so far, so that the next FHIR
// request with one of them is answered 401.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

func (s *Server) registerAuthRoutes() {
	s.mux.HandleFunc("GET /fhir/.well-known/smart-configuration", s.handleSMARTConfiguration)
	s.mux.HandleFunc("POST /auth/token", s.handleToken)
}

func (s *Server) handleSMARTConfiguration(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"token_endpoint":                                   s.TokenURL,
		"grant_types_supported":                            []string{"client_credentials"},
		"token_endpoint_auth_methods_supported":            []string{"private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS384", "ES384"},
		"scopes_supported":                                 []string{"system/*.read", "system/*.rs"},
		"capabilities":                                     []string{"client-confidential-asymmetric", "permission-v1", "permission-v2"},
	})
}

// maxFormBytes bounds the token request body; an assertion is a few KiB.
const maxFormBytes = 64 << 10

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	formErr := r.ParseForm()
	a, assertionErr := parseAssertion(r.PostForm.Get("client_assertion"))

	s.mu.Lock()
	idx := len(s.log)
	s.log = append(s.log, TokenRequest{
		Time:     s.now(),
		ClientID: a.claims.Iss,
		JTI:      a.claims.JTI,
		Scope:    r.PostForm.Get("scope"),
	})
	fault, faulted := s.nextFault()
	style := s.errorStyle
	s.mu.Unlock()

	if faulted {
		if !sleep(r.Context(), fault.Delay) {
			s.finish(idx, 0, "", "client went away during injected delay")
			return
		}
		if fault.Status != 0 {
			s.finish(idx, fault.Status, writeFault(w, fault), "injected fault")
			return
		}
	}

	resp, oerr := s.issueToken(r, formErr, a, assertionErr, style)
	if oerr != nil {
		s.finish(idx, oerr.status, oerr.code, oerr.desc)
		oerr.write(w)
		return
	}
	s.finish(idx, http.StatusOK, "", "")
	writeJSON(w, http.StatusOK, resp)
}

// finish records the outcome of the token request logged at idx.
func (s *Server) finish(idx, status int, code, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log[idx].Status = status
	s.log[idx].ErrorCode = code
	s.log[idx].ErrorDescription = desc
}

// sleep waits for d and reports whether ctx was still live afterwards.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// issueToken validates a token request and issues an access token. Request
// shape is checked before the assertion so that malformed requests cannot
// consume a jti.
func (s *Server) issueToken(r *http.Request, formErr error, a assertion, assertionErr error, style ErrorStyle) (tokenResponse, *oauthError) {
	requested, oerr := checkTokenForm(r, formErr)
	if oerr != nil {
		return tokenResponse{}, oerr
	}
	c, oerr := s.authenticate(r.Context(), a, assertionErr, style)
	if oerr != nil {
		return tokenResponse{}, oerr
	}
	granted, oerr := grantScopes(c, requested)
	if oerr != nil {
		return tokenResponse{}, oerr
	}

	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails
	token := base64.RawURLEncoding.EncodeToString(b)
	scope := strings.Join(granted, " ")

	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = TokenInfo{ClientID: c.id, Scope: scope, Expires: s.now().Add(s.tokenLifetime)}
	s.issued++
	return tokenResponse{
		AccessToken: token,
		TokenType:   "bearer",
		ExpiresIn:   int(s.tokenLifetime / time.Second),
		Scope:       scope,
	}, nil
}

// checkTokenForm checks everything about a token request except the client
// assertion itself and returns the requested scopes.
func checkTokenForm(r *http.Request, formErr error) ([]string, *oauthError) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return nil, invalidRequest("Content-Type must be application/x-www-form-urlencoded")
	}
	if formErr != nil {
		return nil, invalidRequest("malformed form body: %v", formErr)
	}
	form := r.PostForm
	for name, vs := range form {
		if len(vs) > 1 { // RFC 6749 §3.2
			return nil, invalidRequest("parameter %s repeated", name)
		}
	}
	if r.Header.Get("Authorization") != "" || form.Has("client_secret") {
		return nil, invalidRequest("client secret / HTTP Basic authentication not supported; use private_key_jwt")
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return nil, invalidRequest("grant_type missing")
	default:
		return nil, &oauthError{http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q not supported; want client_credentials", gt)}
	}
	if at := form.Get("client_assertion_type"); at != assertionType {
		return nil, invalidRequest("client_assertion_type %q not supported; want %s", at, assertionType)
	}
	if form.Get("client_assertion") == "" {
		return nil, invalidRequest("client_assertion missing")
	}
	return requestedScopes(form.Get("scope"))
}
