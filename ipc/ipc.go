// Package ipc is pdmp-agent's local API: the HTTP interface EHR processes
// on the same machine use to ask for a patient's PDMP history, over
// loopback TCP, a Unix domain socket or a Windows named pipe. One handler
// serves all three; what differs is how a caller proves who it is:
//
//   - Unix socket: the kernel's peer credentials (uid, gid, pid), plus the
//     uid's supplementary groups from the user database.
//   - Named pipe: the client's Windows token (user and group SIDs).
//   - Loopback TCP: "Authorization: Bearer <credential>", where the
//     credential is in a file only the agent's user and the callers' group
//     can read, rewritten at every start.
//
// The identity is checked against a Policy of rules that say which
// operations and responders each caller may use. Before that, every request
// is checked for signs of a browser or a proxy (Origin, Referer, Sec-Fetch-*,
// X-Forwarded-For, Forwarded, a foreign Host), which are refused: those are
// how a web page or an SSRF-prone service would reach a local API.
//
// Requests are FHIR: the caller POSTs Parameters (or a message Bundle) and
// gets the responder's answer, or an OperationOutcome for every error. The
// answer comes synchronously when it arrives within a deadline, otherwise
// as 202 Accepted with a job to poll (the FHIR asynchronous pattern). The
// routes are listed in docs/openapi.yaml, which a test keeps in step.
//
// ipc never logs a request or response body (they hold PHI) nor the bearer
// credential, and never puts either in an error. It imports no other package
// of the agent: the agent implements Backend.
//
// GET /healthz needs an authenticated caller that the policy admits, but no
// particular permission: an unauthenticated probe would let any web page or
// process learn that the agent runs here, and monitors can be given a rule
// like any other caller.
package ipc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options.
const (
	DefaultLocalName = "pdmp-agent"
	DefaultSyncWait  = 25 * time.Second
	DefaultMaxWait   = 60 * time.Second
	DefaultMaxBody   = 1 << 20
)

// Options configure a Server. Backend is required; zero values elsewhere
// take the defaults.
type Options struct {
	Backend Backend
	// Policy is who may call; it can be replaced later with SetPolicy.
	Policy Policy
	// LocalName is the host name accepted in the Host header besides
	// localhost and loopback literals (default DefaultLocalName).
	LocalName string
	// SyncWait is how long a request waits for its answer before getting
	// 202 and a job to poll (default DefaultSyncWait).
	SyncWait time.Duration
	// MaxWait caps the wait a caller may ask for with "Prefer: wait=N"
	// (default DefaultMaxWait).
	MaxWait time.Duration
	// MaxBody is the largest request body accepted (default DefaultMaxBody).
	MaxBody int64
	// Logger receives refusals and backend errors, never bodies or the
	// credential (default: discard).
	Logger *slog.Logger
}

// Server is the local API. It is an http.Handler, but only requests on
// connections accepted by Serve carry the identity it needs: any other
// request is refused.
type Server struct {
	backend   Backend
	localName string
	syncWait  time.Duration
	maxWait   time.Duration
	maxBody   int64
	log       *slog.Logger
	accounts  accounts
	policy    atomic.Pointer[policy]
	mux       *http.ServeMux

	mu      sync.Mutex
	servers []*http.Server
	closed  bool
}

// NewServer checks o and resolves the names in its policy.
func NewServer(o Options) (*Server, error) { return newServer(o, osAccounts{}) }

func newServer(o Options, acct accounts) (*Server, error) {
	if o.Backend == nil {
		return nil, errors.New("ipc: Options.Backend is required")
	}
	s := &Server{
		backend:   o.Backend,
		localName: cmp.Or(o.LocalName, DefaultLocalName),
		syncWait:  cmp.Or(o.SyncWait, DefaultSyncWait),
		maxWait:   cmp.Or(o.MaxWait, DefaultMaxWait),
		maxBody:   cmp.Or(o.MaxBody, DefaultMaxBody),
		log:       o.Logger,
		accounts:  acct,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.SetPolicy(o.Policy); err != nil {
		return nil, err
	}
	s.mux = s.newMux()
	return s, nil
}

// SetPolicy replaces the policy, for a configuration reload: requests
// already authorized finish under the old one. On error the old policy
// stays.
func (s *Server) SetPolicy(p Policy) error {
	cp, err := compilePolicy(p, s.accounts)
	if err != nil {
		return err
	}
	s.policy.Store(cp)
	return nil
}

// Serve accepts connections on l until Shutdown, and returns
// http.ErrServerClosed then.
func (s *Server) Serve(l *Listener) error {
	if l.transport == "" {
		return errors.New("ipc: Serve needs a Listener from ListenTCP, ListenUnix or ListenPipe")
	}
	hs := &http.Server{
		Handler: s,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cs := &connState{transport: l.transport, cred: l.cred}
			if l.peer != nil {
				cs.peer = func() (Caller, error) { return l.peer(c) }
			}
			return context.WithValue(ctx, connKey{}, cs)
		},
		ReadHeaderTimeout: 10 * time.Second,
		// ReadTimeout bounds reading the body; there is no WriteTimeout
		// because a synchronous answer can take up to MaxWait.
		ReadTimeout:    time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	s.servers = append(s.servers, hs)
	s.mu.Unlock()
	return hs.Serve(l)
}

// Shutdown stops every Serve: listeners close at once, requests in flight
// (including those waiting for an answer) may finish until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	servers := slices.Clone(s.servers)
	s.mu.Unlock()
	var errs []error
	for _, hs := range servers {
		errs = append(errs, hs.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

type connKey struct{}

// connState is what a connection's listener knows about its peer. The
// peer is identified on the connection's first request rather than in
// ConnContext, which runs in the accept loop: a slow user database lookup
// would otherwise hold up every other connection.
type connState struct {
	transport Transport
	cred      *Credential // TCP
	peer      func() (Caller, error)

	once   sync.Once
	caller Caller
	err    error
}

func (cs *connState) identify() (Caller, error) {
	cs.once.Do(func() { cs.caller, cs.err = cs.peer() })
	c := cs.caller
	// Each request gets its own copy: handlers and the backend may keep it.
	c.GIDs, c.SIDs = slices.Clone(c.GIDs), slices.Clone(c.SIDs)
	return c, cs.err
}

// ServeHTTP checks, in order: that the connection came through Serve; that
// the request does not come from a browser or proxy; the request id; who
// the caller is; that the policy admits it; then routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	for _, kv := range securityHeaders {
		h.Set(kv[0], kv[1])
	}
	rs := &requestState{requestID: r.Header.Get("X-Request-ID")}
	badRequestID := rs.requestID != "" && !validToken(rs.requestID)
	if rs.requestID == "" || badRequestID {
		rs.requestID = newRequestID()
	}
	h.Set("X-Request-ID", rs.requestID)

	cs, _ := r.Context().Value(connKey{}).(*connState)
	if cs == nil {
		s.refuse(w, r, rs, http.StatusForbidden, codeSecurity, "the connection was not accepted by the agent", "no connection state")
		return
	}
	rs.caller = Caller{Transport: cs.transport, UID: -1}
	if why := browserOrProxy(r.Header); why != "" {
		s.refuse(w, r, rs, http.StatusForbidden, codeSecurity, "requests from browsers or through proxies are refused", why)
		return
	}
	if !hostAllowed(r.Host, s.localName, cs.transport) {
		s.refuse(w, r, rs, http.StatusForbidden, codeSecurity, "the Host header must name the local agent", "foreign Host")
		return
	}
	if badRequestID {
		writeError(w, http.StatusBadRequest, codeInvalid, "X-Request-ID must be 1 to 200 visible ASCII characters")
		return
	}
	if !s.authenticate(w, r, cs, rs) {
		return
	}
	rs.rule = s.policy.Load().match(rs.caller)
	if rs.rule == nil {
		s.refuse(w, r, rs, http.StatusForbidden, codeForbidden, "this caller is not allowed to use the agent", "no policy rule matches")
		return
	}
	rs.caller.Name = rs.rule.name
	// ServeMux would redirect an unclean path with a plain-text body;
	// such a path names no resource here.
	if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p {
		writeError(w, http.StatusNotFound, codeNotFound, "no such route")
		return
	}
	s.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, rs)))
}

// authenticate establishes rs.caller, or answers and returns false.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, cs *connState, rs *requestState) bool {
	if cs.transport == TransportTCP {
		token, ok := bearer(r.Header.Get("Authorization"))
		if !ok || !cs.cred.matches(token) {
			why := "missing bearer credential"
			if ok {
				why = "wrong bearer credential"
			}
			w.Header().Set("WWW-Authenticate", cs.cred.challenge())
			s.refuse(w, r, rs, http.StatusUnauthorized, codeLogin, "send Authorization: Bearer with the contents of the credential file", why)
			return false
		}
		rs.caller.Credential = true
		return true
	}
	c, err := cs.identify()
	if err != nil {
		s.refuse(w, r, rs, http.StatusForbidden, codeSecurity, "the agent could not identify the caller", err.Error())
		return false
	}
	rs.caller = c
	return true
}

// refuse logs why a request was refused (never its content) and answers
// with an OperationOutcome that says as little as the caller needs.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, rs *requestState, status int, code, diagnostics, why string) {
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "ipc: request refused",
		slog.Int("status", status), slog.String("reason", why),
		slog.String("request_id", rs.requestID), slog.String("method", r.Method), slog.String("route", r.Pattern),
		slog.String("transport", string(rs.caller.Transport)), slog.Int("uid", rs.caller.UID), slog.Int("pid", rs.caller.PID),
		slog.String("caller", rs.caller.Name))
	writeError(w, status, code, diagnostics)
}

// backendError answers for an error from the Backend; notFound says what
// ErrNotFound means on this route.
func (s *Server) backendError(w http.ResponseWriter, r *http.Request, rs *requestState, err error, notFound string) {
	var oe OutcomeError
	switch {
	case errors.As(err, &oe):
		status, body := oe.HTTPStatus(), oe.OperationOutcome()
		if status < 400 || status > 599 {
			status = http.StatusInternalServerError
		}
		if len(body) == 0 {
			body = outcome("error", codeException, http.StatusText(status))
		}
		writeBody(w, status, fhirJSON, body)
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, codeNotFound, notFound)
	case errors.Is(err, ErrFinished):
		writeError(w, http.StatusConflict, codeConflict, "the job has already finished")
	case r.Context().Err() != nil:
		// The caller went away; there is nobody to answer.
	default:
		s.log.LogAttrs(r.Context(), slog.LevelError, "ipc: backend error",
			slog.String("request_id", rs.requestID), slog.String("route", r.Pattern), slog.String("caller", rs.caller.Name),
			slog.Any("err", err))
		writeError(w, http.StatusInternalServerError, codeException,
			fmt.Sprintf("internal error; the agent's log has the details under request id %s", rs.requestID))
	}
}
