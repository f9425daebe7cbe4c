package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
	"github.com/pdmp-agent/pdmp-agent/vault"
	"github.com/pdmp-agent/pdmp-agent/vault/vaulttest"
)

// e2e is an agent running for real (queue, audit, local API on a Unix
// socket) against two sandbox responders.
type e2e struct {
	dir    string
	state  string
	a, b   *pdmptest.Server
	c      *client.Client
	logs   *syncBuf
	cancel context.CancelFunc
	keyURI string
	// metricsPort is the loopback port of the Prometheus listener.
	metricsPort int
	done        chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

const (
	npiAdams   = "1234567893"
	npiBaker   = "1992753880"
	npiClinic  = "1144221847"
	npiNobody  = "1003000126"
	sysNPI     = "http://hl7.org/fhir/sid/us-npi"
	e2eConfigT = `state_dir: %[1]s/state
log: {level: debug, format: json}
queue: {max_attempts: 3%[12]s}
metrics: {listen: "127.0.0.1:%[11]d"}
listen:
  unix: %[1]s/api.sock
callers:
  - name: ehr
    users: ["%[2]d"]
    responders: ["*"]
responders:
  - name: state-a
    fhir_base: %[3]s
    policy: {retention: %[5]s, delegates: refused, requester_kinds: [prescriber]}
  - name: hub
    fhir_base: %[4]s
    messaging: true
    message_source: https://clinic.example/pdmp-agent
    policy: {retention: data, delegates: allowed}
registrations:
  - name: adams-a
    responder: state-a
    client_id: adams-a
    key: %[6]q
    serves: {practitioners: ["%[7]s|%[8]s"]}
    requester: &req
      practitioner_role:
        resourceType: PractitionerRole
        code: [{coding: [{code: prescriber}]}]
        telecom: [{system: phone, value: "555-0100"}]
      organization: {resourceType: Organization, active: true, name: Example Clinic, identifier: [{system: "%[7]s", value: "%[10]s"}]}
  - name: baker-a
    responder: state-a
    client_id: baker-a
    key: %[6]q
    serves: {practitioners: ["%[7]s|%[9]s"]}
    requester: *req
  - name: clinic-hub
    responder: hub
    client_id: clinic-hub
    key: %[6]q
    serves: {organizations: ["%[7]s|%[10]s"]}
    requester: *req
`
)

func startE2E(t *testing.T, retention string) *e2e {
	return startE2EWith(t, retention, "")
}

// startE2EWith starts the agent with extra top-level YAML appended to the
// queue settings (e.g. "result_ttl: 2s").
func startE2EWith(t *testing.T, retention, queueExtra string) *e2e {
	t.Helper()
	dir, err := os.MkdirTemp("", "pdmp-e2e-") // short: Unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &e2e{dir: dir, state: filepath.Join(dir, "state"), logs: &syncBuf{}}
	e.a, e.b = pdmptest.NewServer(), pdmptest.NewServer()
	t.Cleanup(e.a.Close)
	t.Cleanup(e.b.Close)
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("e2e passphrase"), 0o600)
	keyURI := fmt.Sprintf("keyring:agent?backend=file&dir=%s&passphrase-file=%s", url.QueryEscape(filepath.Join(dir, "keyring")), url.QueryEscape(pass))
	ctx := context.Background()
	ring, err := vault.Open(ctx, keyURI)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ring.Create(ctx, vault.ES384)
	ring.Close()
	if err != nil {
		t.Fatal(err)
	}
	set, _ := vault.JWKSet(k)
	for _, srv := range []*pdmptest.Server{e.a, e.b} {
		for _, id := range []string{"adams-a", "baker-a", "clinic-hub"} {
			if err := srv.RegisterClient(pdmptest.Client{ID: id, JWKS: set}); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.metricsPort = freePort(t)
	e.keyURI = keyURI
	if queueExtra != "" {
		queueExtra = ", " + queueExtra
	}
	cfg := fmt.Sprintf(e2eConfigT, dir, os.Getuid(), e.a.FHIRBase, e.b.FHIRBase, retention, keyURI, sysNPI, npiAdams, npiBaker, npiClinic, e.metricsPort, queueExtra)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	e.cancel, e.done = cancel, make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		e.done <- Run(rctx, RunOptions{ConfigPath: path, Log: slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			Ready: func() { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-e.done:
		t.Fatalf("agent did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not become ready")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-e.done; err != nil {
			t.Errorf("agent stopped with %v", err)
		}
	})
	e.c, err = client.New(client.Config{Network: "unix", Address: filepath.Join(dir, "api.sock")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.c.Close)
	return e
}

// patientParams is the minimal input: a patient and the practitioner's NPI.
func patientParams(family, npi string, extra ...map[string]any) []byte {
	params := []any{
		map[string]any{"name": "patient", "resource": map[string]any{
			"resourceType": "Patient", "gender": "female", "birthDate": "1987-03-14",
			"name": []any{map[string]any{"family": family, "given": []string{"Wilhelmina"}}},
		}},
		map[string]any{"name": "authorized-practitioner-identifier", "valueIdentifier": map[string]any{"system": sysNPI, "value": npi}},
	}
	for _, x := range extra {
		params = append(params, x)
	}
	b, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": params})
	return b
}

func TestE2EScenarios(t *testing.T) {
	e := startE2E(t, "data")
	ctx := context.Background()
	tests := []struct {
		family   string
		status   int
		contains []string
	}{
		{pdmptest.PatientHistory, 200, []string{"pdmp-history-data", "MedicationDispense"}},
		{pdmptest.PatientUncertainMatch, 200, []string{"pdmp-history-data"}},
		{pdmptest.PatientAlerts, 200, []string{"DetectedIssue"}},
		{pdmptest.PatientNoData, 200, []string{"no-data"}},
		{pdmptest.PatientLinkOnly, 200, []string{"pdmp-history-link"}},
		{pdmptest.PatientWarning, 200, []string{"incomplete"}},
		{pdmptest.PatientFatalError, 200, []string{"exception"}},
		{pdmptest.PatientDeferred, 200, []string{"deferred"}},
		{pdmptest.PatientDisallowed, 200, []string{"disallowed"}},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			resp, err := e.c.Query(ctx, "state-a", patientParams(tt.family, npiAdams), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d: %s", resp.StatusCode, resp.Body)
			}
			for _, s := range tt.contains {
				if !bytes.Contains(resp.Body, []byte(s)) {
					t.Errorf("answer lacks %q", s)
				}
			}
		})
	}
	// A responder's server error is retried, then reported as failed.
	_, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientServerError, npiAdams), &client.QueryOptions{Wait: time.Second, Async: true})
	if err != nil {
		t.Fatal(err)
	}
	e.assertNoSecretsAnywhere(t)
}

func TestE2ERouting(t *testing.T) {
	e := startE2E(t, "data")
	ctx := context.Background()
	for _, tc := range []struct {
		responder, npi string
		srv            *pdmptest.Server
		client         string
	}{
		{"state-a", npiAdams, nil, "adams-a"},
		{"state-a", npiBaker, nil, "baker-a"},
		{"hub", npiNobody, nil, "clinic-hub"}, // only the organization matches
	} {
		srv := e.a
		if tc.responder == "hub" {
			srv = e.b
		}
		srv.ResetRequests()
		params := patientParams(pdmptest.PatientHistory, tc.npi)
		if tc.responder == "hub" {
			// Identify the organization instead of a served practitioner.
			params = patientParams(pdmptest.PatientHistory, tc.npi, map[string]any{"name": "authorized-practitioner-organization",
				"resource": map[string]any{"resourceType": "Organization", "active": true, "name": "Example Clinic",
					"identifier": []any{map[string]any{"system": sysNPI, "value": npiClinic}}}})
		}
		resp, err := e.c.Query(ctx, tc.responder, params, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s/%s: %v %v", tc.responder, tc.npi, err, resp)
		}
		reqs := srv.Requests()
		if len(reqs) == 0 || reqs[len(reqs)-1].ClientID != tc.client {
			t.Errorf("%s/%s: responder saw %+v, want client %s", tc.responder, tc.npi, reqs, tc.client)
		}
		if tc.responder == "hub" && !strings.HasSuffix(reqs[len(reqs)-1].Path, "$process-message") {
			t.Errorf("messaging responder got %s", reqs[len(reqs)-1].Path)
		}
	}
	// No registration serves this practitioner at state-a.
	_, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiNobody), nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.StatusCode != 403 || !bytes.Contains(ce.Body, []byte("OperationOutcome")) {
		t.Fatalf("unknown practitioner: %v", err)
	}
}

func TestE2EPreStageThenRetrieve(t *testing.T) {
	e := startE2E(t, "data")
	ctx := context.Background()
	stage := patientParams(pdmptest.PatientHistory, npiAdams, map[string]any{"name": "pre-stage-only", "valueBoolean": true})
	resp, err := e.c.Query(ctx, "state-a", stage, nil)
	if err != nil || !bytes.Contains(resp.Body, []byte("pre-stage-retrieval-key")) {
		t.Fatalf("pre-stage: %v %s", err, resp.Body)
	}
	resp, err = e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), nil)
	if err != nil || !bytes.Contains(resp.Body, []byte("pdmp-history-data")) {
		t.Fatalf("retrieve: %v", err)
	}
	// An expired key falls back to a plain request.
	if _, err := e.c.Query(ctx, "state-a", stage, nil); err != nil {
		t.Fatal(err)
	}
	e.a.ExpirePreStageKeys()
	resp, err = e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), nil)
	if err != nil || !bytes.Contains(resp.Body, []byte("pdmp-history-data")) {
		t.Fatalf("fallback after expired key: %v", err)
	}
}

func TestE2ETokenExpiredRenewsOnce(t *testing.T) {
	e := startE2E(t, "data")
	ctx := context.Background()
	if _, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), nil); err != nil {
		t.Fatal(err)
	}
	before := e.a.TokenRequests()
	e.a.ExpireTokens()
	resp, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after expiry: %v", err)
	}
	if n := e.a.TokenRequests() - before; n != 1 {
		t.Fatalf("%d token requests after a 401, want 1", n)
	}
}

// TestE2EPolicies checks each retention and the refusals that must happen
// before anything reaches the responder.
func TestE2EPolicies(t *testing.T) {
	ctx := context.Background()
	t.Run("display-only", func(t *testing.T) {
		e := startE2E(t, "display-only")
		resp, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), &client.QueryOptions{Async: true})
		if err != nil {
			t.Fatal(err)
		}
		final, err := e.c.Await(ctx, resp.JobID)
		if err != nil || !bytes.Contains(final.Body, []byte("MedicationDispense")) {
			t.Fatalf("first read: %v", err)
		}
		_, err = e.c.Job(ctx, resp.JobID)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.StatusCode != 410 {
			t.Fatalf("second read: %v, want 410", err)
		}
		e.assertNoPHIOnDisk(t)
	})
	t.Run("view", func(t *testing.T) {
		e := startE2E(t, "view")
		resp, _ := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), &client.QueryOptions{Async: true})
		if _, err := e.c.Await(ctx, resp.JobID); err != nil {
			t.Fatal(err)
		}
		again, err := e.c.Job(ctx, resp.JobID)
		if err == nil && bytes.Contains(again.Body, []byte("MedicationDispense")) {
			t.Fatal("view policy kept discrete data after delivery")
		}
		link, _ := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientLinkOnly, npiAdams), &client.QueryOptions{Async: true})
		e.c.Await(ctx, link.JobID)
		kept, err := e.c.Job(ctx, link.JobID)
		if err != nil || !bytes.Contains(kept.Body, []byte("pdmp-history-link")) {
			t.Fatalf("view policy did not keep the link: %v", err)
		}
		// The agent fetches the linked report with its token; the EHR never
		// holds one.
		rep, err := e.c.Report(ctx, link.JobID)
		if err != nil || rep.StatusCode != 200 || len(rep.Body) == 0 {
			t.Fatalf("report through the agent: %v", err)
		}
		if reqs := e.a.Requests(); !strings.HasPrefix(reqs[len(reqs)-1].Path, "/reports/") || reqs[len(reqs)-1].Status != 200 {
			t.Fatalf("responder saw %+v", reqs[len(reqs)-1])
		}
		sum, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), &client.QueryOptions{Summary: true})
		if err != nil || bytes.Contains(sum.Body, []byte(`"clinical"`)) {
			t.Fatalf("view policy computed a clinical summary from discrete data: %v %s", err, sum.Body)
		}
	})
	t.Run("data", func(t *testing.T) {
		e := startE2E(t, "data")
		resp, _ := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), &client.QueryOptions{Async: true})
		e.c.Await(ctx, resp.JobID)
		again, err := e.c.Job(ctx, resp.JobID)
		if err != nil || !bytes.Contains(again.Body, []byte("MedicationDispense")) {
			t.Fatalf("data policy lost the result: %v", err)
		}
	})
	t.Run("refusals before sending", func(t *testing.T) {
		e := startE2E(t, "data")
		delegate := patientParams(pdmptest.PatientHistory, npiAdams, map[string]any{"name": "delegate-practitioner",
			"resource": map[string]any{"resourceType": "Practitioner", "identifier": []any{map[string]any{"system": sysNPI, "value": npiBaker}}}})
		pharmacist := bytes.Replace(patientParams(pdmptest.PatientHistory, npiAdams), []byte(`"parameter":[`),
			[]byte(`"parameter":[{"name":"authorized-practitioner-role","resource":{"resourceType":"PractitionerRole","code":[{"coding":[{"code":"pharmacist"}]}],"telecom":[{"system":"phone","value":"555"}]}},`), 1)
		for name, body := range map[string][]byte{"delegate": delegate, "requester kind": pharmacist} {
			before := e.a.RequestCount()
			_, err := e.c.Query(ctx, "state-a", body, nil)
			var ce *client.Error
			if !errors.As(err, &ce) || ce.StatusCode != 403 || !bytes.Contains(ce.Body, []byte("OperationOutcome")) {
				t.Errorf("%s: %v, want 403 OperationOutcome", name, err)
			}
			if e.a.RequestCount() != before {
				t.Errorf("%s: the responder saw the refused request", name)
			}
		}
	})
}

// TestE2EDataKeptUntilTTL: under a data policy the result is kept for the
// TTL, and then it is not.
func TestE2EDataKeptUntilTTL(t *testing.T) {
	e := startE2EWith(t, "data", "result_ttl: 2s")
	ctx := context.Background()
	resp, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), &client.QueryOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Await(ctx, resp.JobID); err != nil {
		t.Fatal(err)
	}
	if again, err := e.c.Job(ctx, resp.JobID); err != nil || !bytes.Contains(again.Body, []byte("MedicationDispense")) {
		t.Fatalf("result not kept within the TTL: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := e.c.Job(ctx, resp.JobID)
		var ce *client.Error
		if errors.As(err, &ce) && ce.StatusCode == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("result still there long after its TTL: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	e.assertNoPHIOnDisk(t)
}

// TestE2ECancelAndIdempotency against the sandbox: a slow lookup can be
// cancelled, and a resubmission with the same Idempotency-Key gets the same
// job rather than a second PDMP lookup.
func TestE2ECancelAndIdempotency(t *testing.T) {
	e := startE2E(t, "data")
	ctx := context.Background()
	e.a.InjectFault(pdmptest.ResponderFault{Delay: 3 * time.Second})
	slow, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), &client.QueryOptions{Async: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // let it reach the responder
	if err := e.c.Cancel(ctx, slow.JobID); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	_, err = e.c.Await(ctx, slow.JobID)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.StatusCode != 410 || ce.State != "cancelled" {
		t.Fatalf("cancelled job: %v", err)
	}

	e.a.ResetRequests()
	// Slow enough that both submissions find the job pending (202 with its
	// id); a finished one would simply be answered again.
	e.a.InjectFault(pdmptest.ResponderFault{Delay: time.Second})
	opts := &client.QueryOptions{IdempotencyKey: "ehr-order-42", Async: true}
	first, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), opts)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientHistory, npiAdams), opts)
	if err != nil {
		t.Fatal(err)
	}
	if first.JobID == "" || first.JobID != second.JobID {
		t.Fatalf("resubmission got job %q, first was %q", second.JobID, first.JobID)
	}
	if _, err := e.c.Await(ctx, first.JobID); err != nil {
		t.Fatal(err)
	}
	posts := 0
	for _, r := range e.a.Requests() {
		if r.Method == "POST" {
			posts++
		}
	}
	if posts != 1 {
		t.Fatalf("responder saw %d lookups for one idempotent request", posts)
	}
}

func TestE2ESummaryAndMetadata(t *testing.T) {
	e := startE2E(t, "data")
	ctx := context.Background()
	resp, err := e.c.Query(ctx, "state-a", patientParams(pdmptest.PatientAlerts, npiAdams), &client.QueryOptions{Summary: true})
	if err != nil || !bytes.Contains(resp.Body, []byte(`"summary"`)) || !bytes.Contains(resp.Body, []byte(`"alerts"`)) {
		t.Fatalf("summary: %v %s", err, resp.Body)
	}
	if !bytes.Contains(resp.Body, []byte(`"clinical"`)) || !bytes.Contains(resp.Body, []byte("DetectedIssue")) {
		t.Errorf("summary under a data policy lacks the clinical summary: %s", resp.Body)
	}
	caps, err := e.c.Capabilities(ctx, "state-a")
	if err != nil || !bytes.Contains(caps, []byte(`"retention"`)) || !bytes.Contains(caps, []byte("data-use-policy")) {
		t.Fatalf("metadata: %v %s", err, caps)
	}
	st, err := e.c.Status(ctx)
	if err != nil || !bytes.Contains(st, []byte(`"key_health": "ok"`)) {
		t.Fatalf("status: %v %s", err, st)
	}
}

// Test patient data and secrets that must never reach a log or disk in
// clear.
var phi = []string{"Wilhelmina", "1987-03-14", "03/14/1987", pdmptest.PatientHistory}

// assertNoSecretsAnywhere scans every log line (written at debug), every
// audit record and the metrics exposition for the test patient's data, for
// anything shaped like a token or assertion, for the jtis of assertions
// sent, and for windows of the private key.
func (e *e2e) assertNoSecretsAnywhere(t *testing.T) {
	t.Helper()
	places := map[string][]byte{"log": []byte(e.logs.String())}
	filepath.WalkDir(filepath.Join(e.state, "audit"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			places[p], _ = os.ReadFile(p)
		}
		return nil
	})
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	places["metrics"], _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(places["metrics"], []byte("pdmp_agent_lookups_total")) {
		t.Fatal("metrics exposition lacks the lookup counter")
	}
	needles := append([]string{"eyJ", "Bearer "}, phi...)
	for _, r := range append(e.a.TokenLog(), e.b.TokenLog()...) {
		if r.JTI != "" {
			needles = append(needles, r.JTI)
		}
	}
	key := privateKeyWindows(t, e.keyURI)
	for where, b := range places {
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				t.Errorf("%s contains %q", where, n)
			}
		}
		for _, w := range key {
			if bytes.Contains(b, w) {
				t.Errorf("%s contains private key material", where)
			}
		}
	}
}

// privateKeyWindows returns 12-byte windows of the agent key's private
// material, raw and base64-encoded.
func privateKeyWindows(t *testing.T, uri string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range vaulttest.PrivateMaterial(t, uri) {
		for i := 0; i+12 <= len(m); i += 6 {
			out = append(out, m[i:i+12], []byte(base64.StdEncoding.EncodeToString(m[i:i+12])))
		}
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (e *e2e) assertNoPHIOnDisk(t *testing.T) {
	t.Helper()
	filepath.WalkDir(e.state, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		// The patient's PDMP record number and a prescription number from
		// the sandbox's history answer.
		for _, s := range append(phi, "MA-0042-1989", "87355201") {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s contains %q", p, s)
			}
		}
		return nil
	})
}
