package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	p := RetryPolicy{Base: time.Second, Cap: 5 * time.Minute}
	for _, tc := range []struct {
		p       RetryPolicy
		attempt int
		rnd     float64
		want    time.Duration
	}{
		{p, 1, 0, 0}, // full jitter may retry at once
		{p, 1, 0.5, 500 * time.Millisecond},
		{p, 1, 0.999, 999 * time.Millisecond},
		{p, 2, 0.5, time.Second},
		{p, 3, 0.5, 2 * time.Second},
		{p, 9, 0.5, 128 * time.Second},
		{p, 10, 0.5, 150 * time.Second}, // 256s ceiling capped at 300s
		{p, 10, 0.999, 299700 * time.Millisecond},
		{p, 64, 0.5, 150 * time.Second},                                     // no overflow
		{p, 1 << 30, 0.5, 150 * time.Second},                                // none at all
		{p, 0, 0.5, 500 * time.Millisecond},                                 // attempt < 1 counts as the first
		{RetryPolicy{}, 1, 0.5, 500 * time.Millisecond},                     // defaults
		{RetryPolicy{}, 20, 0.5, 150 * time.Second},                         // default cap
		{RetryPolicy{Base: time.Hour, Cap: time.Minute}, 1, 1, time.Minute}, // base above cap
	} {
		if got := Backoff(tc.p, tc.attempt, tc.rnd); got != tc.want {
			t.Errorf("Backoff(%+v, %d, %v) = %v, want %v", tc.p, tc.attempt, tc.rnd, got, tc.want)
		}
	}
	// The bounds hold for every attempt.
	for attempt := 1; attempt < 100; attempt++ {
		ceiling := min(p.Cap, time.Second<<min(attempt-1, 20))
		if lo, hi := Backoff(p, attempt, 0), Backoff(p, attempt, 0.9999999); lo != 0 || hi > ceiling || hi < ceiling*99/100 {
			t.Fatalf("attempt %d: range [%v, %v], ceiling %v", attempt, lo, hi, ceiling)
		}
	}
}

func TestRetryPlan(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p := RetryPolicy{Base: time.Second, Cap: time.Minute, MaxAttempts: 5}.withDefaults()
	aged := p
	aged.MaxAge = 10 * time.Second
	for _, tc := range []struct {
		name       string
		p          RetryPolicy
		attempt    int
		now        time.Time
		retryAfter time.Duration
		wantDelay  time.Duration
		wantDead   bool
	}{
		{"backoff", p, 1, t0, 0, 500 * time.Millisecond, false},
		{"retry-after beyond backoff wins", p, 1, t0, 30 * time.Second, 30 * time.Second, false},
		{"retry-after below backoff: backoff", p, 3, t0, time.Second, 2 * time.Second, false},
		{"retry-after beyond the cap still honoured", p, 1, t0, 2 * time.Hour, 2 * time.Hour, false},
		{"negative retry-after ignored", p, 1, t0, -time.Hour, 500 * time.Millisecond, false},
		{"last attempt", p, 4, t0, 0, 4 * time.Second, false},
		{"attempts spent", p, 5, t0, 0, 8 * time.Second, true},
		{"within max age", aged, 2, t0.Add(5 * time.Second), 0, time.Second, false},
		{"next attempt past max age", aged, 2, t0.Add(9500 * time.Millisecond), 0, time.Second, true},
		{"retry-after past max age", aged, 1, t0, 11 * time.Second, 11 * time.Second, true},
	} {
		next, dead := retryPlan(tc.p, tc.attempt, t0, tc.now, tc.retryAfter, 0.5)
		if d := next.Sub(tc.now); d != tc.wantDelay || dead != tc.wantDead {
			t.Errorf("%s: delay %v dead %v, want %v %v", tc.name, d, dead, tc.wantDelay, tc.wantDead)
		}
	}
}

func TestBreaker(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	type step struct {
		op        string // allow, success, failure, release
		at        int    // seconds after t0
		ok, probe bool   // for allow: expected result
		opened    bool   // for failure: expected result
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"stays closed below the threshold", []step{
			{op: "failure", at: 0}, {op: "failure", at: 1}, {op: "success", at: 2},
			{op: "failure", at: 3}, {op: "failure", at: 4},
			{op: "allow", at: 5, ok: true},
		}},
		{"opens after consecutive failures", []step{
			{op: "failure", at: 0}, {op: "failure", at: 1}, {op: "failure", at: 2, opened: true},
			{op: "allow", at: 2}, {op: "allow", at: 11},
		}},
		{"half-open lets exactly one probe through", []step{
			{op: "failure", at: 0}, {op: "failure", at: 0}, {op: "failure", at: 0, opened: true},
			{op: "allow", at: 10, ok: true, probe: true},
			{op: "allow", at: 10}, {op: "allow", at: 15}, {op: "allow", at: 100},
		}},
		{"successful probe closes", []step{
			{op: "failure", at: 0}, {op: "failure", at: 0}, {op: "failure", at: 0, opened: true},
			{op: "allow", at: 10, ok: true, probe: true}, {op: "success", at: 11},
			{op: "allow", at: 11, ok: true}, {op: "allow", at: 11, ok: true},
			// and counting starts afresh
			{op: "failure", at: 12}, {op: "failure", at: 12}, {op: "allow", at: 12, ok: true},
		}},
		{"failed probe reopens for a full cooldown", []step{
			{op: "failure", at: 0}, {op: "failure", at: 0}, {op: "failure", at: 0, opened: true},
			{op: "allow", at: 10, ok: true, probe: true}, {op: "failure", at: 12, opened: true},
			{op: "allow", at: 13}, {op: "allow", at: 21},
			{op: "allow", at: 22, ok: true, probe: true},
		}},
		{"released probe lets another go", []step{
			{op: "failure", at: 0}, {op: "failure", at: 0}, {op: "failure", at: 0, opened: true},
			{op: "allow", at: 10, ok: true, probe: true}, {op: "release", at: 10},
			{op: "allow", at: 10, ok: true, probe: true}, {op: "allow", at: 10},
		}},
		{"outcomes of older attempts while open change nothing", []step{
			{op: "failure", at: 0}, {op: "failure", at: 0}, {op: "failure", at: 0, opened: true},
			{op: "success", at: 1}, {op: "failure", at: 2}, {op: "release", at: 3},
			{op: "allow", at: 9}, {op: "allow", at: 10, ok: true, probe: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := breaker{policy: BreakerPolicy{Failures: 3, Cooldown: 10 * time.Second}}
			for i, s := range tc.steps {
				switch s.op {
				case "allow":
					if ok, probe := b.Allow(at(s.at)); ok != s.ok || probe != s.probe {
						t.Fatalf("step %d: Allow(%ds) = %v, %v; want %v, %v", i, s.at, ok, probe, s.ok, s.probe)
					}
				case "success":
					b.Success()
				case "failure":
					if opened := b.Failure(at(s.at)); opened != s.opened {
						t.Fatalf("step %d: Failure(%ds) opened = %v", i, s.at, opened)
					}
				case "release":
					b.Release()
				}
			}
		})
	}
}

func TestThrottle(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	type take struct {
		at   int // ms after t0
		wait time.Duration
	}
	for _, tc := range []struct {
		name   string
		limits Limits
		takes  []take
	}{
		{"unlimited", Limits{}, []take{{0, 0}, {0, 0}, {0, 0}}},
		{"10/s, burst 1", Limits{Rate: 10, Burst: 1}, []take{
			{0, 0}, {0, 100 * time.Millisecond}, {50, 50 * time.Millisecond}, {100, 0}, {150, 50 * time.Millisecond},
		}},
		{"10/s, burst 3", Limits{Rate: 10, Burst: 3}, []take{
			{0, 0}, {0, 0}, {0, 0}, {0, 100 * time.Millisecond},
			{250, 0}, {250, 0}, {250, 50 * time.Millisecond}, // 2.5 tokens refilled
		}},
		{"a refused take costs nothing", Limits{Rate: 1, Burst: 1}, []take{
			{0, 0}, {500, 500 * time.Millisecond}, {500, 500 * time.Millisecond}, {1000, 0},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := newThrottle(tc.limits.withDefaults())
			for i, tk := range tc.takes {
				if got := th.take(ms(tk.at)); got != tk.wait {
					t.Fatalf("take %d at %dms = %v, want %v", i, tk.at, got, tk.wait)
				}
			}
		})
	}
}

// TestRunLimits checks that Run keeps each responder within its
// concurrency and rate limits, independently of the others.
func TestRunLimits(t *testing.T) {
	opts := testOptions()
	opts.Limits = func(r string) Limits {
		switch r {
		case "narrow":
			return Limits{Concurrency: 2}
		case "slow":
			return Limits{Concurrency: 8, Rate: 50, Burst: 1}
		}
		return Limits{Concurrency: 8}
	}
	q, _ := openTest(t, opts)
	var ids []string
	for range 10 {
		for _, r := range []string{"narrow", "slow", "wide"} {
			ids = append(ids, submit(t, q, Request{Responder: r}).ID)
		}
	}
	var mu sync.Mutex
	inflight, peak := map[string]int{}, map[string]int{}
	starts := map[string][]time.Time{}
	run(t, q, func(ctx context.Context, j Job) Outcome {
		mu.Lock()
		inflight[j.Responder]++
		peak[j.Responder] = max(peak[j.Responder], inflight[j.Responder])
		starts[j.Responder] = append(starts[j.Responder], time.Now())
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		inflight[j.Responder]--
		mu.Unlock()
		return succeed(ctx, j)
	})
	for _, id := range ids {
		wait(t, q, id)
	}
	if peak["narrow"] != 2 {
		t.Errorf("narrow peak concurrency %d, want 2", peak["narrow"])
	}
	if peak["wide"] < 4 {
		t.Errorf("wide peak concurrency %d: jobs did not run in parallel", peak["wide"])
	}
	s := starts["slow"]
	if span := s[len(s)-1].Sub(s[0]); span < 170*time.Millisecond {
		t.Errorf("10 starts at 50/s took %v, want ≥ 180ms", span)
	}
}

// TestRunBreaker checks the breaker inside Run: a failing responder is cut
// off after Failures attempts, then probed once per cooldown, and a good
// probe lets its backlog drain; another responder is not affected.
func TestRunBreaker(t *testing.T) {
	opts := testOptions()
	opts.Retry = RetryPolicy{Base: time.Millisecond, Cap: time.Millisecond, MaxAttempts: 100}
	opts.Breaker = BreakerPolicy{Failures: 2, Cooldown: 100 * time.Millisecond}
	opts.Limits = func(string) Limits { return Limits{Concurrency: 1} }
	q, _ := openTest(t, opts)
	var healthy atomic.Bool
	var mu sync.Mutex
	var failed, succeeded []time.Time // calls to the "down" responder
	run(t, q, func(ctx context.Context, j Job) Outcome {
		if j.Responder == "down" {
			mu.Lock()
			defer mu.Unlock()
			if !healthy.Load() {
				failed = append(failed, time.Now())
				return Outcome{Err: errors.New("unavailable"), Status: 503}
			}
			succeeded = append(succeeded, time.Now())
		}
		return succeed(ctx, j)
	})
	var down []string
	for range 5 {
		down = append(down, submit(t, q, Request{Responder: "down"}).ID)
	}
	for range 5 {
		if j := wait(t, q, submit(t, q, Request{Responder: "up"}).ID); j.State != Done {
			t.Fatalf("up job = %s", j.State)
		}
	}
	time.Sleep(250 * time.Millisecond) // at least two cooldowns
	mu.Lock()
	healthy.Store(true)
	mu.Unlock()
	for _, id := range down {
		if j := wait(t, q, id); j.State != Done {
			t.Fatalf("down job = %s", j.State)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// Two failures open the breaker; then one probe per cooldown, each
	// failing and reopening it, until a probe succeeds and the backlog
	// drains.
	if len(failed) < 2+1 || len(succeeded) != 5 {
		t.Fatalf("%d failed and %d successful calls to the failing responder", len(failed), len(succeeded))
	}
	for i := 2; i < len(failed); i++ {
		if gap := failed[i].Sub(failed[i-1]); gap < 95*time.Millisecond {
			t.Fatalf("failed call %d came %v after the previous one, within the cooldown", i, gap)
		}
	}
	if gap := succeeded[0].Sub(failed[len(failed)-1]); gap < 95*time.Millisecond {
		t.Fatalf("first successful probe came %v after the last failure", gap)
	}
}
