package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent"
	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

const sysNPI = "http://hl7.org/fhir/sid/us-npi"

// practitioner is a prescriber the agent requests for. Every responder in
// a bench configuration has one registration per practitioner, with the
// practitioner's name as client_id at the sandbox.
type practitioner struct{ name, npi string }

var (
	adams = practitioner{"adams", "1234567893"}
	baker = practitioner{"baker", "1992753880"}
)

// mix is the query mix: sandbox scenarios of different answer sizes, a
// full history, an empty answer and a history with more alerts.
var mix = []string{pdmptest.PatientHistory, pdmptest.PatientNoData, pdmptest.PatientAlerts}

// requester completes minimal requests, as a clinic's configuration would.
var requester = config.Requester{
	PractitionerRole: map[string]any{
		"resourceType": "PractitionerRole",
		"code":         []any{map[string]any{"coding": []any{map[string]any{"code": "prescriber"}}}},
		"telecom":      []any{map[string]any{"system": "phone", "value": "555-0100"}},
	},
	Organization: map[string]any{
		"resourceType": "Organization", "active": true, "name": "Example Clinic",
		"identifier": []any{map[string]any{"system": sysNPI, "value": "1144221847"}},
	},
}

// params is what an EHR sends: the patient and the practitioner's NPI;
// the agent completes the rest from the registration's requester.
func params(family string, p practitioner) []byte {
	b, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": []any{
		map[string]any{"name": "patient", "resource": map[string]any{
			"resourceType": "Patient", "gender": "female", "birthDate": "1987-03-14",
			"name": []any{map[string]any{"family": family, "given": []string{"Wilhelmina"}}},
		}},
		map[string]any{"name": "authorized-practitioner-identifier", "valueIdentifier": map[string]any{"system": sysNPI, "value": p.npi}},
	}})
	return b
}

// completeParams is params as the agent sends it on to the responder, for
// callers that skip the agent.
func completeParams(family string, p practitioner) ([]byte, error) {
	req, err := pdmp.ParseRequest(params(family, p))
	if err != nil {
		return nil, err
	}
	role, _ := json.Marshal(requester.PractitionerRole)
	org, _ := json.Marshal(requester.Organization)
	if err := req.Complete(pdmp.Requester{PractitionerRole: role, Organization: org}); err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return req.Marshal()
}

// harness holds what all sections share: a temporary directory, removed
// by close, and a file keyring whose one ES384 key every registration
// signs with.
type harness struct {
	dir    string
	keyURI string
	jwks   []byte
	agents atomic.Int64 // names agent directories
}

func newHarness(ctx context.Context) (*harness, error) {
	// Short: a Unix socket path must fit in about 100 bytes.
	dir, err := os.MkdirTemp("", "pdmpb-")
	if err != nil {
		return nil, err
	}
	h := &harness{dir: dir}
	if err := h.createKey(ctx); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *harness) createKey(ctx context.Context) error {
	// A file keyring with a random passphrase needs no desktop keychain.
	pass := filepath.Join(h.dir, "keyring.pass")
	if err := os.WriteFile(pass, []byte(randomHex(32)), 0o600); err != nil {
		return err
	}
	h.keyURI = fmt.Sprintf("keyring:bench?backend=file&dir=%s&passphrase-file=%s",
		url.QueryEscape(filepath.Join(h.dir, "keyring")), url.QueryEscape(pass))
	ring, err := vault.Open(ctx, h.keyURI)
	if err != nil {
		return err
	}
	defer ring.Close()
	k, err := ring.Create(ctx, vault.ES384)
	if err != nil {
		return err
	}
	h.jwks, err = vault.JWKSet(k)
	return err
}

func (h *harness) close() { os.RemoveAll(h.dir) }

// sandbox starts a sandbox PDMP that knows both practitioners' clients.
// The caller closes it.
func (h *harness) sandbox(opts ...pdmptest.Option) (*pdmptest.Server, error) {
	sb := pdmptest.NewServer(opts...)
	for _, p := range []practitioner{adams, baker} {
		if err := sb.RegisterClient(pdmptest.Client{ID: p.name, JWKS: h.jwks}); err != nil {
			sb.Close()
			return nil, err
		}
	}
	return sb, nil
}

// responder is one responder of a bench configuration.
type responder struct {
	name          string
	fhirBase      string
	tokenEndpoint string        // "" to discover it from fhirBase
	timeout       time.Duration // 0 for the agent's default
	limits        config.Limits
}

// agentDir is one agent's directory: its configuration, state and
// listeners.
type agentDir struct {
	config     string
	state      string
	unix       string
	tcp        string
	credential string
}

// newAgentDir writes a configuration for the responders, with a
// registration per practitioner at each, and maxAttempts (0 for the
// default). The local API listens on a Unix socket, for this user, and on
// a free loopback port, for holders of the credential file.
func (h *harness) newAgentDir(maxAttempts int, rs ...responder) (*agentDir, error) {
	dir := filepath.Join(h.dir, "a"+strconv.FormatInt(h.agents.Add(1), 10))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	tcp, err := freePort()
	if err != nil {
		return nil, err
	}
	d := &agentDir{
		config:     filepath.Join(dir, "config.yaml"),
		state:      filepath.Join(dir, "state"),
		unix:       filepath.Join(dir, "api.sock"),
		tcp:        tcp,
		credential: filepath.Join(dir, "state", "api.credential"), // the agent's default
	}
	cfg := config.Config{
		StateDir: d.state,
		// Warnings only: the bench measures the agent, not its log volume.
		Log:    config.Log{Level: "warn", Format: "json"},
		Listen: config.Listen{TCP: tcp, Unix: d.unix},
		Callers: []config.Caller{
			{Name: "ehr", Users: []string{strconv.Itoa(os.Getuid())}, Responders: []string{"*"}},
			{Name: "scripts", TCPCredential: true, Responders: []string{"*"}},
		},
		Queue: config.Queue{MaxAttempts: maxAttempts},
	}
	for _, r := range rs {
		var timeout config.Duration
		if r.timeout > 0 {
			timeout = config.Duration(r.timeout.String())
		}
		cfg.Responders = append(cfg.Responders, config.Responder{
			Name: r.name, FHIRBase: r.fhirBase, TokenEndpoint: r.tokenEndpoint, Timeout: timeout,
			Limits: r.limits, Policy: config.Policy{Retention: "data"},
		})
		for _, p := range []practitioner{adams, baker} {
			cfg.Registrations = append(cfg.Registrations, config.Registration{
				Name: r.name + "-" + p.name, Responder: r.name, ClientID: p.name, Key: h.keyURI,
				Serves:    config.Serves{Practitioners: []string{sysNPI + "|" + p.npi}},
				Requester: requester,
			})
		}
	}
	// JSON is YAML: the file is the Config as written, and Parse checks it
	// here rather than in the agent.
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := config.Parse(d.config, data); err != nil {
		return nil, fmt.Errorf("bench configuration: %w", err)
	}
	return d, os.WriteFile(d.config, data, 0o600)
}

// client is a local API client over "unix" or "tcp".
func (d *agentDir) client(network string) (*client.Client, error) {
	if network == "tcp" {
		return client.New(client.Config{Network: "tcp", Address: d.tcp, CredentialFile: d.credential})
	}
	return client.New(client.Config{Network: "unix", Address: d.unix})
}

// run runs the agent in this process until stop is called or ctx ends;
// stop returns once the agent has shut down.
func (d *agentDir) run(ctx context.Context) (stop func(), err error) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- agent.Run(rctx, agent.RunOptions{ConfigPath: d.config, Log: slog.New(slog.DiscardHandler),
			Ready: func() { close(ready) }})
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-ready:
		return func() { cancel(); <-done }, nil
	case runErr := <-done:
		cancel()
		return nil, fmt.Errorf("agent did not start: %w", runErr)
	case <-t.C:
		err = errors.New("agent not ready within 30 s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	cancel()
	<-done
	return nil, err
}

// startAgent configures an agent for rs, runs it in this process and
// connects to it over the Unix socket. stop closes the client and shuts the
// agent down.
func (h *harness) startAgent(ctx context.Context, maxAttempts int, rs ...responder) (*agentDir, *client.Client, func(), error) {
	d, err := h.newAgentDir(maxAttempts, rs...)
	if err != nil {
		return nil, nil, nil, err
	}
	stopAgent, err := d.run(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := d.client("unix")
	if err != nil {
		stopAgent()
		return nil, nil, nil, err
	}
	return d, c, func() { c.Close(); stopAgent() }, nil
}

// freePort returns a loopback address nothing listens on now.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}
