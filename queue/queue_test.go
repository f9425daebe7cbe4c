package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var testKey = bytes.Repeat([]byte{0x42}, 32)

// fakeClock is an injectable clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// logBuffer collects log output for tests that inspect it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testOptions are fast options for tests that run handlers on the real
// clock.
func testOptions() Options {
	return Options{
		DataKey: testKey,
		Logger:  quietLogger(),
		Retry:   RetryPolicy{Base: time.Millisecond, Cap: 5 * time.Millisecond, MaxAttempts: 3},
	}
}

func openTest(t testing.TB, opts Options) (*Queue, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "queue.db")
	q, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q, path
}

// run starts Run with h and returns a function that stops it and waits.
func run(t testing.TB, q *Queue, h Handler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrClosed) {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func submit(t testing.TB, q *Queue, r Request) Job {
	t.Helper()
	if r.Responder == "" {
		r.Responder = "state-a"
	}
	j, _, err := q.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func wait(t testing.TB, q *Queue, id string) Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	j, err := q.Wait(ctx, id)
	if err != nil {
		t.Fatalf("Wait(%s): %v (state %s)", id, err, j.State)
	}
	return j
}

func succeed(_ context.Context, j Job) Outcome {
	return Outcome{Result: append([]byte("result:"), j.Body...), Status: 200}
}

func TestSubmitGetRun(t *testing.T) {
	q, path := openTest(t, testOptions())
	ctx := context.Background()
	j := submit(t, q, Request{Body: []byte("hello"), Labels: map[string]string{"op": "lookup"}})
	if j.State != Queued || j.Body != nil || len(j.RequestID) != 32 || len(j.ID) != 32 {
		t.Fatalf("submitted job = %+v", j)
	}
	got, err := q.Get(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Body) != "hello" || got.Labels["op"] != "lookup" || got.RequestID != j.RequestID {
		t.Fatalf("Get = %+v", got)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode = %v, %v; want 0600", fi.Mode(), err)
	}

	var seen atomic.Value
	stop := run(t, q, func(ctx context.Context, j Job) Outcome {
		seen.Store(j)
		return succeed(ctx, j)
	})
	done := wait(t, q, j.ID)
	if done.State != Done || string(done.Result) != "result:hello" || done.Attempts != 1 || done.Status != 200 {
		t.Fatalf("done job = %+v", done)
	}
	if h := seen.Load().(Job); h.RequestID != j.RequestID || string(h.Body) != "hello" {
		t.Fatalf("handler saw %+v", h)
	}
	if err := q.Run(ctx, succeed); !errors.Is(err, errRunning) {
		t.Fatalf("second Run = %v", err)
	}
	stop() // Stats may lag Wait by a moment, not a returned Run
	stats, err := q.Stats(ctx)
	if err != nil || stats[Done] != 1 || stats[Queued] != 0 || stats[Inflight] != 0 {
		t.Fatalf("Stats = %v, %v", stats, err)
	}
	list, err := q.List(ctx, Filter{State: Done})
	if err != nil || len(list) != 1 || list[0].Body != nil || list[0].Result != nil {
		t.Fatalf("List = %+v, %v", list, err)
	}
}

func TestSubmitInvalid(t *testing.T) {
	q, _ := openTest(t, testOptions())
	for _, r := range []Request{
		{},
		{Responder: string(make([]byte, maxMetaLen+1))},
		{Responder: "a", ResultPolicy: 7},
	} {
		if _, _, err := q.Submit(context.Background(), r); !errors.Is(err, ErrInvalid) {
			t.Errorf("Submit(%.20q…) = %v, want ErrInvalid", r.Responder, err)
		}
	}
}

func TestIdempotencyWindow(t *testing.T) {
	clock := newFakeClock()
	opts := testOptions()
	opts.Now = clock.Now
	opts.IdempotencyWindow = time.Hour
	q, _ := openTest(t, opts)
	ctx := context.Background()
	first, existed, err := q.Submit(ctx, Request{Responder: "a", IdempotencyKey: "ehr-1", Body: []byte("x")})
	if err != nil || existed {
		t.Fatal(existed, err)
	}
	for _, tc := range []struct {
		advance time.Duration
		key     string
		existed bool
	}{
		{0, "ehr-1", true},
		{time.Hour - time.Nanosecond, "ehr-1", true}, // last instant of the window
		{0, "ehr-2", false},                          // other keys are independent
		{time.Nanosecond, "ehr-1", false},            // the window has passed
		{time.Minute, "ehr-1", true},                 // and the key now maps to the new job
	} {
		clock.Add(tc.advance)
		j, existed, err := q.Submit(ctx, Request{Responder: "a", IdempotencyKey: tc.key, Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if existed != tc.existed {
			t.Fatalf("after %v key %s: existed = %v, want %v", clock.Now().Sub(first.Created), tc.key, existed, tc.existed)
		}
		if existed && j.IdempotencyKey != tc.key {
			t.Fatalf("existing job has key %q", j.IdempotencyKey)
		}
	}
	jobs, _ := q.List(ctx, Filter{})
	if len(jobs) != 3 {
		t.Fatalf("%d jobs, want 3", len(jobs))
	}
}

func TestIdempotencyConcurrent(t *testing.T) {
	q, _ := openTest(t, testOptions())
	var wg sync.WaitGroup
	ids := make([]string, 32)
	for i := range ids {
		wg.Go(func() {
			j, _, err := q.Submit(context.Background(), Request{Responder: "a", IdempotencyKey: "same"})
			if err != nil {
				t.Error(err)
			}
			ids[i] = j.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("one key, two jobs: %s and %s", ids[0], id)
		}
	}
}

func TestWait(t *testing.T) {
	q, _ := openTest(t, testOptions())
	j := submit(t, q, Request{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	got, err := q.Wait(ctx, j.ID)
	if !errors.Is(err, context.DeadlineExceeded) || got.ID != j.ID || got.State != Queued {
		t.Fatalf("Wait on idle queue = %v, %v", got.State, err)
	}
	if _, err := q.Wait(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Wait(unknown) = %v", err)
	}

	// Close wakes waiters.
	errc := make(chan error, 1)
	go func() {
		_, err := q.Wait(context.Background(), j.ID)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	q.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait across Close = %v", err)
	}
}

func TestCancel(t *testing.T) {
	q, _ := openTest(t, testOptions())
	ctx := context.Background()

	queued := submit(t, q, Request{})
	if err := q.Cancel(ctx, queued.ID); err != nil {
		t.Fatal(err)
	}
	if j, _ := q.Get(ctx, queued.ID); j.State != Cancelled {
		t.Fatalf("state = %s", j.State)
	}
	if err := q.Cancel(ctx, queued.ID); !errors.Is(err, ErrFinished) {
		t.Fatalf("second Cancel = %v", err)
	}
	if err := q.Cancel(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Cancel(unknown) = %v", err)
	}

	started := make(chan struct{})
	run(t, q, func(ctx context.Context, j Job) Outcome {
		close(started)
		<-ctx.Done()
		return Outcome{Err: ctx.Err()}
	})
	inflight := submit(t, q, Request{})
	<-started
	if err := q.Cancel(ctx, inflight.ID); err != nil {
		t.Fatal(err)
	}
	if j := wait(t, q, inflight.ID); j.State != Cancelled {
		t.Fatalf("state = %s", j.State)
	}
}

func TestRetryAndDeadLetter(t *testing.T) {
	q, _ := openTest(t, testOptions())
	ctx := context.Background()
	var fail atomic.Bool
	fail.Store(true)
	var calls atomic.Int32
	run(t, q, func(ctx context.Context, j Job) Outcome {
		calls.Add(1)
		if fail.Load() {
			return Outcome{Err: errors.New("responder unavailable"), Status: 503, Result: []byte("busy")}
		}
		return succeed(ctx, j)
	})
	j := submit(t, q, Request{Body: []byte("b")})
	dead := wait(t, q, j.ID)
	if dead.State != Dead || dead.Attempts != 3 || calls.Load() != 3 || dead.Error != "responder unavailable" ||
		dead.Status != 503 || string(dead.Result) != "busy" {
		t.Fatalf("dead job = %+v after %d calls", dead, calls.Load())
	}

	fail.Store(false)
	if err := q.Retry(ctx, j.ID); err != nil {
		t.Fatal(err)
	}
	done := wait(t, q, j.ID)
	if done.State != Done || done.Attempts != 1 || string(done.Result) != "result:b" {
		t.Fatalf("retried job = %+v", done)
	}
	if err := q.Retry(ctx, j.ID); !errors.Is(err, ErrState) {
		t.Fatalf("Retry(done) = %v", err)
	}
}

func TestPermanentFailure(t *testing.T) {
	q, _ := openTest(t, testOptions())
	var calls atomic.Int32
	run(t, q, func(context.Context, Job) Outcome {
		calls.Add(1)
		return Outcome{Err: errors.New("invalid request"), Permanent: true, Status: 400, Result: []byte("outcome")}
	})
	j := wait(t, q, submit(t, q, Request{}).ID)
	if j.State != Failed || calls.Load() != 1 || string(j.Result) != "outcome" || j.Status != 400 {
		t.Fatalf("job = %+v after %d calls", j, calls.Load())
	}
}

func TestHandlerPanic(t *testing.T) {
	q, _ := openTest(t, testOptions())
	run(t, q, func(context.Context, Job) Outcome { panic("boom with a body in it") })
	j := wait(t, q, submit(t, q, Request{}).ID)
	if j.State != Dead || j.Error != "handler panicked" || j.Attempts != 3 {
		t.Fatalf("job = %+v", j)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	q, _ := openTest(t, testOptions())
	var mu sync.Mutex
	var times []time.Time
	run(t, q, func(ctx context.Context, j Job) Outcome {
		mu.Lock()
		defer mu.Unlock()
		times = append(times, time.Now())
		if len(times) == 1 {
			return Outcome{Err: errors.New("slow down"), RetryAfter: 150 * time.Millisecond, Status: 429}
		}
		return succeed(ctx, j)
	})
	wait(t, q, submit(t, q, Request{}).ID)
	if gap := times[1].Sub(times[0]); gap < 150*time.Millisecond {
		t.Fatalf("retried after %v, want ≥ 150ms", gap)
	}
}

func TestDeliverOnce(t *testing.T) {
	q, _ := openTest(t, testOptions())
	ctx := context.Background()
	run(t, q, succeed)
	once := wait(t, q, submit(t, q, Request{Body: []byte("p"), ResultPolicy: DeliverOnce}).ID)
	keep := wait(t, q, submit(t, q, Request{Body: []byte("k")}).ID)

	got, err := q.Deliver(ctx, once.ID, nil)
	if err != nil || string(got.Result) != "result:p" || got.Delivered {
		t.Fatalf("first Deliver = %+v, %v", got, err)
	}
	deliver := func(ctx context.Context, id string) (Job, error) { return q.Deliver(ctx, id, nil) }
	for _, f := range []func(context.Context, string) (Job, error){deliver, q.Get} {
		got, err := f(ctx, once.ID)
		if err != nil || got.Result != nil || !got.Delivered || got.State != Done {
			t.Fatalf("after delivery = %+v, %v", got, err)
		}
	}
	if err := q.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketResults).Get([]byte(once.ID)) != nil {
			return errors.New("result still stored")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		got, err := q.Deliver(ctx, keep.ID, nil)
		if err != nil || string(got.Result) != "result:k" || got.Delivered {
			t.Fatalf("KeepUntilTTL Deliver = %+v, %v", got, err)
		}
	}
}

// TestDeliverOnceKeeps checks that what keep returns replaces the result
// at delivery, and that keep never runs again.
func TestDeliverOnceKeeps(t *testing.T) {
	q, _ := openTest(t, testOptions())
	ctx := context.Background()
	run(t, q, succeed)
	job := wait(t, q, submit(t, q, Request{Body: []byte("p"), ResultPolicy: DeliverOnce}).ID)
	calls := 0
	keep := func(r []byte) []byte { calls++; return []byte("link-of:" + string(r)) }
	got, err := q.Deliver(ctx, job.ID, keep)
	if err != nil || string(got.Result) != "result:p" {
		t.Fatalf("first Deliver = %+v, %v", got, err)
	}
	for range 2 {
		got, err = q.Deliver(ctx, job.ID, keep)
		if err != nil || !got.Delivered || string(got.Result) != "link-of:result:p" {
			t.Fatalf("after delivery = %+v, %v", got, err)
		}
	}
	if calls != 1 {
		t.Fatalf("keep called %d times", calls)
	}
}

func TestPurgeAfterTTL(t *testing.T) {
	clock := newFakeClock()
	opts := testOptions()
	opts.Now = clock.Now
	q, _ := openTest(t, opts)
	ctx := context.Background()

	old := submit(t, q, Request{IdempotencyKey: "k1"})
	if err := q.Cancel(ctx, old.ID); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour)
	recent := submit(t, q, Request{})
	if err := q.Cancel(ctx, recent.ID); err != nil {
		t.Fatal(err)
	}
	pending := submit(t, q, Request{})
	clock.Add(23*time.Hour - time.Nanosecond)

	if n, err := q.Purge(ctx, 24*time.Hour); err != nil || n != 0 {
		t.Fatalf("Purge before TTL = %d, %v", n, err)
	}
	clock.Add(time.Nanosecond)
	if n, err := q.Purge(ctx, 24*time.Hour); err != nil || n != 1 {
		t.Fatalf("Purge at TTL = %d, %v", n, err)
	}
	if _, err := q.Get(ctx, old.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(purged) = %v", err)
	}
	for _, id := range []string{recent.ID, pending.ID} {
		if _, err := q.Get(ctx, id); err != nil {
			t.Fatalf("Get(%s) = %v", id, err)
		}
	}
	clock.Add(48 * time.Hour)
	if n, err := q.Purge(ctx, 24*time.Hour); err != nil || n != 1 {
		t.Fatalf("second Purge = %d, %v", n, err)
	}
	stats, _ := q.Stats(ctx)
	if stats[Cancelled] != 0 || stats[Queued] != 1 {
		t.Fatalf("Stats = %v", stats)
	}
	err := q.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketIdem, bucketEnded} {
			if n := tx.Bucket(b).Stats().KeyN; n != 0 {
				return fmt.Errorf("%s has %d keys left", b, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPurgeMany(t *testing.T) {
	q, _ := openTest(t, testOptions())
	ctx := context.Background()
	n := 2*purgeChunk + 17
	fill(t, q, n, []byte("body"), func(i int, r *record) {
		r.State, r.Ended, r.IdemKey = Cancelled, r.Created, fmt.Sprint(i)
	})
	if got, err := q.Purge(ctx, 0); err != nil || got != n {
		t.Fatalf("Purge = %d, %v; want %d", got, err, n)
	}
	stats, _ := q.Stats(ctx)
	if stats[Cancelled] != 0 {
		t.Fatalf("Stats = %v", stats)
	}
	if err := q.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketJobs, bucketBodies, bucketIdem, bucketEnded} {
			if n := tx.Bucket(b).Stats().KeyN; n != 0 {
				return fmt.Errorf("%s has %d keys left", b, n)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverInflightOnOpen(t *testing.T) {
	opts := testOptions()
	path := filepath.Join(t.TempDir(), "q.db")
	q, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a := submit(t, q, Request{Responder: "r"})
	b := submit(t, q, Request{Responder: "r"})
	c := submit(t, q, Request{Responder: "r"})
	// Claim all three as Run would, then "crash": close without finishing.
	now := q.now()
	cands := []candidate{
		{responder: "r", id: a.ID, key: timeKey(a.NextAttempt.UnixNano(), a.ID)},
		{responder: "r", id: b.ID, key: timeKey(b.NextAttempt.UnixNano(), b.ID)},
		{responder: "r", id: c.ID, key: timeKey(c.NextAttempt.UnixNano(), c.ID)},
	}
	if jobs, err := q.claim(cands, now); err != nil || len(jobs) != 3 {
		t.Fatalf("claim = %d, %v", len(jobs), err)
	}
	if err := q.Cancel(ctx, b.ID); err != nil { // cancel requested while in flight
		t.Fatal(err)
	}
	if err := q.db.Update(func(tx *bolt.Tx) error { // c has spent its budget
		r, err := load(tx, c.ID)
		if err != nil {
			return err
		}
		old := r
		r.Attempts = opts.Retry.MaxAttempts
		return q.put(tx, &old, &r)
	}); err != nil {
		t.Fatal(err)
	}
	q.Close()

	q, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, tc := range []struct {
		id    string
		state State
	}{{a.ID, Queued}, {b.ID, Cancelled}, {c.ID, Dead}} {
		j, err := q.Get(ctx, tc.id)
		if err != nil || j.State != tc.state {
			t.Fatalf("after restart %s = %s, %v; want %s", tc.id, j.State, err, tc.state)
		}
	}
	j, _ := q.Get(ctx, a.ID)
	if j.RequestID != a.RequestID || j.Attempts != 1 {
		t.Fatalf("requeued job = %+v", j)
	}
	run(t, q, succeed)
	if j := wait(t, q, a.ID); j.State != Done || j.Attempts != 2 || j.RequestID != a.RequestID {
		t.Fatalf("job after restart = %+v", j)
	}
}

func TestCorruptRecordQuarantined(t *testing.T) {
	opts := testOptions()
	q, path := openTest(t, opts)
	ctx := context.Background()
	corrupt := func(bucket []byte, id string, mangle func([]byte) []byte) {
		t.Helper()
		if err := q.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			return b.Put([]byte(id), mangle(bytes.Clone(b.Get([]byte(id)))))
		}); err != nil {
			t.Fatal(err)
		}
	}
	garbage := func([]byte) []byte { return []byte("\x00garbage\xff") }
	flip := func(v []byte) []byte { v[len(v)/2] ^= 1; return v }

	// Found by Get.
	got := submit(t, q, Request{IdempotencyKey: "k"})
	corrupt(bucketJobs, got.ID, garbage)
	if _, err := q.Get(ctx, got.ID); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("Get(corrupt) = %v", err)
	}
	if _, err := q.Get(ctx, got.ID); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("Get(quarantined) = %v", err)
	}
	// The idempotency key is free again.
	again, existed, err := q.Submit(ctx, Request{Responder: "a", IdempotencyKey: "k"})
	if err != nil || existed {
		t.Fatalf("resubmit = %v, %v", existed, err)
	}

	// Found by Run: a flipped bit in the record and in a sealed body.
	badMeta := submit(t, q, Request{})
	corrupt(bucketJobs, badMeta.ID, flip)
	badBody := submit(t, q, Request{Body: []byte("some body")})
	corrupt(bucketBodies, badBody.ID, flip)
	good := submit(t, q, Request{Body: []byte("fine")})
	var handled sync.Map
	stop := run(t, q, func(ctx context.Context, j Job) Outcome {
		handled.Store(j.ID, true)
		return succeed(ctx, j)
	})
	for _, id := range []string{good.ID, again.ID} {
		if j := wait(t, q, id); j.State != Done {
			t.Fatalf("good job = %s", j.State)
		}
	}
	// Counters follow commits by a moment; once Run has returned, every
	// attempt's outcome is counted.
	stop()
	for _, id := range []string{badMeta.ID, badBody.ID} {
		if _, ok := handled.Load(id); ok {
			t.Errorf("corrupt job %s reached the handler", id)
		}
		if _, err := q.Get(ctx, id); !errors.Is(err, ErrQuarantined) {
			t.Errorf("Get(%s) = %v", id, err)
		}
	}

	list, err := q.Quarantined(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("Quarantined = %+v, %v", list, err)
	}
	for _, e := range list {
		if e.Reason == "" || e.Time.IsZero() {
			t.Errorf("entry %+v lacks reason or time", e)
		}
	}
	stats, _ := q.Stats(ctx)
	if stats[StateQuarantined] != 3 || stats[Queued] != 0 || stats[Done] != 2 || stats[Inflight] != 0 {
		t.Fatalf("Stats = %v", stats)
	}

	// Found by Open, in a file corrupted while closed.
	q.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketJobs).Put([]byte(good.ID), []byte{1, 2, 3, 4, 5})
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	q2, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Close()
	stats, _ = q2.Stats(ctx)
	if stats[StateQuarantined] != 4 || stats[Done] != 1 {
		t.Fatalf("Stats after reopen = %v", stats)
	}

	// Quarantine is retained no longer than jobs.
	if n, err := q2.Purge(ctx, 0); err != nil || n != 5 {
		t.Fatalf("Purge = %d, %v; want 4 quarantined + 1 done", n, err)
	}
	stats, _ = q2.Stats(ctx)
	if list, err := q2.Quarantined(ctx); err != nil || len(list) != 0 || stats[StateQuarantined] != 0 {
		t.Fatalf("after Purge: quarantine %v, %v; stats %v", list, err, stats)
	}
}

func TestWrongDataKey(t *testing.T) {
	_, path := openTest(t, testOptions())
	opts := testOptions()
	opts.DataKey = bytes.Repeat([]byte{7}, 32)
	// The first queue still holds the file lock; wait for cleanup order by
	// using a copy of the file instead.
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(copyPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(copyPath, opts); !errors.Is(err, ErrDataKey) {
		t.Fatalf("Open with wrong key = %v", err)
	}
	opts.DataKey = testKey[:16]
	if _, err := Open(copyPath, opts); err == nil {
		t.Fatal("Open with a 16-byte key succeeded")
	}
}

func TestStorageErrors(t *testing.T) {
	ctx := context.Background()
	opts := testOptions()

	t.Run("read-only directory", func(t *testing.T) {
		dir := t.TempDir()
		if os.Geteuid() == 0 {
			// Root ignores permissions, but not the immutable attribute.
			if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
				t.Skipf("running as root and cannot make a directory immutable: %v %s", err, out)
			}
			defer exec.Command("chattr", "-i", dir).Run()
		} else {
			if err := os.Chmod(dir, 0o500); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(dir, 0o700)
		}
		if _, err := Open(filepath.Join(dir, "q.db"), opts); !errors.Is(err, ErrStorage) {
			t.Fatalf("Open = %v, want ErrStorage", err)
		}
	})

	t.Run("read-only database", func(t *testing.T) {
		q, path := openTest(t, opts)
		accepted := submit(t, q, Request{Body: []byte("kept")})
		q.Close()
		ro, err := open(path, opts, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		if _, _, err := ro.Submit(ctx, Request{Responder: "a"}); !errors.Is(err, ErrStorage) {
			t.Fatalf("Submit on read-only file = %v, want ErrStorage", err)
		}
		if err := ro.Cancel(ctx, accepted.ID); !errors.Is(err, ErrStorage) {
			t.Fatalf("Cancel on read-only file = %v, want ErrStorage", err)
		}
		if j, err := ro.Get(ctx, accepted.ID); err != nil || string(j.Body) != "kept" {
			t.Fatalf("Get = %+v, %v", j, err)
		}
	})

	t.Run("Run backs off instead of spinning", func(t *testing.T) {
		q, path := openTest(t, opts)
		submit(t, q, Request{})
		q.Close()
		var logs logBuffer
		roOpts := opts
		roOpts.Logger = logs.logger()
		ro, err := open(path, roOpts, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		var calls atomic.Int32
		stop := run(t, ro, func(context.Context, Job) Outcome {
			calls.Add(1)
			return Outcome{}
		})
		time.Sleep(300 * time.Millisecond)
		stop()
		if n := strings.Count(logs.String(), "cannot dispatch"); n != 1 || calls.Load() != 0 {
			t.Fatalf("%d dispatch failures logged, %d handler calls in 300ms:\n%s", n, calls.Load(), logs.String())
		}
	})

	t.Run("closed", func(t *testing.T) {
		q, _ := openTest(t, opts)
		q.Close()
		if _, _, err := q.Submit(ctx, Request{Responder: "a"}); !errors.Is(err, ErrClosed) {
			t.Fatalf("Submit after Close = %v", err)
		}
		if err := q.Run(ctx, succeed); !errors.Is(err, ErrClosed) {
			t.Fatalf("Run after Close = %v", err)
		}
		if err := q.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
	})
}

func TestCompact(t *testing.T) {
	opts := testOptions()
	q, path := openTest(t, opts)
	ctx := context.Background()
	body := bytes.Repeat([]byte("x"), 2000)
	keep := submit(t, q, Request{Body: body})
	fill(t, q, 5000, body, func(i int, r *record) { r.State, r.Ended = Done, r.Created })
	if _, err := q.Purge(ctx, 0); err != nil {
		t.Fatal(err)
	}
	q.Close()
	before, _ := os.Stat(path)
	ratio, err := FreeRatio(path)
	if err != nil || ratio < 0.5 {
		t.Fatalf("FreeRatio = %v, %v; want > 0.5 after purging nearly everything", ratio, err)
	}
	if err := Compact(path); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	if after.Size() >= before.Size()/2 || after.Mode().Perm() != 0o600 {
		t.Fatalf("compacted %d → %d bytes, mode %v", before.Size(), after.Size(), after.Mode())
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left: %v", err)
	}
	q, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if j, err := q.Get(ctx, keep.ID); err != nil || !bytes.Equal(j.Body, body) {
		t.Fatalf("Get after compaction: %v", err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := record{
		ID: "0123", Responder: "state-a", IdemKey: "k", RequestID: "rid", State: Dead,
		Labels: map[string]string{"a": "1", "b": ""}, Policy: DeliverOnce, Attempts: 9, Status: -1,
		Err: "boom", Created: 1, Updated: 2, Next: -3, Since: 4, Ended: 5, Delivered: true, CancelReq: true,
	}
	v := r.marshal()
	got, err := decodeRecord([]byte(r.ID), v)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
	for i := range v {
		bad := bytes.Clone(v)
		bad[i] ^= 0x10
		if _, err := decodeRecord([]byte(r.ID), bad); err == nil {
			t.Fatalf("flipped byte %d not detected", i)
		}
	}
	if _, err := decodeRecord([]byte("other"), v); err == nil {
		t.Fatal("record under the wrong key not detected")
	}
}

func TestBodySwapDetected(t *testing.T) {
	q, _ := openTest(t, testOptions())
	a := submit(t, q, Request{Body: []byte("alpha")})
	b := submit(t, q, Request{Body: []byte("bravo")})
	if err := q.db.Update(func(tx *bolt.Tx) error {
		bodies := tx.Bucket(bucketBodies)
		return bodies.Put([]byte(b.ID), bytes.Clone(bodies.Get([]byte(a.ID))))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(context.Background(), b.ID); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("Get with swapped body = %v", err)
	}
}
