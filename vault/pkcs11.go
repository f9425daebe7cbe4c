//go:build cgo

package vault

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

func init() { Register("pkcs11", openPKCS11) }

// pkcs11URIAttrs are the attributes openPKCS11 understands. Others are
// refused rather than ignored: an ignored selector (manufacturer=, model=)
// could silently pick another token than the operator meant.
var pkcs11URIAttrs = []string{"module-path", "token", "serial", "slot-id", "object", "id", "type", "pin-source", "pin-value"}

// openPKCS11 opens a key ring held on a PKCS#11 token (RFC 7512 URI):
//
//	pkcs11:token=pdmp;object=agent-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pdmp-agent/pin
//
// Attributes, in the path or the query:
//
//	module-path  absolute path of the PKCS#11 module (required)
//	token        token label             \
//	serial       token serial number      } exactly one
//	slot-id      slot number (decimal)   /
//	object       CKA_LABEL of every version of the ring (required)
//	id           optional CKA_ID prefix (percent-encoded bytes), to keep
//	             rings that share a label apart
//	type         "private" if present (tools such as p11tool print it)
//	pin-source   file:/path or a bare path of a file holding the user PIN;
//	             group and others must have no access to it
//	pin-value    the user PIN itself; accepted, but see PKCS11URIWarnings
//
// Keys are generated on the token, non-extractable, and sign there. Each
// version's CKA_ID is the id prefix, its creation time (unix seconds, big
// endian) and 8 random bytes, so the token alone records what rotation
// needs. The backend holds no secrets (SecretStore is not implemented).
//
// Open logs in at once, so a wrong PIN or a missing token shows at startup
// rather than at the first signature. A PIN the token refused is never
// presented again by this process, since every try counts toward locking
// the token: fix the PIN file and open again (a different PIN is tried), or
// restart. Rings naming the same module, token and PIN share one login and
// session pool, released when the last of them closes. If the token is
// removed or the module fails, operations return errors wrapping
// [ErrUnavailable] and the login is dropped; the next operation logs in
// afresh, so signing resumes once the token is back.
func openPKCS11(ctx context.Context, u *URI) (Backend, string, error) {
	cfg, err := parsePKCS11URI(u)
	if err != nil {
		return nil, "", err
	}
	if err := ctx.Err(); err != nil {
		return nil, "", err
	}
	tok := acquirePKCS11Token(cfg.token)
	if _, err := tok.current(); err != nil {
		tok.release()
		return nil, "", err
	}
	return &pkcs11Backend{tok: tok, idPrefix: cfg.idPrefix}, cfg.object, nil
}

type pkcs11Config struct {
	token    pkcs11TokenID
	object   string
	idPrefix []byte
}

func parsePKCS11URI(u *URI) (pkcs11Config, error) {
	var cfg pkcs11Config
	if u.Name != "" {
		return cfg, fmt.Errorf("%w: pkcs11 URI attributes are name=value pairs", ErrBadURI)
	}
	for k := range u.Query {
		if _, dup := u.Path[k]; dup {
			return cfg, fmt.Errorf("%w: pkcs11 attribute %q given twice", ErrBadURI, k)
		}
	}
	for _, m := range []map[string]string{u.Path, u.Query} {
		for k := range m {
			if !slices.Contains(pkcs11URIAttrs, k) {
				return cfg, fmt.Errorf("%w: unsupported pkcs11 attribute %q (supported: %s)",
					ErrBadURI, k, strings.Join(pkcs11URIAttrs, ", "))
			}
		}
	}
	if t := u.Attr("type"); pkcs11HasAttr(u, "type") && t != "private" {
		return cfg, fmt.Errorf("%w: pkcs11 type=%q: the ring's keys are private keys (type=private)", ErrBadURI, t)
	}

	module := u.Attr("module-path")
	switch {
	case module == "":
		return cfg, fmt.Errorf("%w: pkcs11 URI needs module-path=, the token's PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so)", ErrBadURI)
	case !filepath.IsAbs(module):
		// A relative name would load whatever the library search path finds.
		return cfg, fmt.Errorf("%w: pkcs11 module-path %s is not an absolute path", ErrBadURI, module)
	}
	if fi, err := os.Stat(module); err != nil {
		return cfg, fmt.Errorf("PKCS#11 module-path: %w", err)
	} else if fi.IsDir() {
		return cfg, fmt.Errorf("PKCS#11 module-path %s is a directory, not a library", module)
	}
	cfg.token = pkcs11TokenID{module: module, label: u.Attr("token"), serial: u.Attr("serial"), slot: -1}

	selectors := 0
	for _, k := range []string{"token", "serial", "slot-id"} {
		if u.Attr(k) != "" {
			selectors++
		}
	}
	if selectors != 1 {
		return cfg, fmt.Errorf("%w: pkcs11 URI needs exactly one of token= (label), serial= or slot-id=", ErrBadURI)
	}
	if s := u.Attr("slot-id"); s != "" {
		n, err := strconv.ParseUint(s, 10, 31)
		if err != nil {
			return cfg, fmt.Errorf("%w: pkcs11 slot-id %q is not a slot number", ErrBadURI, s)
		}
		cfg.token.slot = int(n)
	}

	if cfg.object = u.Attr("object"); cfg.object == "" {
		return cfg, fmt.Errorf("%w: pkcs11 URI needs object=, the label the ring's keys carry", ErrBadURI)
	}
	cfg.idPrefix = []byte(u.Attr("id"))

	switch src, hasSrc, hasValue := u.Attr("pin-source"), pkcs11HasAttr(u, "pin-source"), pkcs11HasAttr(u, "pin-value"); {
	case hasSrc && hasValue:
		return cfg, fmt.Errorf("%w: pkcs11 URI has both pin-source and pin-value", ErrBadURI)
	case hasSrc:
		pin, err := readPKCS11PIN(src)
		if err != nil {
			return cfg, err
		}
		cfg.token.pin = pin
	case hasValue:
		if cfg.token.pin = u.Attr("pin-value"); cfg.token.pin == "" {
			return cfg, fmt.Errorf("%w: pkcs11 pin-value is empty", ErrBadURI)
		}
	default:
		return cfg, fmt.Errorf("%w: pkcs11 URI needs pin-source=file:/path (a file holding the user PIN)", ErrBadURI)
	}
	return cfg, nil
}

// readPKCS11PIN reads the PIN file a pin-source names: "file:/path",
// "file:///path" or a bare path. A PIN file others can read would protect
// nothing, and one they can write would let them feed us wrong PINs until
// the token locks, so both are refused.
func readPKCS11PIN(src string) (string, error) {
	path, isURI := strings.CutPrefix(src, "file:")
	switch {
	case isURI && strings.HasPrefix(path, "//"):
		if !strings.HasPrefix(path, "///") {
			return "", fmt.Errorf("%w: pkcs11 pin-source must be a local file (file:/path)", ErrBadURI)
		}
		path = path[2:]
	case !isURI && strings.HasPrefix(src, "|"):
		return "", fmt.Errorf("%w: pkcs11 pin-source commands (|...) are not supported; use a file", ErrBadURI)
	}
	return readSecretFile(path, "PIN file")
}

// pkcs11TokenID names one login: a module, a token in it, and a PIN. Its
// String omits the PIN, so it is safe in errors.
type pkcs11TokenID struct {
	module, label, serial string
	slot                  int // -1 unless selected by slot
	pin                   string
}

func (id pkcs11TokenID) String() string {
	switch {
	case id.label != "":
		return fmt.Sprintf("PKCS#11 token %q (module %s)", id.label, id.module)
	case id.serial != "":
		return fmt.Sprintf("PKCS#11 token with serial %q (module %s)", id.serial, id.module)
	}
	return fmt.Sprintf("PKCS#11 token in slot %d (module %s)", id.slot, id.module)
}

// pkcs11Tokens holds the process's logins, shared by every ring with the
// same pkcs11TokenID: a token allows one login state per process anyway,
// and one session pool serves any number of concurrent signers.
var pkcs11Tokens = struct {
	sync.Mutex
	open map[pkcs11TokenID]*pkcs11Token
	// badPIN records logins the token refused. They are never tried again:
	// each failure counts toward locking the token, and the same PIN will
	// not start working. A changed PIN file yields another pkcs11TokenID.
	badPIN map[pkcs11TokenID]bool
}{open: map[pkcs11TokenID]*pkcs11Token{}, badPIN: map[pkcs11TokenID]bool{}}

// pkcs11Token is one shared login, counted by the backends holding it.
type pkcs11Token struct {
	id   pkcs11TokenID
	refs int // guarded by pkcs11Tokens

	mu     sync.Mutex
	login  *pkcs11Login // nil before login and after the login was lost
	closed bool         // the last backend released it
}

// pkcs11Login is a logged-in crypto11 context and where its token sits.
type pkcs11Login struct {
	*crypto11.Context
	module *pkcs11.Ctx // see pkcs11Module
	slot   uint
	serial string
}

// present checks that the login's token is still in its slot. A removed
// hardware token fails every call, but SoftHSM2 answers searches for the
// objects of a vanished token with nothing; C_GetTokenInfo fails in both.
func (l *pkcs11Login) present() error {
	info, err := l.module.GetTokenInfo(l.slot)
	if err != nil {
		return err
	}
	if info.SerialNumber != l.serial {
		return errors.New("another token is in the slot")
	}
	return nil
}

// pkcs11Modules holds a direct handle on every module loaded, for the calls
// crypto11 does not expose. Handles share the module's one initialization
// (crypto11's) and are never unloaded, so none is freed while in use.
var pkcs11Modules = struct {
	sync.Mutex
	m map[string]*pkcs11.Ctx
}{m: map[string]*pkcs11.Ctx{}}

// pkcs11Module returns the handle on the module at path, or nil if it
// cannot be loaded.
func pkcs11Module(path string) *pkcs11.Ctx {
	pkcs11Modules.Lock()
	defer pkcs11Modules.Unlock()
	m := pkcs11Modules.m[path]
	if m == nil {
		if m = pkcs11.New(path); m != nil {
			pkcs11Modules.m[path] = m
		}
	}
	return m
}

func acquirePKCS11Token(id pkcs11TokenID) *pkcs11Token {
	pkcs11Tokens.Lock()
	defer pkcs11Tokens.Unlock()
	t := pkcs11Tokens.open[id]
	if t == nil {
		t = &pkcs11Token{id: id}
		pkcs11Tokens.open[id] = t
	}
	t.refs++
	return t
}

// release drops one reference; the last one logs out and, if no other
// token of the module is in use, finalizes the module.
func (t *pkcs11Token) release() {
	pkcs11Tokens.Lock()
	t.refs--
	last := t.refs == 0
	if last {
		delete(pkcs11Tokens.open, t.id)
	}
	pkcs11Tokens.Unlock()
	if !last {
		return
	}
	t.mu.Lock()
	l := t.login
	t.login, t.closed = nil, true
	t.mu.Unlock()
	if l != nil {
		l.Close()
	}
}

// current returns the token's login, logging in if there is none. The lock
// is held while logging in so concurrent callers never log in twice.
func (t *pkcs11Token) current() (*pkcs11Login, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("vault: PKCS#11 key used after its ring was closed")
	}
	if t.login == nil {
		l, err := t.logIn()
		if err != nil {
			return nil, err
		}
		t.login = l
	}
	return t.login, nil
}

func (t *pkcs11Token) logIn() (*pkcs11Login, error) {
	pkcs11Tokens.Lock()
	refused := pkcs11Tokens.badPIN[t.id]
	pkcs11Tokens.Unlock()
	if refused {
		return nil, fmt.Errorf("%s: %w (this PIN was already refused once)", t.id, ErrPIN)
	}
	module := pkcs11Module(t.id.module)
	if module == nil {
		return nil, fmt.Errorf("PKCS#11 module %s cannot be loaded: not a PKCS#11 library, built for another architecture, or missing a dependency", t.id.module)
	}
	cfg := &crypto11.Config{Path: t.id.module, TokenLabel: t.id.label, TokenSerial: t.id.serial, Pin: t.id.pin}
	if t.id.slot >= 0 {
		cfg.SlotNumber = &t.id.slot
	}
	c, err := crypto11.Configure(cfg)
	if err != nil {
		return nil, t.loginError(err)
	}
	l := &pkcs11Login{Context: c, module: module}
	if l.slot, l.serial, err = t.id.find(module); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, t.id, err)
	}
	return l, nil
}

func (t *pkcs11Token) loginError(err error) error {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		// The module loaded (see logIn), so crypto11 found no such token.
		return fmt.Errorf("%w: %s is not present (removed, or no token has that label/serial/slot): %w", ErrUnavailable, t.id, err)
	}
	switch rv {
	case pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE:
		pkcs11Tokens.Lock()
		pkcs11Tokens.badPIN[t.id] = true
		pkcs11Tokens.Unlock()
		return fmt.Errorf("%s: %w (%w)", t.id, ErrPIN, rv)
	case pkcs11.CKR_PIN_LOCKED:
		return fmt.Errorf("%s: the user PIN is locked; unblock it with the SO PIN: %w", t.id, rv)
	}
	// Anything else is the module or token failing, perhaps for a while.
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, t.id, err)
}

// find returns the slot crypto11 chose for id, by the same rule, and the
// serial number of the token in it.
func (id pkcs11TokenID) find(m *pkcs11.Ctx) (slot uint, serial string, err error) {
	slots, err := m.GetSlotList(true)
	if err != nil {
		return 0, "", err
	}
	for _, s := range slots {
		info, err := m.GetTokenInfo(s)
		if err != nil {
			return 0, "", err
		}
		if id.slot >= 0 && s == uint(id.slot) || id.serial != "" && info.SerialNumber == id.serial ||
			id.label != "" && info.Label == id.label {
			return s, info.SerialNumber, nil
		}
	}
	return 0, "", errors.New("token vanished while logging in")
}

// fail turns the error of an operation on login l into the error to
// return. If the token is gone, it drops the login so the next call logs
// in afresh once the token is back, instead of reusing dead sessions.
func (t *pkcs11Token) fail(l *pkcs11Login, op string, err error) error {
	t.mu.Lock()
	replaced := t.login != l // dropped by a concurrent failure, or closed
	t.mu.Unlock()
	if !replaced && !pkcs11SessionsLost(err) && l.present() == nil {
		return fmt.Errorf("%s on %s: %w", op, t.id, err)
	}
	t.drop(l)
	return fmt.Errorf("%w: %s on %s failed (token removed or module failing): %w", ErrUnavailable, op, t.id, err)
}

// drop forgets login l if it is still current and closes it. Close waits
// for operations in flight on l, which fail fast on a dead token, so it is
// called without holding t.mu.
func (t *pkcs11Token) drop(l *pkcs11Login) {
	t.mu.Lock()
	current := t.login == l
	if current {
		t.login = nil
	}
	t.mu.Unlock()
	if current {
		l.Close()
	}
}

// pkcs11SessionsLost reports whether err means the login's sessions and
// object handles are no longer usable: the token was removed or replaced,
// or the module lost its state.
func pkcs11SessionsLost(err error) bool {
	var rv pkcs11.Error
	if !errors.As(err, &rv) {
		return false
	}
	switch rv {
	case pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_TOKEN_NOT_PRESENT,
		pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED,
		pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_GENERAL_ERROR,
		// Handles die with the login that made them; a re-inserted token
		// reports them invalid.
		pkcs11.CKR_OBJECT_HANDLE_INVALID, pkcs11.CKR_KEY_HANDLE_INVALID:
		return true
	}
	return false
}

// pkcs11IDSuffix is what a version's CKA_ID carries after the URI's id
// prefix: creation time (8 bytes) and a random nonce (8 bytes).
const pkcs11IDSuffix = 16

type pkcs11Backend struct {
	tok      *pkcs11Token
	idPrefix []byte
	once     sync.Once
}

func (b *pkcs11Backend) Generate(ctx context.Context, name string, alg Alg, created time.Time) (Key, error) {
	if alg != ES384 && alg != RS384 {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedAlg, alg)
	}
	// RSA-3072 generation takes seconds on some tokens; don't start it for
	// a caller that has gone.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, err := b.tok.current()
	if err != nil {
		return nil, err
	}
	id := make([]byte, len(b.idPrefix)+pkcs11IDSuffix)
	n := copy(id, b.idPrefix)
	binary.BigEndian.PutUint64(id[n:], uint64(created.Unix()))
	rand.Read(id[n+8:]) // never fails

	// Every attribute the key's protection rests on is set explicitly rather
	// than left to crypto11's or the token's defaults, which would let the
	// key decrypt (RSA) or derive (ECDH) as well as sign.
	pub := pkcs11AttributeSet(
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, name),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
	)
	priv := pkcs11AttributeSet(
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, name),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
	)
	var k crypto11.Signer
	switch alg {
	case ES384:
		k, err = l.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P384())
	case RS384:
		pub.AddIfNotPresent([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false)})
		k, err = l.GenerateRSAKeyPairWithAttributes(pub, priv, RSABits)
	}
	if err != nil {
		return nil, b.tok.fail(l, "generate "+string(alg)+" key", err)
	}
	return NewKey(&pkcs11Signer{tok: b.tok, label: name, id: id, pub: k.Public(), login: l, key: k},
		alg, time.Unix(created.Unix(), 0))
}

func pkcs11AttributeSet(attrs ...*pkcs11.Attribute) crypto11.AttributeSet {
	s := crypto11.NewAttributeSet()
	s.AddIfNotPresent(attrs)
	return s
}

// pkcs11Version is one key pair of a ring as found on the token.
type pkcs11Version struct {
	key     crypto11.Signer
	id      []byte
	alg     Alg
	created time.Time
}

// versions lists the key pairs labelled name whose CKA_ID starts with the
// ring's id prefix.
func (b *pkcs11Backend) versions(name string) (*pkcs11Login, []pkcs11Version, error) {
	l, err := b.tok.current()
	if err != nil {
		return nil, nil, err
	}
	keys, err := l.FindKeyPairs(nil, []byte(name))
	if err == nil {
		// An empty list must not be mistaken for an empty ring.
		err = l.present()
	}
	if err != nil {
		return nil, nil, b.tok.fail(l, "list keys", err)
	}
	vs := make([]pkcs11Version, 0, len(keys))
	for _, k := range keys {
		attr, err := l.GetAttribute(k, crypto11.CkaId)
		if err != nil {
			return nil, nil, b.tok.fail(l, "read CKA_ID", err)
		}
		suffix, ours := bytes.CutPrefix(attr.Value, b.idPrefix)
		if !ours {
			continue // another ring sharing the label, with its own id prefix
		}
		if len(suffix) != pkcs11IDSuffix {
			return nil, nil, fmt.Errorf("key pair labelled %q with CKA_ID %x on %s was not made by this agent; give the ring its own object label or id prefix",
				name, attr.Value, b.tok.id)
		}
		alg, err := pkcs11Alg(k.Public())
		if err != nil {
			return nil, nil, fmt.Errorf("key pair labelled %q with CKA_ID %x on %s: %w", name, attr.Value, b.tok.id, err)
		}
		created := time.Unix(int64(binary.BigEndian.Uint64(suffix)), 0)
		vs = append(vs, pkcs11Version{key: k, id: attr.Value, alg: alg, created: created})
	}
	return l, vs, nil
}

func pkcs11Alg(pub crypto.PublicKey) (Alg, error) {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve == elliptic.P384() {
			return ES384, nil
		}
	case *rsa.PublicKey:
		return RS384, nil
	}
	return "", fmt.Errorf("%w: key type %T is neither P-384 nor RSA", ErrUnsupportedAlg, pub)
}

func (b *pkcs11Backend) Keys(_ context.Context, name string) ([]Key, error) {
	l, vs, err := b.versions(name)
	if err != nil {
		return nil, err
	}
	out := make([]Key, 0, len(vs))
	for _, v := range vs {
		s := &pkcs11Signer{tok: b.tok, label: name, id: v.id, pub: v.key.Public(), login: l, key: v.key}
		k, err := NewKey(s, v.alg, v.created)
		if err != nil {
			return nil, fmt.Errorf("key pair labelled %q with CKA_ID %x: %w", name, v.id, err)
		}
		out = append(out, k)
	}
	return out, nil
}

func (b *pkcs11Backend) Delete(_ context.Context, name, kid string) error {
	l, vs, err := b.versions(name)
	if err != nil {
		return err
	}
	for _, v := range vs {
		tp, err := Thumbprint(v.key.Public())
		if err != nil {
			return err
		}
		if tp != kid {
			continue
		}
		if err := v.key.Delete(); err != nil {
			return b.tok.fail(l, "delete key", err)
		}
		return nil
	}
	return fmt.Errorf("%w: %s", ErrNotFound, kid)
}

// Close releases the backend's share of the login. Keys it returned stop
// working once every ring on the same token has closed.
func (b *pkcs11Backend) Close() error {
	b.once.Do(b.tok.release)
	return nil
}

// pkcs11Signer signs with one key version, on the token. Object handles die
// with the login that found them, so after the token came back it finds its
// key again by CKA_ID and label, and checks it is still the same key.
type pkcs11Signer struct {
	tok   *pkcs11Token
	label string
	id    []byte
	pub   crypto.PublicKey

	mu    sync.Mutex
	login *pkcs11Login // the login key was found with
	key   crypto11.Signer
}

func (s *pkcs11Signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest on the token, which draws its own randomness; rand is
// unused. With opts a crypto.Hash, RSA signatures are PKCS#1 v1.5, as RS384
// requires; ECDSA signatures are ASN.1 DER.
func (s *pkcs11Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	l, key, err := s.current()
	if err != nil {
		return nil, err
	}
	sig, err := key.Sign(nil, digest, opts)
	if err != nil {
		return nil, s.tok.fail(l, "sign", err)
	}
	return sig, nil
}

// current returns the token's login and this key's object in it.
func (s *pkcs11Signer) current() (*pkcs11Login, crypto11.Signer, error) {
	l, err := s.tok.current()
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.login == l {
		return l, s.key, nil
	}
	keys, err := l.FindKeyPairs(s.id, []byte(s.label))
	if err == nil && len(keys) == 0 {
		err = l.present()
	}
	if err != nil {
		return nil, nil, s.tok.fail(l, "find key", err)
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("%w: key pair labelled %q with CKA_ID %x is no longer on %s", ErrNotFound, s.label, s.id, s.tok.id)
	}
	pub, ok := keys[0].Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(s.pub) {
		return nil, nil, fmt.Errorf("vault: key pair labelled %q with CKA_ID %x on %s is not the key it was", s.label, s.id, s.tok.id)
	}
	s.login, s.key = l, keys[0]
	return l, s.key, nil
}
