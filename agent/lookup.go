package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/audit"
	"github.com/pdmp-agent/pdmp-agent/agent/clinical"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
	"github.com/pdmp-agent/pdmp-agent/ipc"
	"github.com/pdmp-agent/pdmp-agent/queue"
)

// envelope is a queued job's body: the request as it will be sent, and
// what handling and delivery need. It is encrypted at rest by the queue.
type envelope struct {
	Params json.RawMessage `json:"params"`
	// PatientRef is the keyed hash of the patient (audit, pre-stage).
	PatientRef string `json:"patient_ref"`
	// AddedKey marks a retrieval key the agent attached from an earlier
	// pre-stage, so an unknown-key answer falls back to a plain request.
	AddedKey bool `json:"added_key,omitempty"`
	// MessageID is the EHR's MessageHeader.id when it used $process-message.
	MessageID string `json:"message_id,omitempty"`
}

// Labels on queued jobs (clear text, never PHI).
const (
	labelRegistration = "registration"
	labelCaller       = "caller"
	labelOperation    = "operation"
	labelSummary      = "summary"
)

// apiError is an error the local API sends as it is: a status and an
// OperationOutcome.
type apiError struct {
	status int
	body   []byte
	msg    string
}

func (e *apiError) Error() string            { return e.msg }
func (e *apiError) HTTPStatus() int          { return e.status }
func (e *apiError) OperationOutcome() []byte { return e.body }

// refuse builds an apiError with one issue.
func refuse(status int, code pdmp.IssueType, expression, diagnostics string) error {
	iss := pdmp.Issue{Severity: pdmp.SeverityError, Code: code, Diagnostics: diagnostics}
	if expression != "" {
		iss.Expression = []string{expression}
	}
	return fromOutcome(pdmp.NewOutcomeError(status, iss))
}

func fromOutcome(oe *pdmp.OutcomeError) error {
	body, _ := json.Marshal(oe.Outcome())
	return &apiError{status: oe.HTTPStatus(), body: body, msg: oe.Error()}
}

// asAPIError turns the pdmp package's validation errors into API errors.
func asAPIError(err error) error {
	var oe *pdmp.OutcomeError
	if errors.As(err, &oe) {
		return fromOutcome(oe)
	}
	return err
}

func outcomeJSON(status int, code pdmp.IssueType, diagnostics string) []byte {
	body, _ := json.Marshal(pdmp.NewOutcomeError(status, pdmp.Issue{Severity: pdmp.SeverityError, Code: code, Diagnostics: diagnostics}).Outcome())
	return body
}

// Submit validates, completes and routes a request, then queues it
// durably. Everything that can be refused is refused here, before anything
// is stored or sent.
func (s *Service) Submit(ctx context.Context, sub ipc.Submission) (ipc.JobStatus, error) {
	a := s.Agent()
	resp, ok := a.responders[sub.Responder]
	if !ok {
		return ipc.JobStatus{}, refuse(http.StatusNotFound, pdmp.IssueNotSupported, "", fmt.Sprintf("no responder named %q is configured", sub.Responder))
	}
	params, msgID := sub.Body, ""
	if sub.Operation == ipc.OpProcessMessage {
		var err error
		if params, msgID, err = requestFromMessage(sub.Body); err != nil {
			return ipc.JobStatus{}, err
		}
	}
	req, err := pdmp.ParseRequest(params)
	if err != nil {
		return ipc.JobStatus{}, asAPIError(err)
	}
	reg, err := a.route(resp, req)
	if err != nil {
		s.securityEvent(ctx, sub, "no-registration", err)
		return ipc.JobStatus{}, err
	}
	if err := req.Complete(reg.requester()); err != nil {
		return ipc.JobStatus{}, asAPIError(err)
	}
	if err := req.Validate(); err != nil {
		return ipc.JobStatus{}, asAPIError(err)
	}
	if err := checkPolicy(resp, req); err != nil {
		s.securityEvent(ctx, sub, "policy-refused", err)
		return ipc.JobStatus{}, err
	}
	env := envelope{PatientRef: s.patientRef(req), MessageID: msgID}
	if !req.PreStageOnly() && req.RetrievalKey() == "" {
		if key, ok := s.prestage.take(reg.Name, env.PatientRef); ok {
			req.SetRetrievalKey(key)
			env.AddedKey = true
		}
	}
	if env.Params, err = req.Marshal(); err != nil {
		return ipc.JobStatus{}, err
	}
	body, err := json.Marshal(env)
	if err != nil {
		return ipc.JobStatus{}, err
	}
	idem := ""
	if sub.IdempotencyKey != "" {
		// Scoped to the caller, so one caller cannot fetch another's job by
		// guessing its key.
		idem = sub.Caller.Name + "\x00" + sub.IdempotencyKey
	}
	job, _, err := s.queue.Submit(ctx, queue.Request{
		Responder:      resp.Name,
		IdempotencyKey: idem,
		RequestID:      sub.RequestID,
		Body:           body,
		Labels: map[string]string{
			labelRegistration: reg.Name,
			labelCaller:       sub.Caller.Name,
			labelOperation:    sub.Operation,
			labelSummary:      strconv.FormatBool(sub.Summary),
		},
		ResultPolicy: resultPolicy(resp.Policy.Retention),
	})
	if err != nil {
		if errors.Is(err, queue.ErrStorage) {
			return ipc.JobStatus{}, refuse(http.StatusServiceUnavailable, pdmp.IssueTransient, "", "the agent cannot store new requests (disk full or read-only); requests already accepted are safe")
		}
		return ipc.JobStatus{}, err
	}
	return s.status(ctx, job)
}

func resultPolicy(retention string) queue.ResultPolicy {
	if retention == "data" {
		return queue.KeepUntilTTL
	}
	return queue.DeliverOnce
}

// route chooses the registration for a request: a registration serving
// one of the authorized practitioner's identifiers wins over one serving
// the organization's.
func (a *Agent) route(resp *Responder, req *pdmp.Request) (*Registration, error) {
	var byOrg *Registration
	practitioners := idStrings(req.PractitionerIdentifiers())
	orgs := idStrings(req.OrganizationIdentifiers())
	for _, g := range a.cfg.Registrations {
		if g.Responder != resp.Name {
			continue
		}
		reg := a.registrations[g.Name]
		for _, id := range g.Serves.Practitioners {
			if slices.Contains(practitioners, id) {
				return reg, nil
			}
		}
		if byOrg == nil {
			for _, id := range g.Serves.Organizations {
				if slices.Contains(orgs, id) {
					byOrg = reg
				}
			}
		}
	}
	if byOrg != nil {
		return byOrg, nil
	}
	if len(practitioners) == 0 {
		return nil, refuse(http.StatusUnprocessableEntity, pdmp.IssueRequired, "Parameters.parameter[authorized-practitioner].resource.identifier",
			"the request names no authorized practitioner identifier (e.g. an NPI), so no registration can be chosen")
	}
	return nil, refuse(http.StatusForbidden, pdmp.IssueBusinessRule, "Parameters.parameter[authorized-practitioner].resource.identifier",
		fmt.Sprintf("no registration at responder %q serves this practitioner or organization; add its identifier to a registration's serves", resp.Name))
}

func idStrings(ids []pdmp.Identifier) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func (r *Registration) requester() pdmp.Requester {
	enc := func(m map[string]any) json.RawMessage {
		if m == nil {
			return nil
		}
		b, _ := json.Marshal(m)
		return b
	}
	return pdmp.Requester{
		Practitioner:     enc(r.Requester.Practitioner),
		PractitionerRole: enc(r.Requester.PractitionerRole),
		Organization:     enc(r.Requester.Organization),
	}
}

// checkPolicy enforces the responder's state rules on who may ask.
func checkPolicy(resp *Responder, req *pdmp.Request) error {
	if resp.Policy.Delegates != "allowed" && req.HasDelegate() {
		return refuse(http.StatusForbidden, pdmp.IssueBusinessRule, "Parameters.parameter[delegate-practitioner]",
			fmt.Sprintf("responder %q does not accept requests from delegates through integrated access (policy.delegates: refused)", resp.Name))
	}
	if kinds := resp.Policy.RequesterKinds; len(kinds) > 0 {
		codes := req.RoleCodes()
		if len(codes) > 0 && !slices.ContainsFunc(codes, func(c string) bool { return slices.Contains(kinds, c) }) {
			return refuse(http.StatusForbidden, pdmp.IssueBusinessRule, "Parameters.parameter[authorized-practitioner-role].resource.code",
				fmt.Sprintf("responder %q accepts only these requester kinds: %s", resp.Name, strings.Join(kinds, ", ")))
		}
	}
	return nil
}

func (s *Service) patientRef(req *pdmp.Request) string {
	family, given, birth := req.PatientIdentity()
	return audit.PatientRef(s.patientKey, family, given, birth)
}

// Job reports a job to the caller that submitted it.
func (s *Service) Job(ctx context.Context, id string, c ipc.Caller) (ipc.JobStatus, error) {
	job, err := s.callerJob(ctx, id, c)
	if err != nil {
		return ipc.JobStatus{}, err
	}
	return s.status(ctx, job)
}

// callerJob returns a job if c submitted it. Another caller's job is "not
// found", so that ids do not reveal which jobs exist.
func (s *Service) callerJob(ctx context.Context, id string, c ipc.Caller) (queue.Job, error) {
	job, err := s.queue.Get(ctx, id)
	if errors.Is(err, queue.ErrNotFound) || (err == nil && job.Labels[labelCaller] != c.Name) {
		return queue.Job{}, ipc.ErrNotFound
	}
	return job, err
}

// Wait blocks until the job ends, then reports it.
func (s *Service) Wait(ctx context.Context, id string) (ipc.JobStatus, error) {
	job, err := s.queue.Wait(ctx, id)
	if ctx.Err() != nil {
		// The caller stops waiting and will poll. Reporting the job as
		// pending, even if it just finished, keeps its result undelivered:
		// under display-only, delivering it to a caller about to give up
		// would destroy it unseen.
		return ipc.JobStatus{ID: id, State: ipc.StateInflight, Progress: "finishing", RetryAfter: time.Second}, ctx.Err()
	}
	if err != nil {
		return ipc.JobStatus{}, err
	}
	return s.status(ctx, job)
}

// Cancel cancels a pending job of the caller's.
func (s *Service) Cancel(ctx context.Context, id string, c ipc.Caller) error {
	if _, err := s.callerJob(ctx, id, c); err != nil {
		return err
	}
	if err := s.queue.Cancel(ctx, id); errors.Is(err, queue.ErrFinished) {
		return ipc.ErrFinished
	} else if err != nil {
		return err
	}
	return nil
}

// status maps a queue job to what the API answers. Handing out a finished
// result is its delivery: under display-only and view policies the queue
// destroys the result (or keeps only the link) in the same step.
func (s *Service) status(ctx context.Context, job queue.Job) (ipc.JobStatus, error) {
	st := ipc.JobStatus{ID: job.ID, ContentType: "application/fhir+json"}
	switch job.State {
	case queue.Queued, queue.Inflight:
		st.State = ipc.StateQueued
		what := "queued"
		if job.State == queue.Inflight {
			st.State, what = ipc.StateInflight, "in flight"
		}
		st.Progress = fmt.Sprintf("%s, attempt %d", what, max(job.Attempts, 1))
		st.RetryAfter = max(time.Second, time.Until(job.NextAttempt).Round(time.Second))
		return st, nil
	case queue.Cancelled:
		st.State = ipc.StateCancelled
		return st, nil
	case queue.Failed, queue.Dead:
		st.State = ipc.StateFailed
		if job.State == queue.Dead {
			st.State = ipc.StateDead
		}
		st.HTTPStatus = job.Status
		if st.HTTPStatus < 400 {
			st.HTTPStatus = http.StatusBadGateway
		}
		st.Body = job.Result
		if !isOutcome(st.Body) {
			st.Body = outcomeJSON(st.HTTPStatus, pdmp.IssueException, job.Error)
		}
		return st, nil
	}
	a := s.Agent()
	retention := "display-only"
	if r, ok := a.responders[job.Responder]; ok {
		retention = r.Policy.Retention
	}
	var keep func([]byte) []byte
	if retention == "view" {
		keep = linkOnly
	}
	job, err := s.queue.Deliver(ctx, job.ID, keep)
	if err != nil {
		return ipc.JobStatus{}, err
	}
	if job.Result == nil {
		st.State = ipc.StateGone
		return st, nil
	}
	st.State, st.HTTPStatus, st.Body = ipc.StateDone, http.StatusOK, job.Result
	if job.Labels[labelSummary] == "true" {
		st.ContentType = "application/json"
		st.Body, err = summarize(job.Result, retention == "data")
		return st, err
	}
	if job.Labels[labelOperation] == ipc.OpProcessMessage {
		var env envelope
		_ = json.Unmarshal(job.Body, &env)
		st.Body, err = responseMessage(job.Result, env.MessageID)
	}
	return st, err
}

func isOutcome(b []byte) bool {
	var probe struct {
		ResourceType string `json:"resourceType"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.ResourceType == "OperationOutcome"
}

// linkOnly is what a view policy lets the agent keep after delivery: the
// report link and the outcome, without the discrete history.
func linkOnly(result []byte) []byte {
	var p struct {
		ResourceType string            `json:"resourceType"`
		ID           string            `json:"id,omitempty"`
		Parameter    []json.RawMessage `json:"parameter"`
	}
	if json.Unmarshal(result, &p) != nil {
		return nil
	}
	kept := p.Parameter[:0]
	for _, raw := range p.Parameter {
		var name struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(raw, &name)
		if name.Name == "pdmp-history-link" || name.Name == "outcome" {
			kept = append(kept, raw)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	p.Parameter = kept
	b, _ := json.Marshal(p)
	return b
}

// summarize is the compact answer an EHR asks for with _summary=pdmp: the
// responder's status, counts, alerts, link and key, plus — only where the
// responder's policy allows discrete data — the clinical summary as a FHIR
// Bundle of DetectedIssues and Observations (docs/clinical-summary.md).
func summarize(result []byte, discrete bool) ([]byte, error) {
	resp, err := pdmp.ParseResponse(result)
	if err != nil {
		return nil, err
	}
	out := struct {
		Summary  pdmp.Summary    `json:"summary"`
		Clinical json.RawMessage `json:"clinical,omitempty"`
	}{Summary: resp.Summary()}
	if discrete && resp.History != nil {
		if out.Clinical, err = clinical.Summarize(resp.History, time.Now(), clinical.Options{}).FHIR(); err != nil {
			return nil, err
		}
	}
	return json.Marshal(out)
}
