//go:build !cgo

package vault_test

import (
	"context"
	"errors"
	"testing"

	"github.com/pdmp-agent/pdmp-agent/vault"
)

func TestPKCS11AbsentWithoutCgo(t *testing.T) {
	_, err := vault.Open(context.Background(), "pkcs11:token=t;object=o?module-path=/m.so&pin-value=1234")
	if !errors.Is(err, vault.ErrNoPKCS11) {
		t.Fatalf("err = %v, want ErrNoPKCS11", err)
	}
}
