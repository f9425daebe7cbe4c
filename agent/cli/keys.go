package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent"
	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

// keySel is how a keys or jwks command picks its rings: one URI, or the
// registrations of a config file (all, or one by name).
type keySel struct {
	uri, configPath, registration, alg string
	publishDelay, overlap              time.Duration
}

func (s *keySel) bind(fs *flag.FlagSet) {
	fs.StringVar(&s.uri, "uri", "", "key URI (keyring:... or pkcs11:...)")
	fs.StringVar(&s.configPath, "config", "", "configuration file whose registrations' keys to use (default "+DefaultConfigPath()+" when -uri is not given)")
	fs.StringVar(&s.registration, "registration", "", "only this registration's key")
	fs.DurationVar(&s.publishDelay, "publish-delay", vault.DefaultRotation.PublishDelay, "with -uri: how long a new key is published before it signs")
	fs.DurationVar(&s.overlap, "overlap", vault.DefaultRotation.Overlap, "with -uri: how long a replaced key stays published")
}

type selected struct {
	ring *vault.Ring
	alg  vault.Alg
	regs []string
}

// open returns the selected rings, one per distinct URI.
func (s *keySel) open(ctx context.Context) ([]*selected, func(), error) {
	if s.uri != "" {
		alg, err := vault.ParseAlg(s.alg)
		if err != nil {
			return nil, nil, err
		}
		r, err := vault.Open(ctx, s.uri, vault.WithRotation(vault.RotationPolicy{PublishDelay: s.publishDelay, Overlap: s.overlap}))
		if err != nil {
			return nil, nil, err
		}
		return []*selected{{ring: r, alg: alg}}, func() { r.Close() }, nil
	}
	path := s.configPath
	if path == "" {
		path = DefaultConfigPath()
	}
	c, err := config.Load(path)
	if err != nil {
		return nil, nil, err
	}
	byURI := map[string]*selected{}
	var out []*selected
	closeAll := func() {
		for _, x := range out {
			x.ring.Close()
		}
	}
	for _, g := range c.Registrations {
		if s.registration != "" && g.Name != s.registration {
			continue
		}
		if x, ok := byURI[g.Key]; ok {
			x.regs = append(x.regs, g.Name)
			continue
		}
		r, err := vault.Open(ctx, g.Key, vault.WithRotation(agent.RotationPolicy(c.Rotation)))
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("registration %s: %w", g.Name, err)
		}
		alg := vault.Alg(g.Alg)
		if s.alg != "" {
			alg = vault.Alg(s.alg)
		}
		x := &selected{ring: r, alg: alg, regs: []string{g.Name}}
		byURI[g.Key] = x
		out = append(out, x)
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("%s has no registration %q", path, s.registration)
	}
	return out, closeAll, nil
}

func runKeys(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "usage: pdmp-agent keys create|list|rotate|prune|delete [flags]")
		return errUsage
	}
	sub := args[0]
	var sel keySel
	fs := newFlags(e, "keys "+sub, "keys "+sub+" [-uri URI | -config FILE [-registration NAME]]")
	sel.bind(fs)
	yes := false
	if sub == "create" || sub == "rotate" {
		fs.StringVar(&sel.alg, "alg", "", "ES384 or RS384 (default: the registration's, else ES384)")
	}
	if sub == "delete" {
		fs.BoolVar(&yes, "yes", false, "really delete every version; registrations using it stop working")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	rings, done, err := sel.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	switch sub {
	case "create":
		for _, s := range rings {
			k, err := s.ring.Create(ctx, s.alg)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "created %s key %s in %s\n", k.Alg(), k.KID(), s.ring.URI())
		}
		fmt.Fprintln(e.stdout, "register the public keys with each responder: pdmp-agent jwks")
	case "list":
		return listKeys(ctx, e, rings)
	case "rotate":
		for _, s := range rings {
			k, err := s.ring.Rotate(ctx, vault.Alg(sel.alg))
			if err != nil {
				return err
			}
			vs, err := s.ring.Versions(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "added %s key %s to %s\n", k.Alg(), k.KID(), s.ring.URI())
			for _, v := range vs {
				if v.Key.KID() == k.KID() && v.Status == vault.Pending {
					fmt.Fprintf(e.stdout, "  it is published now and signs from %s; publish the new JWK Set (pdmp-agent jwks) before then\n", v.Until.Format(time.RFC3339))
				}
			}
		}
	case "prune":
		for _, s := range rings {
			gone, err := s.ring.Prune(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s: removed %s\n", s.ring.URI(), plural(len(gone), "retired key"))
		}
	case "delete":
		if !yes {
			return fmt.Errorf("refusing to delete without -yes")
		}
		for _, s := range rings {
			if err := s.ring.Delete(ctx); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted every key in %s\n", s.ring.URI())
		}
	default:
		return fmt.Errorf("unknown keys command %q", sub)
	}
	return nil
}

func listKeys(ctx context.Context, e *env, rings []*selected) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY URI\tKID\tALG\tCREATED\tSTATUS\tUNTIL\tREGISTRATIONS")
	for _, s := range rings {
		vs, err := s.ring.Versions(ctx)
		if err != nil {
			return err
		}
		if len(vs) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\tno key (run keys create)\t-\t%v\n", s.ring.URI(), s.regs)
		}
		for _, v := range vs {
			until := "-"
			if !v.Until.IsZero() {
				until = v.Until.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\n", s.ring.URI(), v.Key.KID(), v.Key.Alg(),
				v.Key.Created().Format(time.RFC3339), v.Status, until, s.regs)
		}
	}
	return tw.Flush()
}

func runJWKS(ctx context.Context, e *env, args []string) error {
	var sel keySel
	fs := newFlags(e, "jwks", "jwks [-uri URI | -config FILE [-registration NAME]]")
	sel.bind(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	rings, done, err := sel.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	var keys []vault.Key
	for _, s := range rings {
		pub, err := s.ring.Published(ctx)
		if err != nil {
			return err
		}
		if len(pub) == 0 {
			return fmt.Errorf("%s holds no key; run: pdmp-agent keys create", s.ring.URI())
		}
		for _, k := range pub {
			if !slices.ContainsFunc(keys, func(o vault.Key) bool { return o.KID() == k.KID() }) {
				keys = append(keys, k)
			}
		}
	}
	b, err := vault.JWKSet(keys...)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s\n", b)
	return nil
}
