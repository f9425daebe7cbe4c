package redact

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Secrets and identities the tests plant; none may come out.
const (
	jws    = "eyJhbGciOiJFUzM4NCIsImtpZCI6ImsxIn0.eyJpc3MiOiJjLTEyMzQiLCJzdWIiOiJjLTEyMzQifQ.MEUCIQDx3b5v7n9a2kLq8sFhY0pZ1c4r6t8u9w0x2y4z6A8B"
	pemKey = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oS8LbFDaL2tIoAoGCCqGSM49\nAwEHoUQDQgAE\n-----END EC PRIVATE KEY-----"
	family = "Quixote"
	given  = "Dulcinea"
	dob    = "1961-07-23"
)

func TestRedactString(t *testing.T) {
	tests := []struct {
		in     string
		gone   []string // must not survive
		stays  []string // must survive
		intact bool     // the whole input must survive
	}{
		{in: "queue: attempt failed, will retry", intact: true},
		{in: "open /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so: no such file or directory", intact: true},
		{in: "github.com/pdmp-agent/pdmp-agent/agent/smart.(*Client).Token", intact: true},
		{in: "POST https://pdmp.state-a.example/fhir/Patient/$pdmp-history: HTTP 503 after 2.5s on port 8443", intact: true},
		{in: "token expires at 2025-01-02T03:04:05Z", intact: true},
		{in: "panic: boom\n\ngoroutine 1 [running]:\nmain.main()\n\t/src/agent/main.go:12 +0x1d\nexit status 2", intact: true},
		{in: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", intact: true},
		{in: "keyring:dr-adams?backend=file&passphrase-file=/etc/pdmp-agent/pass", intact: true},
		{in: "assertion rejected: " + jws, gone: []string{"eyJ", "MEUCIQ"}, stays: []string{"assertion rejected: "}},
		{in: "Authorization: Bearer abc.DEF-ghi_123~xyz", gone: []string{"abc.DEF"}, stays: []string{"Bearer " + Redacted}},
		{in: "key: " + pemKey + " loaded", gone: []string{"MHcC", "AwEH"}, stays: []string{"key: ", " loaded"}},
		{in: "cut: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC", gone: []string{"MIIEvQ"}},
		{in: "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", gone: []string{"9f86d0"}},
		{in: "d=Qm9vdHN0cmFwU2VjcmV0S2V5TWF0ZXJpYWwxMjM0NTY3ODk", gone: []string{"Qm9vdHN0"}},
		{in: "born " + dob + " or 07/23/1961", gone: []string{dob, "07/23/1961"}, stays: []string{"born "}},
		{in: "ssn 123-45-6789", gone: []string{"123-45-6789"}},
		{in: "member 1234567890123 / MRN 987654321", gone: []string{"1234567890123", "987654321"}},
		{in: "write to dulcinea.q@toboso.example failed", gone: []string{"dulcinea", "toboso"}},
		{in: "call (555) 123-4567 or 555-123-4567 or +1 555.123.4567", gone: []string{"123-4567", "123.4567"}},
		{in: "https://cb.example/x?pin-value=1234&state=ok&passphrase=hunter2", gone: []string{"1234", "hunter2"},
			stays: []string{"pin-value=" + Redacted + "&state=ok&passphrase=" + Redacted}},
		{in: "GET Patient?family=" + family + "&given=" + given + "&birthdate=" + dob, gone: []string{family, given, dob},
			stays: []string{"family=" + Redacted}},
		{in: `{"name":[{"family":"` + family + `","given":["` + given + `"]}],"birthDate":"` + dob + `","gender":"female"}`,
			gone: []string{family, given, dob}, stays: []string{`"gender":"female"`, `"name":"` + Redacted + `"`}},
		{in: "grant_type=client_credentials&client_assertion_type=jwt-bearer&client_assertion=" + jws,
			gone: []string{"eyJ"}, stays: []string{"grant_type=client_credentials&client_assertion_type=jwt-bearer&client_assertion="}},
	}
	for _, tt := range tests {
		got := RedactString(tt.in)
		if tt.intact && got != tt.in {
			t.Errorf("RedactString(%q) = %q, want it unchanged", tt.in, got)
		}
		for _, s := range tt.gone {
			if strings.Contains(got, s) {
				t.Errorf("RedactString(%q) = %q, still holds %q", tt.in, got, s)
			}
		}
		for _, s := range tt.stays {
			if !strings.Contains(got, s) {
				t.Errorf("RedactString(%q) = %q, lost %q", tt.in, got, s)
			}
		}
	}
}

// FuzzRedactString checks that no input makes the passes panic and that a
// token stays out whatever surrounds it.
func FuzzRedactString(f *testing.F) {
	for _, s := range []string{"", "eyJ", "eyJ..", "a@b.cd", "(555) 123-4567", `{"name":[{"x":"}`, "-----BEGIN X-----", "bearer", "pin=", "1961-07-23T1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := RedactString(s + " " + jws + " " + s); strings.Contains(got, "MEUCIQ") {
			t.Errorf("token survived in %q", got)
		}
	})
}

func TestRedactor(t *testing.T) {
	var r Redactor
	if got := r.RedactString("nothing registered"); got != "nothing registered" {
		t.Errorf("empty Redactor changed text: %q", got)
	}
	r.Add("Dulcinea Quixote")
	r.Add("Dulcinea")
	r.Add("Li")
	r.Add("opaque-token-value")
	for in, want := range map[string]string{
		"dear DULCINEA QUIXOTE,":         "dear [REDACTED],",
		"dulcineas":                      "[REDACTED]s",
		"list of Li, Lim, li":            "list of [REDACTED], Lim, [REDACTED]",
		"t=opaque-token-value;":          "t=[REDACTED];",
		"Dulcinea Dulcinea":              "[REDACTED] [REDACTED]",
		"İstanbul Dulcinea (odd length)": "İstanbul [REDACTED] (odd length)",
	} {
		if got := r.RedactString(in); got != want {
			t.Errorf("RedactString(%q) = %q, want %q", in, got, want)
		}
	}

	// Add and Remove pair up.
	r.Add("Sancho")
	r.Add("Sancho")
	r.Remove("Sancho")
	if got := r.RedactString("Sancho"); got != Redacted {
		t.Errorf("removed once of twice: %q", got)
	}
	r.Remove("SANCHO")
	if got := r.RedactString("Sancho"); got != "Sancho" {
		t.Errorf("removed twice of twice: %q", got)
	}
	r.Remove("never added")
}

// Types whose values the handler must see through.
type (
	stringer string
	valuer   struct{ family, responder string }
	subject  struct{ Name, BirthDate, Responder string }
	tagged   struct {
		Who      string `json:"given"`
		Seen     int    `json:"seen"`
		Internal string `json:"-"`
	}
	wrapError struct{ err error }
)

func (s stringer) String() string { return "auth header: Bearer " + string(s) }

func (v valuer) LogValue() slog.Value {
	return slog.GroupValue(slog.String("family", v.family), slog.String("responder", v.responder))
}

func (e wrapError) Error() string { return "lookup failed: " + e.err.Error() }
func (e wrapError) Unwrap() error { return e.err }

func TestHandler(t *testing.T) {
	var r Redactor
	r.Add("Sancho")
	job := "0192f3a4b5c6d7e8f90123456789abcd"
	tests := []struct {
		name  string
		log   func(l *slog.Logger)
		gone  []string
		stays []string
	}{
		{"sensitive keys", func(l *slog.Logger) {
			l.Info("lookup", "patient", family, "birthDate", dob, "Family", family, "given_name", given,
				"access_token", "opaque123", "client_secret", "s3cr3t", "PIN", 1234, "registration", "dr-adams")
		}, []string{family, given, dob, "opaque123", "s3cr3t", "1234"}, []string{"dr-adams", Redacted}},
		{"nested groups", func(l *slog.Logger) {
			l.Info("lookup", slog.Group("req", slog.Group("subject", slog.String("name", given+" "+family)),
				slog.String("responder", "state-a"), slog.String("note", "dob "+dob)))
		}, []string{family, given, dob}, []string{"state-a"}},
		{"sensitive group", func(l *slog.Logger) {
			l.WithGroup("patient").Info("lookup", "id", family, "born", dob)
		}, []string{family, dob}, nil},
		{"With attributes", func(l *slog.Logger) {
			l.With("token", "opaque-abc", "responder", "state-a").Info("sent")
		}, []string{"opaque-abc"}, []string{"state-a"}},
		{"wrapped errors", func(l *slog.Logger) {
			inner := fmt.Errorf("token endpoint: invalid_client for assertion %s", jws)
			l.Error("send failed", "error", wrapError{fmt.Errorf("attempt 2: %w", inner)},
				"joined", errors.Join(errors.New("first"), fmt.Errorf("patient %s", dob)))
		}, []string{"eyJ", dob}, []string{"lookup failed: attempt 2: token endpoint: invalid_client", "first"}},
		{"Stringer", func(l *slog.Logger) {
			l.Info("header", "h", stringer("abcdefgh12345678"))
		}, []string{"abcdefgh12345678"}, []string{"auth header: Bearer " + Redacted}},
		{"LogValuer", func(l *slog.Logger) {
			l.Info("lookup", "who", valuer{family, "state-b"})
		}, []string{family}, []string{"state-b"}},
		{"map", func(l *slog.Logger) {
			l.Info("params", "m", map[string]any{"family": family, "count": 3, "birth": map[string]string{"date": dob}})
		}, []string{family, dob}, []string{"count"}},
		{"struct, pointer and slice", func(l *slog.Logger) {
			s := subject{given, dob, "state-c"}
			l.Info("subject", "s", s, "p", &s, "list", []subject{s}, "tagged", tagged{given, 2, family})
		}, []string{given, dob, family}, []string{"state-c", "seen"}},
		{"bytes", func(l *slog.Logger) {
			l.Info("response", "resp", []byte(`{"resourceType":"Patient","birthDate":"`+dob+`"}`))
		}, []string{dob}, []string{"resourceType"}},
		{"message", func(l *slog.Logger) {
			l.Info("lookup for " + dob + " sent with Bearer abcdefgh12345678 to 555-123-4567")
		}, []string{dob, "abcdefgh12345678", "123-4567"}, []string{"lookup for "}},
		{"%v of a struct in the message", func(l *slog.Logger) {
			l.Info(fmt.Sprintf("subject %+v", subject{"X", dob, "state-a"}))
		}, []string{dob}, []string{"state-a"}},
		{"plain keys keep ids", func(l *slog.Logger) {
			l.Info("queue: job failed", "job", job, "request_id", job, "status", 503, "at", time.Unix(0, 0))
		}, nil, []string{job, "503"}},
		{"registered strings", func(l *slog.Logger) {
			l.Info("called by sancho", "note", "SANCHO called", "job", "job-for-Sancho")
		}, []string{"sancho"}, []string{"called by " + Redacted}},
	}
	for _, inner := range []struct {
		name string
		new  func(w io.Writer) slog.Handler
	}{
		{"json", func(w io.Writer) slog.Handler { return slog.NewJSONHandler(w, nil) }},
		{"text", func(w io.Writer) slog.Handler { return slog.NewTextHandler(w, nil) }},
	} {
		for _, tt := range tests {
			t.Run(inner.name+"/"+tt.name, func(t *testing.T) {
				var buf bytes.Buffer
				tt.log(slog.New(NewHandler(inner.new(&buf), Options{Redactor: &r})))
				out := buf.String()
				for _, s := range tt.gone {
					if strings.Contains(strings.ToLower(out), strings.ToLower(s)) {
						t.Errorf("output holds %q:\n%s", s, out)
					}
				}
				for _, s := range tt.stays {
					if inner.name == "text" {
						s = strings.Trim(fmt.Sprintf("%q", s), `"`) // the text handler quotes values
					}
					if !strings.Contains(out, s) {
						t.Errorf("output lost %q:\n%s", s, out)
					}
				}
			})
		}
	}
}

func TestHandlerOptions(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), Options{SensitiveKeys: []string{"member-id"}, PlainKeys: []string{"trace"}}))
	id := "4bf92f3577b34da6a3ce929d0e0e4736"
	l.Info("m", "Member_ID", "X1", "trace", id, "other", id)
	out := buf.String()
	if strings.Contains(out, "X1") || !strings.Contains(out, `"trace":"`+id) || strings.Count(out, id) != 1 {
		t.Errorf("output: %s", out)
	}
}

func TestConcurrentRegistration(t *testing.T) {
	var r Redactor
	var buf syncBuffer
	l := slog.New(NewHandler(slog.NewJSONHandler(&buf, nil), Options{Redactor: &r}))
	r.Add("Sancho") // held throughout
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				name := fmt.Sprintf("Patient%dx%d", w, i)
				r.Add(name)
				l.Info("lookup", "note", name+" and Sancho")
				r.Remove(name)
			}
		})
	}
	wg.Wait()
	out := strings.ToLower(buf.String())
	if strings.Contains(out, "sancho") || strings.Contains(out, "patient0x") {
		t.Errorf("a registered string leaked")
	}
	if got := r.RedactString("Patient1x3"); got != "Patient1x3" {
		t.Errorf("removed strings still cut: %q", got)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// BenchmarkHandler measures the cost the handler adds to a typical line
// (compare json with redact/json).
func BenchmarkHandler(b *testing.B) {
	var r Redactor
	for i := range 20 {
		r.Add(fmt.Sprintf("registered-name-%d", i))
	}
	err := fmt.Errorf("responder answered HTTP 503: %w", errors.New("service unavailable"))
	for _, bc := range []struct {
		name string
		h    slog.Handler
	}{
		{"json", slog.NewJSONHandler(io.Discard, nil)},
		{"redact/json", NewHandler(slog.NewJSONHandler(io.Discard, nil), Options{})},
		{"redact+20registered/json", NewHandler(slog.NewJSONHandler(io.Discard, nil), Options{Redactor: &r})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := slog.New(bc.h)
			b.ReportAllocs()
			for b.Loop() {
				l.Info("queue: attempt failed, will retry", "job", "0192f3a4b5c6d7e8f90123456789abcd",
					"responder", "state-a", "attempt", 2, "status", 503, "err", err)
			}
		})
	}
}
