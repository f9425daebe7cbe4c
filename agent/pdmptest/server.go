package pdmptest

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Server is a sandbox SMART Backend Services authorization server listening
// on a loopback address. Create it with NewServer and stop it with Close.
type Server struct {
	URL      string // base URL, http(s)://127.0.0.1:PORT, without trailing slash
	FHIRBase string // URL + "/fhir"
	TokenURL string // URL + "/auth/token"

	ts            *httptest.Server
	mux           *http.ServeMux
	handler       http.Handler
	now           func() time.Time
	tokenLifetime time.Duration
	useTLS        bool
	jwksClient    *http.Client // fetches clients' JWKS URLs

	mu         sync.Mutex
	clients    map[string]*client
	errorStyle ErrorStyle
	faults     []Fault
	dateSkew   time.Duration
	log        []TokenRequest
	issued     int
	tokens     map[string]TokenInfo // access token → grant
	jtis       map[string]time.Time // assertion jti → assertion exp

	responder responderState // the PDMP responder half, with its own lock
}

// client is a registered Client with its inline key set already parsed.
type client struct {
	id      string
	jwks    jwk.Set // nil when the keys are fetched from jwksURL
	jwksURL string
	scopes  []string
}

// Option configures a Server in NewServer.
type Option func(*Server)

// WithTokenLifetime sets how long issued access tokens stay valid
// (default 300s). expires_in is reported in whole seconds.
func WithTokenLifetime(d time.Duration) Option {
	return func(s *Server) { s.tokenLifetime = d }
}

// WithClock sets the server's notion of now, used for assertion exp checks,
// token expiry, the token log and the Date header. Default time.Now.
func WithClock(now func() time.Time) Option {
	return func(s *Server) { s.now = now }
}

// WithTLS makes the server speak HTTPS with an httptest certificate; use
// Client or Certificate to trust it.
func WithTLS() Option {
	return func(s *Server) { s.useTLS = true }
}

// NewServer starts a server listening on 127.0.0.1 on a free port.
func NewServer(opts ...Option) *Server {
	s := &Server{
		mux:           http.NewServeMux(),
		now:           time.Now,
		tokenLifetime: 300 * time.Second,
		jwksClient:    &http.Client{Timeout: 10 * time.Second},
		clients:       make(map[string]*client),
		tokens:        make(map[string]TokenInfo),
		jtis:          make(map[string]time.Time),
	}
	for _, opt := range opts {
		opt(s)
	}
	s.handler = s.withDate(s.mux)
	s.registerAuthRoutes()
	s.registerResponderRoutes()

	// The listener exists before Start, so the URLs are set before any
	// handler goroutine can read them.
	s.ts = httptest.NewUnstartedServer(s.handler)
	scheme := "http"
	if s.useTLS {
		scheme = "https"
	}
	s.URL = scheme + "://" + s.ts.Listener.Addr().String()
	s.FHIRBase = s.URL + "/fhir"
	s.TokenURL = s.URL + "/auth/token"
	if s.useTLS {
		s.ts.StartTLS()
	} else {
		s.ts.Start()
	}
	return s
}

// Close shuts the server down, blocking until outstanding requests finish.
func (s *Server) Close() { s.ts.Close() }

// Mux is the router behind the server, for adding routes (for example the
// PDMP responder) next to the authorization server. Paths are absolute,
// e.g. "POST /fhir/$pdmp-history".
func (s *Server) Mux() *http.ServeMux { return s.mux }

// Handler is the complete handler the server serves, including the Date
// header middleware; useful to drive the server without a network.
func (s *Server) Handler() http.Handler { return s.handler }

// Certificate returns the TLS certificate of a WithTLS server, nil otherwise.
func (s *Server) Certificate() *x509.Certificate { return s.ts.Certificate() }

// Client returns an HTTP client that trusts the server (TLS or not).
func (s *Server) Client() *http.Client { return s.ts.Client() }

// SetDateSkew makes the Date header of every response read now + d, to
// exercise a client's clock-skew detection.
func (s *Server) SetDateSkew(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dateSkew = d
}

// withDate sets the Date header from the server clock. net/http only adds its
// own Date when the handler has not set one.
func (s *Server) withDate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		skew := s.dateSkew
		s.mu.Unlock()
		w.Header().Set("Date", s.now().Add(skew).UTC().Format(http.TimeFormat))
		next.ServeHTTP(w, r)
	})
}

// writeJSON answers with v as JSON. Every response of this server is
// marked uncacheable: token responses must be (RFC 6749 §5.1) and nothing
// else benefits from caching in tests.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client hanging up is not our error
}
