// Package smart is the agent's SMART Backend Services client: it discovers
// a responder's token endpoint, signs RFC 7523 client assertions with a key
// from the vault, trades them for access tokens and caches those per
// registration, renewing before expiry with one request in flight however
// many callers wait.
//
// It must never log, print or put into an error an access token, an
// assertion or key material, and must never hot-loop against a token
// endpoint that refuses our credentials.
package smart

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/pdmp-agent/pdmp-agent/vault"
)

// KeySource yields the key that signs now; *vault.Ring is one.
type KeySource interface {
	Current(ctx context.Context) (vault.Key, error)
}

// Registration is everything needed to obtain tokens for one client
// registration at one responder.
type Registration struct {
	Name string // for logs and errors
	// FHIRBase is used for discovery when TokenEndpoint is empty.
	FHIRBase      string
	TokenEndpoint string
	ClientID      string
	Scope         string
	// JKU, when set, goes into the assertion header.
	JKU  string
	Keys KeySource
	// AssertionLifetime is exp - now; 0 means DefaultAssertionLifetime.
	// Values over MaxAssertionLifetime are clamped.
	AssertionLifetime time.Duration
	// HTTP is the client for this responder (its TLS settings); nil means
	// the Client's default.
	HTTP *http.Client
}

// Assertion lifetimes: the spec caps exp at five minutes ahead; four leaves
// room for clock skew at strict servers.
const (
	DefaultAssertionLifetime = 4 * time.Minute
	MaxAssertionLifetime     = 5 * time.Minute
)

// Token is an access token. Its String method never shows the token.
type Token struct {
	AccessToken string
	Scope       string // as granted; may be narrower than requested
	Expires     time.Time
}

func (t Token) String() string {
	return fmt.Sprintf("token(scope=%q, expires=%s)", t.Scope, t.Expires.Format(time.RFC3339))
}

// LogValue keeps the token out of structured logs.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("scope", t.Scope), slog.Time("expires", t.Expires))
}

// ErrCredential marks permanent faults: the token endpoint refused our
// credentials or configuration (4xx). Retrying will not help until someone
// fixes the registration, key or config.
var ErrCredential = errors.New("credential or configuration fault")

// TokenError reports a failed token request.
type TokenError struct {
	Registration string
	Status       int    // HTTP status; 0 for network errors
	Code         string // OAuth error code, e.g. invalid_client
	Description  string // the server's error_description
	Permanent    bool
	// RetryAfter is the server's requested delay, if it gave one.
	RetryAfter time.Duration
	Err        error // underlying cause for network and parse errors
}

func (e *TokenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token request for registration %q", e.Registration)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, ": %s", e.Description)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *TokenError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrCredential) true for permanent faults.
func (e *TokenError) Is(target error) bool { return target == ErrCredential && e.Permanent }

// Client obtains and caches tokens. The zero value is not usable; use New.
type Client struct {
	http   *http.Client
	log    *slog.Logger
	now    func() time.Time
	jitter func() float64

	// MaxAttempts bounds HTTP attempts within one Token call.
	maxAttempts int
	retryBase   time.Duration
	// credentialBackoff is the first hard back-off after a 4xx; it
	// doubles up to credentialBackoffMax.
	credentialBackoff    time.Duration
	credentialBackoffMax time.Duration

	flight singleflight.Group

	mu        sync.Mutex
	cache     map[cacheKey]*entry
	endpoints map[string]string // FHIR base → token endpoint
	skew      time.Duration
	observers []func(Event)
}

type cacheKey struct{ endpoint, clientID, scope string }

type entry struct {
	token   Token
	renewAt time.Time
	// After a permanent failure: the error and when to try again.
	failure    error
	retryAt    time.Time
	failStreak int
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the default HTTP client.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithRetry sets attempts per Token call and the base of the jittered
// exponential backoff between them.
func WithRetry(attempts int, base time.Duration) Option {
	return func(c *Client) { c.maxAttempts, c.retryBase = attempts, base }
}

// WithCredentialBackoff sets the hard back-off after a permanent failure.
func WithCredentialBackoff(first, max time.Duration) Option {
	return func(c *Client) { c.credentialBackoff, c.credentialBackoffMax = first, max }
}

// Event describes one token endpoint exchange, for metrics and status.
type Event struct {
	Registration string
	Status       int // HTTP status, 0 on network error
	Err          error
	Expires      time.Time // of the new token, on success
}

// OnEvent registers f to be called after every token exchange.
func (c *Client) OnEvent(f func(Event)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.observers = append(c.observers, f)
}

// New returns a Client.
func New(opts ...Option) *Client {
	c := &Client{
		http:                 &http.Client{Timeout: 30 * time.Second},
		log:                  slog.Default(),
		now:                  time.Now,
		jitter:               mrand.Float64,
		maxAttempts:          4,
		retryBase:            500 * time.Millisecond,
		credentialBackoff:    30 * time.Second,
		credentialBackoffMax: 15 * time.Minute,
		cache:                map[cacheKey]*entry{},
		endpoints:            map[string]string{},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func keyOf(r *Registration) cacheKey {
	ep := r.TokenEndpoint
	if ep == "" {
		ep = "discover:" + r.FHIRBase
	}
	sc := strings.Fields(r.Scope)
	slices.Sort(sc)
	return cacheKey{ep, r.ClientID, strings.Join(sc, " ")}
}

// renewMargin is how long before expiry a token is renewed: 10% of its
// lifetime, at least 30 s — but never more than half, or a short-lived
// token would be renewed on every use.
func renewMargin(lifetime time.Duration) time.Duration {
	return min(max(30*time.Second, lifetime/10), lifetime/2)
}

// Token returns a valid access token for reg, from the cache when it can.
func (c *Client) Token(ctx context.Context, reg *Registration) (Token, error) {
	k := keyOf(reg)
	t, state, err := c.lookup(k)
	switch state {
	case fresh:
		return t, nil
	case renewable:
		// Serve the still-valid token and renew in the background;
		// failures are logged and remembered.
		go func() { <-c.startFlight(context.Background(), k, reg) }()
		return t, nil
	case failing:
		return Token{}, err
	}
	select {
	case r := <-c.startFlight(ctx, k, reg):
		if r.Err != nil {
			return Token{}, r.Err
		}
		return r.Val.(Token), nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// startFlight joins or starts the one exchange for k. It runs on a context
// of its own so that one impatient caller cannot fail the others.
func (c *Client) startFlight(ctx context.Context, k cacheKey, reg *Registration) <-chan singleflight.Result {
	return c.flight.DoChan(fmt.Sprint(k), func() (any, error) {
		// A flight that just ended may have stored what we need.
		if t, state, err := c.lookup(k); state == fresh {
			return t, nil
		} else if state == failing {
			return nil, err
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		return c.fetch(fctx, k, reg)
	})
}

type cacheState int

const (
	missing   cacheState = iota
	fresh                // valid and before its renewal point
	renewable            // valid but inside the renewal margin
	failing              // a permanent failure's back-off is running
)

func (c *Client) lookup(k cacheKey) (Token, cacheState, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.cache[k]
	if e == nil {
		return Token{}, missing, nil
	}
	now := c.now()
	switch {
	case e.failure != nil && now.Before(e.retryAt):
		return Token{}, failing, e.failure
	case e.token.AccessToken == "":
		return Token{}, missing, nil
	case now.Before(e.renewAt):
		return e.token, fresh, nil
	case now.Before(e.token.Expires.Add(-5 * time.Second)):
		return e.token, renewable, nil
	}
	return Token{}, missing, nil
}

// Invalidate drops the cached token for reg if it is still tok, after the
// responder answered 401 to it. The next Token call gets a new one.
func (c *Client) Invalidate(reg *Registration, tok Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.cache[keyOf(reg)]; e != nil && e.token.AccessToken == tok.AccessToken {
		e.token = Token{}
	}
}

// ClockSkew is the last measured offset of the token server's clock (from
// its Date header) against ours; positive means theirs is ahead.
func (c *Client) ClockSkew() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.skew
}

func (c *Client) fetch(ctx context.Context, k cacheKey, reg *Registration) (Token, error) {
	endpoint, err := c.endpoint(ctx, reg)
	if err != nil {
		return Token{}, c.remember(k, err)
	}
	var lastErr *TokenError
	for attempt := range c.maxAttempts {
		if attempt > 0 {
			wait := backoff(c.retryBase, attempt, c.jitter)
			if lastErr.RetryAfter > wait {
				wait = lastErr.RetryAfter
			}
			if dl, ok := ctx.Deadline(); ok && c.now().Add(wait).After(dl) {
				break
			}
			c.log.Info("retrying token request", "registration", reg.Name, "attempt", attempt+1, "wait", wait, "status", lastErr.Status)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return Token{}, ctx.Err()
			}
		}
		tok, err := c.exchange(ctx, endpoint, reg)
		c.notify(Event{Registration: reg.Name, Status: statusOf(err), Err: err, Expires: tok.Expires})
		if err == nil {
			c.store(k, tok)
			return tok, nil
		}
		if !errors.As(err, &lastErr) {
			return Token{}, err
		}
		if lastErr.Permanent {
			return Token{}, c.remember(k, lastErr)
		}
	}
	c.log.Warn("token request failed", "registration", reg.Name, "error", lastErr)
	return Token{}, lastErr
}

func statusOf(err error) int {
	var te *TokenError
	if errors.As(err, &te) {
		return te.Status
	}
	if err == nil {
		return http.StatusOK
	}
	return 0
}

func (c *Client) notify(ev Event) {
	c.mu.Lock()
	obs := c.observers
	c.mu.Unlock()
	for _, f := range obs {
		f(ev)
	}
}

func (c *Client) store(k cacheKey, t Token) {
	lifetime := t.Expires.Sub(c.now())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cache[k] = &entry{token: t, renewAt: t.Expires.Add(-renewMargin(lifetime))}
}

// remember records a permanent failure so that callers get it at once
// until the hard back-off passes, instead of hammering the endpoint.
func (c *Client) remember(k cacheKey, err error) error {
	var te *TokenError
	if !errors.As(err, &te) || !te.Permanent {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.cache[k]
	if e == nil {
		e = &entry{}
		c.cache[k] = e
	}
	e.token = Token{}
	wait := min(c.credentialBackoffMax, c.credentialBackoff<<min(e.failStreak, 10))
	e.failure, e.retryAt, e.failStreak = err, c.now().Add(wait), e.failStreak+1
	c.log.Error("token endpoint refused our credentials; backing off", "registration", te.Registration,
		"status", te.Status, "error", te.Code, "error_description", te.Description, "retry_in", wait)
	return err
}

// backoff is full-jitter exponential: uniform in [0, base·2^attempt),
// capped at 30 s within one call.
func backoff(base time.Duration, attempt int, jitter func() float64) time.Duration {
	ceil := min(30*time.Second, base<<min(attempt, 16))
	return time.Duration(jitter() * float64(ceil))
}

func newJTI() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Expiry reports when reg's cached token expires, for status pages; false
// when none is cached.
func (c *Client) Expiry(reg *Registration) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.cache[keyOf(reg)]; e != nil && e.token.AccessToken != "" {
		return e.token.Expires, true
	}
	return time.Time{}, false
}
