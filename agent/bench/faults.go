package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/ipc"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
)

// FaultRow is one row of the fault matrix: what the EHR saw, what the
// responder and token endpoint saw, and whether that is the designed
// behaviour.
type FaultRow struct {
	Fault    string `json:"fault"`
	Designed string `json:"designed"`
	// EHRStatus and EHRState are the job's final HTTP status and
	// X-Job-State, as GET /jobs/{id} gives them to the EHR.
	EHRStatus int    `json:"ehr_status"`
	EHRState  string `json:"ehr_state"`
	// Attempts is how many requests reached the responder; for the TLS
	// row, how many handshakes it was offered.
	Attempts      int `json:"attempts"`
	TokenRequests int `json:"token_requests"`
	// RetryGapMS is the time between the arrival of the faulted request
	// and of its retry, for the rows whose fault states a Retry-After.
	RetryGapMS float64 `json:"retry_gap_ms,omitempty"`
	Pass       bool    `json:"pass"`
	// Why lists how the row differs from the design when it fails.
	Why string `json:"why,omitempty"`
}

// faultMaxAttempts is queue.max_attempts of the fault-matrix agent: it
// bounds the rows that never succeed.
const faultMaxAttempts = 3

// faultTimeout is the responder timeout of the fault-matrix agent, which
// the timeout row's delay exceeds.
const faultTimeout = time.Second

// faultCase is a fault and its designed behaviour. The design, which
// follows from the agent's classification of failures (agent/handle.go,
// agent/responder.go, agent/smart):
//
//   - A 5xx, 408 or 429 answer, a timeout, a reset connection and an
//     unreadable 200 are transient: the queue tries again after its
//     backoff (base 1 s, full jitter), never before a stated Retry-After,
//     and the job is done once the fault clears. The responder sees one
//     request per fault plus the one that succeeds, and the token is
//     fetched once.
//   - A TLS verification failure is a network error, so also transient:
//     it is tried queue.max_attempts times, none reaching the responder,
//     and the job is then dead (dead-lettered, 502 to the EHR). It is
//     not failed at once because a certificate being replaced looks the
//     same as one that is wrong.
//   - A 401 to a token that expired early costs exactly one token
//     renewal, within the same attempt, and the job is done.
//   - invalid_client from the token endpoint is a credential fault:
//     permanent, so the job fails at once (502) and nothing reaches the
//     responder; the token client then backs off (30 s, doubling), so a
//     second query within that time fails without another token request.
type faultCase struct {
	fault    string
	designed string
	// inject sets the fault up at the row's sandbox.
	inject func(*pdmptest.Server)
	// untrustedTLS puts the row's FHIR base on an HTTPS server whose
	// certificate the agent does not trust; its token endpoint stays the
	// sandbox's, so that only the responder exchange fails.
	untrustedTLS bool
	queries      int // queries sent one after the other; 0 means 1
	want         ipc.JobState
	attempts     int
	tokens       int
	retryAfter   time.Duration // stated by the fault; the retry must wait
}

func responderFault(f pdmptest.ResponderFault) func(*pdmptest.Server) {
	return func(sb *pdmptest.Server) { sb.InjectFault(f) }
}

const retriedDone = "retried after backoff; done"

var faultCases = []faultCase{
	{fault: "500 ×2", designed: retriedDone + " on the 3rd attempt",
		inject: responderFault(pdmptest.ResponderFault{Status: 500, Times: 2}), want: ipc.StateDone, attempts: 3, tokens: 1},
	{fault: "502", designed: retriedDone,
		inject: responderFault(pdmptest.ResponderFault{Status: 502}), want: ipc.StateDone, attempts: 2, tokens: 1},
	{fault: "503 Retry-After: 1", designed: "retried no sooner than 1 s; done",
		inject: responderFault(pdmptest.ResponderFault{Status: 503, RetryAfter: "1"}), want: ipc.StateDone, attempts: 2, tokens: 1, retryAfter: time.Second},
	{fault: "429 Retry-After: 2", designed: "retried no sooner than 2 s; done",
		inject: responderFault(pdmptest.ResponderFault{Status: 429, RetryAfter: "2"}), want: ipc.StateDone, attempts: 2, tokens: 1, retryAfter: 2 * time.Second},
	{fault: "timeout (3 s delay, 1 s timeout)", designed: retriedDone,
		inject: responderFault(pdmptest.ResponderFault{Delay: 3 * faultTimeout}), want: ipc.StateDone, attempts: 2, tokens: 1},
	{fault: "connection reset", designed: retriedDone,
		inject: responderFault(pdmptest.ResponderFault{ResetConnection: true}), want: ipc.StateDone, attempts: 2, tokens: 1},
	{fault: "malformed 200 body", designed: retriedDone,
		inject: responderFault(pdmptest.ResponderFault{Malformed: true}), want: ipc.StateDone, attempts: 2, tokens: 1},
	{fault: "TLS: untrusted certificate", designed: fmt.Sprintf("network error: retried, dead after max_attempts (%d)", faultMaxAttempts),
		untrustedTLS: true, want: ipc.StateDead, attempts: faultMaxAttempts, tokens: 1},
	{fault: "401, token expired early", designed: "one token renewal in the same attempt; done",
		inject: responderFault(pdmptest.ResponderFault{ExpireTokenFirst: true}), want: ipc.StateDone, attempts: 2, tokens: 2},
	{fault: "invalid_client at token endpoint", designed: "failed at once, nothing sent; 2nd query fails without a token request",
		inject: func(sb *pdmptest.Server) {
			sb.InjectTokenFault(pdmptest.Fault{Status: http.StatusUnauthorized, Body: `{"error":"invalid_client"}`})
		}, queries: 2, want: ipc.StateFailed, attempts: 0, tokens: 1},
}

// rig is what one row's fault is observed at.
type rig struct {
	sb     *pdmptest.Server
	hellos *atomic.Int64 // TLS handshakes offered, for untrustedTLS rows
}

// runFaultMatrix runs every row at once, each against a responder of its
// own (its own sandbox, circuit breaker and token cache) in one agent, so
// the matrix takes as long as its slowest row.
func runFaultMatrix(ctx context.Context, h *harness) ([]FaultRow, error) {
	rigs := make([]rig, len(faultCases))
	rs := make([]responder, len(faultCases))
	for i, fc := range faultCases {
		sb, err := h.sandbox()
		if err != nil {
			return nil, err
		}
		defer sb.Close()
		rigs[i].sb = sb
		rs[i] = responder{name: fmt.Sprintf("f%d", i+1), fhirBase: sb.FHIRBase, timeout: faultTimeout}
		if fc.untrustedTLS {
			ts, hellos := untrustedServer()
			defer ts.Close()
			rigs[i].hellos = hellos
			rs[i].fhirBase, rs[i].tokenEndpoint = ts.URL+"/fhir", sb.TokenURL
		}
	}
	_, c, stop, err := h.startAgent(ctx, faultMaxAttempts, rs...)
	if err != nil {
		return nil, err
	}
	defer stop()

	rows := make([]FaultRow, len(faultCases))
	var wg sync.WaitGroup
	for i, fc := range faultCases {
		wg.Go(func() { rows[i] = fc.run(ctx, c, rs[i].name, rigs[i]) })
	}
	wg.Wait()
	return rows, ctx.Err()
}

// run sends the row's queries to responder as an EHR would (submit, then
// poll the job) and compares what happened with the design.
func (fc faultCase) run(ctx context.Context, c *client.Client, responder string, r rig) FaultRow {
	row := FaultRow{Fault: fc.fault, Designed: fc.designed}
	if fc.inject != nil {
		fc.inject(r.sb)
	}
	// Every row ends within a few seconds by design; this only stops a
	// broken one from holding up the bench.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for range max(fc.queries, 1) {
		var err error
		if row.EHRStatus, row.EHRState, err = queryJob(ctx, c, responder); err != nil {
			row.Why = err.Error()
			return row
		}
	}
	var posts []pdmptest.ResponderRequest
	for _, q := range r.sb.Requests() {
		if q.Method == http.MethodPost {
			posts = append(posts, q)
		}
	}
	row.Attempts = len(posts)
	if r.hellos != nil {
		row.Attempts = int(r.hellos.Load())
	}
	row.TokenRequests = r.sb.TokenRequests()
	if fc.retryAfter > 0 && len(posts) >= 2 {
		row.RetryGapMS = ms(posts[1].Time.Sub(posts[0].Time))
	}
	row.Why = fc.check(row)
	row.Pass = row.Why == ""
	return row
}

// check returns how row differs from the design, or "".
func (fc faultCase) check(row FaultRow) string {
	wantStatus := http.StatusBadGateway
	if fc.want == ipc.StateDone {
		wantStatus = http.StatusOK
	}
	var diffs []string
	if row.EHRState != string(fc.want) || row.EHRStatus != wantStatus {
		diffs = append(diffs, fmt.Sprintf("EHR saw %d %s, want %d %s", row.EHRStatus, row.EHRState, wantStatus, fc.want))
	}
	if row.Attempts != fc.attempts {
		diffs = append(diffs, fmt.Sprintf("%d attempts, want %d", row.Attempts, fc.attempts))
	}
	if row.TokenRequests != fc.tokens {
		diffs = append(diffs, fmt.Sprintf("%d token requests, want %d", row.TokenRequests, fc.tokens))
	}
	if gap := time.Duration(row.RetryGapMS * float64(time.Millisecond)); fc.retryAfter > 0 && gap < fc.retryAfter {
		diffs = append(diffs, fmt.Sprintf("retried after %v, before Retry-After %v", gap.Round(time.Millisecond), fc.retryAfter))
	}
	return strings.Join(diffs, "; ")
}

// queryJob submits a history query asynchronously and waits for the job
// to finish, returning its final status and state.
func queryJob(ctx context.Context, c *client.Client, responder string) (status int, state string, err error) {
	r, err := c.Query(ctx, responder, params(pdmptest.PatientHistory, adams), &client.QueryOptions{Async: true})
	if err != nil {
		return 0, "", err
	}
	r, err = c.Await(ctx, r.JobID)
	var ce *client.Error
	switch {
	case err == nil:
		return r.StatusCode, string(r.State), nil
	case errors.As(err, &ce):
		return ce.StatusCode, string(ce.State), nil
	}
	return 0, "", err
}

// untrustedServer is an HTTPS server with httptest's certificate, which
// the agent does not trust (no tls.ca_file): every handshake fails on the
// agent's side. It counts the handshakes it is offered, which the sandbox,
// never reached, cannot.
func untrustedServer() (*httptest.Server, *atomic.Int64) {
	var hellos atomic.Int64
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshakes are the point
	ts.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		hellos.Add(1)
		return nil, nil
	}}
	ts.StartTLS()
	return ts, &hellos
}
