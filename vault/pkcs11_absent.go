//go:build !cgo

package vault

import (
	"context"
	"errors"
)

// ErrNoPKCS11 is returned for pkcs11: URIs by builds without cgo, which
// cannot load a PKCS#11 module.
var ErrNoPKCS11 = errors.New("vault: this build has no PKCS#11 support (built without cgo); use a build with CGO_ENABLED=1")

func init() {
	Register("pkcs11", func(context.Context, *URI) (Backend, string, error) { return nil, "", ErrNoPKCS11 })
}
