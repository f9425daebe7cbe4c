package ipc

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Credential is the secret that loopback TCP callers present as
// "Authorization: Bearer <credential>". A TCP port carries no identity: any
// process, and any web page, can connect to it. Being able to read the
// credential file, which only the agent's user and group can, is the proof
// of privilege (the pattern of Azure Arc's local identity endpoint and
// tailscale's sameuserproof).
type Credential struct {
	path   string
	secret []byte
}

// NewCredential makes a fresh random credential and writes it to path,
// replacing the previous one, so that a credential never outlives the
// agent run that issued it. The file is mode 0640; on Unix its group is
// set to group (a name or gid) when group is not empty, so that the
// group's members can read it. On Windows group must be empty: the file
// takes the ACL of its directory. The directory is created 0750 if missing.
func NewCredential(path, group string) (*Credential, error) {
	var raw [32]byte
	rand.Read(raw[:]) //nolint:errcheck // crypto/rand.Read never fails
	secret := []byte(base64.RawURLEncoding.EncodeToString(raw[:]))
	if err := writeFileAtomic(path, secret, group); err != nil {
		return nil, fmt.Errorf("ipc: credential file: %w", err)
	}
	return &Credential{path: path, secret: secret}, nil
}

// Path is where the credential was written; the 401 answer names it.
func (c *Credential) Path() string { return c.path }

// matches compares in constant time, so the time an answer takes says
// nothing about how much of a guess was right.
func (c *Credential) matches(presented string) bool {
	return subtle.ConstantTimeCompare([]byte(presented), c.secret) == 1
}

// challenge is the WWW-Authenticate value of a 401: it tells a caller
// where the credential is, which is only useful to one that can read it.
func (c *Credential) challenge() string {
	return `Bearer realm="pdmp-agent", credential_file=` + quote(c.path)
}

// quote makes an RFC 9110 quoted-string; Windows paths are full of
// backslashes, which must be escaped.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// bearer extracts the token of an "Authorization: Bearer" header.
func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// writeFileAtomic writes a temporary file beside path, syncs it and
// renames it over path, then syncs the directory: a reader sees the old
// file or the new one, never a torn one, and a crash cannot leave an empty
// file behind. The permissions are set before any byte of the secret is
// written.
func writeFileAtomic(path string, data []byte, group string) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o640); err != nil {
		return err
	}
	if err := setFileGroup(f.Name(), group); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}
