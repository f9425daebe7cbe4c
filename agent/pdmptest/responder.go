package pdmptest

import (
	"cmp"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// defaultResponderScopes are the scopes a token needs for the responder's
// FHIR routes unless SetResponderScopes says otherwise. system/*.read and
// system/*.rs grant both.
var defaultResponderScopes = []string{"system/Patient.rs", "system/MedicationDispense.rs"}

const (
	fhirJSON        = "application/fhir+json"
	maxRequestBytes = 1 << 20
	defaultStageTTL = 15 * time.Minute
	bearerRealm     = `Bearer realm="pdmptest"`
)

// malformedBody is the default body of a Malformed fault: a response cut
// off in the middle, as when a proxy drops the connection.
const malformedBody = `{"resourceType":"Parameters","meta":{"profile":["` + profileResponse +
	`"]},"parameter":[{"name":"pdmp-history-data","resource":{"resourceType":"Bundle","type":"collection",` +
	`"entry":[{"fullUrl":"urn:uuid:53a1e123-5b56-44ae-b7e8-36e0b9800f57","resource":{"resourceType":"Patient","na`

// responderState is the PDMP responder half of a Server.
type responderState struct {
	mu       sync.Mutex
	scopes   []string
	faults   []ResponderFault
	log      []*ResponderRequest
	staged   map[string]stagedQuery // pre-stage-retrieval-key → staged request
	stageTTL time.Duration
	reports  map[string]report // report id → report
	respID   ResponseIdentifier
}

// ResponderRequest records one request to the responder's routes (the two
// $pdmp-history paths, $process-message, metadata and reports).
type ResponderRequest struct {
	Time      time.Time // arrival, by the server clock
	Method    string
	Path      string // URL path, e.g. /fhir/Patient/$pdmp-history
	RequestID string // X-Request-ID header as sent, "" if none
	ClientID  string // client the bearer token was issued to; "" if no valid token was sent
	Family    string // requested Patient.name[0].family; "" if none could be read (or not authorized)
	Status    int    // HTTP status answered; 0 while in flight, after a reset, or if the client left during a delay
	Fault     string // injected fault applied: "", "delay", "status", "malformed", "reset" or "expire-token"
}

// ResponderFault replaces or delays the answer to upcoming $pdmp-history
// and $process-message requests. At most one of ResetConnection,
// ExpireTokenFirst and Malformed applies, in that order of precedence; with
// none of them and Status 0 the fault only delays, and the request is then
// answered normally.
type ResponderFault struct {
	Status     int           // status to answer instead; with Malformed, the status of the malformed answer (default 200)
	Delay      time.Duration // wait before answering, cut short if the client goes away
	RetryAfter string        // Retry-After header value, if non-empty
	Body       string        // raw body; default an OperationOutcome fitting Status (or a truncated Parameters for Malformed)
	Times      int           // how many consecutive requests get the fault; 0 means 1

	Malformed        bool // answer application/fhir+json that is not JSON: a truncated Parameters
	ResetConnection  bool // hijack the connection and close it (TCP RST) without answering
	ExpireTokenFirst bool // revoke every token (ExpireTokens) and answer 401 invalid_token
}

// ResponseIdentifier selects what MessageHeader.response.identifier of a
// $process-message response echoes.
type ResponseIdentifier int

const (
	// RequestHeaderID echoes the request MessageHeader.id, as FHIR R4
	// defines the element and the IG's response-message example does (the
	// default). A request MessageHeader without id is rejected.
	RequestHeaderID ResponseIdentifier = iota
	// RequestBundleID echoes the request message Bundle.id, as some
	// servers do. A request message without Bundle.id is rejected.
	RequestBundleID
)

// InjectFault queues f for the responder. Queued faults apply in order, one
// per $pdmp-history or $process-message request, before the bearer token or
// the request is looked at. They are independent of InjectTokenFault.
func (s *Server) InjectFault(f ResponderFault) {
	f.Times = max(f.Times, 1)
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.faults = append(rs.faults, f)
}

func (s *Server) nextResponderFault() (ResponderFault, bool) {
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.faults) == 0 {
		return ResponderFault{}, false
	}
	f := rs.faults[0]
	if rs.faults[0].Times--; rs.faults[0].Times == 0 {
		rs.faults = rs.faults[1:]
	}
	return f, true
}

// Requests returns every request to the responder's routes since the start
// or the last ResetRequests, in arrival order.
func (s *Server) Requests() []ResponderRequest {
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]ResponderRequest, len(rs.log))
	for i, r := range rs.log {
		out[i] = *r
	}
	return out
}

// RequestCount counts the requests Requests would return.
func (s *Server) RequestCount() int {
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.log)
}

// ResetRequests forgets the requests recorded so far. Requests in flight
// are not recorded.
func (s *Server) ResetRequests() {
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.log = nil
}

// SetResponderScopes sets the scopes a bearer token must grant for the
// responder's operations and reports (default system/Patient.rs and
// system/MedicationDispense.rs). With none, any valid token is accepted.
func (s *Server) SetResponderScopes(scopes ...string) error {
	for _, sc := range scopes {
		if p, ok := parseScope(sc); !ok || p.restricted {
			return fmt.Errorf("pdmptest: %q is not an unrestricted SMART system scope", sc)
		}
	}
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.scopes = slices.Clone(scopes)
	return nil
}

// SetPreStageTTL sets how long pre-stage retrieval keys issued from now on
// stay valid, by the server clock (default 15 minutes).
func (s *Server) SetPreStageTTL(d time.Duration) {
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.stageTTL = d
}

// ExpirePreStageKeys forgets every pre-stage retrieval key issued so far.
func (s *Server) ExpirePreStageKeys() {
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	clear(rs.staged)
}

// SetResponseIdentifier selects what response messages echo in
// MessageHeader.response.identifier (default RequestHeaderID).
func (s *Server) SetResponseIdentifier(ri ResponseIdentifier) {
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.respID = ri
}

func (s *Server) registerResponderRoutes() {
	rs := &s.responder
	rs.scopes = slices.Clone(defaultResponderScopes)
	rs.staged = make(map[string]stagedQuery)
	rs.stageTTL = defaultStageTTL
	rs.reports = make(map[string]report)

	s.mux.HandleFunc("POST /fhir/Patient/$pdmp-history", s.observed(s.serveHistory))
	s.mux.HandleFunc("POST /fhir/$pdmp-history", s.observed(s.serveHistory))
	s.mux.HandleFunc("POST /fhir/$process-message", s.observed(s.serveMessage))
	s.mux.HandleFunc("GET /fhir/metadata", s.observed(s.serveMetadata))
	s.mux.HandleFunc("GET /reports/{id}", s.observed(s.serveReport))
}

// exchange is one request to the responder being answered.
type exchange struct {
	s *Server
	w *statusWriter
	r *http.Request

	body     []byte // request body, read first
	bodyErr  error
	ct       string // response media type chosen from Accept
	clientID string
	family   string
	fault    string
}

// observed records every request h serves and echoes X-Request-ID.
func (s *Server) observed(h func(*exchange)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		entry := &ResponderRequest{Time: s.now(), Method: r.Method, Path: r.URL.Path, RequestID: r.Header.Get("X-Request-ID")}
		rs := &s.responder
		rs.mu.Lock()
		rs.log = append(rs.log, entry)
		rs.mu.Unlock()

		if entry.RequestID != "" {
			w.Header().Set("X-Request-ID", entry.RequestID)
		}
		x := &exchange{s: s, w: &statusWriter{ResponseWriter: w}, r: r}
		defer func() { // also after panic(http.ErrAbortHandler)
			rs.mu.Lock()
			defer rs.mu.Unlock()
			entry.ClientID, entry.Family, entry.Fault, entry.Status = x.clientID, x.family, x.fault, x.w.status
		}()
		h(x)
	}
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Hijack.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) serveHistory(x *exchange) {
	x.readBody()
	if x.injectFault() || !x.authorize() || !x.negotiate(true) {
		return
	}
	params, ok := x.decodeBody()
	if !ok {
		return
	}
	x.family = patientFamily(params)
	q, issues := validateRequest(params, "Parameters")
	if len(issues) > 0 {
		x.writeOutcome(http.StatusBadRequest, issues...)
		return
	}
	x.reply(x.answer(q, "Parameters"))
}

// answer runs the pre-stage logic or the family name's scenario for a
// valid request whose Parameters is at FHIRPath prefix.
func (x *exchange) answer(q historyQuery, prefix string) answer {
	switch {
	case q.preStageOnly:
		return preStageAccepted(x.s.stage(x.clientID, q))
	case q.key != "" && !x.s.retrieve(x.clientID, q):
		return answer{http.StatusNotFound, operationOutcome([]issue{errorIssue("not-found",
			paramPath(prefix, "pre-stage-retrieval-key"),
			"pre-stage-retrieval-key is unknown, expired, or was issued for another patient or client; "+
				"send the request again without it")}, "", "", "")}
	}
	return scenarioFor(q.family)(x, q)
}

func (x *exchange) reply(a answer) { x.writeFHIR(a.status, a.body) }

// stagedQuery is a pre-staged request awaiting retrieval.
type stagedQuery struct {
	clientID  string
	family    string
	given     string
	birthDate string
	expires   time.Time
}

func stageMatch(q historyQuery) (family, given string) {
	if len(q.given) > 0 {
		given = q.given[0]
	}
	return strings.ToLower(q.family), strings.ToLower(given)
}

// stage records a pre-stage request and returns its retrieval key.
func (s *Server) stage(clientID string, q historyQuery) string {
	key := newUUID()
	family, given := stageMatch(q)
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.staged[key] = stagedQuery{clientID, family, given, q.birthDate, s.now().Add(rs.stageTTL)}
	return key
}

// retrieve reports whether q's key was staged, has not expired, and was
// issued to the same client for the same patient (family and first given
// name case-insensitively, and birth date). Keys can be used until they
// expire.
func (s *Server) retrieve(clientID string, q historyQuery) bool {
	family, given := stageMatch(q)
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	st, ok := rs.staged[q.key]
	if ok && !s.now().Before(st.expires) {
		delete(rs.staged, q.key)
		return false
	}
	return ok && st == stagedQuery{clientID, family, given, q.birthDate, st.expires}
}

// injectFault applies the next queued fault, if any, and reports whether
// it answered the request.
func (x *exchange) injectFault() bool {
	f, ok := x.s.nextResponderFault()
	if !ok {
		return false
	}
	x.fault = "delay"
	if !sleep(x.r.Context(), f.Delay) {
		return true
	}
	if f.RetryAfter != "" {
		x.w.Header().Set("Retry-After", f.RetryAfter)
	}
	switch {
	case f.ResetConnection:
		x.fault = "reset"
		x.resetConnection()
	case f.ExpireTokenFirst:
		x.fault = "expire-token"
		x.s.ExpireTokens()
		x.unauthorized("invalid_token", "access token expired")
	case f.Malformed:
		x.fault = "malformed"
		x.w.Header().Set("Content-Type", fhirJSON+"; charset=utf-8")
		x.w.Header().Set("Cache-Control", "no-store")
		x.w.WriteHeader(cmp.Or(f.Status, http.StatusOK))
		_, _ = io.WriteString(x.w, cmp.Or(f.Body, malformedBody))
	case f.Status != 0:
		x.fault = "status"
		if f.Status == http.StatusUnauthorized {
			x.w.Header().Set("WWW-Authenticate", bearerRealm+`, error="invalid_token", error_description="injected fault"`)
		}
		if f.Body == "" {
			x.writeOutcome(f.Status, issue{"error", outcomeCodeFor(f.Status), "", "injected fault"})
			break
		}
		ct := http.DetectContentType([]byte(f.Body))
		if json.Valid([]byte(f.Body)) {
			ct = fhirJSON
		}
		x.w.Header().Set("Content-Type", ct)
		x.w.Header().Set("Cache-Control", "no-store")
		x.w.WriteHeader(f.Status)
		_, _ = io.WriteString(x.w, f.Body)
	default:
		return false
	}
	return true
}

// resetConnection closes the client's connection without an answer; with
// SO_LINGER 0 the client sees a TCP reset.
func (x *exchange) resetConnection() {
	conn, _, err := http.NewResponseController(x.w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // HTTP/2: net/http resets the stream
	}
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn() // no close_notify: just drop it
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = raw.Close()
}

// outcomeCodeFor picks the FHIR issue-type for an injected error status.
func outcomeCodeFor(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "invalid"
	case http.StatusUnauthorized:
		return "login"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not-found"
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return "timeout"
	case http.StatusTooManyRequests:
		return "throttled"
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return "transient"
	default:
		return "exception"
	}
}

// authorize checks the bearer token against the responder scopes and
// answers 401 or 403 if it falls short.
func (x *exchange) authorize() bool {
	scheme, token, _ := strings.Cut(x.r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		x.unauthorized("", "no bearer token: send Authorization: Bearer <access token>")
		return false
	}
	info, ok := x.s.Introspect(token)
	if !ok {
		x.unauthorized("invalid_token", "access token unknown, expired or revoked")
		return false
	}
	x.clientID = info.ClientID

	rs := &x.s.responder
	rs.mu.Lock()
	scopes := slices.Clone(rs.scopes)
	rs.mu.Unlock()
	for _, sc := range scopes {
		_, err := x.s.Authorize(x.r, sc)
		switch {
		case err == nil:
		case errors.Is(err, ErrInvalidToken): // expired just now
			x.unauthorized("invalid_token", "access token unknown, expired or revoked")
			return false
		case errors.Is(err, ErrInsufficientScope):
			x.w.Header().Set("WWW-Authenticate", fmt.Sprintf(`%s, error="insufficient_scope", scope=%q`, bearerRealm, strings.Join(scopes, " ")))
			x.writeOutcome(http.StatusForbidden, issue{"error", "forbidden", "",
				fmt.Sprintf("access token scope %q does not grant %s", info.Scope, sc)})
			return false
		default:
			x.writeOutcome(http.StatusInternalServerError, issue{"error", "exception", "", err.Error()})
			return false
		}
	}
	return true
}

// unauthorized answers 401. Following RFC 6750 §3.1, a request without a
// token gets no error code in WWW-Authenticate; a bad token gets
// error="invalid_token".
func (x *exchange) unauthorized(code, desc string) {
	challenge := bearerRealm
	if code != "" {
		challenge += fmt.Sprintf(`, error=%q, error_description=%q`, code, desc)
	}
	x.w.Header().Set("WWW-Authenticate", challenge)
	x.writeOutcome(http.StatusUnauthorized, issue{"error", "login", "", desc})
}

// negotiate checks _format, Accept and, for requests with a body,
// Content-Type.
func (x *exchange) negotiate(hasBody bool) bool {
	if f := x.r.URL.Query().Get("_format"); f != "" {
		switch f {
		case "json", "application/json", fhirJSON:
		default:
			x.writeOutcome(http.StatusNotAcceptable, errorIssue("not-supported", "", "_format %q not supported; this server speaks JSON only", f))
			return false
		}
	}
	ct, ok := acceptable(x.r.Header.Get("Accept"))
	if !ok {
		x.writeOutcome(http.StatusNotAcceptable, errorIssue("not-supported", "",
			"Accept %q excludes application/fhir+json and application/json", x.r.Header.Get("Accept")))
		return false
	}
	x.ct = ct
	if !hasBody {
		return true
	}
	mt, params, err := mime.ParseMediaType(x.r.Header.Get("Content-Type"))
	if err != nil || (mt != fhirJSON && mt != "application/json") {
		x.writeOutcome(http.StatusUnsupportedMediaType, errorIssue("not-supported", "",
			"Content-Type %q not supported; send application/fhir+json", x.r.Header.Get("Content-Type")))
		return false
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		x.writeOutcome(http.StatusUnsupportedMediaType, errorIssue("not-supported", "", "charset %q not supported; FHIR JSON is UTF-8", cs))
		return false
	}
	return true
}

// acceptable picks the response media type from an Accept header.
func acceptable(accept string) (string, bool) {
	if strings.TrimSpace(accept) == "" {
		return fhirJSON, true
	}
	plainJSON := false
	for part := range strings.SplitSeq(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if q, err := strconv.ParseFloat(cmp.Or(params["q"], "1"), 64); err != nil || q <= 0 {
			continue
		}
		switch mt {
		case fhirJSON, "*/*", "application/*":
			return fhirJSON, true
		case "application/json":
			plainJSON = true
		}
	}
	if plainJSON {
		return "application/json", true
	}
	return "", false
}

// readBody reads the request body before anything else, as net/http only
// notices a client going away (and cancels the request context, cutting
// injected delays short) once the body has been read.
func (x *exchange) readBody() {
	x.body, x.bodyErr = io.ReadAll(http.MaxBytesReader(x.w, x.r.Body, maxRequestBytes))
}

// decodeBody decodes the request body, which must be a JSON object.
func (x *exchange) decodeBody() (object, bool) {
	if err := x.bodyErr; err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			x.writeOutcome(http.StatusRequestEntityTooLarge, errorIssue("too-costly", "", "request body over %d bytes", maxRequestBytes))
		} else {
			x.writeOutcome(http.StatusBadRequest, errorIssue("structure", "", "reading request body: %v", err))
		}
		return nil, false
	}
	v, err := decodeJSON(x.body)
	if err != nil {
		x.writeOutcome(http.StatusBadRequest, errorIssue("structure", "", "request body is not JSON: %v", err))
		return nil, false
	}
	res, ok := v.(object)
	if !ok {
		x.writeOutcome(http.StatusBadRequest, errorIssue("structure", "", "request body must be a FHIR resource (a JSON object)"))
		return nil, false
	}
	return res, true
}

func (x *exchange) writeOutcome(status int, issues ...issue) {
	x.writeFHIR(status, operationOutcome(issues, "", "", ""))
}

func (x *exchange) writeFHIR(status int, v any) {
	h := x.w.Header()
	h.Set("Content-Type", cmp.Or(x.ct, fhirJSON)+"; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	x.w.WriteHeader(status)
	_, _ = x.w.Write(marshalFHIR(v))
}

// serveMetadata answers GET [base]/metadata with a small
// CapabilityStatement. It needs no token.
func (s *Server) serveMetadata(x *exchange) {
	if !x.negotiate(false) {
		return
	}
	op := object{"name": "pdmp-history", "definition": historyOperation}
	x.writeFHIR(http.StatusOK, object{
		"resourceType":   "CapabilityStatement",
		"status":         "active",
		"date":           "2024-10-15",
		"publisher":      "pdmptest",
		"kind":           "instance",
		"instantiates":   array{"http://hl7.org/fhir/us/pdmp/CapabilityStatement/pdmp-server"},
		"software":       object{"name": "pdmptest sandbox PDMP responder"},
		"implementation": object{"description": "pdmptest sandbox PDMP responder", "url": s.FHIRBase},
		"fhirVersion":    "4.0.1",
		"format":         array{"json"},
		"rest": array{object{
			"mode": "server",
			"security": object{
				"extension": array{object{
					"url":       "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
					"extension": array{object{"url": "token", "valueUri": s.TokenURL}},
				}},
				"service": array{object{"coding": array{object{
					"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
					"code":   "SMART-on-FHIR",
				}}}},
			},
			"resource": array{object{"type": "Patient", "operation": array{op}}},
			"operation": array{op, object{
				"name":       "process-message",
				"definition": "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
			}},
		}},
		"messaging": array{object{
			"endpoint": array{object{
				"protocol": object{"system": "http://terminology.hl7.org/CodeSystem/message-transport", "code": "http"},
				"address":  s.FHIRBase + "/$process-message",
			}},
			"supportedMessage": array{object{
				"mode":       "receiver",
				"definition": "http://hl7.org/fhir/us/pdmp/MessageDefinition/pdmp-request",
			}},
		}},
	})
}
