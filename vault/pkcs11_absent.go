//go:build !cgo

package vault

import "context"

func init() {
	Register("pkcs11", func(context.Context, *URI) (Backend, string, error) { return nil, "", ErrNoPKCS11 })
}
