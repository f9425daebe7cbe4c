package ipc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tests in this file drive Server.ServeHTTP directly, with the
// connection state a listener would attach; transport_test.go runs the
// same handler over real sockets.

var testCred = &Credential{path: "/run/pdmp-agent/api.credential", secret: []byte("s3cret-credential")}

func testServer(t testing.TB, b Backend, rules ...Rule) *Server {
	t.Helper()
	if len(rules) == 0 {
		rules = []Rule{
			{Name: "scripts", TCPCredential: true, Responders: []string{"*"}, Operations: []Permission{PermQuery, PermJobs, PermStatus}},
			{Name: "ehr", Users: []string{"1000"}, Groups: []string{"2000"}, SIDs: []string{"S-1-5-21-1-2-3-1001"}, Responders: []string{"state-a"}, Operations: []Permission{PermQuery, PermJobs}},
		}
	}
	s, err := newServer(Options{Backend: b, Policy: Policy{Rules: rules}, SyncWait: time.Second}, testAccounts{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testAccounts resolves numeric ids, SID strings and "root" alike on
// every OS, so that these tests do not depend on the machine's accounts.
type testAccounts struct{}

func (testAccounts) user(s string) (int, string, error)  { return testAccount(s) }
func (testAccounts) group(s string) (int, string, error) { return testAccount(s) }

func testAccount(s string) (int, string, error) {
	if strings.HasPrefix(s, "S-1-") {
		return -1, s, nil
	}
	if s == "root" {
		return 0, "", nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, "", nil
	}
	return 0, "", errors.New("no such account")
}

func tcpConn() *connState { return &connState{transport: TransportTCP, cred: testCred} }

func unixConn(uid int, gids ...int) *connState {
	return &connState{transport: TransportUnix, peer: func() (Caller, error) {
		return Caller{Transport: TransportUnix, UID: uid, GIDs: gids, PID: 4242}, nil
	}}
}

func pipeConn(sids ...string) *connState {
	return &connState{transport: TransportPipe, peer: func() (Caller, error) {
		return Caller{Transport: TransportPipe, UID: -1, SIDs: sids, PID: 4242}, nil
	}}
}

func serve(s *Server, cs *connState, r *http.Request) *httptest.ResponseRecorder {
	if cs != nil {
		r = r.WithContext(context.WithValue(r.Context(), connKey{}, cs))
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func newRequest(method, target, body string, hdr ...string) *http.Request {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Host = "127.0.0.1:7333"
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	return r
}

func authed(method, target, body string, hdr ...string) *http.Request {
	return newRequest(method, target, body, append([]string{"Authorization", "Bearer s3cret-credential"}, hdr...)...)
}

// checkOutcome fails unless w is an OperationOutcome with the given status.
func checkOutcome(t testing.TB, w *httptest.ResponseRecorder, status int) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %s", w.Code, status, w.Body)
	}
	if err := isOutcome(w.Header().Get("Content-Type"), w.Body.Bytes()); err != nil {
		t.Fatal(err)
	}
}

func isOutcome(contentType string, body []byte) error {
	if contentType != fhirJSON {
		return errors.New("Content-Type " + contentType + ", want " + fhirJSON)
	}
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct{ Severity, Code string }
	}
	if err := json.Unmarshal(body, &oo); err != nil {
		return err
	}
	if oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 || oo.Issue[0].Severity == "" || oo.Issue[0].Code == "" {
		return errors.New("not an OperationOutcome with an issue: " + string(body))
	}
	return nil
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	s := testServer(t, &FakeBackend{})
	for _, r := range []*http.Request{
		authed("GET", "/healthz", ""),
		newRequest("GET", "/healthz", ""),                         // 401
		authed("GET", "/healthz", "", "Origin", "https://x.test"), // 403
		authed("GET", "/nope", ""),                                // 404
	} {
		w := serve(s, tcpConn(), r)
		for _, kv := range securityHeaders {
			if got := w.Header().Get(kv[0]); got != kv[1] {
				t.Errorf("%s %s (%d): %s = %q, want %q", r.Method, r.URL, w.Code, kv[0], got, kv[1])
			}
		}
		if w.Header().Get("X-Request-ID") == "" {
			t.Errorf("%s: no X-Request-ID", r.URL)
		}
	}
}

func TestBrowserAndProxyGuards(t *testing.T) {
	s := testServer(t, &FakeBackend{})
	for name, hdr := range map[string][]string{
		"origin":          {"Origin", "https://evil.example"},
		"null origin":     {"Origin", "null"},
		"referer":         {"Referer", "https://evil.example/page"},
		"x-forwarded-for": {"X-Forwarded-For", "192.0.2.1"},
		"forwarded":       {"Forwarded", "for=192.0.2.1"},
		"sec-fetch":       {"Sec-Fetch-Mode", "no-cors"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, cs := range []*connState{tcpConn(), unixConn(1000)} {
				checkOutcome(t, serve(s, cs, authed("GET", "/healthz", "", hdr...)), http.StatusForbidden)
			}
		})
	}
}

func TestHostAllowed(t *testing.T) {
	for _, c := range []struct {
		host string
		t    Transport
		want bool
	}{
		{"127.0.0.1:7333", TransportTCP, true},
		{"127.0.0.1", TransportTCP, true},
		{"127.1.2.3:80", TransportTCP, true},
		{"[::1]:7333", TransportTCP, true},
		{"[::1]", TransportTCP, true},
		{"localhost:7333", TransportTCP, true},
		{"LOCALHOST", TransportTCP, true},
		{"pdmp-agent", TransportTCP, true},
		{"pdmp-agent:7333", TransportTCP, true},
		{"", TransportTCP, false},
		{"", TransportUnix, true},
		{"", TransportPipe, true},
		{"localhost", TransportUnix, true},
		{"pdmp-agent", TransportPipe, true},
		{"attacker.example", TransportTCP, false},
		{"attacker.example:7333", TransportUnix, false},
		{"localhost.attacker.example", TransportTCP, false},
		{"pdmp-agent.attacker.example", TransportTCP, false},
		{"192.0.2.1:7333", TransportTCP, false},
		{"0.0.0.0:7333", TransportTCP, false},
		{"[::]:7333", TransportTCP, false},
	} {
		if got := hostAllowed(c.host, DefaultLocalName, c.t); got != c.want {
			t.Errorf("hostAllowed(%q, %s) = %v, want %v", c.host, c.t, got, c.want)
		}
	}
	s := testServer(t, &FakeBackend{})
	r := authed("GET", "/healthz", "")
	r.Host = "attacker.example"
	checkOutcome(t, serve(s, tcpConn(), r), http.StatusForbidden)
}

func TestAuthentication(t *testing.T) {
	s := testServer(t, &FakeBackend{})

	for name, auth := range map[string]string{"missing": "", "wrong": "Bearer guess", "basic": "Basic czNjcmV0LWNyZWRlbnRpYWw="} {
		w := serve(s, tcpConn(), newRequest("GET", "/healthz", "", "Authorization", auth))
		checkOutcome(t, w, http.StatusUnauthorized)
		want := `Bearer realm="pdmp-agent", credential_file="/run/pdmp-agent/api.credential"`
		if got := w.Header().Get("WWW-Authenticate"); got != want {
			t.Errorf("%s: WWW-Authenticate = %q, want %q", name, got, want)
		}
	}
	if w := serve(s, tcpConn(), authed("GET", "/healthz", "")); w.Code != http.StatusOK || w.Body.String() != "ok\n" {
		t.Errorf("with the credential: %d %q", w.Code, w.Body)
	}

	// Unix: the uid, or any of the groups, must match a rule.
	for _, c := range []struct {
		cs   *connState
		want int
	}{
		{unixConn(1000, 1000), http.StatusOK},
		{unixConn(1001, 1001, 2000), http.StatusOK},
		{unixConn(1001, 1001), http.StatusForbidden},
		{unixConn(0, 0), http.StatusForbidden}, // root is not implicitly admitted
		{pipeConn("S-1-5-21-1-2-3-1001"), http.StatusOK},
		{pipeConn("S-1-5-21-1-2-3-1002", "S-1-5-32-545"), http.StatusForbidden},
	} {
		w := serve(s, c.cs, newRequest("GET", "/healthz", ""))
		if c.want != http.StatusOK {
			checkOutcome(t, w, c.want)
		} else if w.Code != c.want {
			t.Errorf("%+v: %d, want %d", c.cs, w.Code, c.want)
		}
	}

	// A peer that cannot be identified is refused, as is a request that
	// did not come through Serve at all.
	broken := &connState{transport: TransportUnix, peer: func() (Caller, error) { return Caller{}, errors.New("no creds") }}
	checkOutcome(t, serve(s, broken, newRequest("GET", "/healthz", "")), http.StatusForbidden)
	checkOutcome(t, serve(s, nil, authed("GET", "/healthz", "")), http.StatusForbidden)
}

func TestPermissions(t *testing.T) {
	f := &FakeBackend{}
	s := testServer(t, f)
	ehr := unixConn(1000)
	// ehr may query state-a, and use jobs, but not status nor state-b.
	checkOutcome(t, serve(s, ehr, newRequest("GET", "/status", "")), http.StatusForbidden)
	checkOutcome(t, serve(s, ehr, newRequest("POST", "/fhir/state-b/$pdmp-history", "{}", "Content-Type", fhirJSON)), http.StatusForbidden)
	checkOutcome(t, serve(s, ehr, newRequest("GET", "/fhir/state-b/metadata", "")), http.StatusForbidden)
	if w := serve(s, ehr, newRequest("POST", "/fhir/state-a/$pdmp-history", "{}", "Content-Type", fhirJSON)); w.Code != http.StatusOK {
		t.Fatalf("query: %d %s", w.Code, w.Body)
	}
	if got := f.Submissions(); len(got) != 1 || got[0].Caller.Name != "ehr" || got[0].Caller.UID != 1000 || got[0].Caller.PID != 4242 {
		t.Errorf("submissions: %+v", got)
	}
	// The TCP rule may do everything.
	if w := serve(s, tcpConn(), authed("GET", "/status", "")); w.Code != http.StatusOK || w.Header().Get("Content-Type") != plainJSON {
		t.Errorf("status: %d %s", w.Code, w.Body)
	}
}

func TestRouting(t *testing.T) {
	s := testServer(t, &FakeBackend{})
	for _, c := range []struct {
		method, target string
		want           int
	}{
		{"GET", "/nope", 404},
		{"GET", "/jobs/x/", 404},
		{"GET", "/jobs//x", 404}, // ServeMux would redirect
		{"GET", "/fhir/state-a/../../status", 404},
		{"PUT", "/jobs/job-1", 405},
		{"GET", "/fhir/state-a/$pdmp-history", 405},
		{"POST", "/healthz", 405},
		{"GET", "/jobs/job-404", 404},
		{"GET", "/jobs/bad%20id", 404},
		{"GET", "/fhir/nowhere/metadata", 404},
		{"GET", "/fhir/bad%2Fname/metadata", 404},
	} {
		w := serve(s, tcpConn(), authed(c.method, c.target, ""))
		checkOutcome(t, w, c.want)
		if c.want == 405 && w.Header().Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", c.method, c.target)
		}
	}
	w := serve(s, tcpConn(), authed("GET", "/fhir/state-a/metadata", ""))
	if w.Code != 200 || !strings.Contains(w.Body.String(), "CapabilityStatement") {
		t.Errorf("metadata: %d %s", w.Code, w.Body)
	}
}

func TestDecoding(t *testing.T) {
	f := &FakeBackend{}
	s, err := newServer(Options{Backend: f, MaxBody: 64, Policy: Policy{Rules: []Rule{
		{Name: "scripts", TCPCredential: true, Responders: []string{"*"}, Operations: []Permission{PermQuery}},
	}}}, testAccounts{})
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string, hdr ...string) *httptest.ResponseRecorder {
		return serve(s, tcpConn(), authed("POST", "/fhir/state-a/Patient/$pdmp-history", body, hdr...))
	}
	big := `{"x":"` + strings.Repeat("a", 100) + `"}`
	checkOutcome(t, post(big, "Content-Type", fhirJSON), http.StatusRequestEntityTooLarge)
	// Without a Content-Length the limit is found while reading.
	r := authed("POST", "/fhir/state-a/$pdmp-history", "", "Content-Type", fhirJSON)
	r.Body, r.ContentLength = io.NopCloser(strings.NewReader(big)), -1
	checkOutcome(t, serve(s, tcpConn(), r), http.StatusRequestEntityTooLarge)

	checkOutcome(t, post(`{"resourceType":`, "Content-Type", fhirJSON), http.StatusBadRequest)
	checkOutcome(t, post(``, "Content-Type", fhirJSON), http.StatusBadRequest)
	checkOutcome(t, post(`{}`, "Content-Type", "application/xml"), http.StatusUnsupportedMediaType)
	checkOutcome(t, post(`{}`, "Content-Type", "text/plain"), http.StatusUnsupportedMediaType)
	checkOutcome(t, post(`{}`), http.StatusUnsupportedMediaType)
	checkOutcome(t, serve(s, tcpConn(), authed("POST", "/fhir/state-a/$pdmp-history?_summary=true", "{}", "Content-Type", fhirJSON)), http.StatusBadRequest)
	checkOutcome(t, post(`{}`, "Content-Type", fhirJSON, "Idempotency-Key", "has space"), http.StatusBadRequest)
	checkOutcome(t, post(`{}`, "Content-Type", fhirJSON, "X-Request-ID", strings.Repeat("x", 201)), http.StatusBadRequest)
	if n := len(f.Submissions()); n != 0 {
		t.Fatalf("%d bad requests reached the backend", n)
	}

	for _, ct := range []string{fhirJSON, plainJSON, "application/fhir+json; charset=utf-8", "Application/JSON"} {
		if w := post(`{"resourceType":"Parameters"}`, "Content-Type", ct); w.Code != http.StatusOK {
			t.Errorf("Content-Type %q: %d %s", ct, w.Code, w.Body)
		}
	}
	w := serve(s, tcpConn(), authed("POST", "/fhir/state-a/$process-message?_summary=pdmp", "{}", "Content-Type", fhirJSON, "Idempotency-Key", "k1", "X-Request-ID", "r1"))
	if w.Code != 200 || w.Header().Get("X-Request-ID") != "r1" {
		t.Fatalf("%d %v", w.Code, w.Header())
	}
	subs := f.Submissions()
	last := subs[len(subs)-1]
	if last.Operation != OpProcessMessage || !last.Summary || last.IdempotencyKey != "k1" || last.RequestID != "r1" || string(last.Body) != "{}" || last.Responder != "state-a" {
		t.Errorf("submission %+v", last)
	}
	if subs[0].Summary || subs[0].Operation != OpPDMPHistory || subs[0].RequestID == "" {
		t.Errorf("submission %+v", subs[0])
	}
}

func TestBackendErrors(t *testing.T) {
	f := &FakeBackend{SubmitErr: FakeOutcomeError{Status: 422, Body: `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"required","diagnostics":"patient is required"}]}`}}
	s := testServer(t, f)
	post := func() *httptest.ResponseRecorder {
		return serve(s, tcpConn(), authed("POST", "/fhir/state-a/$pdmp-history", "{}", "Content-Type", fhirJSON))
	}
	w := post()
	checkOutcome(t, w, 422)
	if !strings.Contains(w.Body.String(), "patient is required") {
		t.Errorf("the backend's outcome was not passed on: %s", w.Body)
	}
	f.SubmitErr = errors.New("disk full")
	w = post()
	checkOutcome(t, w, 500)
	if strings.Contains(w.Body.String(), "disk full") {
		t.Error("an internal error text reached the caller")
	}
	f.SubmitErr = nil
	checkOutcome(t, serve(s, tcpConn(), authed("POST", "/fhir/state-b/$pdmp-history", "{}", "Content-Type", fhirJSON)), 404)
}

func TestJobAnswers(t *testing.T) {
	f := &FakeBackend{Hold: true}
	s := testServer(t, f)
	get := func(id string) *httptest.ResponseRecorder { return serve(s, tcpConn(), authed("GET", "/jobs/"+id, "")) }
	submit := func() string {
		w := serve(s, tcpConn(), authed("POST", "/fhir/state-a/$pdmp-history", "{}", "Content-Type", fhirJSON, "Prefer", "respond-async"))
		if w.Code != 202 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		return strings.TrimPrefix(w.Header().Get("Content-Location"), "/jobs/")
	}

	id := submit()
	w := get(id)
	if w.Code != 202 || w.Header().Get("X-Progress") != "queued, attempt 1" || w.Header().Get("Retry-After") != "1" || w.Header().Get("X-Job-State") != "queued" {
		t.Errorf("pending: %d %v", w.Code, w.Header())
	}
	f.Release(id)
	if w := get(id); w.Code != 200 || w.Body.String() != FakeAnswer || w.Header().Get("X-Job-State") != "done" {
		t.Errorf("done: %d %v %s", w.Code, w.Header(), w.Body)
	}

	f.Answer = func(Submission) JobStatus {
		return JobStatus{State: StateFailed, HTTPStatus: 403, Body: outcome("error", "forbidden", "the responder refused")}
	}
	id = submit()
	f.Release(id)
	checkOutcome(t, get(id), 403)

	f.Answer = func(Submission) JobStatus { return JobStatus{State: StateDead} }
	id = submit()
	f.Release(id)
	checkOutcome(t, get(id), 502)

	f.Answer, f.DeliverOnce = nil, true
	id = submit()
	f.Release(id)
	if w := get(id); w.Code != 200 {
		t.Errorf("first delivery: %d", w.Code)
	}
	w = get(id)
	checkOutcome(t, w, 410)
	if w.Header().Get("X-Job-State") != "gone" {
		t.Errorf("X-Job-State %q", w.Header().Get("X-Job-State"))
	}

	id = submit()
	if w := serve(s, tcpConn(), authed("DELETE", "/jobs/"+id, "")); w.Code != 204 {
		t.Errorf("cancel: %d %s", w.Code, w.Body)
	}
	checkOutcome(t, serve(s, tcpConn(), authed("DELETE", "/jobs/"+id, "")), 409)
	checkOutcome(t, get(id), 410)
	checkOutcome(t, serve(s, tcpConn(), authed("DELETE", "/jobs/job-404", "")), 404)
	// Jobs are private to the rule that submitted them.
	checkOutcome(t, serve(s, unixConn(1000), newRequest("GET", "/jobs/"+id, "")), 404)
}

func TestParsePrefer(t *testing.T) {
	for _, c := range []struct {
		in    []string
		async bool
		wait  time.Duration
	}{
		{nil, false, -1},
		{[]string{"respond-async"}, true, -1},
		{[]string{"wait=10"}, false, 10 * time.Second},
		{[]string{"respond-async, wait=5"}, true, 5 * time.Second},
		{[]string{"return=minimal", "Wait=3"}, false, 3 * time.Second},
		{[]string{`wait="7"`}, false, 7 * time.Second},
		{[]string{"wait=-1", "wait=x"}, false, -1},
		{[]string{"wait=99999999999999999999"}, false, -1},
		{[]string{"wait=999999999"}, false, 86400 * time.Second},
		{[]string{"respond-async; foo=bar"}, true, -1},
	} {
		p := parsePrefer(c.in)
		if p.async != c.async || p.wait != c.wait {
			t.Errorf("parsePrefer(%q) = %+v, want async %v wait %v", c.in, p, c.async, c.wait)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, -time.Second: 1, 100 * time.Millisecond: 1, 1500 * time.Millisecond: 2, 5 * time.Second: 5, 48 * time.Hour: 3600} {
		if got := retryAfterSeconds(d); got != want {
			t.Errorf("retryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestPolicyErrors(t *testing.T) {
	ops := []Permission{PermQuery}
	for name, p := range map[string]Policy{
		"no name":          {Rules: []Rule{{TCPCredential: true, Operations: ops}}},
		"duplicate":        {Rules: []Rule{{Name: "a", TCPCredential: true, Operations: ops}, {Name: "a", TCPCredential: true, Operations: ops}}},
		"matches nobody":   {Rules: []Rule{{Name: "a", Operations: ops}}},
		"no operations":    {Rules: []Rule{{Name: "a", TCPCredential: true}}},
		"unknown op":       {Rules: []Rule{{Name: "a", TCPCredential: true, Operations: []Permission{"admin"}}}},
		"unknown user":     {Rules: []Rule{{Name: "a", Users: []string{"no-such-user-pdmp"}, Operations: ops}}},
		"unknown group":    {Rules: []Rule{{Name: "a", Groups: []string{"no-such-group-pdmp"}, Operations: ops}}},
		"bad SID":          {Rules: []Rule{{Name: "a", SIDs: []string{"BA)(A;;GA;;;WD"}, Operations: ops}}},
		"negative user id": {Rules: []Rule{{Name: "a", Users: []string{"-1"}, Operations: ops}}},
	} {
		if _, err := compilePolicy(p, testAccounts{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	p, err := compilePolicy(Policy{Rules: []Rule{{Name: "root", Users: []string{"root"}, SIDs: []string{"s-1-5-18"}, Operations: ops}}}, testAccounts{})
	if err != nil {
		t.Fatal(err)
	}
	if p.match(Caller{Transport: TransportUnix, UID: 0}) == nil || p.match(Caller{Transport: TransportPipe, SIDs: []string{"S-1-5-18"}}) == nil {
		t.Error("root by name, or SYSTEM by lower-case SID, did not match")
	}
	if p.match(Caller{Transport: TransportTCP, Credential: true}) != nil {
		t.Error("a TCP caller matched a rule without tcp_credential")
	}
}

func TestSetPolicyKeepsOldOnError(t *testing.T) {
	s := testServer(t, &FakeBackend{})
	if err := s.SetPolicy(Policy{Rules: []Rule{{Name: "bad"}}}); err == nil {
		t.Fatal("bad policy accepted")
	}
	if w := serve(s, tcpConn(), authed("GET", "/healthz", "")); w.Code != 200 {
		t.Errorf("old policy lost: %d", w.Code)
	}
	if err := s.SetPolicy(Policy{}); err != nil {
		t.Fatal(err)
	}
	checkOutcome(t, serve(s, tcpConn(), authed("GET", "/healthz", "")), 403)
}

// FuzzHandler throws arbitrary methods, paths, headers and bodies at the
// handler: it must not panic, and every answer outside 2xx must be an
// OperationOutcome.
func FuzzHandler(f *testing.F) {
	f.Add("POST", "/fhir/state-a/Patient/$pdmp-history", "Content-Type", fhirJSON, `{"resourceType":"Parameters"}`, "")
	f.Add("POST", "/fhir/state-a/$process-message", "Prefer", "respond-async", `{}`, "?_summary=pdmp")
	f.Add("GET", "/jobs/job-1", "X-Request-ID", "abc", ``, "")
	f.Add("DELETE", "/jobs/job-1", "Origin", "null", ``, "")
	f.Add("GET", "/fhir/state-a/metadata", "Host", "attacker.example", ``, "")
	f.Add("PATCH", "//../status", "Content-Type", "text/plain", `{`, "?a=%zz")
	f.Add("CONNECT", "*", "Authorization", "Bearer x", `[]`, "")
	f.Add("GET", "/status", "Prefer", "wait=0", "", "")
	s := testServer(f, &FakeBackend{})
	f.Fuzz(func(t *testing.T, method, path, hk, hv, body, query string) {
		request := func() *http.Request {
			r := &http.Request{
				Method:     method,
				URL:        &url.URL{Path: path, RawQuery: strings.TrimPrefix(query, "?")},
				Proto:      "HTTP/1.1",
				ProtoMajor: 1, ProtoMinor: 1,
				Header:        http.Header{},
				Body:          io.NopCloser(strings.NewReader(body)),
				ContentLength: int64(len(body)),
				Host:          "127.0.0.1",
			}
			r.Header.Set("Authorization", "Bearer s3cret-credential")
			if strings.EqualFold(hk, "Host") {
				r.Host = hv
			} else if hk != "" {
				r.Header[hk] = []string{hv}
			}
			r.Header.Set("Prefer", "wait=0") // never block on a job
			return r
		}
		for _, cs := range []*connState{tcpConn(), unixConn(1000)} {
			w := serve(s, cs, request())
			if w.Code >= 200 && w.Code < 300 {
				continue
			}
			if err := isOutcome(w.Header().Get("Content-Type"), w.Body.Bytes()); err != nil {
				t.Fatalf("%s %q %s=%q: status %d: %v", method, path, hk, hv, w.Code, err)
			}
		}
	})
}
