package queue

import (
	"time"

	"golang.org/x/time/rate"
)

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Base <= 0 {
		p.Base = time.Second
	}
	if p.Cap <= 0 {
		p.Cap = 5 * time.Minute
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 10
	}
	return p
}

func (p BreakerPolicy) withDefaults() BreakerPolicy {
	if p.Failures <= 0 {
		p.Failures = 5
	}
	if p.Cooldown <= 0 {
		p.Cooldown = 30 * time.Second
	}
	return p
}

func (l Limits) withDefaults() Limits {
	if l.Concurrency <= 0 {
		l.Concurrency = 4
	}
	if l.Burst <= 0 {
		l.Burst = 1
	}
	return l
}

// Backoff returns the delay after the attempt'th consecutive failure (1 for
// the first) under p's defaults-filled policy: "full jitter", uniform in
// [0, min(Cap, Base·2^(attempt−1))) for rnd uniform in [0, 1). Full jitter
// spreads out the retries of jobs that failed together, such as a backlog
// hitting a responder outage.
func Backoff(p RetryPolicy, attempt int, rnd float64) time.Duration {
	p = p.withDefaults()
	ceiling := p.Cap
	// Base<<shift ≤ Cap without overflowing: compare against Cap>>shift.
	if shift := max(attempt, 1) - 1; shift < 63 && p.Base <= p.Cap>>shift {
		ceiling = p.Base << shift
	}
	return time.Duration(rnd * float64(ceiling))
}

// retryPlan decides what follows a transient failure of a job's attempt'th
// attempt. The next attempt is backoff after now, but never earlier than the
// responder's retryAfter. dead reports that the budget is spent: the
// attempts are used up, or the next attempt would fall beyond MaxAge after
// since.
func retryPlan(p RetryPolicy, attempt int, since, now time.Time, retryAfter time.Duration, rnd float64) (next time.Time, dead bool) {
	next = now.Add(max(Backoff(p, attempt, rnd), retryAfter))
	if attempt >= p.MaxAttempts || (p.MaxAge > 0 && next.Sub(since) > p.MaxAge) {
		return next, true
	}
	return next, false
}

type breakerState int

const (
	breakerClosed breakerState = iota
	breakerOpen
	breakerHalfOpen
)

// breaker is a per-responder circuit breaker. Closed, it lets everything
// through and counts consecutive failures; Policy.Failures of them open it.
// Open, it lets nothing through until Cooldown has passed; it is then
// half-open and lets exactly one probe through, whose success closes it and
// whose failure opens it again. It is driven by explicit times so tests need
// no clock, and is not safe for concurrent use (Run owns it).
type breaker struct {
	policy   BreakerPolicy
	state    breakerState
	failures int // consecutive, while closed
	openedAt time.Time
	probing  bool // half-open and the probe is out
}

// Allow reports whether an attempt may start at now, and whether that
// attempt is the half-open probe.
func (b *breaker) Allow(now time.Time) (ok, probe bool) {
	switch b.state {
	case breakerClosed:
		return true, false
	case breakerOpen:
		if now.Before(b.ReadyAt()) {
			return false, false
		}
		b.state, b.probing = breakerHalfOpen, false
	}
	if b.probing {
		return false, false
	}
	b.probing = true
	return true, true
}

// Success records a successful attempt, closing the breaker unless it is
// open: an attempt let through before it opened says nothing about now.
func (b *breaker) Success() {
	if b.state == breakerOpen {
		return
	}
	b.state, b.failures, b.probing = breakerClosed, 0, false
}

// Failure records a failed attempt and reports whether it opened the
// breaker.
func (b *breaker) Failure(now time.Time) (opened bool) {
	switch b.state {
	case breakerClosed:
		b.failures++
		if b.failures < b.policy.Failures {
			return false
		}
	case breakerOpen:
		return false
	}
	b.state, b.openedAt, b.failures, b.probing = breakerOpen, now, 0, false
	return true
}

// Release hands back a probe that was never sent or whose attempt told
// nothing about the responder (cancelled, or interrupted by shutdown), so
// another probe may go.
func (b *breaker) Release() {
	if b.state == breakerHalfOpen {
		b.probing = false
	}
}

// ReadyAt is when an open breaker will let a probe through; zero otherwise.
func (b *breaker) ReadyAt() time.Time {
	if b.state != breakerOpen {
		return time.Time{}
	}
	return b.openedAt.Add(b.policy.Cooldown)
}

// throttle is a per-responder token bucket; the zero value is unlimited.
type throttle struct{ lim *rate.Limiter }

func newThrottle(l Limits) throttle {
	if l.Rate <= 0 {
		return throttle{}
	}
	return throttle{rate.NewLimiter(rate.Limit(l.Rate), l.Burst)}
}

// take spends a token at now if one is available and returns 0; otherwise
// it spends nothing and returns how long until one will be.
func (t throttle) take(now time.Time) time.Duration {
	if t.lim == nil {
		return 0
	}
	r := t.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}
