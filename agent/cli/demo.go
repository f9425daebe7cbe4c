package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

const demoNPI = "1234567893"

// runDemo shows the whole product on this machine alone: a sandbox PDMP
// (authorization server and responder), the agent on embedded defaults in
// a temporary directory with a freshly generated key, and one query through
// the local API, as an EHR would send it.
func runDemo(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "demo", "demo [-once] [-alg ES384|RS384] [-v]")
	algName := fs.String("alg", "ES384", "key algorithm")
	once := fs.Bool("once", false, "exit after the first query (for CI)")
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

	// Short: a Unix socket path must fit in ~100 bytes.
	dir, err := os.MkdirTemp("", "pdmp-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(out, "pdmp-agent demo: everything runs on this machine, in %s\n\n", dir)

	srv := pdmptest.NewServer()
	defer srv.Close()
	step("sandbox PDMP (authorization server + $pdmp-history responder) on %s", srv.URL)

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
	step("registered its public JWK Set with the sandbox as client %q", clientID)

	sock := filepath.Join(dir, "api.sock")
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
listen:
  unix: %[2]s
callers:
  - name: you
    users: ["%[3]d"]
    responders: ["*"]
responders:
  - name: sandbox
    fhir_base: %[4]s
    policy: {retention: data}
registrations:
  - name: demo
    responder: sandbox
    client_id: %[5]s
    key: %[6]q
    alg: %[7]s
    serves: {practitioners: ["%[8]s|%[9]s"]}
    requester:
      practitioner_role: {resourceType: PractitionerRole, telecom: [{system: phone, value: "555-0100"}]}
      organization: {resourceType: Organization, active: true, name: Demo Clinic}
`, dir, sock, os.Getuid(), srv.FHIRBase, clientID, keyURI, alg, pdmp.SystemNPI, demoNPI)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}

	logw := io.Discard
	if *verbose {
		logw = e.stderr
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- agent.Run(rctx, agent.RunOptions{ConfigPath: cfgPath, Ready: func() { close(ready) },
			Log: slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	}()
	select {
	case <-ready:
	case err := <-done:
		return fmt.Errorf("agent did not start: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
	step("agent running: durable queue in %s/state, local API on %s", dir, sock)

	cl, err := client.New(client.Config{Network: "unix", Address: sock})
	if err != nil {
		return err
	}
	defer cl.Close()
	start := time.Now()
	resp, err := cl.Query(ctx, "sandbox", MinimalParameters(pdmptest.PatientAlerts, "Wilhelmina", "1987-03-14", "female", demoNPI), nil)
	if err != nil {
		return err
	}
	step("sent a $pdmp-history query as an EHR would (patient + prescriber NPI); answer in %v", time.Since(start).Round(time.Millisecond))
	if err := printHistory(out, resp.Body); err != nil {
		return err
	}
	if srv.TokenRequests() == 1 {
		step("the agent obtained its SMART access token once (signed %s client assertion); no token or key was printed", alg)
	}
	if *once {
		fmt.Fprintln(out, "\ndemo OK")
		stop()
		return <-done
	}
	exe, _ := os.Executable()
	fmt.Fprintf(out, "\nThe agent keeps serving. Send your own query (family names pick sandbox scenarios: %s, %s, %s, %s):\n\n",
		pdmptest.PatientHistory, pdmptest.PatientNoData, pdmptest.PatientLinkOnly, pdmptest.PatientDeferred)
	fmt.Fprintf(out, "  %s query -config %s -responder sandbox -family %s -given Ann -birthdate 1970-01-01 -npi %s\n\n",
		exe, cfgPath, pdmptest.PatientHistory, demoNPI)
	fmt.Fprintln(out, "Press Ctrl-C to stop; everything above is removed.")
	select {
	case <-ctx.Done():
		stop()
		<-done
		return nil
	case err := <-done:
		return err
	}
}

// printHistory shows a responder's answer the way a prescriber would want
// it first: status, patients, alerts, dispenses.
func printHistory(w io.Writer, body []byte) error {
	r, err := pdmp.ParseResponse(body)
	if err != nil {
		return fmt.Errorf("the answer did not parse: %w", err)
	}
	fmt.Fprintf(w, "\n    status: %s\n", r.Status())
	h := r.History
	if h == nil {
		if r.Link != "" {
			fmt.Fprintf(w, "    report: %s\n", r.Link)
		}
		return nil
	}
	if len(h.Patients) > 1 {
		fmt.Fprintf(w, "    NOTE: %d possible patient matches — review before acting\n", len(h.Patients))
	}
	for _, a := range h.Alerts {
		fmt.Fprintf(w, "    ALERT %s: %s\n", a.Code.Code, a.Display())
	}
	fmt.Fprintf(w, "    %d dispenses:\n", len(h.Dispenses))
	for _, d := range h.Dispenses {
		med := d.Medication.Text
		if c, ok := d.Medication.Find(pdmp.SystemRxNorm); ok && c.Display != "" {
			med = c.Display
		} else if med == "" && len(d.Medication.Coding) > 0 {
			med = d.Medication.Coding[0].Display
		}
		var qty, days string
		if d.Quantity != nil {
			qty = strings.TrimSuffix(fmt.Sprintf("%g %s", d.Quantity.Value, d.Quantity.Unit), " ")
		}
		if d.DaysSupply != nil {
			days = fmt.Sprintf("%g days", d.DaysSupply.Value)
		}
		mme := ""
		if d.MME != nil {
			mme = fmt.Sprintf(", %g MME", *d.MME)
		}
		fmt.Fprintf(w, "      %s  %s  (%s, %s%s)\n", firstNonEmpty(d.WhenHandedOver, d.WhenPrepared), med, qty, days, mme)
	}
	if len(h.Dispenses) == 0 && r.Status() == "" {
		return errors.New("empty answer")
	}
	return nil
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return "(no date)"
}
