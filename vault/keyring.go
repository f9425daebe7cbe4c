package vault

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/99designs/keyring"
)

// WinCredMaxBlob is the largest secret Windows Credential Manager stores
// (CRED_MAX_CREDENTIAL_BLOB_SIZE). Every key we store must fit it.
const WinCredMaxBlob = 2560

// keyringService is the default service (collection) name in the keychain.
const keyringService = "pdmp-agent"

func init() { Register("keyring", openKeyring) }

// openKeyring opens a platform keychain. Query attributes:
//
//	backend          secret-service, keychain, wincred, kwallet, pass, file
//	                 (default: the first available, in keyring's order)
//	service          the keychain service name, also prefixed to every item
//	                 name (default pdmp-agent)
//	collection       secret-service: the collection (default login, the one
//	                 a session unlocks; creating another needs a GUI prompt)
//	dir              file backend: directory of the encrypted files
//	passphrase-file  file backend: file holding the passphrase; must not be
//	                 readable by group or others
//	passphrase-env   file backend: environment variable holding it
func openKeyring(_ context.Context, u *URI) (Backend, string, error) {
	name := u.Name
	if name == "" {
		name = u.Path["name"]
	}
	if name == "" || strings.Contains(name, "/") {
		return nil, "", fmt.Errorf("%w: keyring URI needs a key name without '/', e.g. keyring:reg-a", ErrBadURI)
	}
	cfg := keyring.Config{
		ServiceName:                    orDefault(u.Query["service"], keyringService),
		KeychainTrustApplication:       true,
		KeychainAccessibleWhenUnlocked: false,
		WinCredPrefix:                  orDefault(u.Query["service"], keyringService),
		FileDir:                        u.Query["dir"],
		LibSecretCollectionName:        orDefault(u.Query["collection"], "login"),
	}
	if be := u.Query["backend"]; be != "" {
		cfg.AllowedBackends = []keyring.BackendType{keyring.BackendType(be)}
	}
	if cfg.AllowedBackends != nil && cfg.AllowedBackends[0] == keyring.FileBackend {
		if cfg.FileDir == "" {
			return nil, "", fmt.Errorf("%w: the file keyring needs dir=", ErrBadURI)
		}
		pass, err := filePassphrase(u)
		if err != nil {
			return nil, "", err
		}
		cfg.FilePasswordFunc = func(string) (string, error) { return pass, nil }
	} else {
		cfg.FilePasswordFunc = func(string) (string, error) {
			return "", errors.New("file keyring needs passphrase-file= or passphrase-env=")
		}
	}
	kr, err := keyring.Open(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return &keyringBackend{kr: kr, prefix: cfg.ServiceName + "/"}, name, nil
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// filePassphrase reads the file backend's passphrase.
func filePassphrase(u *URI) (string, error) {
	if f := u.Query["passphrase-file"]; f != "" {
		return readSecretFile(f, "passphrase file")
	}
	if env := u.Query["passphrase-env"]; env != "" {
		p := os.Getenv(env)
		if p == "" {
			return "", fmt.Errorf("environment variable %s (passphrase-env) is empty", env)
		}
		return p, nil
	}
	return "", fmt.Errorf("%w: the file keyring needs passphrase-file= or passphrase-env=", ErrBadURI)
}

// readSecretFile reads a PIN or passphrase from a file that only its owner
// may read: a secret others can read would protect nothing, so that is
// refused. what names the file in errors.
func readSecretFile(path, what string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s %s is readable by group or others (mode %v); chmod 600 it", what, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	clear(b)
	if v == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return v, nil
}

type keyringBackend struct {
	kr     keyring.Keyring
	prefix string // service + "/": keeps our items apart in shared collections
}

// Item keys: "<service>/key/<name>/<kid>" for key versions and
// "<service>/secret/<name>" for secrets.
func (b *keyringBackend) keyItem(name, kid string) string {
	return b.prefix + "key/" + name + "/" + kid
}

// Blob layout: version byte, alg byte, created (unix nanoseconds, big
// endian: rotations within one second must still order), then the PKCS#8
// DER. Binary rather than JSON so an RSA-3072 key fits the
// Windows Credential Manager limit with room to spare.
const blobVersion = 1

var algCodes = map[Alg]byte{ES384: 1, RS384: 2}

func encodeBlob(alg Alg, created time.Time, pkcs8 []byte) []byte {
	b := make([]byte, 10, 10+len(pkcs8))
	b[0], b[1] = blobVersion, algCodes[alg]
	binary.BigEndian.PutUint64(b[2:], uint64(created.UnixNano()))
	return append(b, pkcs8...)
}

func decodeBlob(b []byte) (Alg, time.Time, crypto.Signer, error) {
	if len(b) < 10 || b[0] != blobVersion {
		return "", time.Time{}, nil, errors.New("vault: unrecognised key record")
	}
	var alg Alg
	for a, c := range algCodes {
		if c == b[1] {
			alg = a
		}
	}
	created := time.Unix(0, int64(binary.BigEndian.Uint64(b[2:10])))
	// Parse errors are replaced: some wrap fragments of the input.
	priv, err := x509.ParsePKCS8PrivateKey(b[10:])
	if err != nil {
		return "", time.Time{}, nil, errors.New("vault: key record does not hold a PKCS#8 key")
	}
	s, ok := priv.(crypto.Signer)
	if !ok || alg == "" {
		return "", time.Time{}, nil, errors.New("vault: key record holds an unsupported key")
	}
	return alg, created, s, nil
}

// GenerateSigner makes a new in-process private key for alg.
func GenerateSigner(alg Alg) (crypto.Signer, error) {
	switch alg {
	case ES384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RS384:
		return rsa.GenerateKey(rand.Reader, RSABits)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnsupportedAlg, alg)
}

func (b *keyringBackend) Generate(_ context.Context, name string, alg Alg, created time.Time) (Key, error) {
	s, err := GenerateSigner(alg)
	if err != nil {
		return nil, err
	}
	k, err := NewKey(s, alg, created)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(s)
	if err != nil {
		return nil, fmt.Errorf("vault: encode key: %w", err)
	}
	blob := encodeBlob(alg, k.Created(), der)
	clear(der)
	defer clear(blob)
	if len(blob) > WinCredMaxBlob {
		return nil, fmt.Errorf("vault: %s key record is %d bytes, over the %d-byte keychain limit", alg, len(blob), WinCredMaxBlob)
	}
	err = b.kr.Set(keyring.Item{
		Key:         b.keyItem(name, k.KID()),
		Data:        blob,
		Label:       "pdmp-agent " + name + " " + string(alg) + " " + k.KID(),
		Description: "pdmp-agent signing key",
	})
	if err != nil {
		return nil, fmt.Errorf("%w: store key: %v", ErrUnavailable, err)
	}
	return k, nil
}

func (b *keyringBackend) Keys(_ context.Context, name string) ([]Key, error) {
	all, err := b.kr.Keys()
	if err != nil {
		return nil, fmt.Errorf("%w: list keys: %v", ErrUnavailable, err)
	}
	prefix := b.keyItem(name, "")
	var out []Key
	for _, item := range all {
		if !strings.HasPrefix(item, prefix) {
			continue
		}
		it, err := b.kr.Get(item)
		if err != nil {
			return nil, fmt.Errorf("%w: read %s: %v", ErrUnavailable, item, err)
		}
		alg, created, s, err := decodeBlob(it.Data)
		clear(it.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", item, err)
		}
		k, err := NewKey(s, alg, created)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", item, err)
		}
		if k.KID() != strings.TrimPrefix(item, prefix) {
			return nil, fmt.Errorf("%s: stored under the wrong kid", item)
		}
		out = append(out, k)
	}
	return out, nil
}

func (b *keyringBackend) Delete(_ context.Context, name, kid string) error {
	if err := b.kr.Remove(b.keyItem(name, kid)); err != nil {
		if errors.Is(err, keyring.ErrKeyNotFound) || os.IsNotExist(err) {
			return fmt.Errorf("%w: %s", ErrNotFound, kid)
		}
		return fmt.Errorf("%w: delete: %v", ErrUnavailable, err)
	}
	return nil
}

func (b *keyringBackend) Close() error { return nil }

func (b *keyringBackend) Secret(_ context.Context, name string) ([]byte, error) {
	it, err := b.kr.Get(b.prefix + "secret/" + name)
	if errors.Is(err, keyring.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read secret: %v", ErrUnavailable, err)
	}
	return it.Data, nil
}

func (b *keyringBackend) SetSecret(_ context.Context, name string, v []byte) error {
	err := b.kr.Set(keyring.Item{Key: b.prefix + "secret/" + name, Data: v, Label: "pdmp-agent secret " + name})
	if err != nil {
		return fmt.Errorf("%w: store secret: %v", ErrUnavailable, err)
	}
	return nil
}
