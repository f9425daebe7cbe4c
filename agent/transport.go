package agent

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"

	"github.com/pdmp-agent/pdmp-agent/agent/config"
)

// HTTPClient builds the client for one responder: TLS 1.2 or newer with
// full verification, an optional private CA bundle and optional SPKI pins.
// Redirects are not followed: a token must never travel to another origin.
func HTTPClient(r config.Responder) (*http.Client, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if r.TLS.MinVersion == "1.3" {
		tc.MinVersion = tls.VersionTLS13
	}
	if r.TLS.CAFile != "" {
		pem, err := os.ReadFile(r.TLS.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificates", r.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	if len(r.TLS.SPKIPins) > 0 {
		pins := r.TLS.SPKIPins
		// Runs after normal verification, so pins narrow trust, never widen it.
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			for _, chain := range cs.VerifiedChains {
				for _, cert := range chain {
					sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
					if slices.Contains(pins, base64.StdEncoding.EncodeToString(sum[:])) {
						return nil
					}
				}
			}
			return errors.New("no certificate in the chain matches the configured SPKI pins")
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{
		Transport: tr,
		Timeout:   r.Timeout.D(config.DefaultTimeout),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}
