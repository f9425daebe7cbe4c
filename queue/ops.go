package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Submit stores a request and returns its job once the record is fsynced:
// from then on the request survives a crash. Concurrent submissions share
// one fsync. If r.IdempotencyKey was submitted within the idempotency
// window, Submit stores nothing and returns the existing job with existed
// set.
//
// Errors wrap ErrInvalid for a request that cannot be stored, ErrStorage
// when the file cannot be written (disk full, read only), or are ErrClosed.
// The returned job has no Body.
func (q *Queue) Submit(ctx context.Context, r Request) (job Job, existed bool, err error) {
	if err := ctx.Err(); err != nil {
		return Job{}, false, err
	}
	if err := q.checkOpen(); err != nil {
		return Job{}, false, err
	}
	if err := validate(&r); err != nil {
		return Job{}, false, err
	}
	now := q.now()
	ns := now.UnixNano()
	rec := record{
		ID:        newID(now),
		Responder: r.Responder,
		IdemKey:   r.IdempotencyKey,
		RequestID: r.RequestID,
		Labels:    maps.Clone(r.Labels),
		State:     Queued,
		Policy:    r.ResultPolicy,
		Created:   ns,
		Updated:   ns,
		Next:      ns,
		Since:     ns,
	}
	if rec.RequestID == "" {
		rec.RequestID = randomHex(16)
	}
	// Seal outside the transaction so submitters encrypt in parallel and
	// the shared commit only does the writes.
	sealed := q.seal(kindRequest, rec.ID, r.Body)

	// From here on ctx is no longer consulted: once the batch may have
	// committed, abandoning it would leave the caller unsure whether the
	// request was accepted.
	var prior record
	err = q.groupCommit(func(tx *bolt.Tx) error {
		// bbolt may run this more than once; derive everything afresh.
		existed = false
		if rec.IdemKey != "" {
			if p, ok := q.findIdem(tx, rec.IdemKey, ns); ok {
				prior, existed = p, true
				return nil
			}
			if err := tx.Bucket(bucketIdem).Put([]byte(rec.IdemKey), []byte(rec.ID)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketBodies).Put([]byte(rec.ID), sealed); err != nil {
			return err
		}
		return q.put(tx, nil, &rec)
	})
	if err != nil {
		return Job{}, false, dbErr("submit", err)
	}
	if existed {
		return prior.job(), true, nil
	}
	q.commit([]change{{id: rec.ID, responder: rec.Responder, to: Queued}})
	return rec.job(), false, nil
}

// groupCommit runs fn in a durable write transaction. A lone writer commits
// at once; concurrent ones share one fsync through bbolt's Batch, whose
// collection delay would otherwise be added to every solitary request. fn
// may run more than once.
func (q *Queue) groupCommit(fn func(*bolt.Tx) error) error {
	defer q.writers.Add(-1)
	if q.writers.Add(1) == 1 {
		return q.db.Update(fn)
	}
	return q.db.Batch(fn)
}

func validate(r *Request) error {
	labels := 0
	for k, v := range r.Labels {
		labels += len(k) + len(v)
	}
	switch {
	case r.Responder == "":
		return fmt.Errorf("%w: empty responder", ErrInvalid)
	case len(r.Responder) > maxMetaLen, len(r.IdempotencyKey) > maxMetaLen, len(r.RequestID) > maxMetaLen:
		return fmt.Errorf("%w: responder, idempotency key or request id longer than %d bytes", ErrInvalid, maxMetaLen)
	case labels > 4*maxMetaLen:
		return fmt.Errorf("%w: labels longer than %d bytes", ErrInvalid, 4*maxMetaLen)
	case r.ResultPolicy != KeepUntilTTL && r.ResultPolicy != DeliverOnce:
		return fmt.Errorf("%w: unknown result policy %d", ErrInvalid, r.ResultPolicy)
	}
	return nil
}

// findIdem returns the job an idempotency key maps to, if it was created
// within the window. A key whose job is gone, unreadable or (the index
// being unchecksummed) not the job's own key is free again.
func (q *Queue) findIdem(tx *bolt.Tx, key string, now int64) (record, bool) {
	id := tx.Bucket(bucketIdem).Get([]byte(key))
	if id == nil {
		return record{}, false
	}
	r, err := load(tx, string(id))
	if err != nil || r.IdemKey != key || time.Duration(now-r.Created) >= q.opts.IdempotencyWindow {
		return record{}, false
	}
	return r, true
}

// Get returns a job with its decrypted request and result bodies. It
// returns ErrNotFound for an unknown (or purged) id and ErrQuarantined for
// a job whose record turned out corrupt.
func (q *Queue) Get(ctx context.Context, id string) (Job, error) {
	if err := ctx.Err(); err != nil {
		return Job{}, err
	}
	return q.get(id)
}

func (q *Queue) get(id string) (Job, error) {
	if err := q.checkOpen(); err != nil {
		return Job{}, err
	}
	var job Job
	err := q.db.View(func(tx *bolt.Tx) error {
		var err error
		_, job, err = q.readJob(tx, id)
		return err
	})
	return job, q.txErr("get", id, err)
}

// txErr is dbErr that also quarantines a job found corrupt.
func (q *Queue) txErr(op, id string, err error) error {
	var bad errCorrupt
	if errors.As(err, &bad) {
		q.quarantineLater(id, bad.reason)
		return ErrQuarantined
	}
	return dbErr(op, err)
}

// readJob loads a job's record and bodies; corruption yields errCorrupt.
func (q *Queue) readJob(tx *bolt.Tx, id string) (record, Job, error) {
	r, err := load(tx, id)
	if err != nil {
		return record{}, Job{}, err
	}
	j := r.job()
	key := []byte(id)
	if j.Body, err = q.unseal(kindRequest, id, tx.Bucket(bucketBodies).Get(key)); err != nil {
		return record{}, Job{}, err
	}
	if sealed := tx.Bucket(bucketResults).Get(key); sealed != nil {
		if j.Result, err = q.unseal(kindResult, id, sealed); err != nil {
			return record{}, Job{}, err
		}
	}
	return r, j, nil
}

// Wait blocks until the job is terminal and returns it as Get would. If ctx
// ends first it returns the job as it stands with ctx's error. Wait is woken
// by the queue's own state changes; it does not poll.
func (q *Queue) Wait(ctx context.Context, id string) (Job, error) {
	for {
		changed, unwatch := q.watch(id)
		job, err := q.get(id)
		if err != nil || job.State.Terminal() {
			unwatch()
			return job, err
		}
		select {
		case <-changed:
			unwatch()
		case <-ctx.Done():
			unwatch()
			return job, ctx.Err()
		}
	}
}

// Deliver returns the job like Get. For a terminal DeliverOnce job it also
// replaces the result, in the same transaction that records the delivery,
// with keep(result) — what the caller may retain, such as a report link —
// or destroys it when keep is nil or returns nil. Later calls (and Get)
// report Delivered with the retained result or none, which callers map to
// 410 Gone.
func (q *Queue) Deliver(ctx context.Context, id string, keep func(result []byte) []byte) (Job, error) {
	job, err := q.Get(ctx, id)
	if err != nil || job.ResultPolicy != DeliverOnce || !job.State.Terminal() || job.Delivered {
		return job, err
	}
	ns := q.now().UnixNano()
	err = q.db.Update(func(tx *bolt.Tx) error {
		r, j, err := q.readJob(tx, id)
		if err != nil {
			return err
		}
		job = j
		if r.Delivered {
			return nil
		}
		old := r
		r.Delivered, r.Updated = true, ns
		var kept []byte
		if keep != nil && j.Result != nil {
			kept = keep(j.Result)
		}
		results := tx.Bucket(bucketResults)
		if kept != nil {
			if err := results.Put([]byte(id), q.seal(kindResult, id, kept)); err != nil {
				return err
			}
		} else if err := results.Delete([]byte(id)); err != nil {
			return err
		}
		return q.put(tx, &old, &r)
	})
	if err != nil {
		return Job{}, q.txErr("deliver", id, err)
	}
	return job, nil
}

// Cancel cancels a job. A queued job is cancelled at once. For an in-flight
// job the cancellation is recorded durably and the handler's context is
// cancelled; the job becomes cancelled when the handler returns, whatever
// it returns (use Wait to see it). A terminal job yields ErrFinished.
func (q *Queue) Cancel(ctx context.Context, id string) error {
	c, err := q.transition(ctx, "cancel", id, func(_ *bolt.Tx, r *record, ns int64) error {
		switch r.State {
		case Queued:
			r.State, r.Ended = Cancelled, ns
		case Inflight:
			r.CancelReq = true
		default:
			return ErrFinished
		}
		return nil
	})
	if err != nil {
		return err
	}
	if c.to == Inflight {
		q.mu.Lock()
		cancel := q.cancels[id]
		q.mu.Unlock()
		// A handler that has not registered yet still ends cancelled:
		// finishing honours the durable CancelReq.
		if cancel != nil {
			cancel()
		}
	}
	return nil
}

// Retry queues a dead or failed job again, due now with a fresh retry
// budget. Its previous result is discarded. Other states yield ErrState.
func (q *Queue) Retry(ctx context.Context, id string) error {
	_, err := q.transition(ctx, "retry", id, func(tx *bolt.Tx, r *record, ns int64) error {
		if r.State != Dead && r.State != Failed {
			return fmt.Errorf("%w: retry of a %s job", ErrState, r.State)
		}
		r.State, r.Attempts, r.Next, r.Since = Queued, 0, ns, ns
		r.Ended, r.Delivered = 0, false
		return tx.Bucket(bucketResults).Delete([]byte(id))
	})
	return err
}

// transition changes one job's record durably with edit, then publishes
// the change to waiters and counters. op names the operation in errors.
func (q *Queue) transition(ctx context.Context, op, id string, edit func(tx *bolt.Tx, r *record, ns int64) error) (change, error) {
	if err := ctx.Err(); err != nil {
		return change{}, err
	}
	if err := q.checkOpen(); err != nil {
		return change{}, err
	}
	ns := q.now().UnixNano()
	var c change
	err := q.db.Update(func(tx *bolt.Tx) error {
		r, err := load(tx, id)
		if err != nil {
			return err
		}
		old := r
		if err := edit(tx, &r, ns); err != nil {
			return err
		}
		r.Updated = ns
		c = change{id: id, responder: r.Responder, from: old.State, to: r.State}
		return q.put(tx, &old, &r)
	})
	if err != nil {
		return change{}, q.txErr(op, id, err)
	}
	q.commit([]change{c})
	return c, nil
}

// Filter selects jobs for List. Zero fields match everything.
type Filter struct {
	State     State
	Responder string
	// After resumes a listing after this job id; jobs list in submission
	// order.
	After string
	// Limit caps the number of jobs returned; 0 means no cap.
	Limit int
}

// List returns the metadata of matching jobs, without bodies, in submission
// order. It walks the jobs in the file: meant for operators, not hot paths.
func (q *Queue) List(ctx context.Context, f Filter) ([]Job, error) {
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	var jobs []Job
	bad := map[string]string{}
	err := q.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJobs).Cursor()
		k, v := c.First()
		if f.After != "" {
			k, v = c.Seek([]byte(f.After))
			if string(k) == f.After {
				k, v = c.Next()
			}
		}
		for n := 0; k != nil; k, v = c.Next() {
			if n++; n%1024 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			r, err := decodeRecord(k, v)
			if err != nil {
				bad[string(k)] = err.Error()
				continue
			}
			if (f.State != "" && r.State != f.State) || (f.Responder != "" && r.Responder != f.Responder) {
				continue
			}
			jobs = append(jobs, r.job())
			if f.Limit > 0 && len(jobs) == f.Limit {
				break
			}
		}
		return nil
	})
	for id, reason := range bad {
		q.quarantineLater(id, reason)
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, dbErr("list", err)
	}
	return jobs, nil
}

// purgeChunk bounds the jobs deleted per transaction, so a large purge
// neither builds a huge transaction nor holds the writer lock for long.
const purgeChunk = 1000

// Purge deletes terminal jobs (with their bodies and idempotency entries)
// that ended at least olderThan ago, and quarantine entries as old, and
// returns how many records it deleted. Run calls it every PurgeInterval
// with ResultTTL. It seeks the ended index, so its cost follows the number
// of jobs purged, not the backlog.
func (q *Queue) Purge(ctx context.Context, olderThan time.Duration) (int, error) {
	if err := q.checkOpen(); err != nil {
		return 0, err
	}
	now := q.now()
	cutoff := now.Add(-olderThan).UnixNano()
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		var changes []change
		more := false
		err := q.db.Update(func(tx *bolt.Tx) error {
			ended := tx.Bucket(bucketEnded)
			var keys [][]byte
			c := ended.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				if ns, _, ok := splitTimeKey(k); ok && ns > cutoff {
					break
				}
				if len(keys) == purgeChunk {
					more = true
					break
				}
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				ch, err := q.purgeOne(tx, k, now.UnixNano())
				if err != nil {
					return err
				}
				if ch.id != "" {
					changes = append(changes, ch)
				}
			}
			return nil
		})
		if err != nil {
			return total, dbErr("purge", err)
		}
		q.commit(changes)
		for _, c := range changes {
			if c.to == "" && !c.settle {
				total++
			}
		}
		if !more {
			break
		}
	}
	n, err := q.purgeQuarantine(cutoff)
	return total + n, err
}

// purgeQuarantine deletes quarantine entries made at or before cutoff: they
// hold sealed bodies, so they are kept no longer than jobs. Quarantine is
// small, so walking it is fine.
func (q *Queue) purgeQuarantine(cutoff int64) (int, error) {
	var changes []change
	err := q.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketQuarantine)
		var old [][]byte
		err := b.ForEach(func(k, v []byte) error {
			if e, err := decodeQuarantine(v); err != nil || e.Time <= cutoff {
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
			changes = append(changes, change{id: string(k), from: StateQuarantined})
		}
		return nil
	})
	if err != nil {
		return 0, dbErr("purge", err)
	}
	q.commit(changes)
	return len(changes), nil
}

// purgeOne deletes the job an ended-index key names, or just the key if it
// is stale.
func (q *Queue) purgeOne(tx *bolt.Tx, k []byte, now int64) (change, error) {
	ended := tx.Bucket(bucketEnded)
	state := State(ended.Get(k))
	_, id, ok := splitTimeKey(k)
	if !ok {
		return change{}, ended.Delete(k)
	}
	r, err := load(tx, id)
	var bad errCorrupt
	switch {
	case errors.As(err, &bad):
		if err := ended.Delete(k); err != nil {
			return change{}, err
		}
		c, err := q.quarantine(tx, id, nil, bad.reason, now)
		c.from = state
		return c, err
	case errors.Is(err, ErrQuarantined):
		return change{id: id, from: state, settle: true}, ended.Delete(k)
	case err != nil || !r.State.Terminal() || !bytes.Equal(timeKey(r.Ended, id), k):
		return change{}, ended.Delete(k)
	}
	return change{id: id, responder: r.Responder, from: r.State}, remove(tx, &r)
}

// Stats returns how many jobs are in each state, plus the number of
// quarantined records under StateQuarantined. It reads counters kept in
// memory (rebuilt by Open), so it is cheap enough for a metrics scrape;
// they are updated just after each transition commits, so a Get or Wait
// may see a transition a moment before Stats counts it.
func (q *Queue) Stats(ctx context.Context) (map[State]int, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, ErrClosed
	}
	m := make(map[State]int, len(stateCodes)+1)
	for _, s := range stateCodes {
		m[s] = q.counts[s]
	}
	m[StateQuarantined] = q.counts[StateQuarantined]
	return m, nil
}

// QuarantineEntry describes a corrupt job record moved out of the queue.
type QuarantineEntry struct {
	ID     string
	Reason string // what was wrong; never quotes the record
	Time   time.Time
}

// Quarantined lists the quarantined records.
func (q *Queue) Quarantined(ctx context.Context) ([]QuarantineEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := q.checkOpen(); err != nil {
		return nil, err
	}
	var list []QuarantineEntry
	err := q.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketQuarantine).ForEach(func(k, v []byte) error {
			e, err := decodeQuarantine(v)
			if err != nil {
				e.Reason = "quarantine entry itself unreadable: " + err.Error()
			}
			list = append(list, QuarantineEntry{ID: string(k), Reason: e.Reason, Time: time.Unix(0, e.Time)})
			return nil
		})
	})
	if err != nil {
		return nil, dbErr("quarantined", err)
	}
	return list, nil
}
