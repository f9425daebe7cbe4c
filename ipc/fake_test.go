package ipc

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// FakeBackend is a Backend for tests. It is exported from a _test.go file
// so that the external test package (ipc_test, which can import
// ipc/client) uses it too.
//
// Jobs finish at once with Answer, unless Hold is set: then they stay
// queued until Release. Resubmitting an idempotency key from the same
// caller returns the same job. Only the caller (rule name) that submitted
// a job sees it.
type FakeBackend struct {
	// Hold keeps new jobs queued until Release.
	Hold bool
	// Answer gives a job's terminal status; default: done, a Parameters.
	Answer func(Submission) JobStatus
	// SubmitErr, when set, is what Submit returns.
	SubmitErr error
	// DeliverOnce makes a done job gone once Job has returned it.
	DeliverOnce bool

	mu          sync.Mutex
	seq         int
	jobs        map[string]*fakeJob
	idem        map[string]string
	submissions []Submission
}

type fakeJob struct {
	st    JobStatus
	owner string
	sub   Submission
	done  chan struct{}
}

// FakeAnswer is the default answer body.
const FakeAnswer = `{"resourceType":"Parameters","parameter":[{"name":"report"}]}`

// Submissions returns what was submitted so far.
func (f *FakeBackend) Submissions() []Submission {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Submission(nil), f.submissions...)
}

func (f *FakeBackend) Submit(ctx context.Context, s Submission) (JobStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.submissions = append(f.submissions, s)
	if f.SubmitErr != nil {
		return JobStatus{}, f.SubmitErr
	}
	if s.Responder != "state-a" {
		return JobStatus{}, ErrNotFound
	}
	if f.jobs == nil {
		f.jobs, f.idem = map[string]*fakeJob{}, map[string]string{}
	}
	key := s.Caller.Name + "\x00" + s.IdempotencyKey
	if id, ok := f.idem[key]; ok && s.IdempotencyKey != "" {
		return f.jobs[id].st, nil
	}
	f.seq++
	id := fmt.Sprintf("job-%d", f.seq)
	j := &fakeJob{
		st:    JobStatus{ID: id, State: StateQueued, Progress: "queued, attempt 1", RetryAfter: 100 * time.Millisecond},
		owner: s.Caller.Name, sub: s, done: make(chan struct{}),
	}
	f.jobs[id] = j
	f.idem[key] = id
	if !f.Hold {
		f.finishLocked(j)
	}
	return j.st, nil
}

func (f *FakeBackend) finishLocked(j *fakeJob) {
	if j.st.State.Terminal() {
		return
	}
	st := JobStatus{State: StateDone, HTTPStatus: 200, Body: []byte(FakeAnswer), ContentType: "application/fhir+json"}
	if f.Answer != nil {
		st = f.Answer(j.sub)
	}
	st.ID = j.st.ID
	j.st = st
	close(j.done)
}

// Release finishes a held job.
func (f *FakeBackend) Release(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finishLocked(f.jobs[id])
}

func (f *FakeBackend) Wait(ctx context.Context, id string) (JobStatus, error) {
	f.mu.Lock()
	j, ok := f.jobs[id]
	f.mu.Unlock()
	if !ok {
		return JobStatus{}, ErrNotFound
	}
	select {
	case <-j.done:
	case <-ctx.Done():
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return j.st, ctx.Err()
}

func (f *FakeBackend) Job(ctx context.Context, id string, c Caller) (JobStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok || j.owner != c.Name {
		return JobStatus{}, ErrNotFound
	}
	st := j.st
	if f.DeliverOnce && st.State == StateDone {
		j.st = JobStatus{ID: id, State: StateGone}
	}
	return st, nil
}

func (f *FakeBackend) Cancel(ctx context.Context, id string, c Caller) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok || j.owner != c.Name {
		return ErrNotFound
	}
	if j.st.State.Terminal() {
		return ErrFinished
	}
	j.st = JobStatus{ID: id, State: StateCancelled}
	close(j.done)
	return nil
}

func (f *FakeBackend) Report(ctx context.Context, id string, c Caller) (JobStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok || j.owner != c.Name {
		return JobStatus{}, ErrNotFound
	}
	return JobStatus{ID: id, State: StateDone, Body: []byte("<html>report</html>"), ContentType: "text/html"}, nil
}

func (f *FakeBackend) Capabilities(ctx context.Context, responder string) ([]byte, error) {
	if responder != "state-a" {
		return nil, ErrNotFound
	}
	return []byte(`{"resourceType":"CapabilityStatement","status":"active","kind":"instance","fhirVersion":"4.0.1"}`), nil
}

func (f *FakeBackend) Status(ctx context.Context) ([]byte, error) {
	return []byte(`{"status":"ok","jobs":{"queued":0}}`), nil
}

// FakeOutcomeError is an OutcomeError, as the agent's validation returns.
type FakeOutcomeError struct {
	Status int
	Body   string
}

func (e FakeOutcomeError) Error() string            { return fmt.Sprintf("rejected with %d", e.Status) }
func (e FakeOutcomeError) HTTPStatus() int          { return e.Status }
func (e FakeOutcomeError) OperationOutcome() []byte { return []byte(e.Body) }
