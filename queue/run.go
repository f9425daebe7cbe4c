package queue

import (
	"bytes"
	"context"
	"errors"
	"runtime/debug"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// storageRetry is how long Run waits before trying again after the file
// failed it.
const storageRetry = time.Second

var errRunning = errors.New("queue: Run is already running")

// Run works the queue with h until ctx is done or the queue is closed, then
// cancels the handlers' contexts, waits for them to return and returns
// ctx's error (or ErrClosed). Only one Run may be active at a time.
//
// Run starts each due job's attempt in its own goroutine within the
// responder's limits: at most Concurrency in flight, at most Rate starts per
// second, and none while the responder's circuit breaker is open. Between
// events it sleeps until the next job is due, a job is submitted or
// requeued, or an attempt finishes. It also purges expired jobs every
// PurgeInterval.
func (q *Queue) Run(ctx context.Context, h Handler) error {
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return ErrClosed
	case q.running:
		q.mu.Unlock()
		return errRunning
	}
	runCtx, stop := context.WithCancel(ctx)
	q.running, q.stopRun, q.runDone = true, stop, make(chan struct{})
	q.mu.Unlock()
	defer func() {
		stop()
		q.mu.Lock()
		q.running, q.stopRun = false, nil
		close(q.runDone)
		q.mu.Unlock()
	}()

	r := &runner{
		q:          q,
		h:          h,
		ctx:        runCtx,
		done:       make(chan finished),
		responders: make(map[string]*responder),
	}
	r.loop()
	if err := q.checkOpen(); err != nil {
		return err
	}
	return ctx.Err()
}

// runner is Run's state. Only the Run goroutine touches it, so the
// per-responder breakers, throttles and counts need no locks; handler
// goroutines report back over done.
type runner struct {
	q          *Queue
	h          Handler
	ctx        context.Context
	done       chan finished
	responders map[string]*responder
	inflight   int
}

type responder struct {
	limits   Limits
	inflight int
	br       breaker
	th       throttle
	probe    string // id of the job sent as half-open probe
}

// verdict is what a finished attempt says about its responder.
type verdict int

const (
	neutral  verdict = iota // cancelled or interrupted: says nothing
	answered                // success, or a permanent failure the responder reported
	failure                 // transient failure
)

type finished struct {
	id, responder string
	verdict       verdict
}

type candidate struct {
	responder string
	key       []byte // due index key
	id        string
	probe     bool
}

func (r *runner) responder(name string) *responder {
	rs := r.responders[name]
	if rs == nil {
		l := r.q.opts.Limits(name).withDefaults()
		rs = &responder{limits: l, br: breaker{policy: r.q.opts.Breaker}, th: newThrottle(l)}
		r.responders[name] = rs
	}
	return rs
}

func (r *runner) loop() {
	var purger sync.WaitGroup
	purger.Go(r.purgeLoop)
	timer := time.NewTimer(0)
	timer.Stop()
	for {
		var wake <-chan time.Time
		if at := r.dispatch(); !at.IsZero() {
			timer.Reset(at.Sub(r.q.now()))
			wake = timer.C
		}
		select {
		case <-r.ctx.Done():
			timer.Stop()
			for r.inflight > 0 {
				r.finished(<-r.done)
			}
			purger.Wait()
			return
		case f := <-r.done:
			r.finished(f)
		case <-r.q.wake:
		case <-wake:
		}
		timer.Stop()
	}
}

func (r *runner) purgeLoop() {
	t := time.NewTicker(r.q.opts.PurgeInterval)
	defer t.Stop()
	for {
		n, err := r.q.Purge(r.ctx, r.q.opts.ResultTTL)
		switch {
		case err != nil && r.ctx.Err() == nil && !errors.Is(err, ErrClosed):
			r.q.log.Error("queue: purge failed", "err", err)
		case n > 0:
			r.q.log.Info("queue: purged expired jobs", "jobs", n)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dispatch starts every job that is due and allowed to start, and returns
// when it should next be called if nothing else happens (zero: only on an
// event).
func (r *runner) dispatch() (wake time.Time) {
	now := r.q.now()
	cands, wake, err := r.pick(now)
	earliest := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	if err == nil && len(cands) > 0 {
		var jobs []Job
		jobs, err = r.q.claim(cands, now)
		started := make(map[string]bool, len(jobs))
		for _, j := range jobs {
			started[j.ID] = true
			r.start(j)
		}
		for _, c := range cands {
			switch {
			case started[c.id]:
				if c.probe {
					r.responders[c.responder].probe = c.id
				}
				continue
			case c.probe:
				r.responders[c.responder].br.Release()
			}
			if err == nil {
				// The entry was stale and is gone now; what is behind
				// it may be due.
				earliest(now)
			}
		}
	}
	if err != nil {
		if r.ctx.Err() == nil {
			r.q.log.Error("queue: cannot dispatch", "err", err)
		}
		earliest(now.Add(storageRetry))
	}
	return wake
}

// pick chooses the jobs to start at now: for each responder with room, the
// due ones at the head of its due index, as far as its breaker and throttle
// allow. It seeks each responder's index rather than scanning, so its cost
// does not depend on the backlog. wake is when something not picked now
// may become startable (zero: only on an event).
func (r *runner) pick(now time.Time) (cands []candidate, wake time.Time, err error) {
	earliest := func(t time.Time) {
		if wake.IsZero() || t.Before(wake) {
			wake = t
		}
	}
	err = r.q.db.View(func(tx *bolt.Tx) error {
		due := tx.Bucket(bucketDue)
		return due.ForEachBucket(func(name []byte) error {
			rs := r.responder(string(name))
			free := rs.limits.Concurrency - rs.inflight
			c := due.Bucket(name).Cursor()
			for k, _ := c.First(); k != nil && free > 0; k, _ = c.Next() {
				ns, id, ok := splitTimeKey(k)
				if at := time.Unix(0, ns); ok && at.After(now) {
					earliest(at)
					break
				}
				allowed, probe := rs.br.Allow(now)
				if !allowed {
					if at := rs.br.ReadyAt(); !at.IsZero() {
						earliest(at)
					}
					break
				}
				if d := rs.th.take(now); d > 0 {
					if probe {
						rs.br.Release()
					}
					earliest(now.Add(d))
					break
				}
				cands = append(cands, candidate{responder: string(name), key: bytes.Clone(k), id: id, probe: probe})
				free--
			}
			return nil
		})
	})
	if err != nil {
		return nil, wake, dbErr("pick", err)
	}
	return cands, wake, nil
}

// claim moves the candidates that are still queued and due to inflight,
// counting the attempt, in one transaction, and returns them with their
// request bodies. Stale index entries are dropped; corrupt records are
// quarantined.
func (q *Queue) claim(cands []candidate, now time.Time) ([]Job, error) {
	ns := now.UnixNano()
	var jobs []Job
	var changes []change
	err := q.db.Update(func(tx *bolt.Tx) error {
		for _, c := range cands {
			due := tx.Bucket(bucketDue).Bucket([]byte(c.responder))
			r, err := load(tx, c.id)
			var bad errCorrupt
			switch {
			case errors.As(err, &bad):
				ch, err := q.quarantine(tx, c.id, nil, bad.reason, ns)
				if err != nil {
					return err
				}
				// Its index entry says what it was.
				ch.from, ch.responder = Queued, c.responder
				changes = append(changes, ch)
			case errors.Is(err, ErrQuarantined):
				changes = append(changes, change{id: c.id, from: Queued, settle: true})
			}
			if err != nil || r.State != Queued || !bytes.Equal(timeKey(r.Next, r.ID), c.key) {
				if err := due.Delete(c.key); err != nil {
					return err
				}
				continue
			}
			body, err := q.unseal(kindRequest, r.ID, tx.Bucket(bucketBodies).Get([]byte(r.ID)))
			if err != nil {
				ch, err := q.quarantine(tx, r.ID, &r, err.Error(), ns)
				if err != nil {
					return err
				}
				changes = append(changes, ch)
				continue
			}
			old := r
			r.State, r.Attempts, r.Updated = Inflight, r.Attempts+1, ns
			if err := q.put(tx, &old, &r); err != nil {
				return err
			}
			j := r.job()
			j.Body = body
			jobs = append(jobs, j)
			changes = append(changes, change{id: r.ID, responder: r.Responder, from: Queued, to: Inflight})
		}
		return nil
	})
	if err != nil {
		return nil, dbErr("claim", err)
	}
	q.commit(changes)
	return jobs, nil
}

// start runs one attempt in its own goroutine.
func (r *runner) start(job Job) {
	rs := r.responders[job.Responder]
	rs.inflight++
	r.inflight++
	ctx, cancel := context.WithCancel(r.ctx)
	r.q.mu.Lock()
	r.q.cancels[job.ID] = cancel
	r.q.mu.Unlock()
	go func() {
		out := r.call(ctx, job)
		r.q.mu.Lock()
		delete(r.q.cancels, job.ID)
		r.q.mu.Unlock()
		cancel()
		r.done <- finished{id: job.ID, responder: job.Responder, verdict: r.q.finish(r.ctx, job, out)}
	}()
}

// call runs the handler. A panicking handler counts as a transient failure
// rather than taking down every other job; the panic value is not logged,
// as it may quote the body.
func (r *runner) call(ctx context.Context, job Job) (out Outcome) {
	defer func() {
		if p := recover(); p != nil {
			r.q.log.Error("queue: handler panicked", "job", job.ID, "responder", job.Responder, "stack", string(debug.Stack()))
			out = Outcome{Err: errors.New("handler panicked")}
		}
	}()
	return r.h(ctx, job)
}

// finished applies an attempt's verdict to its responder's breaker.
func (r *runner) finished(f finished) {
	rs := r.responders[f.responder]
	rs.inflight--
	r.inflight--
	isProbe := rs.probe == f.id
	if isProbe {
		rs.probe = ""
	}
	switch f.verdict {
	case answered:
		rs.br.Success()
	case failure:
		if rs.br.Failure(r.q.now()) {
			r.q.log.Warn("queue: circuit breaker opened", "responder", f.responder, "cooldown", rs.br.policy.Cooldown)
		}
	case neutral:
		if isProbe {
			rs.br.Release()
		}
	}
}

// finish durably records the outcome of a job's attempt and returns what it
// says about the responder. If the file fails it tries again until ctx is
// done; the job then stays in flight on disk and the next Open queues it
// again.
func (q *Queue) finish(ctx context.Context, job Job, out Outcome) verdict {
	now := q.now()
	ns := now.UnixNano()
	// Shutdown cancelled the handler: its failure is ours, not the
	// responder's, so queue the job again without judging it.
	interrupted := out.Err != nil && ctx.Err() != nil
	var sealed []byte
	if out.Result != nil {
		sealed = q.seal(kindResult, job.ID, out.Result)
	}
	rnd := q.opts.Rand()
	for {
		var c change
		err := q.groupCommit(func(tx *bolt.Tx) error {
			c = change{}
			r, err := load(tx, job.ID)
			var bad errCorrupt
			switch {
			case errors.As(err, &bad):
				c, err = q.quarantine(tx, job.ID, nil, bad.reason, ns)
				c.from, c.responder = Inflight, job.Responder
				return err
			case errors.Is(err, ErrQuarantined):
				c = change{id: job.ID, from: Inflight, settle: true}
				return nil
			case err != nil || r.State != Inflight:
				return nil // gone meanwhile; nothing to record
			}
			old := r
			r.Updated, r.Status, r.Err = ns, out.Status, errString(out.Err)
			keep := false
			switch {
			case r.CancelReq:
				r.State = Cancelled
			case out.Err == nil:
				r.State, keep = Done, true
			case interrupted:
				r.State, r.Next = Queued, ns
			case out.Permanent:
				r.State, keep = Failed, true
			default:
				next, dead := retryPlan(q.opts.Retry, r.Attempts, time.Unix(0, r.Since), now, out.RetryAfter, rnd)
				if dead {
					r.State, keep = Dead, true
				} else {
					r.State, r.Next = Queued, next.UnixNano()
				}
			}
			if r.State.Terminal() {
				r.Ended = ns
			}
			if keep && sealed != nil {
				if err := tx.Bucket(bucketResults).Put([]byte(r.ID), sealed); err != nil {
					return err
				}
			}
			c = change{id: r.ID, responder: r.Responder, from: Inflight, to: r.State}
			return q.put(tx, &old, &r)
		})
		if err == nil {
			if c.id != "" {
				q.commit([]change{c})
			}
			if c.to != "" && c.to != StateQuarantined {
				q.logOutcome(job, c.to, out)
			}
			switch {
			case c.to == Cancelled || interrupted:
				return neutral
			case out.Err == nil || out.Permanent:
				return answered
			}
			return failure
		}
		q.log.Error("queue: cannot record attempt outcome", "job", job.ID, "err", err)
		if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
			return neutral
		}
		select {
		case <-ctx.Done():
			return neutral
		case <-time.After(storageRetry):
		}
	}
}

func (q *Queue) logOutcome(job Job, to State, out Outcome) {
	attrs := []any{"job", job.ID, "responder", job.Responder, "attempt", job.Attempts, "status", out.Status}
	if out.Err != nil {
		attrs = append(attrs, "err", out.Err.Error())
	}
	switch to {
	case Dead:
		q.log.Warn("queue: job dead-lettered, retry budget spent", attrs...)
	case Failed:
		q.log.Warn("queue: job failed permanently", attrs...)
	case Queued:
		q.log.Info("queue: attempt failed, will retry", attrs...)
	default:
		q.log.Debug("queue: attempt finished", append(attrs, "state", to)...)
	}
}
