package agent

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
)

func TestHTTPClientTLS(t *testing.T) {
	srv := pdmptest.NewServer(pdmptest.WithTLS())
	defer srv.Close()
	cert := srv.Certificate()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	pin := base64.StdEncoding.EncodeToString(sum[:])
	other := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		name string
		tls  config.TLS
		want string // "" for success, else an error substring
	}{
		{"system roots do not trust the sandbox", config.TLS{MinVersion: "1.2"}, "certificate"},
		{"private CA", config.TLS{MinVersion: "1.2", CAFile: ca}, ""},
		{"TLS 1.3 only", config.TLS{MinVersion: "1.3", CAFile: ca}, ""},
		{"matching SPKI pin", config.TLS{MinVersion: "1.2", CAFile: ca, SPKIPins: []string{other, pin}}, ""},
		{"wrong SPKI pin", config.TLS{MinVersion: "1.2", CAFile: ca, SPKIPins: []string{other}}, "SPKI pins"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc, err := HTTPClient(config.Responder{TLS: tt.tls})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Get(srv.FHIRBase + "/metadata")
			if tt.want == "" {
				if err != nil {
					t.Fatalf("GET: %v", err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestSameOrigin: a token goes only to its responder's own origin.
func TestSameOrigin(t *testing.T) {
	for _, tt := range []struct {
		target, base string
		same         bool
	}{
		{"https://pdmp.example/fhir/$pdmp-history", "https://pdmp.example/fhir", true},
		{"https://PDMP.example/r", "https://pdmp.example/fhir", true},
		{"https://pdmp.example:8443/r", "https://pdmp.example/fhir", false},
		{"http://pdmp.example/r", "https://pdmp.example/fhir", false},
		{"https://evil.example/r", "https://pdmp.example/fhir", false},
	} {
		if got := sameOrigin(tt.target, tt.base); got != tt.same {
			t.Errorf("sameOrigin(%s, %s) = %v", tt.target, tt.base, got)
		}
	}
}
