package ipc

import (
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
)

// These guards stop confused deputies, not local processes: a web page in
// the clinic's browser (directly, or through DNS rebinding), a proxy or an
// SSRF-prone service on the machine that can be made to send a request to
// the agent. Authentication (peer credentials, the pipe token, the bearer
// credential) is what stops other local processes.

// securityHeaders go on every response, errors included, so that a browser
// that somehow reached the API would neither cache, sniff, frame nor run
// what it got.
var securityHeaders = [][2]string{
	{"Cache-Control", "no-store"},
	{"X-Content-Type-Options", "nosniff"},
	{"Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"},
	{"X-Frame-Options", "DENY"},
}

// browserOrProxy returns why r looks like it came from a browser or
// through a proxy, or "" when it does not. Browsers add Origin to every
// cross-origin and every non-GET request, Referer to most others, and
// Sec-Fetch-* (which pages cannot forge or suppress) to all requests in
// current engines, including the <img> and no-referrer cases that carry
// neither Origin nor Referer. Proxies add X-Forwarded-For or Forwarded;
// a legitimate local caller sends none of these.
func browserOrProxy(h http.Header) string {
	switch {
	case h["Origin"] != nil:
		return "Origin header"
	case h["Referer"] != nil:
		return "Referer header"
	case h["X-Forwarded-For"] != nil, h["Forwarded"] != nil:
		return "forwarded request"
	}
	for k := range h {
		if strings.HasPrefix(k, "Sec-Fetch-") {
			return "browser fetch metadata"
		}
	}
	return ""
}

// hostAllowed reports whether the Host header names this machine's agent:
// the configured local name or a loopback literal, with any port; on a
// Unix socket or pipe also an empty Host. Anything else, such as
// attacker.example resolving to 127.0.0.1 in a DNS rebinding attack, is a
// browser that believes it talks to another site.
func hostAllowed(host, localName string, t Transport) bool {
	if host == "" {
		return t != TransportTCP
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	} else {
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	}
	if strings.EqualFold(h, "localhost") || strings.EqualFold(h, localName) {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// validToken reports whether s is a sane header token for an id we echo
// back or pass on: visible ASCII, bounded.
func validToken(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:]) //nolint:errcheck // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}
