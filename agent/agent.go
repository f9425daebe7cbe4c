package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/smart"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

// Agent holds what one configuration needs at run time.
type Agent struct {
	cfg    *config.Config
	log    *slog.Logger
	tokens *smart.Client

	rings         *Rings
	ownRings      bool
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
	// TokenOptions are passed to the SMART client New creates when Tokens
	// is nil.
	TokenOptions []smart.Option
	// Tokens and Rings, when set, are shared with other Agents: a config
	// reload keeps cached tokens and open key rings.
	Tokens *smart.Client
	Rings  *Rings
}

// Rings caches open key rings by URI and rotation policy.
type Rings struct {
	mu    sync.Mutex
	rings map[ringKey]*vault.Ring
}

type ringKey struct {
	uri    string
	policy vault.RotationPolicy
}

// NewRings returns an empty cache.
func NewRings() *Rings { return &Rings{rings: map[ringKey]*vault.Ring{}} }

// Open returns the ring for uri, opening it on first use.
func (rs *Rings) Open(ctx context.Context, uri string, p vault.RotationPolicy) (*vault.Ring, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	k := ringKey{uri, p}
	if r, ok := rs.rings[k]; ok {
		return r, nil
	}
	r, err := vault.Open(ctx, uri, vault.WithRotation(p))
	if err != nil {
		return nil, err
	}
	rs.rings[k] = r
	return r, nil
}

// Close closes every ring.
func (rs *Rings) Close() error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var errs []error
	for k, r := range rs.rings {
		errs = append(errs, r.Close())
		delete(rs.rings, k)
	}
	return errors.Join(errs...)
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
		tokens:        opts.Tokens,
		rings:         opts.Rings,
		registrations: map[string]*Registration{},
		responders:    map[string]*Responder{},
	}
	if a.tokens == nil {
		a.tokens = smart.New(append([]smart.Option{smart.WithLogger(log)}, opts.TokenOptions...)...)
	}
	if a.rings == nil {
		a.rings, a.ownRings = NewRings(), true
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
	for i, g := range cfg.Registrations {
		ring, err := a.rings.Open(ctx, g.Key, rot)
		if err != nil {
			a.Close()
			return nil, &config.Error{Field: fmt.Sprintf("registrations[%d].key", i), Msg: err.Error()}
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

// Close releases the key rings unless they are shared.
func (a *Agent) Close() error {
	if a.ownRings {
		return a.rings.Close()
	}
	return nil
}

// Registration returns the named registration.
func (a *Agent) Registration(name string) (*Registration, bool) {
	r, ok := a.registrations[name]
	return r, ok
}

// Token returns an access token for the named registration.
func (a *Agent) Token(ctx context.Context, registration string) (smart.Token, error) {
	r, ok := a.registrations[registration]
	if !ok {
		return smart.Token{}, fmt.Errorf("no registration named %q", registration)
	}
	return a.tokens.Token(ctx, r.SMART)
}
