package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/audit"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
	"github.com/pdmp-agent/pdmp-agent/ipc"
	"github.com/pdmp-agent/pdmp-agent/queue"
)

// handle makes one attempt at a queued lookup: token, POST, classify. It
// runs under the queue's workers, which retry what it reports transient.
func (s *Service) handle(ctx context.Context, job queue.Job) queue.Outcome {
	start := time.Now()
	var env envelope
	if err := json.Unmarshal(job.Body, &env); err != nil {
		return queue.Outcome{Err: errors.New("unreadable job record"), Permanent: true,
			Result: outcomeJSON(500, pdmp.IssueException, "the queued request could not be read")}
	}
	a := s.Agent()
	reg, ok := a.registrations[job.Labels[labelRegistration]]
	if !ok {
		msg := fmt.Sprintf("registration %q is no longer configured", job.Labels[labelRegistration])
		out := queue.Outcome{Err: errors.New(msg), Permanent: true, Status: http.StatusServiceUnavailable,
			Result: outcomeJSON(503, pdmp.IssueNotSupported, msg)}
		s.finishLookup(ctx, job, reg, env, out, nil, start)
		return out
	}
	out, resp := s.attempt(ctx, reg, job, &env)
	class := "ok"
	switch {
	case out.Permanent:
		class = "permanent"
	case out.Err != nil:
		class = "retry"
	}
	s.metrics.Attempt(reg.Responder.Name, class, time.Since(start))
	if out.Err == nil || out.Permanent || job.Attempts >= s.maxAttempts {
		s.finishLookup(ctx, job, reg, env, out, resp, start)
	} else {
		s.noteError(fmt.Sprintf("responder %s: %v", reg.Responder.Name, out.Err))
	}
	return out
}

func (s *Service) attempt(ctx context.Context, reg *Registration, job queue.Job, env *envelope) (queue.Outcome, *pdmp.Response) {
	rep, err := s.exchange(ctx, reg, env.Params, job.RequestID)
	if err == nil && env.AddedKey && (rep.Status == http.StatusNotFound || rep.Status == http.StatusBadRequest) {
		// The responder no longer knows the pre-stage key we attached:
		// fall back to a plain request, as if it had never been staged.
		if req, perr := pdmp.ParseRequest(env.Params); perr == nil {
			req.SetRetrievalKey("")
			if p, merr := req.Marshal(); merr == nil {
				env.Params, env.AddedKey = p, false
				rep, err = s.exchange(ctx, reg, env.Params, job.RequestID)
			}
		}
	}
	if err != nil {
		var se *sendError
		if errors.As(err, &se) {
			out := queue.Outcome{Err: errors.New(strings.TrimSpace(se.Error())), Permanent: se.Permanent, RetryAfter: se.RetryAfter, Status: se.Status}
			if se.Permanent {
				out.Status = http.StatusBadGateway
				out.Result = outcomeJSON(502, pdmp.IssueSecurity, se.Error())
			}
			return out, nil
		}
		return queue.Outcome{Err: err}, nil
	}
	switch {
	case rep.Status >= 200 && rep.Status < 300:
		resp, perr := pdmp.ParseResponse(rep.Body)
		if perr != nil {
			// A garbled answer is a responder fault that may pass.
			return queue.Outcome{Err: errors.New("responder sent an unreadable answer"), Status: rep.Status}, nil
		}
		if resp.RetrievalKey != "" {
			s.prestage.put(reg.Name, env.PatientRef, resp.RetrievalKey)
		}
		return queue.Outcome{Result: rep.Body, Status: rep.Status}, resp
	case rep.Status == http.StatusRequestTimeout || rep.Status == http.StatusTooManyRequests || rep.Status >= 500:
		return queue.Outcome{Err: fmt.Errorf("responder answered HTTP %d", rep.Status), RetryAfter: rep.RetryAfter, Status: rep.Status}, nil
	}
	// 400, 401 after a fresh token, 403, 404, 410, 422: retrying cannot help.
	body := rep.Body
	if !isOutcome(body) {
		body = outcomeJSON(rep.Status, pdmp.IssueException, fmt.Sprintf("responder answered HTTP %d", rep.Status))
	}
	return queue.Outcome{Err: fmt.Errorf("responder refused the request: HTTP %d", rep.Status), Permanent: true, Status: rep.Status, Result: body}, nil
}

// exchange sends the Parameters in the responder's configured form:
// the operation, or a FHIR message whose answer is unwrapped.
func (s *Service) exchange(ctx context.Context, reg *Registration, params []byte, requestID string) (*reply, error) {
	a := s.Agent()
	r := reg.Responder
	if !r.Messaging {
		return a.post(ctx, reg, r.OperationPath, params, requestID)
	}
	bundle, msgID, err := pdmp.WrapMessage(params, pdmp.MessageInfo{SourceEndpoint: r.MessageSource, DestinationEndpoint: r.FHIRBase})
	if err != nil {
		return nil, &sendError{Permanent: true, Err: err}
	}
	rep, err := a.post(ctx, reg, "$process-message", bundle, requestID)
	if err != nil || rep.Status < 200 || rep.Status >= 300 {
		return rep, err
	}
	inner, err := pdmp.UnwrapMessage(rep.Body, msgID)
	if err != nil {
		var oe *pdmp.OutcomeError
		if errors.As(err, &oe) {
			body, _ := json.Marshal(oe.Outcome())
			return &reply{Status: oe.HTTPStatus(), Body: body, ContentType: rep.ContentType}, nil
		}
		// A garbled or mismatched response message may pass: retry.
		return nil, &sendError{Status: rep.Status, Err: fmt.Errorf("responder's response message: %w", err)}
	}
	rep.Body = inner
	return rep, nil
}

// finishLookup writes the audit record and metrics of a lookup that ended.
func (s *Service) finishLookup(ctx context.Context, job queue.Job, reg *Registration, env envelope, out queue.Outcome, resp *pdmp.Response, start time.Time) {
	outcome := "done"
	switch {
	case out.Err != nil && out.Permanent:
		outcome = "failed"
	case out.Err != nil:
		outcome = "dead"
	case resp != nil:
		outcome = string(resp.Status())
	}
	responder, registration := job.Responder, job.Labels[labelRegistration]
	rec := audit.Record{
		Type: audit.TypeLookup, Caller: job.Labels[labelCaller], Registration: registration, Responder: responder,
		RequestID: job.RequestID, JobID: job.ID, Outcome: outcome, HTTPStatus: out.Status,
		DurationMS: time.Since(job.Created).Milliseconds(), Patient: env.PatientRef,
	}
	if resp != nil && resp.History != nil {
		rec.Counts = resp.History.Counts
	}
	s.appendAudit(ctx, rec)
	lookup := "done"
	if out.Err != nil {
		lookup = map[bool]string{true: "failed", false: "dead"}[out.Permanent]
		s.noteError(fmt.Sprintf("lookup %s at %s: %v", job.ID, responder, out.Err))
	}
	s.metrics.Lookup(responder, lookup)
}

func (s *Service) appendAudit(ctx context.Context, r audit.Record) {
	if s.audit == nil {
		return
	}
	if err := s.audit.Append(ctx, r); err != nil {
		s.log.Error("audit record not written", "error", err)
		s.noteError("audit log: " + err.Error())
	}
}

// securityEvent audits a refused request (who, which responder, why), never
// its content.
func (s *Service) securityEvent(ctx context.Context, sub ipc.Submission, event string, err error) {
	s.metrics.Refusal("policy")
	s.appendAudit(ctx, audit.Record{Type: audit.TypeSecurity, Caller: sub.Caller.Name, Responder: sub.Responder,
		RequestID: sub.RequestID, Outcome: "refused", Event: event, Detail: err.Error()})
}

// prestageStore remembers retrieval keys a responder handed out, per
// registration and patient, until they are used or expire.
type prestageStore struct {
	mu   sync.Mutex
	ttl  time.Duration
	keys map[[2]string]prestageKey
}

type prestageKey struct {
	key     string
	expires time.Time
}

func newPrestageStore(ttl time.Duration) *prestageStore {
	return &prestageStore{ttl: ttl, keys: map[[2]string]prestageKey{}}
}

func (p *prestageStore) put(registration, patientRef, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for k, v := range p.keys {
		if now.After(v.expires) {
			delete(p.keys, k)
		}
	}
	p.keys[[2]string{registration, patientRef}] = prestageKey{key, now.Add(p.ttl)}
}

func (p *prestageStore) take(registration, patientRef string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := [2]string{registration, patientRef}
	v, ok := p.keys[k]
	delete(p.keys, k)
	if !ok || time.Now().After(v.expires) {
		return "", false
	}
	return v.key, true
}
