package cli

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent"
	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

// runDemo shows the whole path on this machine alone: a sandbox
// authorization server, a key generated into an encrypted file keyring in
// a temporary directory, its registration, and a token exchange.
func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "demo", "demo [-alg ES384|RS384] [-v]")
	algName := fs.String("alg", "ES384", "key algorithm")
	verbose := fs.Bool("v", false, "show the agent's log")
	if err := fs.Parse(args); err != nil {
		return err
	}
	alg, err := vault.ParseAlg(*algName)
	if err != nil {
		return err
	}
	out := e.stdout
	step := func(format string, a ...any) { fmt.Fprintf(out, "  ✓ "+format+"\n", a...) }

	dir, err := os.MkdirTemp("", "pdmp-agent-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(out, "pdmp-agent demo: everything runs on this machine, in %s\n\n", dir)

	srv := pdmptest.NewServer()
	defer srv.Close()
	step("sandbox PDMP authorization server listening on %s", srv.URL)

	// A file keyring with a random passphrase in a 0600 file stands in for
	// the platform keychain, so the demo needs no desktop session.
	pass := filepath.Join(dir, "keyring.pass")
	if err := os.WriteFile(pass, []byte(randomHex(32)), 0o600); err != nil {
		return err
	}
	keyURI := fmt.Sprintf("keyring:demo?backend=file&dir=%s&passphrase-file=%s",
		url.QueryEscape(filepath.Join(dir, "keyring")), url.QueryEscape(pass))
	ring, err := vault.Open(ctx, keyURI)
	if err != nil {
		return err
	}
	key, err := ring.Create(ctx, alg)
	ring.Close()
	if err != nil {
		return err
	}
	step("generated an %s key in the vault (encrypted file keyring); kid %s", key.Alg(), key.KID())

	set, err := vault.JWKSet(key)
	if err != nil {
		return err
	}
	const clientID = "demo-clinic"
	if err := srv.RegisterClient(pdmptest.Client{ID: clientID, JWKS: set}); err != nil {
		return err
	}
	step("registered the public JWK Set with the sandbox as client %q", clientID)

	cfg, err := config.Parse("demo.yaml", fmt.Appendf(nil, `
responders:
  - name: sandbox
    fhir_base: %s
    scope: system/*.read
registrations:
  - name: demo
    responder: sandbox
    client_id: %s
    key: %q
    alg: %s
`, srv.FHIRBase, clientID, keyURI, alg))
	if err != nil {
		return err
	}
	logw := io.Discard
	if *verbose {
		logw = e.stderr
	}
	a, err := agent.New(ctx, cfg, agent.Options{Logger: agent.NewLogger(config.Log{Level: "debug", Format: "text"}, logw)})
	if err != nil {
		return err
	}
	defer a.Close()

	start := time.Now()
	tok, err := a.Token(ctx, "demo")
	if err != nil {
		return err
	}
	step("discovered the token endpoint at %s/.well-known/smart-configuration", srv.FHIRBase)
	step("signed an %s client assertion and obtained an access token in %v", alg, time.Since(start).Round(time.Millisecond))
	step("token: scope %q, expires %s (the token itself is never printed)", tok.Scope, tok.Expires.Format(time.RFC3339))
	again, err := a.Token(ctx, "demo")
	if err != nil {
		return err
	}
	if again.AccessToken == tok.AccessToken && srv.TokenRequests() == 1 {
		step("a second request reused the cached token (1 token request in all)")
	}
	fmt.Fprintln(out, "\ndemo OK")
	return nil
}
