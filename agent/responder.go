package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/smart"
)

// maxResponse bounds a responder's answer; a history for one patient is
// far smaller.
const maxResponse = 32 << 20

// reply is a responder's HTTP answer.
type reply struct {
	Status      int
	ContentType string
	Body        []byte
	RetryAfter  time.Duration
}

// sendError is a failed exchange with a responder, classified for retry.
type sendError struct {
	Permanent  bool
	Status     int // 0 for network errors
	RetryAfter time.Duration
	Err        error
}

func (e *sendError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("responder answered HTTP %d: %v", e.Status, e.Err)
	}
	return e.Err.Error()
}

func (e *sendError) Unwrap() error { return e.Err }

// NewRequestID returns a random X-Request-ID.
func NewRequestID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// post sends body to path (relative to the responder's FHIR base).
func (a *Agent) post(ctx context.Context, reg *Registration, path string, body []byte, requestID string) (*reply, error) {
	return a.send(ctx, reg, http.MethodPost, strings.TrimSuffix(reg.Responder.FHIRBase, "/")+"/"+path, body, requestID)
}

// send makes an exchange with the registration's token. A 401 drops the
// token, fetches a new one and tries once more, as SMART asks. Non-2xx
// answers are returned as replies, not errors: the caller classifies them
// with the body in hand.
func (a *Agent) send(ctx context.Context, reg *Registration, method, target string, body []byte, requestID string) (*reply, error) {
	for attempt := 0; ; attempt++ {
		tok, err := a.tokens.Token(ctx, reg.SMART)
		if err != nil {
			var te *smart.TokenError
			if errors.As(err, &te) {
				return nil, &sendError{Permanent: te.Permanent, RetryAfter: te.RetryAfter, Err: err}
			}
			return nil, &sendError{Err: err}
		}
		rep, err := a.do(ctx, reg, method, target, body, tok, requestID)
		if err != nil {
			return nil, err
		}
		if rep.Status == http.StatusUnauthorized && attempt == 0 {
			a.tokens.Invalidate(reg.SMART, tok)
			continue
		}
		return rep, nil
	}
}

// do makes one HTTP exchange. The bearer token goes only to the responder's
// own origin: do refuses any other.
func (a *Agent) do(ctx context.Context, reg *Registration, method, target string, body []byte, tok smart.Token, requestID string) (*reply, error) {
	if !sameOrigin(target, reg.Responder.FHIRBase) {
		return nil, &sendError{Permanent: true, Err: fmt.Errorf("refusing to send a token to %s: not the responder's origin", redactURL(target))}
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, &sendError{Permanent: true, Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Accept", "application/fhir+json")
	} else {
		// A report link serves HTML or PDF, not FHIR.
		req.Header.Set("Accept", "*/*")
	}
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("X-Request-ID", requestID)
	resp, err := reg.Responder.HTTP.Do(req)
	if err != nil {
		// url.Error names the URL (no query secrets: ours carry none) and
		// never the body.
		return nil, &sendError{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, &sendError{Status: resp.StatusCode, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	return &reply{
		Status:      resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"),
		Body:        b,
		RetryAfter:  smart.RetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}, nil
}

// sameOrigin reports whether target has the scheme, host and port of base.
func sameOrigin(target, base string) bool {
	t, err1 := url.Parse(target)
	b, err2 := url.Parse(base)
	return err1 == nil && err2 == nil && t.Scheme == b.Scheme && strings.EqualFold(t.Host, b.Host)
}

// redactURL drops the query, which may carry report tokens.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.RawQuery, u.Fragment, u.User = "", "", nil
	return u.String()
}
