package queue

import (
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// State is where a job is in its lifecycle:
//
//	queued → inflight → done | failed | dead | cancelled
//
// with inflight → queued on a transient failure (after a backoff) or when the
// process stopped mid-attempt, and failed/dead → queued on [Queue.Retry].
type State string

const (
	Queued    State = "queued"    // waiting for its next attempt
	Inflight  State = "inflight"  // a handler is working on it
	Done      State = "done"      // succeeded; Result holds the response
	Failed    State = "failed"    // permanent failure; Result may hold the failure body
	Dead      State = "dead"      // transient failures exhausted the retry budget
	Cancelled State = "cancelled" // cancelled by the caller

	// StateQuarantined is not a lifecycle state: [Queue.Stats] reports
	// under it how many corrupt records sit in quarantine.
	StateQuarantined State = "quarantined"
)

// Terminal reports whether s is final unless someone calls [Queue.Retry].
func (s State) Terminal() bool {
	switch s {
	case Done, Failed, Dead, Cancelled:
		return true
	}
	return false
}

// ResultPolicy says how long a job's result body is kept.
type ResultPolicy int

const (
	// KeepUntilTTL keeps the result until the job is purged, ResultTTL after
	// it ended.
	KeepUntilTTL ResultPolicy = iota
	// DeliverOnce destroys the result the first time [Queue.Deliver] hands
	// it out, so PHI lives on disk no longer than needed.
	DeliverOnce
)

// Request is what a caller submits.
type Request struct {
	// Responder names the destination. It routes the job to a handler and
	// keys the per-responder concurrency, rate and circuit-breaker limits.
	Responder string
	// IdempotencyKey, if set, makes Submit return the existing job when the
	// same key was submitted within Options.IdempotencyWindow. It is stored
	// in clear and must not hold PHI.
	IdempotencyKey string
	// RequestID is reused on every attempt (as X-Request-ID). If empty,
	// Submit generates a random 128-bit hex id.
	RequestID string
	// Body is opaque and encrypted at rest.
	Body []byte
	// Labels is small clear-text metadata the agent needs to handle the job
	// (a registration name, an operation). It is stored in clear and must
	// not hold PHI.
	Labels map[string]string
	// ResultPolicy says how long the result is kept.
	ResultPolicy ResultPolicy
}

// Job is a snapshot of a queued request.
type Job struct {
	ID             string
	Responder      string
	IdempotencyKey string
	RequestID      string
	Labels         map[string]string
	State          State
	// Attempts counts the attempts started, including one in flight.
	Attempts int
	Created  time.Time
	Updated  time.Time
	// NextAttempt is when a queued job becomes due.
	NextAttempt time.Time
	// Body is the decrypted request. Only Get, Wait, Deliver and the
	// handler see it; Submit and List leave it nil.
	Body []byte
	// Result is the decrypted result of a done job, or the failure body of
	// a failed or dead job, as the handler returned it.
	Result []byte
	// Error is the last attempt's error message. The handler guarantees it
	// holds no PHI.
	Error string
	// Status is the last status code the handler reported (e.g. HTTP).
	Status int
	// Delivered reports that a DeliverOnce result was handed out by Deliver
	// and destroyed; Result is then nil for good.
	Delivered    bool
	ResultPolicy ResultPolicy
}

// Outcome is what a handler reports for one attempt.
type Outcome struct {
	// Result is the response on success, or the failure body (for example
	// a FHIR OperationOutcome) on failure.
	Result []byte
	// Err is nil on success. Its message is stored in clear and logged, so
	// it must not hold PHI.
	Err error
	// Permanent marks a failure that retrying cannot fix.
	Permanent bool
	// RetryAfter is a delay the responder asked for; the next attempt is
	// not made before it has passed.
	RetryAfter time.Duration
	// Status is a status code to record (e.g. the HTTP status).
	Status int
}

// Handler makes one attempt at a job. It must return promptly once ctx is
// done: ctx is cancelled when the job is cancelled or Run is stopping.
type Handler func(ctx context.Context, job Job) Outcome

// Limits bounds the load put on one responder.
type Limits struct {
	// Concurrency is the most attempts in flight at once; default 4.
	Concurrency int
	// Rate is the most attempts started per second; 0 means unlimited.
	Rate float64
	// Burst is how many attempts may start at once within Rate; default 1.
	Burst int
}

// RetryPolicy shapes retries after transient failures. Zero fields take
// their defaults.
type RetryPolicy struct {
	// Base is the backoff ceiling after the first failure; default 1s.
	Base time.Duration
	// Cap bounds the backoff ceiling; default 5m.
	Cap time.Duration
	// MaxAttempts is how many attempts a job gets; default 10.
	MaxAttempts int
	// MaxAge, if positive, dead-letters a job whose next attempt would start
	// later than MaxAge after it was (re)queued.
	MaxAge time.Duration
}

// BreakerPolicy configures the per-responder circuit breaker. Zero fields
// take their defaults.
type BreakerPolicy struct {
	// Failures is how many consecutive transient failures open the
	// breaker; default 5.
	Failures int
	// Cooldown is how long an open breaker waits before letting one probe
	// through; default 30s.
	Cooldown time.Duration
}

// Options configures a Queue.
type Options struct {
	// DataKey is the 32-byte key bodies are encrypted under. Required, and
	// must be the same on every Open of a file.
	DataKey []byte
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Rand returns a uniform number in [0, 1) for backoff jitter; default
	// math/rand/v2.Float64. It must be safe for concurrent use.
	Rand    func() float64
	Retry   RetryPolicy
	Breaker BreakerPolicy
	// Limits returns the limits of a responder. It is called once per
	// responder per Run. Default: Concurrency 4, unlimited rate.
	Limits func(responder string) Limits
	// IdempotencyWindow is how long an IdempotencyKey maps to its job;
	// default 24h.
	IdempotencyWindow time.Duration
	// ResultTTL is how long a job is kept after it ended; default 24h.
	ResultTTL time.Duration
	// PurgeInterval is how often Run purges jobs older than ResultTTL;
	// default 10m.
	PurgeInterval time.Duration
	// Logger receives operational events; it never receives bodies.
	// Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if len(o.DataKey) != 32 {
		return o, fmt.Errorf("queue: DataKey must be 32 bytes, got %d", len(o.DataKey))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Float64
	}
	o.Retry = o.Retry.withDefaults()
	o.Breaker = o.Breaker.withDefaults()
	if o.Limits == nil {
		o.Limits = func(string) Limits { return Limits{} }
	}
	if o.IdempotencyWindow <= 0 {
		o.IdempotencyWindow = 24 * time.Hour
	}
	if o.ResultTTL <= 0 {
		o.ResultTTL = 24 * time.Hour
	}
	if o.PurgeInterval <= 0 {
		o.PurgeInterval = 10 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

var (
	// ErrNotFound means no job has the id (it may have been purged).
	ErrNotFound = errors.New("queue: job not found")
	// ErrFinished means the job already reached a terminal state.
	ErrFinished = errors.New("queue: job already finished")
	// ErrState means the job is not in a state the operation applies to.
	ErrState = errors.New("queue: operation not allowed in the job's state")
	// ErrInvalid means a request was rejected before anything was stored.
	ErrInvalid = errors.New("queue: invalid request")
	// ErrQuarantined means the job's record was corrupt and has been moved
	// to quarantine.
	ErrQuarantined = errors.New("queue: job record is corrupt and quarantined")
	// ErrStorage wraps failures of the underlying file (disk full, read
	// only, I/O errors). Nothing new was accepted; what was accepted before
	// stays intact. Callers typically map it to 503.
	ErrStorage = errors.New("queue: storage failure")
	// ErrClosed means the queue has been closed.
	ErrClosed = errors.New("queue: closed")
	// ErrDataKey means Options.DataKey is not the key the file was created
	// with. Open refuses such a file rather than quarantining every record.
	ErrDataKey = errors.New("queue: data key does not match the database")
)

const (
	// lockTimeout bounds how long Open waits for another process holding
	// the file, so a second agent instance fails instead of hanging.
	lockTimeout = 2 * time.Second
	// batchDelay is how long bbolt's group commit (DB.Batch) waits for
	// more submissions before committing. bbolt's 10ms default caps a lone
	// submitter below 100 accepts per second; 1ms still lets concurrent
	// submitters share an fsync (see BenchmarkSubmit).
	batchDelay = time.Millisecond
)

// Queue is a durable job queue backed by one bbolt file. Its methods are safe
// for concurrent use.
type Queue struct {
	db *bolt.DB
	// writers counts group commits in progress, to pick a commit mode.
	writers atomic.Int64
	aead    cipher.AEAD
	opts    Options
	log     *slog.Logger
	// wake nudges Run when work may have become due (capacity 1).
	wake chan struct{}

	mu      sync.Mutex
	closed  bool
	counts  map[State]int
	ghosts  map[string]bool // see change.ghost
	waiters map[string]*waiter
	cancels map[string]context.CancelFunc // in-flight job → its handler's cancel
	running bool
	stopRun context.CancelFunc
	runDone chan struct{}
}

// Open opens or creates the queue file at path (mode 0600). It checks every
// record's checksum, quarantining corrupt ones, and queues again the jobs
// that were in flight when the previous process stopped (or ends them, if
// they were cancelled or their last attempt was spent).
func Open(path string, opts Options) (*Queue, error) {
	return open(path, opts, nil)
}

// open is Open with bbolt options, which tests use to open read-only.
func open(path string, opts Options, bo *bolt.Options) (*Queue, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	aead, err := newAEAD(opts.DataKey)
	if err != nil {
		return nil, err
	}
	if bo == nil {
		bo = &bolt.Options{}
	}
	bo.Timeout = lockTimeout
	// The hashmap freelist stays fast when a large backlog drains and
	// leaves many free pages behind.
	bo.FreelistType = bolt.FreelistMapType
	db, err := bolt.Open(path, 0o600, bo)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrStorage, path, err)
	}
	if !bo.ReadOnly && runtime.GOOS != "windows" {
		// A file created by something else, or restored from a backup,
		// may be readable by others; it holds metadata we keep private.
		// (Windows has no such mode bits; its ACLs are the installer's.)
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() != 0o600 {
			if err := os.Chmod(path, 0o600); err != nil {
				db.Close()
				return nil, fmt.Errorf("%w: open %s: %w", ErrStorage, path, err)
			}
		}
	}
	db.MaxBatchDelay = batchDelay
	q := &Queue{
		db:      db,
		aead:    aead,
		opts:    opts,
		log:     opts.Logger,
		wake:    make(chan struct{}, 1),
		counts:  make(map[State]int),
		ghosts:  make(map[string]bool),
		waiters: make(map[string]*waiter),
		cancels: make(map[string]context.CancelFunc),
	}
	if err := q.init(); err != nil {
		db.Close()
		return nil, err
	}
	return q, nil
}

// Close stops Run (waiting for its handlers to return), wakes every Wait
// with ErrClosed and closes the file. Closing twice is a no-op.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	stop, runDone := q.stopRun, q.runDone
	for id, w := range q.waiters {
		close(w.ch)
		delete(q.waiters, id)
	}
	q.mu.Unlock()
	if stop != nil {
		stop()
		<-runDone
	}
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("%w: close: %w", ErrStorage, err)
	}
	return nil
}

func (q *Queue) now() time.Time { return q.opts.Now() }

func (q *Queue) checkOpen() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	return nil
}

// dbErr turns an error out of a bbolt transaction into one for the caller:
// the queue's own sentinel errors pass through, a closed database reads as
// ErrClosed and anything else is a storage failure.
func dbErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrFinished), errors.Is(err, ErrState),
		errors.Is(err, ErrQuarantined), errors.Is(err, ErrDataKey), errors.Is(err, ErrClosed):
		return err
	case errors.Is(err, bolterrors.ErrDatabaseNotOpen):
		return ErrClosed
	}
	return fmt.Errorf("%w: %s: %w", ErrStorage, op, err)
}

// signal wakes Run without blocking; one pending wake-up is enough.
func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// change is one committed state transition, applied to the in-memory
// counters and waiters only after its transaction committed (bbolt may run
// a Batch function more than once).
type change struct {
	id, responder string
	from, to      State  // from "" = new job or unknown; to "" = purged
	reason        string // why a record was quarantined
	// ghost marks a quarantined job whose state was unreadable, so it is
	// still counted under that state. settle marks the later discovery of
	// its state, from an index entry it left behind: from is uncounted
	// then, if the job is a ghost.
	ghost, settle bool
}

func (q *Queue) commit(changes []change) {
	if len(changes) == 0 {
		return
	}
	q.mu.Lock()
	for _, c := range changes {
		if c.settle {
			if !q.ghosts[c.id] {
				continue
			}
			delete(q.ghosts, c.id)
		}
		if c.ghost {
			q.ghosts[c.id] = true
		}
		if c.from != "" {
			q.counts[c.from]--
		}
		if c.to != "" {
			q.counts[c.to]++
		}
		if w := q.waiters[c.id]; w != nil {
			close(w.ch)
			delete(q.waiters, c.id)
		}
	}
	q.mu.Unlock()
	for _, c := range changes {
		if c.to == StateQuarantined {
			// The reason is ours and names no content; the record itself
			// is never logged.
			q.log.Error("queue: corrupt record quarantined", "job", c.id, "reason", c.reason)
		}
		if c.to == Queued {
			q.signal()
		}
	}
}

// waiter is a broadcast channel closed on the next change to one job.
type waiter struct {
	ch chan struct{}
	n  int // Wait calls sharing ch
}

// watch returns a channel closed at the job's next committed change (or on
// Close) and a function to call when no longer interested.
func (q *Queue) watch(id string) (<-chan struct{}, func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		ch := make(chan struct{})
		close(ch)
		return ch, func() {}
	}
	w := q.waiters[id]
	if w == nil {
		w = &waiter{ch: make(chan struct{})}
		q.waiters[id] = w
	}
	w.n++
	return w.ch, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		w.n--
		if w.n == 0 && q.waiters[id] == w {
			delete(q.waiters, id)
		}
	}
}
