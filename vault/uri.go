package vault

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// URI is a parsed key URI. Both schemes share RFC 7512's shape:
// "scheme:" then path attributes separated by ';' ("name=value", or a bare
// name for keyring), then an optional "?" and query attributes separated
// by '&'. Values are percent-decoded.
//
//	keyring:reg-a?backend=file&dir=/var/lib/pdmp-agent/keyring&passphrase-file=/etc/pdmp-agent/keyring.pass
//	pkcs11:token=pdmp;object=agent-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pdmp-agent/pin
type URI struct {
	Scheme string
	// Name is a bare first path segment without '=' (keyring's key name).
	Name  string
	Path  map[string]string
	Query map[string]string
}

// secretAttrs are never printed.
var secretAttrs = []string{"pin-value", "passphrase"}

// ParseURI parses a key URI. Errors never echo attribute values, which may
// hold a PIN.
func ParseURI(s string) (*URI, error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || scheme == "" || strings.ContainsAny(scheme, "/?;=") {
		return nil, fmt.Errorf("%w: want scheme:attributes, e.g. keyring:name", ErrBadURI)
	}
	u := &URI{Scheme: strings.ToLower(scheme), Path: map[string]string{}, Query: map[string]string{}}
	path, query, _ := strings.Cut(rest, "?")
	for i, seg := range strings.Split(path, ";") {
		if seg == "" {
			continue
		}
		k, v, hasEq := strings.Cut(seg, "=")
		if hasEq && k == "" {
			return nil, fmt.Errorf("%w: path attribute %d has no name", ErrBadURI, i+1)
		}
		if !hasEq {
			if i != 0 {
				return nil, fmt.Errorf("%w: path attribute %d has no '='", ErrBadURI, i+1)
			}
			k, v = "", k
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("%w: bad escape in attribute %q", ErrBadURI, k)
		}
		if k == "" {
			u.Name = dv
			continue
		}
		if _, dup := u.Path[k]; dup {
			return nil, fmt.Errorf("%w: attribute %q repeated", ErrBadURI, k)
		}
		u.Path[k] = dv
	}
	if query != "" {
		for _, seg := range strings.Split(query, "&") {
			k, v, _ := strings.Cut(seg, "=")
			dv, err := url.QueryUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("%w: bad escape in query attribute %q", ErrBadURI, k)
			}
			if _, dup := u.Query[k]; dup {
				return nil, fmt.Errorf("%w: query attribute %q repeated", ErrBadURI, k)
			}
			u.Query[k] = dv
		}
	}
	return u, nil
}

// Redacted formats the URI with secret attribute values replaced, for logs
// and errors.
func (u *URI) Redacted() string { return u.format(true) }

// String formats the URI in full, secrets included; use Redacted for
// anything a person or a log may see.
func (u *URI) String() string { return u.format(false) }

func (u *URI) format(hide bool) string {
	// PathEscape leaves '=' alone, but in a path attribute it separates
	// name from value.
	pathEsc := func(v string) string { return strings.ReplaceAll(url.PathEscape(v), "=", "%3D") }
	value := func(k, v string, esc func(string) string) string {
		if hide && slices.Contains(secretAttrs, k) {
			return "REDACTED"
		}
		return esc(v)
	}
	var b strings.Builder
	b.WriteString(u.Scheme)
	b.WriteByte(':')
	b.WriteString(pathEsc(u.Name))
	first := u.Name == ""
	for _, k := range sortedKeys(u.Path) {
		if !first {
			b.WriteByte(';')
		}
		first = false
		b.WriteString(k + "=" + value(k, u.Path[k], pathEsc))
	}
	for i, k := range sortedKeys(u.Query) {
		if i == 0 {
			b.WriteByte('?')
		} else {
			b.WriteByte('&')
		}
		b.WriteString(k + "=" + value(k, u.Query[k], url.QueryEscape))
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// Attr returns a path or query attribute, path first.
func (u *URI) Attr(k string) string {
	if v, ok := u.Path[k]; ok {
		return v
	}
	return u.Query[k]
}

// CheckURI reports whether uri is well formed and names a backend this
// build has, without opening it.
func CheckURI(uri string) error {
	u, err := ParseURI(uri)
	if err != nil {
		return err
	}
	registryMu.RLock()
	_, ok := registry[u.Scheme]
	registryMu.RUnlock()
	if !ok {
		return fmt.Errorf("%w %q (have keyring, pkcs11)", ErrNoBackend, u.Scheme)
	}
	return nil
}

// Sibling returns uri with its key name replaced by name, so a secret can
// live in the same store as a registration's key. Only keyring URIs have a
// bare name to replace.
func Sibling(uri, name string) (string, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return "", err
	}
	switch {
	case u.Name != "":
		u.Name = name
	case u.Path["object"] != "":
		u.Path["object"] = name
	default:
		return "", fmt.Errorf("%w: %s has no key name", ErrBadURI, u.Redacted())
	}
	return u.String(), nil
}
