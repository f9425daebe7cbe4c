package pdmptest

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Errors returned by Authorize; a FHIR handler answers ErrInvalidToken
// with 401 and ErrInsufficientScope with 403.
var (
	ErrInvalidToken      = errors.New("pdmptest: invalid bearer token")
	ErrInsufficientScope = errors.New("pdmptest: insufficient scope")
)

// Authorize checks that r carries "Authorization: Bearer <token>" with a
// token issued by s that is still valid and whose scopes grant wantScope,
// e.g. "system/MedicationDispense.rs". SMART v1 (.read/.write/.*) and v2
// (.cruds) forms are interchangeable on both sides: system/*.read grants
// system/Patient.rs and vice versa. Scopes restricted by a v2 query
// (system/Observation.rs?category=...) never grant anything here.
func (s *Server) Authorize(r *http.Request, wantScope string) (TokenInfo, error) {
	want, ok := parseScope(wantScope)
	if !ok || want.restricted {
		return TokenInfo{}, fmt.Errorf("pdmptest: Authorize: invalid wantScope %q", wantScope)
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return TokenInfo{}, fmt.Errorf("%w: no bearer token", ErrInvalidToken)
	}
	info, ok := s.Introspect(token)
	if !ok {
		return TokenInfo{}, fmt.Errorf("%w: unknown, expired or revoked", ErrInvalidToken)
	}
	// Permissions may be spread over several scopes, e.g.
	// system/Patient.r + system/*.s grants system/Patient.rs.
	var have perm
	for _, raw := range strings.Fields(info.Scope) {
		if sc, ok := parseScope(raw); ok && !sc.restricted && (sc.resource == "*" || sc.resource == want.resource) {
			have |= sc.perms
		}
	}
	if have&want.perms != want.perms {
		return TokenInfo{}, fmt.Errorf("%w: %q does not grant %s", ErrInsufficientScope, info.Scope, wantScope)
	}
	return info, nil
}

// perm is a set of SMART v2 permissions.
type perm uint8

const (
	permC perm = 1 << iota
	permR
	permU
	permD
	permS
)

// scope is a parsed SMART system scope.
type scope struct {
	resource   string // FHIR resource type or "*"
	perms      perm
	restricted bool // v2 query suffix present
}

// parseScope parses system/<Resource|*>.<read|write|*|cruds>[?query].
func parseScope(s string) (scope, bool) {
	rest, ok := strings.CutPrefix(s, "system/")
	if !ok {
		return scope{}, false
	}
	rest, _, restricted := strings.Cut(rest, "?")
	res, p, ok := strings.Cut(rest, ".")
	if !ok || !validResource(res) {
		return scope{}, false
	}
	sc := scope{resource: res, restricted: restricted}
	switch p {
	case "read": // v1
		sc.perms = permR | permS
	case "write":
		sc.perms = permC | permU | permD
	case "*":
		sc.perms = permC | permR | permU | permD | permS
	default: // v2: a non-empty subsequence of "cruds", in that order
		const letters = "cruds"
		next := 0
		for i := range len(p) {
			j := strings.IndexByte(letters[next:], p[i])
			if j < 0 {
				return scope{}, false
			}
			next += j + 1
			sc.perms |= 1 << (next - 1)
		}
		if sc.perms == 0 {
			return scope{}, false
		}
	}
	return sc, true
}

func validResource(res string) bool {
	if res == "*" {
		return true
	}
	if res == "" || res[0] < 'A' || res[0] > 'Z' {
		return false
	}
	for _, r := range res {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return false
		}
	}
	return true
}

// requestedScopes parses the scope parameter of a token request.
func requestedScopes(raw string) ([]string, *oauthError) {
	var out []string
	for _, sc := range strings.Fields(raw) {
		if !strings.HasPrefix(sc, "system/") {
			return nil, invalidScope("scope %s is not a system/ scope", sc)
		}
		if _, ok := parseScope(sc); !ok {
			return nil, invalidScope("scope %s is not a valid SMART system scope", sc)
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return nil, invalidScope("scope missing")
	}
	return out, nil
}

// grantScopes narrows the requested scopes to the client's allow-list.
func grantScopes(c *client, requested []string) ([]string, *oauthError) {
	if len(c.scopes) == 0 {
		return requested, nil
	}
	var granted []string
	for _, sc := range requested {
		if slices.Contains(c.scopes, sc) {
			granted = append(granted, sc)
		}
	}
	if len(granted) == 0 {
		return nil, invalidScope("none of the requested scopes is allowed for client %s", c.id)
	}
	return granted, nil
}
