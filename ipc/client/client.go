// Package client is a Go client of pdmp-agent's local API (package ipc),
// for EHR integrations and the agent's own command line. It connects over a
// Unix socket, a Windows named pipe or loopback TCP with the credential
// file, submits FHIR requests and, when the agent answers 202 Accepted,
// polls the job until the answer is there.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pdmp-agent/pdmp-agent/ipc"
)

// Config says how to reach the agent.
type Config struct {
	// Network is "unix", "pipe" or "tcp".
	Network string
	// Address is the socket path, the pipe name (default
	// ipc.DefaultPipeName), or the loopback host:port.
	Address string
	// CredentialFile is the bearer credential file (tcp only). Its path
	// comes from configuration, never from the agent's 401 answer: a
	// process squatting the port could otherwise name any file and
	// receive its contents as a "credential".
	CredentialFile string
}

// maxResponse bounds what the client reads of one answer.
const maxResponse = 64 << 20

// Client talks to one agent. It is safe for concurrent use.
type Client struct {
	hc       *http.Client
	base     string
	credFile string

	mu   sync.Mutex
	cred string
}

// New checks c and returns a client; it does not connect yet.
func New(c Config) (*Client, error) {
	var dial func(ctx context.Context) (net.Conn, error)
	// Over a socket or a pipe the Host is "localhost", which the agent
	// accepts there whatever its configured local name.
	base := "http://localhost"
	switch c.Network {
	case "unix":
		if c.Address == "" {
			return nil, errors.New("client: the socket path is required")
		}
		dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.Address)
		}
	case "pipe":
		name := c.Address
		if name == "" {
			name = ipc.DefaultPipeName
		}
		if err := ipc.CheckPipeName(name); err != nil {
			return nil, err
		}
		dial = func(ctx context.Context) (net.Conn, error) { return dialPipe(ctx, name) }
	case "tcp":
		addr, err := loopbackAddr(c.Address)
		if err != nil {
			return nil, err
		}
		if c.CredentialFile == "" {
			return nil, errors.New("client: tcp needs the credential file")
		}
		base = "http://" + addr
		dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	default:
		return nil, fmt.Errorf("client: unknown network %q (unix, pipe, tcp)", c.Network)
	}
	tr := &http.Transport{
		// Never through a proxy: the agent refuses forwarded requests,
		// and the credential must not leave the machine.
		Proxy:               nil,
		DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{
		hc: &http.Client{
			Transport: tr,
			// The agent never redirects; following one could carry the
			// credential elsewhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		base:     base,
		credFile: c.CredentialFile,
	}, nil
}

// loopbackAddr accepts host:port with a loopback literal or localhost,
// which it pins to 127.0.0.1 so that no resolver is consulted.
func loopbackAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("client: tcp address %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("client: %q is not a loopback address", addr)
	}
	return net.JoinHostPort(host, port), nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// QueryOptions tune Query; the zero value asks for a Patient-level
// $pdmp-history and waits for the answer however long it takes.
type QueryOptions struct {
	// ProcessMessage sends params as a message Bundle to $process-message
	// instead of Parameters to $pdmp-history.
	ProcessMessage bool
	// SystemLevel posts to [base]/$pdmp-history rather than
	// [base]/Patient/$pdmp-history (the agent treats both alike).
	SystemLevel bool
	// Summary asks for the compact summary (_summary=pdmp).
	Summary bool
	// IdempotencyKey makes a resubmission return the same job. When
	// empty, Query makes one, so that its own retry is safe.
	IdempotencyKey string
	// RequestID is sent as X-Request-ID; the agent makes one if empty.
	RequestID string
	// Wait asks the agent to hold the request up to this long before
	// answering 202 (Prefer: wait); 0 uses the agent's default.
	Wait time.Duration
	// Async asks for 202 at once (Prefer: respond-async), and makes Query
	// return the pending job instead of polling it.
	Async bool
}

// Response is a successful answer: the responder's (200), or a pending job
// (202, when QueryOptions.Async or from Job).
type Response struct {
	StatusCode  int
	ContentType string
	Body        []byte
	// RequestID is the agent's X-Request-ID, for its logs.
	RequestID string
	// State is the job's state; empty for answers that are not about a job.
	State ipc.JobState
	// JobID, Progress and RetryAfter describe a pending job.
	JobID      string
	Progress   string
	RetryAfter time.Duration
}

// Pending reports whether r is a job still in progress.
func (r *Response) Pending() bool { return r.StatusCode == http.StatusAccepted }

// Error is an answer other than 2xx. Body is always an OperationOutcome.
type Error struct {
	StatusCode int
	Body       []byte
	RequestID  string
	// State is set when the status is a job's outcome (a failed, cancelled
	// or gone job, or the responder's own error), and empty when the agent
	// refused the request itself.
	State ipc.JobState
}

// Error names the status and the first issue's code. The diagnostics are
// included only for the agent's own refusals: a responder's may hold PHI,
// which must not end up in a log line built from this string.
func (e *Error) Error() string {
	var oo struct {
		Issue []struct{ Code, Diagnostics string } `json:"issue"`
	}
	msg := fmt.Sprintf("pdmp-agent: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if json.Unmarshal(e.Body, &oo) == nil && len(oo.Issue) > 0 {
		msg += " (" + oo.Issue[0].Code + ")"
		if e.State == "" && oo.Issue[0].Diagnostics != "" {
			msg += ": " + oo.Issue[0].Diagnostics
		}
	}
	if e.State != "" {
		msg += ", job " + string(e.State)
	}
	return msg
}

// Query submits params (Parameters, or a Bundle with ProcessMessage) to
// responder and returns the answer, polling the job if the agent answers
// 202 before it is ready (unless o.Async). o may be nil. If ctx ends while
// polling, Query returns the pending Response (its JobID to come back to)
// with ctx's error; the job goes on in the agent.
func (c *Client) Query(ctx context.Context, responder string, params []byte, o *QueryOptions) (*Response, error) {
	if o == nil {
		o = &QueryOptions{}
	}
	op := "Patient/$pdmp-history"
	switch {
	case o.ProcessMessage:
		op = "$process-message"
	case o.SystemLevel:
		op = "$pdmp-history"
	}
	path := "/fhir/" + url.PathEscape(responder) + "/" + op
	if o.Summary {
		path += "?_summary=pdmp"
	}
	h := http.Header{}
	h.Set("Content-Type", "application/fhir+json")
	h.Set("Idempotency-Key", o.IdempotencyKey)
	if o.IdempotencyKey == "" {
		h.Set("Idempotency-Key", randomKey())
	}
	if o.RequestID != "" {
		h.Set("X-Request-ID", o.RequestID)
	}
	switch {
	case o.Async:
		h.Set("Prefer", "respond-async")
	case o.Wait > 0:
		h.Set("Prefer", "wait="+strconv.Itoa(int((o.Wait+time.Second-1)/time.Second)))
	}
	r, err := c.do(ctx, http.MethodPost, path, h, params)
	if err != nil || !r.Pending() || o.Async {
		return r, err
	}
	return c.await(ctx, r)
}

// Job looks at a job once; a pending job is a Response with Pending true.
func (c *Client) Job(ctx context.Context, id string) (*Response, error) {
	r, err := c.do(ctx, http.MethodGet, "/jobs/"+url.PathEscape(id), nil, nil)
	if r != nil && r.JobID == "" {
		r.JobID = id
	}
	return r, err
}

// Report fetches, through the agent, the rendered report a finished job's
// answer links to.
func (c *Client) Report(ctx context.Context, id string) (*Response, error) {
	return c.do(ctx, http.MethodGet, "/jobs/"+url.PathEscape(id)+"/report", nil, nil)
}

// Await polls a job until it is finished, as often as the agent's
// Retry-After says; if ctx ends first, it returns the last pending Response
// with ctx's error.
func (c *Client) Await(ctx context.Context, id string) (*Response, error) {
	r, err := c.Job(ctx, id)
	if err != nil || !r.Pending() {
		return r, err
	}
	return c.await(ctx, r)
}

func (c *Client) await(ctx context.Context, r *Response) (*Response, error) {
	for r.Pending() {
		t := time.NewTimer(min(max(r.RetryAfter, 100*time.Millisecond), 30*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return r, ctx.Err()
		case <-t.C:
		}
		id := r.JobID
		var err error
		if r, err = c.Job(ctx, id); err != nil {
			return r, err
		}
	}
	return r, nil
}

// Cancel cancels a job; it fails with a 409 *Error if it had finished.
func (c *Client) Cancel(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/jobs/"+url.PathEscape(id), nil, nil)
	return err
}

// Status returns the agent's status document.
func (c *Client) Status(ctx context.Context) ([]byte, error) {
	r, err := c.do(ctx, http.MethodGet, "/status", nil, nil)
	if err != nil {
		return nil, err
	}
	return r.Body, nil
}

// Capabilities returns a responder's CapabilityStatement.
func (c *Client) Capabilities(ctx context.Context, responder string) ([]byte, error) {
	r, err := c.do(ctx, http.MethodGet, "/fhir/"+url.PathEscape(responder)+"/metadata", nil, nil)
	if err != nil {
		return nil, err
	}
	return r.Body, nil
}

// do sends one request. Over TCP, a 401 means the agent restarted and
// rotated its credential: the file is read again and the request sent
// once more (POSTs carry an idempotency key, so this is safe).
func (c *Client) do(ctx context.Context, method, path string, h http.Header, body []byte) (*Response, error) {
	for attempt := 0; ; attempt++ {
		cred, err := c.credential(attempt > 0)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		for k, v := range h {
			req.Header[k] = v
		}
		if cred != "" {
			req.Header.Set("Authorization", "Bearer "+cred)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		r, err := readResponse(resp)
		if err != nil {
			return nil, err
		}
		if r.StatusCode == http.StatusUnauthorized && c.credFile != "" && attempt == 0 {
			continue
		}
		if r.StatusCode >= 300 {
			return nil, &Error{StatusCode: r.StatusCode, Body: r.Body, RequestID: r.RequestID, State: r.State}
		}
		return r, nil
	}
}

func readResponse(resp *http.Response) (*Response, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("client: reading the answer: %w", err)
	}
	if len(body) > maxResponse {
		return nil, fmt.Errorf("client: the answer is larger than %d bytes", maxResponse)
	}
	r := &Response{
		StatusCode:  resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"),
		Body:        body,
		RequestID:   resp.Header.Get("X-Request-ID"),
		State:       ipc.JobState(resp.Header.Get("X-Job-State")),
		Progress:    resp.Header.Get("X-Progress"),
	}
	if loc := resp.Header.Get("Content-Location"); strings.HasPrefix(loc, "/jobs/") {
		r.JobID, _ = url.PathUnescape(strings.TrimPrefix(loc, "/jobs/"))
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
		r.RetryAfter = time.Duration(min(s, 3600)) * time.Second
	}
	return r, nil
}

// credential returns the bearer credential ("" when not on TCP), read
// from the file the first time and again when reload is set.
func (c *Client) credential(reload bool) (string, error) {
	if c.credFile == "" {
		return "", nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cred != "" && !reload {
		return c.cred, nil
	}
	cred, err := readCredential(c.credFile)
	if err != nil {
		return "", err
	}
	c.cred = cred
	return cred, nil
}

// readCredential reads a credential file, refusing anything that is not
// a small regular file: a credential is 43 characters.
func readCredential(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("client: credential file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("client: credential file: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > 4096 {
		return "", fmt.Errorf("client: credential file %s is not a small regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("client: credential file: %w", err)
	}
	cred := strings.TrimSpace(string(b))
	if cred == "" {
		return "", fmt.Errorf("client: credential file %s is empty", path)
	}
	return cred, nil
}

func randomKey() string {
	var b [16]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}
