package vaulttest

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

const (
	SoftHSMPIN   = "1234"
	SoftHSMSOPIN = "5678"
)

// SoftHSMModules are where distributions install SoftHSM2's module.
var SoftHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

var seq atomic.Int64

// SoftHSM is a throwaway SoftHSM2 token. SoftHSM2 reads $SOFTHSM2_CONF when
// the module is initialized, that is when no ring on it is open; tests using
// one must therefore not run in parallel, and close every ring they open.
type SoftHSM struct {
	Module   string
	Conf     string // $SOFTHSM2_CONF
	TokenDir string // directories.tokendir
	Label    string
	PINFile  string
}

// RequirePKCS11 skips a test that lacks SoftHSM2 or OpenSC, unless
// PDMP_TEST_PKCS11 is set (CI sets it) and so the lack is a failure.
func RequirePKCS11(tb testing.TB, missing string) {
	tb.Helper()
	if os.Getenv("PDMP_TEST_PKCS11") != "" {
		tb.Fatalf("PDMP_TEST_PKCS11 is set but %s", missing)
	}
	tb.Skipf("%s; install softhsm2 and opensc (CI sets PDMP_TEST_PKCS11=1 to make this a failure)", missing)
}

func FirstExisting(paths []string) string {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func NewSoftHSM(tb testing.TB) *SoftHSM {
	tb.Helper()
	module := FirstExisting(SoftHSMModules)
	if module == "" {
		RequirePKCS11(tb, "no SoftHSM2 module in "+strings.Join(SoftHSMModules, ", "))
	}
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		RequirePKCS11(tb, "softhsm2-util is not on $PATH")
	}
	dir := tb.TempDir()
	h := &SoftHSM{
		Module:   module,
		TokenDir: filepath.Join(dir, "tokens"),
		Label:    fmt.Sprintf("pdmp-test-%d", seq.Add(1)),
		PINFile:  filepath.Join(dir, "pin"),
	}
	h.Conf = filepath.Join(dir, "softhsm2.conf")
	WriteFile(tb, h.Conf, fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", h.TokenDir))
	if err := os.Mkdir(h.TokenDir, 0o700); err != nil {
		tb.Fatal(err)
	}
	tb.Setenv("SOFTHSM2_CONF", h.Conf)
	out, err := exec.Command(util, "--init-token", "--free", "--label", h.Label, "--pin", SoftHSMPIN, "--so-pin", SoftHSMSOPIN).CombinedOutput()
	if err != nil {
		tb.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	WriteFile(tb, h.PINFile, SoftHSMPIN+"\n")
	return h
}

// WriteFile writes a 0600 file or fails the test.
func WriteFile(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// URI names the ring labelled object on h's token.
func (h *SoftHSM) URI(object string) string {
	return h.URIWith(object, h.Module, h.PINFile)
}

func (h *SoftHSM) URIWith(object, module, pinFile string) string {
	return fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s&pin-source=%s",
		url.PathEscape(h.Label), url.PathEscape(object), url.QueryEscape(module), url.QueryEscape("file:"+pinFile))
}
