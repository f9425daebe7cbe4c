package vault

import "errors"

// The PKCS#11 declarations below exist in every build, with or without cgo,
// so callers can branch on them without build tags of their own.

var (
	// ErrPIN means the token rejected the PIN. The backend presents a given
	// PIN to a given token at most once per process: fix the PIN source and
	// open the URI again.
	ErrPIN = errors.New("PKCS#11 login failed: wrong PIN — not retried, to avoid locking the token")

	// ErrNoPKCS11 is returned for pkcs11: URIs by builds without cgo, which
	// cannot load a PKCS#11 module.
	ErrNoPKCS11 = errors.New("vault: this build has no PKCS#11 support (built without cgo); use a build with CGO_ENABLED=1")
)

// PKCS11URIWarnings returns what an operator should hear about a pkcs11:
// URI that works but is unwise. It returns nil for other schemes.
func PKCS11URIWarnings(u *URI) []string {
	if u.Scheme != "pkcs11" {
		return nil
	}
	var w []string
	if pkcs11HasAttr(u, "pin-value") {
		w = append(w, "the key URI carries the PIN in pin-value, where configuration files, "+
			"process listings and support bundles can show it; use pin-source=file:/path to a chmod 600 file")
	}
	if pkcs11HasAttr(u, "slot-id") {
		w = append(w, "the key URI selects the token by slot-id, which can change when tokens are "+
			"added or the module is updated; prefer token= (label) or serial=")
	}
	return w
}

func pkcs11HasAttr(u *URI, k string) bool {
	_, inPath := u.Path[k]
	_, inQuery := u.Query[k]
	return inPath || inQuery
}
