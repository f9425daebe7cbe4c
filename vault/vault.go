package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Alg is a JOSE signature algorithm the vault can generate keys for.
type Alg string

// The algorithms SMART Backend Services requires clients to support.
const (
	ES384 Alg = "ES384" // ECDSA P-384 with SHA-384; the default
	RS384 Alg = "RS384" // RSASSA-PKCS1-v1_5 with SHA-384 on RSA-3072
)

// RSABits is the modulus size of generated RS384 keys.
const RSABits = 3072

// ParseAlg returns the Alg named by s; the empty string means [ES384].
func ParseAlg(s string) (Alg, error) {
	switch Alg(strings.ToUpper(s)) {
	case "", ES384:
		return ES384, nil
	case RS384:
		return RS384, nil
	}
	return "", fmt.Errorf("%w: %q (want ES384 or RS384)", ErrUnsupportedAlg, s)
}

// Errors callers branch on.
var (
	ErrNotFound       = errors.New("vault: key not found")
	ErrExists         = errors.New("vault: key already exists")
	ErrUnsupportedAlg = errors.New("vault: unsupported algorithm")
	ErrNoBackend      = errors.New("vault: no backend for URI scheme")
	ErrBadURI         = errors.New("vault: malformed key URI")
	// ErrUnavailable means the backend exists but cannot be reached right
	// now (locked keychain, removed token); retrying later may succeed.
	ErrUnavailable = errors.New("vault: key store unavailable")
)

// Key is one version of a private key held by a backend. Sign never exposes
// the private key; ECDSA signatures are ASN.1 DER as crypto.Signer defines,
// and JOSE libraries convert them to R‖S.
type Key interface {
	crypto.Signer
	Alg() Alg
	// KID is the RFC 7638 SHA-256 thumbprint of the public key.
	KID() string
	Created() time.Time
}

// Backend stores the key versions of one URI scheme. Implementations
// generate keys inside the store where the store allows it, and never
// return private key bytes.
type Backend interface {
	// Generate creates a new key version under name.
	Generate(ctx context.Context, name string, alg Alg, created time.Time) (Key, error)
	// Keys returns every version stored under name, in any order.
	Keys(ctx context.Context, name string) ([]Key, error)
	// Delete removes one version.
	Delete(ctx context.Context, name, kid string) error
	Close() error
}

// SecretStore is implemented by backends that can also hold small secrets,
// such as the queue's data key.
type SecretStore interface {
	// Secret returns the secret called name. ErrNotFound if absent.
	Secret(ctx context.Context, name string) ([]byte, error)
	SetSecret(ctx context.Context, name string, value []byte) error
}

// Opener opens the backend a URI points at and returns the key name within it.
type Opener func(ctx context.Context, u *URI) (b Backend, name string, err error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Opener{}
)

// Register makes a backend available for URIs of the given scheme. Backends
// call it from init, so adding one never touches callers.
func Register(scheme string, open Opener) {
	registryMu.Lock()
	defer registryMu.Unlock()
	registry[scheme] = open
}

func openBackend(ctx context.Context, uri string) (Backend, string, *URI, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return nil, "", nil, err
	}
	registryMu.RLock()
	open, ok := registry[u.Scheme]
	registryMu.RUnlock()
	if !ok {
		return nil, "", nil, fmt.Errorf("%w %q", ErrNoBackend, u.Scheme)
	}
	b, name, err := open(ctx, u)
	if err != nil {
		return nil, "", nil, fmt.Errorf("open %s: %w", u.Redacted(), err)
	}
	return b, name, u, nil
}

// NewKey wraps a signer held by a backend, checking that its public key fits
// alg and computing its kid. Backends use it so every key behaves alike.
func NewKey(s crypto.Signer, alg Alg, created time.Time) (Key, error) {
	if err := checkPublic(s.Public(), alg); err != nil {
		return nil, err
	}
	kid, err := Thumbprint(s.Public())
	if err != nil {
		return nil, err
	}
	return &key{Signer: s, alg: alg, kid: kid, created: created.UTC()}, nil
}

func checkPublic(pub crypto.PublicKey, alg Alg) error {
	switch alg {
	case ES384:
		if p, ok := pub.(*ecdsa.PublicKey); ok && p.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("%w: ES384 needs a P-384 key, have %T", ErrUnsupportedAlg, pub)
	case RS384:
		if p, ok := pub.(*rsa.PublicKey); ok && p.N.BitLen() >= RSABits {
			return nil
		}
		return fmt.Errorf("%w: RS384 needs an RSA key of at least %d bits", ErrUnsupportedAlg, RSABits)
	}
	return fmt.Errorf("%w: %q", ErrUnsupportedAlg, alg)
}

type key struct {
	crypto.Signer
	alg     Alg
	kid     string
	created time.Time
}

func (k *key) Alg() Alg           { return k.alg }
func (k *key) KID() string        { return k.kid }
func (k *key) Created() time.Time { return k.created }

// RotationPolicy says when a new key version starts signing and when the one
// it replaces stops being published. A responder caching our JWK Set for up
// to PublishDelay never sees a kid it does not know.
type RotationPolicy struct {
	// PublishDelay is how long a new version is published before it signs.
	PublishDelay time.Duration
	// Overlap is how long a replaced version stays published after its
	// successor starts signing, for assertions minted just before.
	Overlap time.Duration
}

// DefaultRotation suits responders that cache JWK Sets for up to a day.
var DefaultRotation = RotationPolicy{PublishDelay: 24 * time.Hour, Overlap: 24 * time.Hour}

// Ring is the set of key versions a URI names.
type Ring struct {
	backend Backend
	name    string
	uri     *URI
	policy  RotationPolicy
	now     func() time.Time

	mu       sync.Mutex
	versions []Key // newest first
	loaded   time.Time
}

// reloadEvery bounds how stale the in-memory view may be when another
// process (the CLI) rotates the ring under a running agent.
const reloadEvery = time.Minute

// RingOption adjusts Open.
type RingOption func(*Ring)

// WithRotation sets the rotation policy (default [DefaultRotation]).
func WithRotation(p RotationPolicy) RingOption { return func(r *Ring) { r.policy = p } }

// WithClock sets the clock used for rotation decisions.
func WithClock(now func() time.Time) RingOption { return func(r *Ring) { r.now = now } }

// Open opens the key ring named by uri. It does not require any version to
// exist yet; Create adds the first.
func Open(ctx context.Context, uri string, opts ...RingOption) (*Ring, error) {
	b, name, u, err := openBackend(ctx, uri)
	if err != nil {
		return nil, err
	}
	r := &Ring{backend: b, name: name, uri: u, policy: DefaultRotation, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// URI returns the ring's URI with secrets (PINs, passphrases) removed.
func (r *Ring) URI() string { return r.uri.Redacted() }

// Close releases the backend.
func (r *Ring) Close() error { return r.backend.Close() }

// Create generates the ring's first key version. It fails with ErrExists if
// the ring already holds one.
func (r *Ring) Create(ctx context.Context, alg Alg) (Key, error) {
	vs, err := r.load(ctx, true)
	if err != nil {
		return nil, err
	}
	if len(vs) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrExists, r.URI())
	}
	// The only version signs at once (see classify): nobody can have cached
	// an older set.
	return r.generate(ctx, alg, r.now())
}

// Rotate adds a new version with the same algorithm as the current one
// (or alg, if not empty). It starts signing after PublishDelay.
func (r *Ring) Rotate(ctx context.Context, alg Alg) (Key, error) {
	cur, err := r.Current(ctx)
	if err != nil {
		return nil, err
	}
	if alg == "" {
		alg = cur.Alg()
	}
	return r.generate(ctx, alg, r.now())
}

func (r *Ring) generate(ctx context.Context, alg Alg, created time.Time) (Key, error) {
	if _, err := ParseAlg(string(alg)); err != nil {
		return nil, err
	}
	k, err := r.backend.Generate(ctx, r.name, alg, created)
	if err != nil {
		return nil, fmt.Errorf("generate %s key in %s: %w", alg, r.URI(), err)
	}
	r.mu.Lock()
	r.loaded = time.Time{}
	r.mu.Unlock()
	return k, nil
}

func (r *Ring) load(ctx context.Context, force bool) ([]Key, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if !force && !r.loaded.IsZero() && now.Sub(r.loaded) < reloadEvery {
		return r.versions, nil
	}
	vs, err := r.backend.Keys(ctx, r.name)
	if err != nil {
		return nil, fmt.Errorf("read keys of %s: %w", r.URI(), err)
	}
	slices.SortFunc(vs, func(a, b Key) int { return b.Created().Compare(a.Created()) })
	r.versions, r.loaded = vs, now
	return vs, nil
}

// Status is a key version's place in the rotation.
type Status string

// Rotation states.
const (
	Pending  Status = "pending"  // published, not yet signing
	Active   Status = "active"   // signing
	Retiring Status = "retiring" // replaced, still published
	Retired  Status = "retired"  // no longer published; safe to delete
)

// Version is a key with its rotation state.
type Version struct {
	Key    Key
	Status Status
	// Until is when the status next changes (zero if never).
	Until time.Time
}

// Versions lists every version, newest first, with its rotation state.
func (r *Ring) Versions(ctx context.Context) ([]Version, error) {
	vs, err := r.load(ctx, true)
	if err != nil {
		return nil, err
	}
	return r.classify(vs), nil
}

// classify derives every version's state from creation times alone, so
// rotation keeps no mutable state beside the keys themselves. vs is newest
// first. The newest version whose publish delay has passed signs (the oldest
// always may, so a ring is never left without a signer); newer ones are
// pending; older ones stay published for Overlap after their successor took
// over.
func (r *Ring) classify(vs []Key) []Version {
	now := r.now()
	out := make([]Version, len(vs))
	var successorSigns time.Time // when the next newer version starts signing
	activeSeen := false
	for i, k := range vs {
		signsFrom := k.Created().Add(r.policy.PublishDelay)
		v := Version{Key: k}
		switch {
		case !activeSeen && now.Before(signsFrom) && i < len(vs)-1:
			v.Status, v.Until = Pending, signsFrom
		case !activeSeen:
			v.Status, activeSeen = Active, true
			if i > 0 {
				v.Until = successorSigns
			}
		default:
			if retireAt := successorSigns.Add(r.policy.Overlap); now.Before(retireAt) {
				v.Status, v.Until = Retiring, retireAt
			} else {
				v.Status = Retired
			}
		}
		successorSigns = signsFrom
		out[i] = v
	}
	return out
}

// Current returns the version that signs now.
func (r *Ring) Current(ctx context.Context) (Key, error) {
	vs, err := r.load(ctx, false)
	if err != nil {
		return nil, err
	}
	for _, v := range r.classify(vs) {
		if v.Status == Active {
			return v.Key, nil
		}
	}
	return nil, fmt.Errorf("%w: %s holds no key (run 'pdmp-agent keys create')", ErrNotFound, r.URI())
}

// Published returns the versions a responder must be able to verify:
// pending, active and retiring, newest first.
func (r *Ring) Published(ctx context.Context) ([]Key, error) {
	vs, err := r.Versions(ctx)
	if err != nil {
		return nil, err
	}
	var out []Key
	for _, v := range vs {
		if v.Status != Retired {
			out = append(out, v.Key)
		}
	}
	return out, nil
}

// Prune deletes retired versions and returns their kids.
func (r *Ring) Prune(ctx context.Context) ([]string, error) {
	vs, err := r.Versions(ctx)
	if err != nil {
		return nil, err
	}
	var gone []string
	for _, v := range vs {
		if v.Status != Retired {
			continue
		}
		if err := r.backend.Delete(ctx, r.name, v.Key.KID()); err != nil {
			return gone, fmt.Errorf("delete %s from %s: %w", v.Key.KID(), r.URI(), err)
		}
		gone = append(gone, v.Key.KID())
	}
	_, err = r.load(ctx, true)
	return gone, err
}

// Delete removes every version. The ring can be created again afterwards.
func (r *Ring) Delete(ctx context.Context) error {
	vs, err := r.load(ctx, true)
	if err != nil {
		return err
	}
	for _, k := range vs {
		if err := r.backend.Delete(ctx, r.name, k.KID()); err != nil {
			return fmt.Errorf("delete %s from %s: %w", k.KID(), r.URI(), err)
		}
	}
	_, err = r.load(ctx, true)
	return err
}
