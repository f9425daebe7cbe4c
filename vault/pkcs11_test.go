//go:build cgo

package vault_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/pdmp-agent/pdmp-agent/vault"
	"github.com/pdmp-agent/pdmp-agent/vault/vaulttest"
)

// pkcs11SpyModules are where OpenSC installs pkcs11-spy, a module that logs
// every call before passing it to the module named by $PKCS11SPY.
var pkcs11SpyModules = []string{
	"/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
	"/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
	"/usr/lib64/pkcs11-spy.so",
	"/usr/local/lib/pkcs11-spy.so",
	"/opt/homebrew/lib/pkcs11-spy.so",
}

var objSeq atomic.Int64

func newObject() string { return fmt.Sprintf("ring%d", objSeq.Add(1)) }

func TestPKCS11Conformance(t *testing.T) {
	h := vaulttest.NewSoftHSM(t)
	vaulttest.Run(t, func(*testing.T) string { return h.URI(newObject()) })
}

// TestPKCS11KeysNeverLeaveToken reads the generated private keys' attributes
// straight from the token, bypassing the backend and crypto11.
func TestPKCS11KeysNeverLeaveToken(t *testing.T) {
	h := vaulttest.NewSoftHSM(t)
	ctx := context.Background()
	for _, alg := range []vault.Alg{vault.ES384, vault.RS384} {
		t.Run(string(alg), func(t *testing.T) {
			object := newObject()
			r, err := vault.Open(ctx, h.URI(object))
			if err != nil {
				t.Fatal(err)
			}
			k, err := r.Create(ctx, alg)
			if err != nil {
				t.Fatal(err)
			}
			created := k.Created()
			// Our own login must end before we log in directly: the module
			// can only be initialized once per process.
			r.Close()

			valueAttr := uint(pkcs11.CKA_VALUE)
			if alg == vault.RS384 {
				valueAttr = pkcs11.CKA_PRIVATE_EXPONENT
			}
			inspect(t, h, func(p *pkcs11.Ctx, s pkcs11.SessionHandle) {
				keys := findObjects(t, p, s, pkcs11.CKO_PRIVATE_KEY, object)
				if len(keys) != 1 {
					t.Fatalf("found %d private keys labelled %s, want 1", len(keys), object)
				}
				want := map[uint]bool{
					pkcs11.CKA_TOKEN:             true,
					pkcs11.CKA_PRIVATE:           true,
					pkcs11.CKA_SENSITIVE:         true,
					pkcs11.CKA_ALWAYS_SENSITIVE:  true,
					pkcs11.CKA_EXTRACTABLE:       false,
					pkcs11.CKA_NEVER_EXTRACTABLE: true,
					pkcs11.CKA_LOCAL:             true, // generated on the token, not imported
					pkcs11.CKA_SIGN:              true,
					pkcs11.CKA_DECRYPT:           false,
					pkcs11.CKA_UNWRAP:            false,
					pkcs11.CKA_DERIVE:            false,
				}
				var tmpl []*pkcs11.Attribute
				for a := range want {
					tmpl = append(tmpl, pkcs11.NewAttribute(a, nil))
				}
				tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, nil))
				got, err := p.GetAttributeValue(s, keys[0], tmpl)
				if err != nil {
					t.Fatalf("read attributes: %v", err)
				}
				for _, a := range got {
					if a.Type == pkcs11.CKA_ID {
						if len(a.Value) != 16 || int64(binary.BigEndian.Uint64(a.Value)) != created.Unix() {
							t.Errorf("CKA_ID %x does not start with the creation time %d", a.Value, created.Unix())
						}
						continue
					}
					if v := len(a.Value) == 1 && a.Value[0] != 0; v != want[a.Type] {
						t.Errorf("attribute 0x%x = %v, want %v", a.Type, v, want[a.Type])
					}
				}
				_, err = p.GetAttributeValue(s, keys[0], []*pkcs11.Attribute{pkcs11.NewAttribute(valueAttr, nil)})
				if !errors.Is(err, pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE)) {
					t.Errorf("reading the private key value: err = %v, want CKR_ATTRIBUTE_SENSITIVE", err)
				}
			})
		})
	}
}

// inspect logs into h's token with miekg/pkcs11 directly.
func inspect(t *testing.T, h *vaulttest.SoftHSM, f func(*pkcs11.Ctx, pkcs11.SessionHandle)) {
	t.Helper()
	p := pkcs11.New(h.Module)
	if p == nil {
		t.Fatalf("load %s", h.Module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil {
		t.Fatalf("initialize (is a ring still open?): %v", err)
	}
	defer p.Finalize()
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		info, err := p.GetTokenInfo(slot)
		if err != nil || info.Label != h.Label {
			continue
		}
		s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer p.CloseSession(s)
		if err := p.Login(s, pkcs11.CKU_USER, vaulttest.SoftHSMPIN); err != nil {
			t.Fatal(err)
		}
		defer p.Logout(s)
		f(p, s)
		return
	}
	t.Fatalf("no token labelled %s", h.Label)
}

func findObjects(t *testing.T, p *pkcs11.Ctx, s pkcs11.SessionHandle, class uint, label string) []pkcs11.ObjectHandle {
	t.Helper()
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}
	if err := p.FindObjectsInit(s, tmpl); err != nil {
		t.Fatal(err)
	}
	defer p.FindObjectsFinal(s)
	objs, _, err := p.FindObjects(s, 100)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestPKCS11URIErrors(t *testing.T) {
	h := vaulttest.NewSoftHSM(t)
	dir := t.TempDir()
	loose := filepath.Join(dir, "loose-pin")
	if err := os.WriteFile(loose, []byte(vaulttest.SoftHSMPIN), 0o644); err != nil {
		t.Fatal(err)
	}
	notALibrary := filepath.Join(dir, "libnot-pkcs11.so")
	vaulttest.WriteFile(t, notALibrary, "not a shared object")
	module := url.QueryEscape(h.Module)
	pin := url.QueryEscape(h.PINFile)
	for _, tt := range []struct {
		name, uri string
		want      error  // errors.Is, if not nil
		contains  string // in the message
	}{
		{"no module", "pkcs11:token=x;object=o?pin-value=1234", vault.ErrBadURI, "module-path"},
		{"missing module", "pkcs11:token=x;object=o?module-path=/nonexistent/libnope.so&pin-value=1234", nil, "/nonexistent/libnope.so"},
		{"relative module", "pkcs11:token=x;object=o?module-path=libsofthsm2.so&pin-value=1234", vault.ErrBadURI, "libsofthsm2.so"},
		{"unloadable module", "pkcs11:token=x;object=o?pin-value=1234&module-path=" + url.QueryEscape(notALibrary), nil, notALibrary},
		{"no token", "pkcs11:object=o?pin-value=1234&module-path=" + module, vault.ErrBadURI, "token="},
		{"two tokens", "pkcs11:token=x;serial=1;object=o?pin-value=1234&module-path=" + module, vault.ErrBadURI, "exactly one"},
		{"bad slot", "pkcs11:slot-id=-1;object=o?pin-value=1234&module-path=" + module, vault.ErrBadURI, "slot-id"},
		{"no object", "pkcs11:token=x?pin-value=1234&module-path=" + module, vault.ErrBadURI, "object="},
		{"no PIN", "pkcs11:token=x;object=o?module-path=" + module, vault.ErrBadURI, "pin-source"},
		{"two PINs", "pkcs11:token=x;object=o?pin-value=1234&pin-source=" + pin + "&module-path=" + module, vault.ErrBadURI, "both"},
		{"PIN command", "pkcs11:token=x;object=o?pin-source=%7Ccat&module-path=" + module, vault.ErrBadURI, "not supported"},
		{"missing PIN file", "pkcs11:token=x;object=o?pin-source=file:/nonexistent/pin&module-path=" + module, nil, "/nonexistent/pin"},
		{"readable PIN file", "pkcs11:token=x;object=o?pin-source=" + url.QueryEscape(loose) + "&module-path=" + module, nil, "chmod 600"},
		{"unknown attribute", "pkcs11:token=x;object=o;manufacturer=acme?pin-value=1234&module-path=" + module, vault.ErrBadURI, "manufacturer"},
		{"public key", "pkcs11:token=x;object=o;type=public?pin-value=1234&module-path=" + module, vault.ErrBadURI, "type"},
		{"absent token", "pkcs11:token=no-such-token;object=o?pin-value=1234&module-path=" + module, vault.ErrUnavailable, "no-such-token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := vault.Open(context.Background(), tt.uri)
			if err == nil {
				r.Close()
				t.Fatal("Open succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("err = %v, want it to mention %q", err, tt.contains)
			}
			if strings.Contains(err.Error(), vaulttest.SoftHSMPIN) {
				t.Errorf("error reveals the PIN: %v", err)
			}
		})
	}
}

// TestPKCS11WrongPINTriedOnce counts C_Login calls reaching the token,
// through OpenSC's pkcs11-spy.
func TestPKCS11WrongPINTriedOnce(t *testing.T) {
	h := vaulttest.NewSoftHSM(t)
	spy := vaulttest.FirstExisting(pkcs11SpyModules)
	if spy == "" {
		vaulttest.RequirePKCS11(t, "no pkcs11-spy module (OpenSC) in "+strings.Join(pkcs11SpyModules, ", "))
	}
	log := filepath.Join(t.TempDir(), "spy.log")
	t.Setenv("PKCS11SPY", h.Module)
	t.Setenv("PKCS11SPY_OUTPUT", log)
	logins := func() int {
		b, err := os.ReadFile(log)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return bytes.Count(b, []byte("C_Login"))
	}

	pinFile := filepath.Join(t.TempDir(), "pin")
	vaulttest.WriteFile(t, pinFile, "0000\n")
	uri := h.URIWith(newObject(), spy, pinFile)
	for range 3 {
		_, err := vault.Open(context.Background(), uri)
		if !errors.Is(err, vault.ErrPIN) {
			t.Fatalf("Open with a wrong PIN: err = %v, want ErrPIN", err)
		}
		if errors.Is(err, vault.ErrUnavailable) {
			t.Errorf("a wrong PIN is not a passing unavailability: %v", err)
		}
	}
	if n := logins(); n != 1 {
		t.Fatalf("the token saw %d logins for three Opens with the same wrong PIN, want 1", n)
	}

	// Fixing the PIN file is enough: the new PIN is tried.
	vaulttest.WriteFile(t, pinFile, vaulttest.SoftHSMPIN+"\n")
	r, err := vault.Open(context.Background(), uri)
	if err != nil {
		t.Fatalf("Open after fixing the PIN file: %v", err)
	}
	r.Close()
	if n := logins(); n != 2 {
		t.Errorf("the token saw %d logins, want 2", n)
	}
}

// TestPKCS11IDPrefix keeps rings sharing a label apart by their id prefix.
func TestPKCS11IDPrefix(t *testing.T) {
	h := vaulttest.NewSoftHSM(t)
	ctx := context.Background()
	object := newObject()
	withID := func(id string) string {
		return strings.Replace(h.URI(object), ";object=", ";id="+id+";object=", 1)
	}
	var kids []string
	for _, id := range []string{"%01", "%02"} {
		r, err := vault.Open(ctx, withID(id))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		k, err := r.Create(ctx, vault.ES384)
		if err != nil {
			t.Fatalf("Create under id %s: %v", id, err)
		}
		kids = append(kids, k.KID())
	}
	for i, id := range []string{"%01", "%02"} {
		r, err := vault.Open(ctx, withID(id))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		vs, err := r.Versions(ctx)
		if err != nil || len(vs) != 1 || vs[0].Key.KID() != kids[i] {
			t.Errorf("ring with id %s holds %v, %v; want only %s", id, vs, err, kids[i])
		}
	}
	// Without a prefix the ring would claim keys it did not make.
	r, err := vault.Open(ctx, h.URI(object))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Versions(ctx); err == nil || !strings.Contains(err.Error(), "not made by this agent") {
		t.Errorf("Versions of a label holding other rings' keys: err = %v", err)
	}
}

// TestPKCS11SharedLogin checks that rings on one token share a login that
// lives until the last of them closes.
func TestPKCS11SharedLogin(t *testing.T) {
	h := vaulttest.NewSoftHSM(t)
	ctx := context.Background()
	r1, err := vault.Open(ctx, h.URI(newObject()))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := vault.Open(ctx, h.URI(newObject()))
	if err != nil {
		t.Fatal(err)
	}
	k, err := r1.Create(ctx, vault.ES384)
	if err != nil {
		t.Fatal(err)
	}
	r1.Close()
	r1.Close() // idempotent: must not release r2's share
	signVerify(t, k)
	r2.Close()
	if _, err := sign(k); err == nil {
		t.Error("a key signed after every ring on its token closed")
	}
}

// TestPKCS11TokenRemoved takes the token away under an open ring: SoftHSM2
// loses a token whose directory disappears (though it still lists the slot,
// and finds no objects rather than failing). The ring must report
// ErrUnavailable, and work again once the token is back.
func TestPKCS11TokenRemoved(t *testing.T) {
	h := vaulttest.NewSoftHSM(t)
	ctx := context.Background()
	uri := h.URI(newObject())
	r, err := vault.Open(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	k, err := r.Create(ctx, vault.ES384)
	if err != nil {
		t.Fatal(err)
	}
	signVerify(t, k)

	dirs, err := filepath.Glob(filepath.Join(h.TokenDir, "*"))
	if err != nil || len(dirs) != 1 {
		t.Fatalf("token directories %v, %v; want one", dirs, err)
	}
	away := filepath.Join(t.TempDir(), "removed")
	if err := os.Rename(dirs[0], away); err != nil {
		t.Fatal(err)
	}

	if _, err := r.Versions(ctx); !errors.Is(err, vault.ErrUnavailable) {
		t.Errorf("Versions with the token removed: err = %v, want ErrUnavailable", err)
	}
	if _, err := sign(k); !errors.Is(err, vault.ErrUnavailable) {
		t.Errorf("Sign with the token removed: err = %v, want ErrUnavailable", err)
	}
	if r2, err := vault.Open(ctx, uri); !errors.Is(err, vault.ErrUnavailable) {
		if err == nil {
			r2.Close()
		}
		t.Errorf("Open with the token removed: err = %v, want ErrUnavailable", err)
	}
	// SoftHSM2 fails to initialize without its configuration file.
	t.Setenv("SOFTHSM2_CONF", filepath.Join(t.TempDir(), "missing.conf"))
	if r2, err := vault.Open(ctx, uri); !errors.Is(err, vault.ErrUnavailable) {
		if err == nil {
			r2.Close()
		}
		t.Errorf("Open with the module failing: err = %v, want ErrUnavailable", err)
	}
	t.Setenv("SOFTHSM2_CONF", h.Conf)

	if err := os.Rename(away, dirs[0]); err != nil {
		t.Fatal(err)
	}
	r2, err := vault.Open(ctx, uri)
	if err != nil {
		t.Fatalf("Open after the token is back: %v", err)
	}
	defer r2.Close()
	cur, err := r2.Current(ctx)
	if err != nil {
		t.Fatalf("Current after the token is back: %v", err)
	}
	if cur.KID() != k.KID() {
		t.Errorf("kid after the token is back %s, want %s", cur.KID(), k.KID())
	}
	signVerify(t, cur)
	// A key loaded before the token went away finds itself again.
	signVerify(t, k)
}

func sign(k vault.Key) ([]byte, error) {
	h := sha512.Sum384([]byte("signing input"))
	return k.Sign(rand.Reader, h[:], crypto.SHA384)
}

func signVerify(t *testing.T, k vault.Key) {
	t.Helper()
	sig, err := sign(k)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := vaulttest.Verify(k.Public(), k.Alg(), []byte("signing input"), sig); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSign compares a signature on SoftHSM2 with one by an in-process
// key. SoftHSM2 computes in software too (OpenSSL), so this measures the
// PKCS#11 path (cgo, session pool, SoftHSM2 unwrapping the key for each
// operation) and OpenSSL against Go's crypto, not a hardware token.
func BenchmarkSign(b *testing.B) {
	h := vaulttest.NewSoftHSM(b)
	ctx := context.Background()
	digest := sha512.Sum384([]byte("signing input"))
	for _, alg := range []vault.Alg{vault.ES384, vault.RS384} {
		b.Run(string(alg), func(b *testing.B) {
			r, err := vault.Open(ctx, h.URI(newObject()))
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			onToken, err := r.Create(ctx, alg)
			if err != nil {
				b.Fatal(err)
			}
			inProcess, err := vault.GenerateSigner(alg)
			if err != nil {
				b.Fatal(err)
			}
			for _, s := range []struct {
				name   string
				signer crypto.Signer
			}{{"pkcs11", onToken}, {"in-process", inProcess}} {
				b.Run(s.name, func(b *testing.B) {
					for b.Loop() {
						if _, err := s.signer.Sign(rand.Reader, digest[:], crypto.SHA384); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
