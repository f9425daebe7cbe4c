// Package config loads and validates the agent's one YAML configuration
// file. It reports every problem with the file, line and field at fault, so
// IT staff can fix it without reading code, and it never returns a partly
// valid configuration: a Config is either whole and valid or not returned.
//
// It must never log or echo secret values found in the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/pdmp-agent/pdmp-agent/vault"
)

// Config is the whole configuration file.
type Config struct {
	// StateDir holds the queue and other state; it cannot change live.
	StateDir      string         `yaml:"state_dir" json:"state_dir"`
	Log           Log            `yaml:"log" json:"log"`
	Rotation      Rotation       `yaml:"rotation" json:"rotation"`
	Listen        Listen         `yaml:"listen" json:"listen"`
	Callers       []Caller       `yaml:"callers" json:"callers"`
	Queue         Queue          `yaml:"queue" json:"queue"`
	Audit         Audit          `yaml:"audit" json:"audit"`
	Metrics       Metrics        `yaml:"metrics" json:"metrics"`
	Responders    []Responder    `yaml:"responders" json:"responders"`
	Registrations []Registration `yaml:"registrations" json:"registrations"`
}

// Listen says where the local API listens. Changing it needs a restart.
type Listen struct {
	// TCP is a loopback address such as 127.0.0.1:7333; never anything else.
	TCP string `yaml:"tcp" json:"tcp"`
	// CredentialFile receives the bearer credential TCP callers must send;
	// it is rewritten at every start (default <state_dir>/api.credential).
	CredentialFile string `yaml:"credential_file" json:"credential_file"`
	// Unix is the path of the Unix domain socket.
	Unix string `yaml:"unix" json:"unix"`
	// Pipe is the Windows named pipe.
	Pipe string `yaml:"pipe" json:"pipe"`
	// Group may connect to the Unix socket and read the credential file
	// (Unix); on Windows, the local group granted the pipe.
	Group string `yaml:"group" json:"group"`
	// Host is the local name accepted in the Host header besides loopback
	// literals (default pdmp-agent).
	Host string `yaml:"host" json:"host"`
	// SyncWait is how long a request waits for the answer before getting
	// 202 and a job to poll (default 25s).
	SyncWait Duration `yaml:"sync_wait" json:"sync_wait"`
}

// Caller grants a local caller access to the API. A connection matches a
// caller by any of its users, groups, Windows SIDs, or by presenting the
// TCP credential.
type Caller struct {
	Name   string   `yaml:"name" json:"name"`
	Users  []string `yaml:"users" json:"users"`   // user names or numeric uids
	Groups []string `yaml:"groups" json:"groups"` // group names or numeric gids
	SIDs   []string `yaml:"sids" json:"sids"`     // Windows user or group SIDs
	// TCPCredential admits holders of the loopback credential file.
	TCPCredential bool `yaml:"tcp_credential" json:"tcp_credential"`
	// Responders this caller may query; ["*"] for all.
	Responders []string `yaml:"responders" json:"responders"`
	// Operations: query, jobs, status (default all three).
	Operations []string `yaml:"operations" json:"operations"`
}

// Queue configures the durable queue. Its location is state_dir.
type Queue struct {
	// DataKey is the vault URI of the key that encrypts queued bodies
	// (default: a keyring entry beside the first registration's key).
	DataKey string `yaml:"data_key" json:"data_key"`
	// ResultTTL is how long results are kept where policy allows (24h).
	ResultTTL Duration `yaml:"result_ttl" json:"result_ttl"`
	// IdempotencyWindow is how long a resubmission maps to the same job.
	IdempotencyWindow Duration `yaml:"idempotency_window" json:"idempotency_window"`
	MaxAttempts       int      `yaml:"max_attempts" json:"max_attempts"`
	// MaxAge gives up on a request this old (default 24h).
	MaxAge Duration `yaml:"max_age" json:"max_age"`
}

// Audit configures the audit trail.
type Audit struct {
	// Dir holds the audit files (default <state_dir>/audit).
	Dir string `yaml:"dir" json:"dir"`
	// Key is the vault URI of the key that hashes patient identities.
	Key     string   `yaml:"key" json:"key"`
	MaxSize int64    `yaml:"max_size" json:"max_size"`
	MaxAge  Duration `yaml:"max_age" json:"max_age"`
}

// Metrics configures the opt-in Prometheus listener.
type Metrics struct {
	// Listen is a loopback address; empty disables metrics.
	Listen string `yaml:"listen" json:"listen"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error (default info).
	Level string `yaml:"level" json:"level"`
	// Format is auto (text on a terminal, JSON otherwise), text or json.
	Format string `yaml:"format" json:"format"`
}

// Rotation is the key rotation policy shared by the agent and the keys
// command: a new key is published for PublishDelay before it signs, and the
// key it replaces stays published for Overlap after that.
type Rotation struct {
	PublishDelay Duration `yaml:"publish_delay" json:"publish_delay"`
	Overlap      Duration `yaml:"overlap" json:"overlap"`
}

// Responder is a PDMP (or hub) the agent sends queries to.
type Responder struct {
	Name string `yaml:"name" json:"name"`
	// FHIRBase is the responder's FHIR base URL; SMART discovery reads
	// {FHIRBase}/.well-known/smart-configuration.
	FHIRBase string `yaml:"fhir_base" json:"fhir_base"`
	// TokenEndpoint skips discovery when set.
	TokenEndpoint string `yaml:"token_endpoint" json:"token_endpoint"`
	// Scope requested for every registration of this responder unless the
	// registration sets its own (default system/*.read).
	Scope string `yaml:"scope" json:"scope"`
	// Timeout bounds one HTTP exchange with the responder (default 30s).
	Timeout Duration `yaml:"timeout" json:"timeout"`
	TLS     TLS      `yaml:"tls" json:"tls"`
	// OperationPath is appended to FHIRBase: Patient/$pdmp-history (the
	// IG's prose, default) or $pdmp-history (its OperationDefinition).
	OperationPath string `yaml:"operation_path" json:"operation_path"`
	// Messaging wraps requests in a FHIR message to {FHIRBase}/$process-message.
	Messaging bool `yaml:"messaging" json:"messaging"`
	// MessageSource is MessageHeader.source.endpoint when messaging.
	MessageSource string `yaml:"message_source" json:"message_source"`
	Limits        Limits `yaml:"limits" json:"limits"`
	Policy        Policy `yaml:"policy" json:"policy"`
}

// Limits protect a responder from a draining backlog.
type Limits struct {
	Concurrency int     `yaml:"concurrency" json:"concurrency"` // default 4
	Rate        float64 `yaml:"rate" json:"rate"`               // requests per second; 0 = no limit
	Burst       int     `yaml:"burst" json:"burst"`
}

// Policy is a responder's data-use rules, set per state law.
type Policy struct {
	// Retention: display-only (default), view or data.
	Retention string `yaml:"retention" json:"retention"`
	// Delegates: allowed or refused (default refused).
	Delegates string `yaml:"delegates" json:"delegates"`
	// RequesterKinds lists PractitionerRole codes allowed to query; empty
	// allows any.
	RequesterKinds []string `yaml:"requester_kinds" json:"requester_kinds"`
}

// TLS configures connections to a responder. TLS 1.2 is the floor.
type TLS struct {
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version" json:"min_version"`
	// CAFile is a PEM bundle to trust instead of the system roots.
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// SPKIPins, if set, are base64 SHA-256 hashes of SubjectPublicKeyInfo;
	// one must match a certificate in the verified chain.
	SPKIPins []string `yaml:"spki_pins" json:"spki_pins"`
}

// Registration is one client registration at a responder: a client_id and
// the key whose public half the responder holds.
type Registration struct {
	Name      string `yaml:"name" json:"name"`
	Responder string `yaml:"responder" json:"responder"`
	ClientID  string `yaml:"client_id" json:"client_id"`
	// Key is a vault URI (keyring: or pkcs11:).
	Key string `yaml:"key" json:"key"`
	// Alg is ES384 (default) or RS384.
	Alg string `yaml:"alg" json:"alg"`
	// Scope overrides the responder's scope.
	Scope string `yaml:"scope" json:"scope"`
	// JKU is sent in the assertion header only when set; it must equal the
	// JWK Set URL registered with the responder.
	JKU string `yaml:"jku" json:"jku"`
	// AssertionLifetime is the client assertion's exp - now (default 4m,
	// at most 5m).
	AssertionLifetime Duration `yaml:"assertion_lifetime" json:"assertion_lifetime"`
	// Serves lists the identifiers (system|value) of the practitioners or
	// organizations this registration acts for. A provider's own
	// registration wins over its organization's.
	Serves Serves `yaml:"serves" json:"serves"`
	// Requester completes minimal requests: FHIR resources written as
	// YAML, sent as the authorized practitioner, role and organization.
	Requester Requester `yaml:"requester" json:"requester"`
}

// Serves holds identifier tokens "system|value".
type Serves struct {
	Practitioners []string `yaml:"practitioners" json:"practitioners"`
	Organizations []string `yaml:"organizations" json:"organizations"`
}

// Requester holds FHIR resources (as YAML maps) for minimal input.
type Requester struct {
	Practitioner     map[string]any `yaml:"practitioner" json:"practitioner"`
	PractitionerRole map[string]any `yaml:"practitioner_role" json:"practitioner_role"`
	Organization     map[string]any `yaml:"organization" json:"organization"`
}

// Duration is a duration written as "30s", "4m" or "1h". It stays text
// until validation so a bad value is reported with its line and field.
type Duration string

// D returns the duration, or def when unset. Only valid configs reach
// callers, so a parse error cannot happen here.
func (d Duration) D(def time.Duration) time.Duration {
	v, err := time.ParseDuration(string(d))
	if d == "" || err != nil {
		return def
	}
	return v
}

func (d Duration) check() error {
	if d == "" {
		return nil
	}
	v, err := time.ParseDuration(string(d))
	if err != nil || v < 0 {
		return fmt.Errorf("%q is not a duration (use e.g. 30s, 4m, 1h)", string(d))
	}
	return nil
}

// Defaults.
const (
	DefaultOperationPath     = "Patient/$pdmp-history"
	DefaultHost              = "pdmp-agent"
	DefaultSyncWait          = 25 * time.Second
	DefaultScope             = "system/*.read"
	DefaultTimeout           = 30 * time.Second
	DefaultAssertionLifetime = 4 * time.Minute
	MaxAssertionLifetime     = 5 * time.Minute
)

// Error is one problem in a configuration file.
type Error struct {
	File   string
	Line   int    // 0 if unknown
	Column int    // 0 if unknown
	Field  string // e.g. registrations[1].key; empty for syntax errors
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

// Parse decodes and validates data; name is used in errors.
func Parse(name string, data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField())
	// An empty file decodes to the zero Config, which then fails validation
	// with a useful message instead of "EOF".
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, Errors{decodeError(name, err)}
	}
	c.setDefaults()
	if errs := c.validate(); len(errs) > 0 {
		locate(name, data, errs)
		return nil, errs
	}
	return &c, nil
}

func decodeError(name string, err error) *Error {
	var ye yaml.Error
	if errors.As(err, &ye) && ye.GetToken() != nil {
		pos := ye.GetToken().Position
		msg := ye.GetMessage()
		var tokenField string
		var uf *yaml.UnknownFieldError
		if errors.As(err, &uf) {
			tokenField = uf.Token.Value
			msg = fmt.Sprintf("unknown field %q", tokenField)
		}
		return &Error{File: name, Line: pos.Line, Column: pos.Column, Msg: msg}
	}
	return &Error{File: name, Msg: err.Error()}
}

func (c *Config) setDefaults() {
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "auto"
	}
	if c.Listen.Host == "" {
		c.Listen.Host = DefaultHost
	}
	for i := range c.Callers {
		if len(c.Callers[i].Operations) == 0 {
			c.Callers[i].Operations = []string{"query", "jobs", "status"}
		}
	}
	for i := range c.Responders {
		r := &c.Responders[i]
		if r.OperationPath == "" {
			r.OperationPath = DefaultOperationPath
		}
		if r.Limits.Concurrency == 0 {
			r.Limits.Concurrency = 4
		}
		if r.Policy.Retention == "" {
			r.Policy.Retention = "display-only"
		}
		if r.Policy.Delegates == "" {
			r.Policy.Delegates = "refused"
		}
		if r.Scope == "" {
			r.Scope = DefaultScope
		}
		if r.TLS.MinVersion == "" {
			r.TLS.MinVersion = "1.2"
		}
	}
	for i := range c.Registrations {
		if c.Registrations[i].Alg == "" {
			c.Registrations[i].Alg = "ES384"
		}
	}
}

func (c *Config) validate() Errors {
	var errs Errors
	bad := func(field, format string, args ...any) {
		errs = append(errs, &Error{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	if !slices.Contains([]string{"auto", "text", "json"}, c.Log.Format) {
		bad("log.format", "must be auto, text or json, not %q", c.Log.Format)
	}
	if err := c.Rotation.PublishDelay.check(); err != nil {
		bad("rotation.publish_delay", "%v", err)
	}
	if err := c.Rotation.Overlap.check(); err != nil {
		bad("rotation.overlap", "%v", err)
	}
	if len(c.Registrations) == 0 {
		bad("registrations", "at least one registration is required")
	}
	c.validateListen(bad)
	for _, d := range []struct {
		field string
		v     Duration
	}{{"queue.result_ttl", c.Queue.ResultTTL}, {"queue.idempotency_window", c.Queue.IdempotencyWindow},
		{"queue.max_age", c.Queue.MaxAge}, {"audit.max_age", c.Audit.MaxAge}, {"listen.sync_wait", c.Listen.SyncWait}} {
		if err := d.v.check(); err != nil {
			bad(d.field, "%v", err)
		}
	}
	for _, u := range []struct{ field, uri string }{{"queue.data_key", c.Queue.DataKey}, {"audit.key", c.Audit.Key}} {
		if u.uri != "" {
			if err := vault.CheckURI(u.uri); err != nil {
				bad(u.field, "%v", err)
			}
		}
	}
	if c.Queue.MaxAttempts < 0 {
		bad("queue.max_attempts", "must not be negative")
	}
	if c.Metrics.Listen != "" {
		if err := checkLoopbackAddr(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%v", err)
		}
	}
	responders := map[string]*Responder{}
	for i := range c.Responders {
		r := &c.Responders[i]
		f := fmt.Sprintf("responders[%d]", i)
		switch {
		case r.Name == "":
			bad(f+".name", "required")
		case !validName(r.Name):
			bad(f+".name", "%q: use letters, digits, '-' and '_' only (it appears in URLs)", r.Name)
		case responders[r.Name] != nil:
			bad(f+".name", "duplicate responder %q", r.Name)
		}
		responders[r.Name] = r
		if r.FHIRBase == "" {
			bad(f+".fhir_base", "required")
		} else if err := checkURL(r.FHIRBase); err != nil {
			bad(f+".fhir_base", "%v", err)
		}
		if r.TokenEndpoint != "" {
			if err := checkURL(r.TokenEndpoint); err != nil {
				bad(f+".token_endpoint", "%v", err)
			}
		}
		if err := checkScope(r.Scope); err != nil {
			bad(f+".scope", "%v", err)
		}
		if !slices.Contains([]string{"1.2", "1.3"}, r.TLS.MinVersion) {
			bad(f+".tls.min_version", "must be 1.2 or 1.3, not %q", r.TLS.MinVersion)
		}
		if err := r.Timeout.check(); err != nil {
			bad(f+".timeout", "%v", err)
		}
		if r.TLS.CAFile != "" {
			if _, err := os.Stat(r.TLS.CAFile); err != nil {
				bad(f+".tls.ca_file", "%v", err)
			}
		}
		if strings.HasPrefix(r.OperationPath, "/") || !strings.HasSuffix(r.OperationPath, "$pdmp-history") {
			bad(f+".operation_path", "%q: want Patient/$pdmp-history or $pdmp-history (relative to fhir_base)", r.OperationPath)
		}
		if r.Messaging && r.MessageSource == "" {
			bad(f+".message_source", "required when messaging is on (MessageHeader.source.endpoint)")
		}
		if r.Limits.Concurrency < 0 || r.Limits.Rate < 0 || r.Limits.Burst < 0 {
			bad(f+".limits", "values must not be negative")
		}
		if !slices.Contains([]string{"display-only", "view", "data"}, r.Policy.Retention) {
			bad(f+".policy.retention", "must be display-only, view or data, not %q", r.Policy.Retention)
		}
		if r.Policy.Delegates != "allowed" && r.Policy.Delegates != "refused" {
			bad(f+".policy.delegates", "must be allowed or refused, not %q", r.Policy.Delegates)
		}
		for j, p := range r.TLS.SPKIPins {
			if len(p) != 44 || !strings.HasSuffix(p, "=") {
				bad(fmt.Sprintf("%s.tls.spki_pins[%d]", f, j), "not a base64 SHA-256 hash")
			}
		}
	}
	seen := map[string]bool{}
	for i := range c.Registrations {
		g := &c.Registrations[i]
		f := fmt.Sprintf("registrations[%d]", i)
		switch {
		case g.Name == "":
			bad(f+".name", "required")
		case !validName(g.Name):
			bad(f+".name", "%q: use letters, digits, '-' and '_' only", g.Name)
		case seen[g.Name]:
			bad(f+".name", "duplicate registration %q", g.Name)
		}
		seen[g.Name] = true
		if g.Responder == "" {
			bad(f+".responder", "required")
		} else if responders[g.Responder] == nil {
			bad(f+".responder", "no responder named %q", g.Responder)
		}
		if g.ClientID == "" {
			bad(f+".client_id", "required (the responder assigns it at registration)")
		}
		if g.Key == "" {
			bad(f+".key", "required (a vault URI such as keyring:%s)", g.Name)
		} else if err := vault.CheckURI(g.Key); err != nil {
			bad(f+".key", "%v", err)
		}
		if g.Alg != "ES384" && g.Alg != "RS384" {
			bad(f+".alg", "must be ES384 or RS384, not %q", g.Alg)
		}
		if g.Scope != "" {
			if err := checkScope(g.Scope); err != nil {
				bad(f+".scope", "%v", err)
			}
		}
		if g.JKU != "" {
			if u, err := url.Parse(g.JKU); err != nil || u.Scheme != "https" || u.Host == "" {
				bad(f+".jku", "must be the https URL of the registered JWK Set")
			}
		}
		for j, id := range append(append([]string{}, g.Serves.Practitioners...), g.Serves.Organizations...) {
			if sys, val, ok := strings.Cut(id, "|"); !ok || sys == "" || val == "" {
				kind, k := "practitioners", j
				if j >= len(g.Serves.Practitioners) {
					kind, k = "organizations", j-len(g.Serves.Practitioners)
				}
				bad(fmt.Sprintf("%s.serves.%s[%d]", f, kind, k), "%q: write identifiers as system|value, e.g. http://hl7.org/fhir/sid/us-npi|1234567893", id)
			}
		}
		for _, rr := range []struct {
			name, want string
			res        map[string]any
		}{{"practitioner", "Practitioner", g.Requester.Practitioner}, {"practitioner_role", "PractitionerRole", g.Requester.PractitionerRole}, {"organization", "Organization", g.Requester.Organization}} {
			if rr.res != nil && rr.res["resourceType"] != rr.want {
				bad(f+".requester."+rr.name, "resourceType must be %s", rr.want)
			}
		}
		if err := g.AssertionLifetime.check(); err != nil {
			bad(f+".assertion_lifetime", "%v", err)
		} else if g.AssertionLifetime.D(0) > MaxAssertionLifetime {
			bad(f+".assertion_lifetime", "at most %v (SMART Backend Services)", MaxAssertionLifetime)
		}
	}
	return errs
}

func (c *Config) validateListen(bad func(field, format string, args ...any)) {
	l := c.Listen
	if l.TCP != "" {
		if err := checkLoopbackAddr(l.TCP); err != nil {
			bad("listen.tcp", "%v", err)
		}
	}
	if l.Unix != "" && !filepath.IsAbs(l.Unix) {
		bad("listen.unix", "%q must be an absolute path", l.Unix)
	}
	if l.Pipe != "" && !strings.HasPrefix(l.Pipe, `\\.\pipe\`) {
		bad("listen.pipe", `%q must start with \\.\pipe\`, l.Pipe)
	}
	names := map[string]bool{}
	for i, cl := range c.Callers {
		f := fmt.Sprintf("callers[%d]", i)
		if cl.Name == "" || names[cl.Name] {
			bad(f+".name", "required and unique")
		}
		names[cl.Name] = true
		if len(cl.Users)+len(cl.Groups)+len(cl.SIDs) == 0 && !cl.TCPCredential {
			bad(f, "matches nobody: give users, groups, sids or tcp_credential: true")
		}
		for _, op := range cl.Operations {
			if !slices.Contains([]string{"query", "jobs", "status"}, op) {
				bad(f+".operations", "unknown operation %q (query, jobs, status)", op)
			}
		}
	}
}

// checkLoopbackAddr accepts host:port where host is a loopback literal or
// localhost: the local API and metrics must never face the network.
func checkLoopbackAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: bad port", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: only loopback addresses (127.0.0.1, ::1) are allowed", addr)
	}
	return nil
}

func validName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return s != ""
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("%q: plain http is allowed only to loopback (sandbox); use https", s)
	}
	if u.User != nil {
		return fmt.Errorf("URL must not carry credentials")
	}
	return nil
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "::1" || strings.HasPrefix(host, "127.")
}

// checkScope accepts SMART v1 and v2 system scopes.
func checkScope(s string) error {
	for _, sc := range strings.Fields(s) {
		if !strings.HasPrefix(sc, "system/") {
			return fmt.Errorf("scope %q: backend services request system/ scopes", sc)
		}
	}
	if strings.TrimSpace(s) == "" {
		return errors.New("empty scope")
	}
	return nil
}

// Locate fills in e's file, line and column from its field path, for
// errors found after parsing (a key that does not open).
func Locate(name string, data []byte, e *Error) { locate(name, data, Errors{e}) }

// locate fills in the line and column of each error from its field path.
func locate(name string, data []byte, errs Errors) {
	f, err := parser.ParseBytes(data, 0)
	for _, e := range errs {
		e.File = name
		if err != nil {
			continue
		}
		if n := nodeAt(f, e.Field); n != nil {
			tk := n.GetToken()
			e.Line, e.Column = tk.Position.Line, tk.Position.Column
		}
	}
}

// nodeAt finds the node of a field path, or of its nearest existing parent
// (a missing required field is reported where its parent starts).
func nodeAt(f *ast.File, field string) ast.Node {
	for field != "" {
		p, err := yaml.PathString("$." + field)
		if err == nil {
			if n, err := p.FilterFile(f); err == nil && n != nil {
				return n
			}
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			break
		}
		field = field[:i]
	}
	return nil
}
