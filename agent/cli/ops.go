package cli

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent"
	"github.com/pdmp-agent/pdmp-agent/agent/audit"
	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
	"github.com/pdmp-agent/pdmp-agent/queue"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

func loadConfig(fs *flag.FlagSet, path string) (*config.Config, error) {
	if path == "" {
		path = DefaultConfigPath()
	}
	return config.Load(path)
}

// clientFor connects to the running agent the way the configuration says
// it listens: Unix socket first, then the pipe, then loopback TCP.
func clientFor(c *config.Config) (*client.Client, error) {
	switch {
	case c.Listen.Unix != "":
		return client.New(client.Config{Network: "unix", Address: c.Listen.Unix})
	case c.Listen.Pipe != "":
		return client.New(client.Config{Network: "pipe", Address: c.Listen.Pipe})
	case c.Listen.TCP != "":
		cred := c.Listen.CredentialFile
		if cred == "" {
			cred = filepath.Join(stateDir(c), "api.credential")
		}
		return client.New(client.Config{Network: "tcp", Address: c.Listen.TCP, CredentialFile: cred})
	}
	return nil, errors.New("the configuration has no listen address")
}

func stateDir(c *config.Config) string {
	if c.StateDir != "" {
		return c.StateDir
	}
	return agent.DefaultStateDir()
}

// Exit codes of status when the agent does not answer, as LSB init
// scripts and systemctl use them.
const (
	exitStopped      = 3
	exitNotInstalled = 4
)

func runStatus(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "status", "status [-config FILE]")
	path := fs.String("config", "", "configuration file (default "+DefaultConfigPath()+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	state := "unknown"
	if e.hooks.ServiceState != nil {
		st, err := e.hooks.ServiceState()
		if err != nil {
			st = "unknown (" + err.Error() + ")"
		}
		state = st
		fmt.Fprintf(e.stdout, "service: %s\n", st)
	}
	// The agent may run in the foreground without the service: ask it.
	var agentErr error
	if c, err := loadConfig(fs, *path); err != nil {
		agentErr = err
	} else if cl, err := clientFor(c); err != nil {
		agentErr = err
	} else {
		defer cl.Close()
		doc, err := cl.Status(ctx)
		if err == nil {
			fmt.Fprintf(e.stdout, "%s\n", doc)
			return nil
		}
		agentErr = fmt.Errorf("agent not reachable: %w", err)
	}
	fmt.Fprintf(e.stdout, "agent: %v\n", agentErr)
	switch state {
	case "not installed":
		return exitCode(exitNotInstalled)
	case "stopped":
		return exitCode(exitStopped)
	}
	return agentErr
}

func runQuery(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "query", "query -responder NAME (-file PARAMS.json | -family F -given G -birthdate YYYY-MM-DD -gender G -npi NPI) [-full]")
	path := fs.String("config", "", "configuration file")
	responder := fs.String("responder", "", "responder name")
	file := fs.String("file", "", "a complete or minimal FHIR Parameters file")
	family := fs.String("family", "", "patient family name")
	given := fs.String("given", "", "patient given name")
	birth := fs.String("birthdate", "", "patient birth date YYYY-MM-DD")
	gender := fs.String("gender", "unknown", "patient gender")
	npi := fs.String("npi", "", "authorized practitioner NPI")
	full := fs.Bool("full", false, "print the responder's full Parameters (PHI) instead of the summary")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *responder == "" {
		fs.Usage()
		return errUsage
	}
	var params []byte
	var err error
	if *file != "" {
		if params, err = os.ReadFile(*file); err != nil {
			return err
		}
	} else {
		if *family == "" || *birth == "" || *npi == "" {
			fs.Usage()
			return errUsage
		}
		params = MinimalParameters(*family, *given, *birth, *gender, *npi)
	}
	c, err := loadConfig(fs, *path)
	if err != nil {
		return err
	}
	cl, err := clientFor(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := cl.Query(ctx, *responder, params, &client.QueryOptions{Summary: !*full})
	if err != nil {
		var ce *client.Error
		if errors.As(err, &ce) {
			fmt.Fprintf(e.stdout, "%s\n", ce.Body)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", resp.Body)
	return nil
}

// MinimalParameters is the smallest request the agent completes: the
// patient and the authorized practitioner's NPI.
func MinimalParameters(family, given, birthDate, gender, npi string) []byte {
	name := map[string]any{"family": family}
	if given != "" {
		name["given"] = []string{given}
	}
	b, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": []any{
		map[string]any{"name": "patient", "resource": map[string]any{"resourceType": "Patient", "name": []any{name}, "birthDate": birthDate, "gender": gender}},
		map[string]any{"name": "authorized-practitioner-identifier", "valueIdentifier": map[string]any{"system": pdmp.SystemNPI, "value": npi}},
	}})
	return b
}

// openQueue opens the queue file directly; the agent must be stopped (it
// holds the file's lock while it runs).
func openQueue(ctx context.Context, c *config.Config) (*queue.Queue, error) {
	uri, err := agent.SecretURI(c, c.Queue.DataKey, agent.QueueKeyName)
	if err != nil {
		return nil, err
	}
	key, err := vault.Secret(ctx, uri, 32)
	if err != nil {
		return nil, fmt.Errorf("queue data key: %w", err)
	}
	q, err := queue.Open(filepath.Join(stateDir(c), "queue.db"), queue.Options{DataKey: key})
	if err != nil {
		return nil, fmt.Errorf("%w (stop the agent first: it holds the queue while it runs)", err)
	}
	return q, nil
}

func runQueue(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "usage: pdmp-agent queue list|show ID|retry ID|cancel ID|purge [-older-than D]")
		return errUsage
	}
	sub := args[0]
	fs := newFlags(e, "queue "+sub, "queue "+sub)
	path := fs.String("config", "", "configuration file")
	state := fs.String("state", "", "list only jobs in this state")
	showPHI := fs.Bool("show-phi", false, "show: also print the request and result bodies (PHI)")
	olderThan := fs.Duration("older-than", 24*time.Hour, "purge: finished jobs older than this")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := loadConfig(fs, *path)
	if err != nil {
		return err
	}
	q, err := openQueue(ctx, c)
	if err != nil {
		return err
	}
	defer q.Close()
	id := fs.Arg(0)
	switch sub {
	case "list":
		jobs, err := q.List(ctx, queue.Filter{State: queue.State(*state)})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tRESPONDER\tREGISTRATION\tSTATE\tATTEMPTS\tCREATED\tLAST ERROR")
		for _, j := range jobs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", j.ID, j.Responder, j.Labels["registration"], j.State, j.Attempts, j.Created.Format(time.RFC3339), j.Error)
		}
		return tw.Flush()
	case "show":
		j, err := q.Get(ctx, id)
		if err != nil {
			return err
		}
		body, result := j.Body, j.Result
		j.Body, j.Result = nil, nil
		out, _ := json.MarshalIndent(j, "", "  ")
		fmt.Fprintf(e.stdout, "%s\n", out)
		if *showPHI {
			fmt.Fprintf(e.stdout, "request: %s\nresult: %s\n", body, result)
		} else {
			fmt.Fprintf(e.stdout, "(request %d bytes, result %d bytes: add -show-phi to print them)\n", len(body), len(result))
		}
		return nil
	case "retry":
		return q.Retry(ctx, id)
	case "cancel":
		return q.Cancel(ctx, id)
	case "purge":
		n, err := q.Purge(ctx, *olderThan)
		if err == nil {
			fmt.Fprintf(e.stdout, "purged %s\n", plural(n, "job"))
		}
		return err
	}
	return fmt.Errorf("unknown queue command %q", sub)
}

func runAudit(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "usage: pdmp-agent audit verify|search|export [flags]")
		return errUsage
	}
	sub := args[0]
	fs := newFlags(e, "audit "+sub, "audit "+sub+" [-config FILE] [-dir DIR]")
	path := fs.String("config", "", "configuration file")
	dir := fs.String("dir", "", "audit directory (default from the configuration)")
	family := fs.String("family", "", "search: patient family name")
	given := fs.String("given", "", "search: patient given name(s)")
	birth := fs.String("birthdate", "", "search: patient birth date YYYY-MM-DD")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	c, err := loadConfig(fs, *path)
	if err != nil && *dir == "" {
		return err
	}
	if *dir == "" {
		*dir = c.Audit.Dir
		if *dir == "" {
			*dir = filepath.Join(stateDir(c), "audit")
		}
	}
	switch sub {
	case "verify":
		rep, err := audit.Verify(*dir)
		fmt.Fprintln(e.stdout, rep)
		return err
	case "search":
		if *family == "" || *birth == "" {
			fs.Usage()
			return errUsage
		}
		uri, err := agent.SecretURI(c, c.Audit.Key, agent.AuditKeyName)
		if err != nil {
			return err
		}
		key, err := vault.Secret(ctx, uri, audit.KeySize)
		if err != nil {
			return fmt.Errorf("audit key: %w", err)
		}
		recs, err := audit.Search(*dir, key, *family, *given, *birth)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tCALLER\tREGISTRATION\tRESPONDER\tOUTCOME\tREQUEST ID")
		for _, r := range recs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Format(time.RFC3339), r.Caller, r.Registration, r.Responder, r.Outcome, r.RequestID)
		}
		return tw.Flush()
	case "export":
		return audit.ExportAuditEvents(*dir, e.stdout)
	}
	return fmt.Errorf("unknown audit command %q", sub)
}

// runDoctor checks everything the agent needs and prints one line each.
func runDoctor(ctx context.Context, e *env, args []string) error {
	fs := newFlags(e, "doctor", "doctor [-config FILE]")
	path := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	failed := 0
	check := func(what string, err error, ok string) {
		res := "ok"
		detail := ok
		if err != nil {
			res, detail = "FAIL", err.Error()
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", res, what, detail)
	}
	defer tw.Flush()
	p := *path
	if p == "" {
		p = DefaultConfigPath()
	}
	c, err := config.Load(p)
	check("config "+p, err, "valid")
	if err != nil {
		tw.Flush()
		return errors.New("doctor found problems")
	}
	a, err := agent.New(ctx, c, agent.Options{})
	check("key rings open", err, fmt.Sprintf("%d registrations", len(c.Registrations)))
	if err == nil {
		defer a.Close()
		for _, g := range c.Registrations {
			reg, _ := a.Registration(g.Name)
			k, err := reg.Ring.Current(ctx)
			if err == nil {
				h := sha512.Sum384([]byte("pdmp-agent doctor"))
				_, err = k.Sign(rand.Reader, h[:], crypto.SHA384)
			}
			check("key "+g.Name, err, "signs ("+reg.Ring.URI()+")")
			tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			tok, err := a.Token(tctx, g.Name)
			cancel()
			check("token "+g.Name, err, "expires "+tok.Expires.Format(time.RFC3339))
		}
		for _, r := range c.Responders {
			hc, err := agent.HTTPClient(r)
			if err == nil {
				var resp *http.Response
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(r.FHIRBase, "/")+"/metadata", nil)
				req.Header.Set("Accept", "application/fhir+json")
				if resp, err = hc.Do(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode >= 500 {
						err = fmt.Errorf("metadata answered HTTP %d", resp.StatusCode)
					}
				}
			}
			check("responder "+r.Name, err, "reachable, TLS verified")
		}
	}
	if u := c.Listen.Unix; u != "" {
		fi, err := os.Stat(filepath.Dir(u))
		if err == nil && fi.Mode().Perm()&0o007 != 0 {
			err = fmt.Errorf("%s is open to others (mode %v)", filepath.Dir(u), fi.Mode().Perm())
		}
		check("socket directory", err, filepath.Dir(u))
	}
	if c.Listen.TCP != "" {
		cred := c.Listen.CredentialFile
		if cred == "" {
			cred = filepath.Join(stateDir(c), "api.credential")
		}
		fi, err := os.Stat(cred)
		if err == nil && fi.Mode().Perm()&0o007 != 0 {
			err = fmt.Errorf("readable by others (mode %v)", fi.Mode().Perm())
		}
		check("credential file", err, cred)
	}
	if failed > 0 {
		tw.Flush()
		return fmt.Errorf("doctor found %s", plural(failed, "problem"))
	}
	return nil
}
