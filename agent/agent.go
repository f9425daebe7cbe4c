package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/smart"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

// Agent holds what one configuration needs at run time.
type Agent struct {
	cfg    *config.Config
	log    *slog.Logger
	tokens *smart.Client

	rings         map[string]*vault.Ring // by key URI
	registrations map[string]*Registration
	responders    map[string]*Responder
}

// Responder is a configured responder with its HTTP client.
type Responder struct {
	config.Responder
	HTTP *http.Client
}

// Registration is a configured registration ready to obtain tokens.
type Registration struct {
	config.Registration
	Responder *Responder
	Ring      *vault.Ring
	SMART     *smart.Registration
}

// Options adjust New.
type Options struct {
	Logger *slog.Logger
	// HTTPClient, if set, replaces the per-responder clients built from
	// the TLS settings (the demo uses the sandbox's own client).
	HTTPClient *http.Client
	// TokenOptions are passed to the SMART client.
	TokenOptions []smart.Option
}

// New opens every registration's key ring and builds the clients. It does
// not contact any responder.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Agent, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{
		cfg:           cfg,
		log:           log,
		tokens:        smart.New(append([]smart.Option{smart.WithLogger(log)}, opts.TokenOptions...)...),
		rings:         map[string]*vault.Ring{},
		registrations: map[string]*Registration{},
		responders:    map[string]*Responder{},
	}
	for _, r := range cfg.Responders {
		hc := opts.HTTPClient
		if hc == nil {
			var err error
			if hc, err = HTTPClient(r); err != nil {
				return nil, fmt.Errorf("responder %s: %w", r.Name, err)
			}
		}
		a.responders[r.Name] = &Responder{Responder: r, HTTP: hc}
	}
	rot := RotationPolicy(cfg.Rotation)
	for _, g := range cfg.Registrations {
		ring, ok := a.rings[g.Key]
		if !ok {
			var err error
			ring, err = vault.Open(ctx, g.Key, vault.WithRotation(rot))
			if err != nil {
				a.Close()
				return nil, fmt.Errorf("registration %s: %w", g.Name, err)
			}
			a.rings[g.Key] = ring
		}
		resp := a.responders[g.Responder]
		scope := g.Scope
		if scope == "" {
			scope = resp.Scope
		}
		a.registrations[g.Name] = &Registration{
			Registration: g,
			Responder:    resp,
			Ring:         ring,
			SMART: &smart.Registration{
				Name:              g.Name,
				FHIRBase:          resp.FHIRBase,
				TokenEndpoint:     resp.TokenEndpoint,
				ClientID:          g.ClientID,
				Scope:             scope,
				JKU:               g.JKU,
				Keys:              algCheck{ring, vault.Alg(g.Alg)},
				AssertionLifetime: g.AssertionLifetime.D(config.DefaultAssertionLifetime),
				HTTP:              resp.HTTP,
			},
		}
	}
	return a, nil
}

// RotationPolicy converts the config's rotation settings.
func RotationPolicy(r config.Rotation) vault.RotationPolicy {
	return vault.RotationPolicy{
		PublishDelay: r.PublishDelay.D(vault.DefaultRotation.PublishDelay),
		Overlap:      r.Overlap.D(vault.DefaultRotation.Overlap),
	}
}

// algCheck refuses to sign with a key whose algorithm differs from the
// registration's: the responder registered that algorithm.
type algCheck struct {
	ring *vault.Ring
	alg  vault.Alg
}

func (c algCheck) Current(ctx context.Context) (vault.Key, error) {
	k, err := c.ring.Current(ctx)
	if err != nil {
		return nil, err
	}
	if k.Alg() != c.alg {
		return nil, fmt.Errorf("key %s in %s is %s but the registration says %s", k.KID(), c.ring.URI(), k.Alg(), c.alg)
	}
	return k, nil
}

// Close releases the key rings.
func (a *Agent) Close() error {
	var errs []error
	for _, r := range a.rings {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}

// Registration returns the named registration.
func (a *Agent) Registration(name string) (*Registration, bool) {
	r, ok := a.registrations[name]
	return r, ok
}

// Tokens is the agent's SMART client.
func (a *Agent) Tokens() *smart.Client { return a.tokens }

// Token returns an access token for the named registration.
func (a *Agent) Token(ctx context.Context, registration string) (smart.Token, error) {
	r, ok := a.registrations[registration]
	if !ok {
		return smart.Token{}, fmt.Errorf("no registration named %q", registration)
	}
	return a.tokens.Token(ctx, r.SMART)
}

// Config returns the configuration the agent was built from.
func (a *Agent) Config() *config.Config { return a.cfg }

