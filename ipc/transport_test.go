package ipc_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pdmp-agent/pdmp-agent/ipc"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
)

// transport is one way to reach the server, as available on this machine.
type transport struct {
	name string
	// listen opens a listener and says how to reach it.
	listen func(t *testing.T) (*ipc.Listener, client.Config, func(context.Context) (net.Conn, error))
	// admit makes r admit this test process; deny makes it admit only
	// somebody else.
	admit, deny func(r *ipc.Rule)
}

func transports(t *testing.T) []transport {
	ts := []transport{{
		name: "tcp",
		listen: func(t *testing.T) (*ipc.Listener, client.Config, func(context.Context) (net.Conn, error)) {
			path := filepath.Join(t.TempDir(), "api.credential")
			cred, err := ipc.NewCredential(path, "")
			if err != nil {
				t.Fatal(err)
			}
			l, err := ipc.ListenTCP(t.Context(), "127.0.0.1:0", cred)
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			return l, client.Config{Network: "tcp", Address: addr, CredentialFile: path}, dialer("tcp", addr)
		},
		admit: func(r *ipc.Rule) { r.TCPCredential = true },
		deny:  func(r *ipc.Rule) { r.SIDs = []string{"S-1-5-21-1-2-3-4242"} },
	}}
	if runtime.GOOS == "linux" || runtime.GOOS == "darwin" {
		ts = append(ts, transport{
			name: "unix",
			listen: func(t *testing.T) (*ipc.Listener, client.Config, func(context.Context) (net.Conn, error)) {
				path := socketPath(t)
				l, err := ipc.ListenUnix(t.Context(), path, 0o660, "")
				if err != nil {
					t.Fatal(err)
				}
				return l, client.Config{Network: "unix", Address: path}, dialer("unix", path)
			},
			admit: func(r *ipc.Rule) { r.Users = []string{strconv.Itoa(os.Getuid())} },
			deny:  func(r *ipc.Rule) { r.Users = []string{"4242"} },
		})
	}
	if p, ok := pipeTransport(t); ok {
		ts = append(ts, p)
	}
	return ts
}

func dialer(network, addr string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// socketPath is a short path: sun_path holds about 100 bytes, and
// t.TempDir's names are long.
func socketPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "ipc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "run", "api.sock")
}

// env is a running server on one transport, with a raw HTTP client (to
// send whatever headers a test wants) and the ipc client.
type env struct {
	backend *ipc.FakeBackend
	server  *ipc.Server
	hc      *http.Client
	base    string
	auth    string
	client  *client.Client
	cfg     client.Config
}

func start(t *testing.T, tr transport, b *ipc.FakeBackend, rules ...ipc.Rule) *env {
	t.Helper()
	if len(rules) == 0 {
		r := ipc.Rule{Name: "ehr", Responders: []string{"*"}, Operations: []ipc.Permission{ipc.PermQuery, ipc.PermJobs, ipc.PermStatus}}
		tr.admit(&r)
		rules = []ipc.Rule{r}
	}
	s, err := ipc.NewServer(ipc.Options{Backend: b, Policy: ipc.Policy{Rules: rules}, SyncWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	l, cfg, dial := tr.listen(t)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := &env{backend: b, server: s, client: c, cfg: cfg, base: "http://localhost",
		hc: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }}}}
	if cfg.Network == "tcp" {
		e.base = "http://" + cfg.Address
		cred, err := os.ReadFile(cfg.CredentialFile)
		if err != nil {
			t.Fatal(err)
		}
		e.auth = "Bearer " + string(cred)
	}
	t.Cleanup(e.hc.CloseIdleConnections)
	return e
}

type answer struct {
	status int
	header http.Header
	body   string
}

// do sends a raw request; hdr are name, value pairs, and "Host" sets the Host.
func (e *env) do(t *testing.T, method, path, body string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if e.auth != "" {
		req.Header.Set("Authorization", e.auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// refused fails unless a is an OperationOutcome with the given status.
func refused(t *testing.T, a answer, status int) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %s", a.status, status, a.body)
	}
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct{ Severity, Code string }
	}
	if ct := a.header.Get("Content-Type"); ct != "application/fhir+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if err := json.Unmarshal([]byte(a.body), &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("not an OperationOutcome: %s (%v)", a.body, err)
	}
}

const params = `{"resourceType":"Parameters","parameter":[]}`

// TestTransports runs one suite over every transport this machine has.
func TestTransports(t *testing.T) {
	for _, tr := range transports(t) {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			t.Run("authorized", func(t *testing.T) {
				e := start(t, tr, &ipc.FakeBackend{})
				a := e.do(t, "GET", "/healthz", "")
				if a.status != 200 || a.body != "ok\n" {
					t.Fatalf("healthz: %d %q", a.status, a.body)
				}
				for _, h := range []string{"Cache-Control", "X-Content-Type-Options", "Content-Security-Policy", "X-Frame-Options", "X-Request-ID"} {
					if a.header.Get(h) == "" {
						t.Errorf("no %s", h)
					}
				}
				a = e.do(t, "POST", "/fhir/state-a/Patient/$pdmp-history", params, "X-Request-ID", "req-1")
				if a.status != 200 || a.body != ipc.FakeAnswer || a.header.Get("X-Job-State") != "done" || a.header.Get("X-Request-ID") != "req-1" {
					t.Fatalf("query: %d %v %s", a.status, a.header, a.body)
				}
				c := e.backend.Submissions()[0].Caller
				if c.Transport != ipc.Transport(tr.name) || c.Name != "ehr" {
					t.Errorf("caller %+v", c)
				}
				if tr.name == "unix" && (c.UID != os.Getuid() || c.PID != os.Getpid() || len(c.GIDs) == 0 || c.GIDs[0] != os.Getgid()) {
					t.Errorf("peer credentials %+v, want uid %d pid %d gid %d", c, os.Getuid(), os.Getpid(), os.Getgid())
				}
			})
			t.Run("guards", func(t *testing.T) {
				e := start(t, tr, &ipc.FakeBackend{})
				refused(t, e.do(t, "GET", "/healthz", "", "Origin", "https://evil.example"), 403)
				refused(t, e.do(t, "POST", "/fhir/state-a/$pdmp-history", params, "Origin", "null"), 403)
				refused(t, e.do(t, "GET", "/status", "", "Referer", "https://evil.example/"), 403)
				refused(t, e.do(t, "GET", "/status", "", "X-Forwarded-For", "192.0.2.1"), 403)
				refused(t, e.do(t, "GET", "/status", "", "Host", "attacker.example"), 403)
				refused(t, e.do(t, "GET", "/status", "", "Host", "attacker.example:7333"), 403)
				if n := len(e.backend.Submissions()); n != 0 {
					t.Errorf("%d refused requests reached the backend", n)
				}
			})
			t.Run("policy excludes caller", func(t *testing.T) {
				r := ipc.Rule{Name: "someone-else", Responders: []string{"*"}, Operations: []ipc.Permission{ipc.PermQuery}}
				tr.deny(&r)
				e := start(t, tr, &ipc.FakeBackend{}, r)
				refused(t, e.do(t, "GET", "/healthz", ""), 403)
				refused(t, e.do(t, "POST", "/fhir/state-a/$pdmp-history", params), 403)
			})
			t.Run("async", func(t *testing.T) { testAsync(t, tr) })
		})
	}
}

func TestTCPCredential(t *testing.T) {
	tr := transports(t)[0]
	e := start(t, tr, &ipc.FakeBackend{})
	for name, auth := range map[string]string{"missing": "", "wrong": "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		e.auth = auth
		a := e.do(t, "POST", "/fhir/state-a/$pdmp-history", params)
		refused(t, a, 401)
		// A quoted-string: Windows paths' backslashes come escaped.
		want := `Bearer realm="pdmp-agent", credential_file="` + strings.ReplaceAll(e.cfg.CredentialFile, `\`, `\\`) + `"`
		if got := a.header.Get("WWW-Authenticate"); got != want {
			t.Errorf("%s: WWW-Authenticate %q, want %q", name, got, want)
		}
	}
	if n := len(e.backend.Submissions()); n != 0 {
		t.Errorf("%d unauthenticated requests reached the backend", n)
	}
}

// TestClientRereadsCredential: after an agent restart the credential has
// changed; the client reads the file again on 401 and carries on.
func TestClientRereadsCredential(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api.credential")
	serve := func(addr string) (*ipc.Server, string) {
		cred, err := ipc.NewCredential(path, "")
		if err != nil {
			t.Fatal(err)
		}
		l, err := ipc.ListenTCP(t.Context(), addr, cred)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ipc.NewServer(ipc.Options{Backend: &ipc.FakeBackend{}, Policy: ipc.Policy{Rules: []ipc.Rule{
			{Name: "scripts", TCPCredential: true, Operations: []ipc.Permission{ipc.PermStatus}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(l)
		return s, l.Addr().String()
	}
	s1, addr := serve("127.0.0.1:0")
	c, err := client.New(client.Config{Network: "tcp", Address: addr, CredentialFile: path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Status(t.Context()); err != nil {
		t.Fatal(err)
	}
	s1.Shutdown(t.Context())
	s2, _ := serve(addr)
	defer s2.Shutdown(t.Context())
	if _, err := c.Status(t.Context()); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

func testAsync(t *testing.T, tr transport) {
	t.Run("sync answer", func(t *testing.T) {
		e := start(t, tr, &ipc.FakeBackend{})
		r, err := e.client.Query(t.Context(), "state-a", []byte(params), &client.QueryOptions{Summary: true})
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode != 200 || string(r.Body) != ipc.FakeAnswer || r.State != ipc.StateDone {
			t.Fatalf("%+v", r)
		}
		if s := e.backend.Submissions()[0]; !s.Summary || s.Operation != ipc.OpPDMPHistory || s.IdempotencyKey == "" {
			t.Errorf("submission %+v", s)
		}
	})
	t.Run("deadline then poll", func(t *testing.T) {
		f := &ipc.FakeBackend{Hold: true}
		e := start(t, tr, f)
		a := e.do(t, "POST", "/fhir/state-a/$pdmp-history", params, "Prefer", "wait=1")
		if a.status != 202 || a.header.Get("Content-Location") != "/jobs/job-1" || a.header.Get("Retry-After") != "1" ||
			a.header.Get("X-Progress") != "queued, attempt 1" || a.header.Get("X-Job-State") != "queued" {
			t.Fatalf("%d %v %s", a.status, a.header, a.body)
		}
		a = e.do(t, "GET", "/jobs/job-1", "")
		if a.status != 202 {
			t.Fatalf("poll: %d", a.status)
		}
		f.Release("job-1")
		if a = e.do(t, "GET", "/jobs/job-1", ""); a.status != 200 || a.body != ipc.FakeAnswer {
			t.Fatalf("poll: %d %s", a.status, a.body)
		}

		// The client does the same by itself.
		go func() {
			for len(f.Submissions()) < 2 {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(1500 * time.Millisecond)
			f.Release("job-2")
		}()
		r, err := e.client.Query(t.Context(), "state-a", []byte(params), &client.QueryOptions{Wait: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode != 200 || string(r.Body) != ipc.FakeAnswer {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("respond-async, cancel, idempotency", func(t *testing.T) {
		f := &ipc.FakeBackend{Hold: true}
		e := start(t, tr, f)
		opts := &client.QueryOptions{Async: true, IdempotencyKey: "order-17", RequestID: "req-17", ProcessMessage: true}
		r1, err := e.client.Query(t.Context(), "state-a", []byte(`{"resourceType":"Bundle"}`), opts)
		if err != nil {
			t.Fatal(err)
		}
		if !r1.Pending() || r1.JobID == "" || r1.RequestID != "req-17" || r1.RetryAfter != time.Second {
			t.Fatalf("%+v", r1)
		}
		r2, err := e.client.Query(t.Context(), "state-a", []byte(`{"resourceType":"Bundle"}`), opts)
		if err != nil {
			t.Fatal(err)
		}
		if r2.JobID != r1.JobID {
			t.Errorf("resubmission made job %s, want %s", r2.JobID, r1.JobID)
		}
		for _, s := range f.Submissions() {
			if s.IdempotencyKey != "order-17" || s.RequestID != "req-17" || s.Operation != ipc.OpProcessMessage {
				t.Errorf("submission %+v", s)
			}
		}
		if err := e.client.Cancel(t.Context(), r1.JobID); err != nil {
			t.Fatal(err)
		}
		var ce *client.Error
		if err := e.client.Cancel(t.Context(), r1.JobID); !errors.As(err, &ce) || ce.StatusCode != 409 {
			t.Errorf("second cancel: %v", err)
		}
		if _, err := e.client.Job(t.Context(), r1.JobID); !errors.As(err, &ce) || ce.StatusCode != 410 || ce.State != ipc.StateCancelled {
			t.Errorf("cancelled job: %v", err)
		}

		r3, err := e.client.Query(t.Context(), "state-a", []byte(params), &client.QueryOptions{Async: true})
		if err != nil {
			t.Fatal(err)
		}
		f.Release(r3.JobID)
		r4, err := e.client.Await(t.Context(), r3.JobID)
		if err != nil || r4.StatusCode != 200 || string(r4.Body) != ipc.FakeAnswer {
			t.Fatalf("await: %+v %v", r4, err)
		}
		if _, err := e.client.Job(t.Context(), "job-404"); !errors.As(err, &ce) || ce.StatusCode != 404 || ce.State != "" {
			t.Errorf("unknown job: %v", err)
		}
	})
}
