package ipc

import (
	"context"
	"errors"
	"time"
)

// Backend is what the local API needs from the agent. The agent implements
// it on top of its queue; ipc knows nothing of FHIR beyond "the body is
// JSON", nor of tokens, responders' addresses or storage.
//
// Every method may return an error implementing [OutcomeError] to choose
// the HTTP status and the OperationOutcome the caller gets; ipc sends those
// as they are. ErrNotFound and ErrFinished map to 404 and 409; any other
// error is a 500 whose text is logged, never sent.
type Backend interface {
	// Submit queues one request durably and returns its job; it should
	// return the existing job when s.IdempotencyKey was seen before from
	// the same caller. A status that is already terminal (an idempotent
	// replay, an answer from a cache) is sent at once.
	Submit(ctx context.Context, s Submission) (JobStatus, error)
	// Job reports a job's state. It returns ErrNotFound both for unknown
	// ids and for jobs c may not see, so that ids do not leak whether a
	// job exists.
	Job(ctx context.Context, id string, c Caller) (JobStatus, error)
	// Wait blocks until the job is terminal or ctx is done; in the latter
	// case it returns the latest status and ctx.Err(). It is only called
	// right after Submit, by the request that submitted the job.
	Wait(ctx context.Context, id string) (JobStatus, error)
	// Cancel stops a job that has not finished: ErrNotFound, or
	// ErrFinished when it already has.
	Cancel(ctx context.Context, id string, c Caller) error
	// Report fetches the rendered report a finished job's answer links to
	// (pdmp-history-link), through the agent, which alone holds the token.
	// Its Body and ContentType are the report's.
	Report(ctx context.Context, id string, c Caller) (JobStatus, error)
	// Capabilities returns the CapabilityStatement (JSON) of one responder,
	// or ErrNotFound for a responder that is not configured.
	Capabilities(ctx context.Context, responder string) ([]byte, error)
	// Status returns the agent's status document (JSON, no PHI).
	Status(ctx context.Context) ([]byte, error)
}

// Operations a Submission asks for.
const (
	OpPDMPHistory    = "pdmp-history"
	OpProcessMessage = "process-message"
)

// Submission is one FHIR request handed to the backend.
type Submission struct {
	// Caller is who asked; Caller.Name is the policy rule it matched.
	Caller Caller
	// Responder is the {responder} of the URL, unchecked against the
	// configuration (the backend returns ErrNotFound for unknown ones).
	Responder string
	// Operation is OpPDMPHistory (for both the Patient-level and the
	// system-level URL: which one the responder wants is configuration)
	// or OpProcessMessage.
	Operation string
	// Body is the request body: valid JSON, otherwise unchecked.
	Body []byte
	// IdempotencyKey is the Idempotency-Key header, if any.
	IdempotencyKey string
	// RequestID is the X-Request-ID header, or one ipc generated.
	RequestID string
	// Summary asks for a compact summary instead of the full Parameters
	// (query parameter _summary=pdmp).
	Summary bool
}

// JobState is where a job is in its life.
type JobState string

// Job states. Queued and inflight are pending; the others are terminal.
const (
	StateQueued    JobState = "queued"
	StateInflight  JobState = "inflight"
	StateDone      JobState = "done"      // the responder answered; Body is the answer
	StateFailed    JobState = "failed"    // a permanent failure; Body is an OperationOutcome
	StateDead      JobState = "dead"      // retries exhausted; Body is an OperationOutcome
	StateCancelled JobState = "cancelled" // cancelled by a caller
	StateGone      JobState = "gone"      // the result was delivered once and destroyed
)

// Terminal reports whether a job in state s will not change any more.
func (s JobState) Terminal() bool {
	return s != StateQueued && s != StateInflight
}

// JobStatus is a job as the backend reports it.
type JobStatus struct {
	ID    string
	State JobState
	// Progress is a short human text for pending jobs, such as
	// "queued, attempt 2"; sent as X-Progress. Never PHI.
	Progress string
	// HTTPStatus is the status to answer with once terminal (default 200
	// for done, 502 for failed and dead, 410 for cancelled and gone).
	HTTPStatus int
	// Body and ContentType are the answer (default application/fhir+json).
	Body        []byte
	ContentType string
	// RetryAfter is when a poller should look again (default 1s).
	RetryAfter time.Duration
}

// Errors a Backend returns.
var (
	ErrNotFound = errors.New("not found")
	ErrFinished = errors.New("job already finished")
)

// OutcomeError is an error that carries the HTTP status and the
// OperationOutcome (JSON) to answer with. Deep validation of a request is
// the backend's job; this is how it reports what it found.
type OutcomeError interface {
	error
	HTTPStatus() int
	OperationOutcome() []byte
}
