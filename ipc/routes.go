package ipc

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// route is one entry of the API. The table is the single source of the
// routes: the mux is built from it, and a test checks docs/openapi.yaml
// against it.
type route struct {
	method, pattern string
	// perm is the permission the caller's rule needs; "" admits any
	// caller the policy admits.
	perm  Permission
	serve func(s *Server, w http.ResponseWriter, r *http.Request, rs *requestState)
}

var routes = []route{
	{"GET", "/healthz", "", (*Server).serveHealth},
	{"GET", "/status", PermStatus, (*Server).serveStatus},
	{"GET", "/fhir/{responder}/metadata", PermQuery, (*Server).serveMetadata},
	{"POST", "/fhir/{responder}/Patient/$pdmp-history", PermQuery, submit(OpPDMPHistory)},
	{"POST", "/fhir/{responder}/$pdmp-history", PermQuery, submit(OpPDMPHistory)},
	{"POST", "/fhir/{responder}/$process-message", PermQuery, submit(OpProcessMessage)},
	{"GET", "/jobs/{id}", PermJobs, (*Server).serveJob},
	{"DELETE", "/jobs/{id}", PermJobs, (*Server).serveCancel},
	{"GET", "/jobs/{id}/report", PermJobs, (*Server).serveReport},
}

func submit(op string) func(*Server, http.ResponseWriter, *http.Request, *requestState) {
	return func(s *Server, w http.ResponseWriter, r *http.Request, rs *requestState) {
		s.serveSubmit(w, r, rs, op)
	}
}

// newMux registers the routes, and for each path a catch-all that answers
// 405 with an OperationOutcome, and for the rest 404: ServeMux's own
// answers are plain text, and every error here is FHIR.
func (s *Server) newMux() *http.ServeMux {
	mux := http.NewServeMux()
	allow := map[string][]string{}
	for _, rt := range routes {
		mux.Handle(rt.method+" "+rt.pattern, s.checkRoute(rt))
		allow[rt.pattern] = append(allow[rt.pattern], rt.method)
		if rt.method == http.MethodGet {
			allow[rt.pattern] = append(allow[rt.pattern], http.MethodHead)
		}
	}
	for pattern, methods := range allow {
		allowed := strings.Join(methods, ", ")
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allowed)
			writeError(w, http.StatusMethodNotAllowed, codeNotSupported, "method not allowed; use "+allowed)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeNotFound, "no such route")
	})
	return mux
}

// checkRoute wraps a route with its permission check and the validation
// of its path values.
func (s *Server) checkRoute(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rs := r.Context().Value(callerKey{}).(*requestState)
		if rt.perm != "" && !rs.rule.permits(rt.perm) {
			s.refuse(w, r, rs, http.StatusForbidden, codeForbidden, "this caller may not use "+string(rt.perm), "operation not permitted")
			return
		}
		if strings.Contains(rt.pattern, "{responder}") {
			name := r.PathValue("responder")
			if !validName(name, 64) {
				writeError(w, http.StatusNotFound, codeNotFound, "unknown responder")
				return
			}
			if !rs.rule.mayQuery(name) {
				s.refuse(w, r, rs, http.StatusForbidden, codeForbidden, "this caller may not query this responder", "responder not permitted")
				return
			}
		}
		if strings.Contains(rt.pattern, "{id}") && !validName(r.PathValue("id"), 128) {
			writeError(w, http.StatusNotFound, codeNotFound, "unknown job")
			return
		}
		rt.serve(s, w, r, rs)
	})
}

// validName accepts the names responders and jobs have: short, and made
// of characters that need no escaping anywhere they end up.
func validName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request, rs *requestState) {
	writeBody(w, http.StatusOK, "text/plain; charset=utf-8", []byte("ok\n"))
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request, rs *requestState) {
	b, err := s.backend.Status(r.Context())
	if err != nil {
		s.backendError(w, r, rs, err, "no status")
		return
	}
	writeBody(w, http.StatusOK, plainJSON, b)
}

func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request, rs *requestState) {
	b, err := s.backend.Capabilities(r.Context(), r.PathValue("responder"))
	if err != nil {
		s.backendError(w, r, rs, err, "unknown responder")
		return
	}
	writeBody(w, http.StatusOK, fhirJSON, b)
}

// serveSubmit decodes a FHIR operation request just enough to hand it on
// (content type, size, well-formed JSON), submits it, and waits for the
// answer until the deadline.
func (s *Server) serveSubmit(w http.ResponseWriter, r *http.Request, rs *requestState, op string) {
	summary, ok := parseSummary(r.URL.Query())
	if !ok {
		writeError(w, http.StatusBadRequest, codeNotSupported, "_summary must be pdmp or false")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || (mt != fhirJSON && mt != plainJSON) {
		writeError(w, http.StatusUnsupportedMediaType, codeNotSupported, "Content-Type must be application/fhir+json or application/json")
		return
	}
	tooLarge := "the body is larger than " + strconv.FormatInt(s.maxBody, 10) + " bytes"
	if r.ContentLength > s.maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, codeTooLong, tooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, codeTooLong, tooLarge)
		} else {
			writeError(w, http.StatusBadRequest, codeStructure, "the body could not be read")
		}
		return
	}
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, codeStructure, "the body is not well-formed JSON")
		return
	}
	idem := r.Header.Get("Idempotency-Key")
	if idem != "" && !validToken(idem) {
		writeError(w, http.StatusBadRequest, codeInvalid, "Idempotency-Key must be 1 to 200 visible ASCII characters")
		return
	}
	pref := parsePrefer(r.Header.Values("Prefer"))

	ctx := r.Context()
	st, err := s.backend.Submit(ctx, Submission{
		Caller:         rs.caller,
		Responder:      r.PathValue("responder"),
		Operation:      op,
		Body:           body,
		IdempotencyKey: idem,
		RequestID:      rs.requestID,
		Summary:        summary,
	})
	if err != nil {
		s.backendError(w, r, rs, err, "unknown responder")
		return
	}
	wait := s.syncWait
	if pref.wait >= 0 {
		wait = min(pref.wait, s.maxWait)
	}
	if st.State.Terminal() || pref.async || wait == 0 {
		writeJob(w, st)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	fin, err := s.backend.Wait(wctx, st.ID)
	switch {
	case err == nil:
		writeJob(w, fin)
	case wctx.Err() != nil && ctx.Err() == nil:
		// Not ready in time: hand over the job to poll. The job goes on.
		if fin.ID == "" {
			fin = st
		}
		writeJob(w, fin)
	default:
		s.backendError(w, r, rs, err, "unknown job")
	}
}

func (s *Server) serveJob(w http.ResponseWriter, r *http.Request, rs *requestState) {
	st, err := s.backend.Job(r.Context(), r.PathValue("id"), rs.caller)
	if err != nil {
		s.backendError(w, r, rs, err, "unknown job")
		return
	}
	writeJob(w, st)
}

func (s *Server) serveReport(w http.ResponseWriter, r *http.Request, rs *requestState) {
	st, err := s.backend.Report(r.Context(), r.PathValue("id"), rs.caller)
	if err != nil {
		s.backendError(w, r, rs, err, "unknown job")
		return
	}
	writeJob(w, st)
}

func (s *Server) serveCancel(w http.ResponseWriter, r *http.Request, rs *requestState) {
	if err := s.backend.Cancel(r.Context(), r.PathValue("id"), rs.caller); err != nil {
		s.backendError(w, r, rs, err, "unknown job")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeJob answers with a job's state. X-Job-State tells a client whether
// a status came from the job (a responder's own 404, say) or from the API
// (an unknown job), which the status alone cannot.
func writeJob(w http.ResponseWriter, st JobStatus) {
	h := w.Header()
	h.Set("X-Job-State", string(st.State))
	var status int
	var body []byte
	switch st.State {
	case StateQueued, StateInflight:
		loc := "/jobs/" + url.PathEscape(st.ID)
		h.Set("Content-Location", loc)
		h.Set("X-Progress", cmp.Or(st.Progress, string(st.State)))
		h.Set("Retry-After", strconv.Itoa(retryAfterSeconds(st.RetryAfter)))
		writeBody(w, http.StatusAccepted, fhirJSON,
			outcome("information", codeInformational, "the request is being processed; GET "+loc+" for the answer"))
		return
	case StateDone:
		status, body = http.StatusOK, nil
	case StateFailed, StateDead:
		status, body = http.StatusBadGateway, outcome("error", codeException, "the request failed")
	case StateCancelled:
		status, body = http.StatusGone, outcome("error", codeDeleted, "the job was cancelled")
	case StateGone:
		status, body = http.StatusGone, outcome("error", codeDeleted, "the result was delivered once and then destroyed")
	default:
		writeError(w, http.StatusInternalServerError, codeException, "the agent reported an unknown job state")
		return
	}
	ct := fhirJSON
	if len(st.Body) > 0 || st.State == StateDone {
		body, ct = st.Body, cmp.Or(st.ContentType, fhirJSON)
	}
	if st.HTTPStatus >= 200 && st.HTTPStatus <= 599 {
		status = st.HTTPStatus
	}
	writeBody(w, status, ct, body)
}

// retryAfterSeconds rounds d up to whole seconds, at least one: Retry-After
// has no finer unit, and zero would invite a busy loop.
func retryAfterSeconds(d time.Duration) int {
	d = max(time.Second, min(d, time.Hour))
	return int((d + time.Second - 1) / time.Second)
}

// parseSummary reads _summary: "pdmp" asks for the compact summary;
// absent or "false" for the full answer. Other FHIR _summary values are
// refused rather than ignored, so nobody gets a full answer believing it
// is a summary.
func parseSummary(q url.Values) (summary, ok bool) {
	switch q.Get("_summary") {
	case "pdmp":
		return true, true
	case "", "false":
		return false, true
	}
	return false, false
}

// prefer is what ipc honours of the Prefer header (RFC 7240).
type prefer struct {
	async bool
	wait  time.Duration // -1 when not given
}

func parsePrefer(values []string) prefer {
	p := prefer{wait: -1}
	for _, v := range values {
		for _, pref := range strings.Split(v, ",") {
			pref, _, _ = strings.Cut(pref, ";") // drop parameters
			name, val, _ := strings.Cut(strings.TrimSpace(pref), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "respond-async":
				p.async = true
			case "wait":
				n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`))
				if err == nil && n >= 0 {
					p.wait = time.Duration(min(n, 86400)) * time.Second
				}
			}
		}
	}
	return p
}
