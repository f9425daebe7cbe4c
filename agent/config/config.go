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
	"net/url"
	"os"
	"slices"
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
	Responders    []Responder    `yaml:"responders" json:"responders"`
	Registrations []Registration `yaml:"registrations" json:"registrations"`
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
	for i := range c.Responders {
		r := &c.Responders[i]
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
		if err := g.AssertionLifetime.check(); err != nil {
			bad(f+".assertion_lifetime", "%v", err)
		} else if g.AssertionLifetime.D(0) > MaxAssertionLifetime {
			bad(f+".assertion_lifetime", "at most %v (SMART Backend Services)", MaxAssertionLifetime)
		}
	}
	return errs
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
