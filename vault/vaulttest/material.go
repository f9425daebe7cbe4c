package vaulttest

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"strings"
	"testing"

	"github.com/99designs/keyring"

	"github.com/pdmp-agent/pdmp-agent/vault"
)

// PrivateMaterial decrypts the key records of a file keyring URI with the
// keyring library itself, as only a holder of the passphrase could, and
// returns what must never appear anywhere in clear: each key's PKCS#8
// encoding and its secret scalar or exponent and primes. Tests scan files
// and logs for it.
func PrivateMaterial(tb testing.TB, uri string) [][]byte {
	tb.Helper()
	u, err := vault.ParseURI(uri)
	if err != nil {
		tb.Fatal(err)
	}
	pass, err := os.ReadFile(u.Query["passphrase-file"])
	if err != nil {
		tb.Fatal(err)
	}
	kr, err := keyring.Open(keyring.Config{
		AllowedBackends:  []keyring.BackendType{keyring.FileBackend},
		FileDir:          u.Query["dir"],
		FilePasswordFunc: func(string) (string, error) { return strings.TrimSpace(string(pass)), nil },
	})
	if err != nil {
		tb.Fatal(err)
	}
	names, _ := kr.Keys()
	var out [][]byte
	for _, n := range names {
		if !strings.Contains(n, "/key/") {
			continue
		}
		it, err := kr.Get(n)
		if err != nil {
			tb.Fatal(err)
		}
		der := it.Data[10:] // past the record header (keyring.go)
		out = append(out, der)
		priv, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			tb.Fatal(err)
		}
		switch p := priv.(type) {
		case *ecdsa.PrivateKey:
			d, err := p.Bytes()
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, d)
		case *rsa.PrivateKey:
			out = append(out, p.D.Bytes())
			for _, pr := range p.Primes {
				out = append(out, pr.Bytes())
			}
		}
	}
	if len(out) == 0 {
		tb.Fatal("no key material found to look for")
	}
	return out
}
