package redact

import (
	"strings"
)

// The patterns are hand-written passes rather than regular expressions:
// every log line goes through them, and Go's regexp spent tens of
// microseconds per line on the combined pattern. Each pass scans s once,
// jumping between candidate bytes with strings.Index, and returns s itself
// when it finds nothing, so a clean string costs no allocation.
//
// Order matters. Shapes with a clear extent (PEM, JWS, Bearer) go first;
// then long base64 or hex runs, so that a digit rule cannot cut a key in
// two and leave half of it; the passes that look for identities inside
// text come last and also see inside runs that were not random enough to
// be secrets (a file path holding a date).
var passes = []func(string) string{pemBlocks, jwsTokens, bearerTokens, blobs, keyValues, jsonMembers, emails, numbers}

// scrub applies the patterns.
func scrub(s string) string {
	for _, pass := range passes {
		s = pass(s)
	}
	return s
}

// editor rebuilds a string with some spans replaced, allocating only once
// the first replacement is made. Spans must come in order.
type editor struct {
	s    string
	b    strings.Builder
	last int
}

func (e *editor) replace(start, end int, with string) {
	if e.b.Len() == 0 {
		e.b.Grow(len(e.s))
	}
	e.b.WriteString(e.s[e.last:start])
	e.b.WriteString(with)
	e.last = end
}

func (e *editor) String() string {
	if e.b.Len() == 0 {
		return e.s // nothing replaced
	}
	e.b.WriteString(e.s[e.last:])
	return e.b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isAlnum(c byte) bool { return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'z' }

// isB64 reports whether c can occur in base64 (standard or URL-safe)
// other than as padding.
func isB64(c byte) bool { return isAlnum(c) || c == '+' || c == '/' || c == '_' || c == '-' }

func isB64URL(c byte) bool { return isAlnum(c) || c == '_' || c == '-' }

// pemBlocks removes PEM blocks, and the rest of the text after a BEGIN
// line with no END (a block cut short is still key material).
func pemBlocks(s string) string {
	e := editor{s: s}
	for i := 0; ; {
		j := strings.Index(s[i:], "-----BEGIN ")
		if j < 0 {
			break
		}
		start, end := i+j, len(s)
		if k := strings.Index(s[start:], "-----END "); k >= 0 {
			after := start + k + len("-----END ")
			if m := strings.Index(s[after:], "-----"); m >= 0 {
				end = after + m + len("-----")
			}
		}
		e.replace(start, end, Redacted)
		i = end
	}
	return e.String()
}

// jwsTokens removes JWS and JWE compact serialisations: base64url segments
// joined by dots, the first being a JSON header ("eyJ" is base64 for `{"`).
func jwsTokens(s string) string {
	e := editor{s: s}
	for i := 0; ; {
		j := strings.Index(s[i:], "eyJ")
		if j < 0 {
			break
		}
		start, end, dots := i+j, i+j, 0
		for end < len(s) && (isB64URL(s[end]) || s[end] == '.') {
			if s[end] == '.' {
				dots++
			}
			end++
		}
		for s[end-1] == '.' { // a full stop after the token
			end--
			dots--
		}
		if dots >= 2 && (start == 0 || !isB64URL(s[start-1])) {
			e.replace(start, end, Redacted)
			i = end
		} else {
			i = start + len("eyJ")
		}
	}
	return e.String()
}

// bearerTokens removes the credential after "Bearer" (any case), as in an
// Authorization header. Eight characters at least, so that prose such as
// "bearer token missing" survives.
func bearerTokens(s string) string {
	e := editor{s: s}
	for i := 0; ; {
		j := indexFold(s[i:], "bearer")
		if j < 0 {
			break
		}
		word := i + j
		start := word + len("bearer")
		i = start
		if word > 0 && isAlnum(s[word-1]) {
			continue
		}
		tok := start
		for tok < len(s) && (s[tok] == ' ' || s[tok] == '\t') {
			tok++
		}
		end := tok
		for end < len(s) && (isB64(s[end]) || strings.IndexByte("._~=", s[end]) >= 0) {
			end++
		}
		if tok > start && end-tok >= 8 {
			e.replace(tok, end, Redacted)
			i = end
		}
	}
	return e.String()
}

// indexFold is strings.Index ignoring ASCII case; word is lowercase.
func indexFold(s, word string) int {
	for i := 0; i+len(word) <= len(s); i++ {
		if s[i]|0x20 == word[0] && strings.EqualFold(s[i:i+len(word)], word) {
			return i
		}
	}
	return -1
}

// blobs removes runs of 32 or more base64 or hex characters that look
// random: tokens, keys, hashes. A run that does not (a path, a long
// identifier) is left to the later passes.
func blobs(s string) string {
	e := editor{s: s}
	for i := 0; i < len(s); {
		if !isB64(s[i]) {
			i++
			continue
		}
		start := i
		for i < len(s) && isB64(s[i]) {
			i++
		}
		if i-start < 32 || !looksRandom(s[start:i]) {
			continue
		}
		for n := 0; n < 2 && i < len(s) && s[i] == '='; n++ {
			i++
		}
		e.replace(start, i, Redacted)
	}
	return e.String()
}

// looksRandom tells key material, tokens and hashes from paths and long
// identifiers made of words: random base64 of this length all but surely
// holds digits and both cases, and hex is all hex digits.
func looksRandom(s string) bool {
	var digit, lower, upper bool
	hex := true
	for _, c := range []byte(s) {
		switch {
		case isDigit(c):
			digit = true
		case 'a' <= c && c <= 'z':
			lower = true
			hex = hex && c <= 'f'
		case 'A' <= c && c <= 'Z':
			upper = true
			hex = hex && c <= 'F'
		default:
			hex = false
		}
	}
	return hex || (digit && lower && upper)
}

// keyValues removes the values of sensitive keys written key=value, as in
// query strings, form bodies, command lines and text logs:
// "family=Doe&pin-value=1234" becomes "family=[REDACTED]&pin-value=[REDACTED]".
func keyValues(s string) string {
	e := editor{s: s}
	for i := 0; ; {
		j := strings.IndexByte(s[i:], '=')
		if j < 0 {
			break
		}
		eq := i + j
		i = eq + 1
		k := eq
		for k > 0 && (isAlnum(s[k-1]) || s[k-1] == '_' || s[k-1] == '-') {
			k--
		}
		if k == eq || !sensitiveName(normKey(s[k:eq])) {
			continue
		}
		end := eq + 1
		for end < len(s) && strings.IndexByte("&;,'\" \t\r\n", s[end]) < 0 {
			end++
		}
		if end > eq+1 {
			e.replace(eq+1, end, Redacted)
			i = end
		}
	}
	return e.String()
}

// jsonMembers replaces the values of sensitive members in JSON text, such
// as a response body quoted in an error: {"birthDate":"1970-01-01"}
// becomes {"birthDate":"[REDACTED]"}, whatever the value's type or depth.
func jsonMembers(s string) string {
	if !strings.Contains(s, `":`) && !strings.Contains(s, `" :`) {
		return s
	}
	e := editor{s: s}
	for i := 0; ; {
		j := strings.IndexByte(s[i:], '"')
		if j < 0 {
			break
		}
		open := i + j
		shut := skipJSON(s, open)
		i = shut
		colon := skipSpace(s, shut)
		if colon >= len(s) || s[colon] != ':' || !sensitiveName(normKey(s[open+1:shut-1])) {
			continue
		}
		start := skipSpace(s, colon+1)
		end := skipJSON(s, start)
		if end > start {
			e.replace(start, end, `"`+Redacted+`"`)
			i = end
		}
	}
	return e.String()
}

func skipSpace(s string, i int) int {
	for i < len(s) && strings.IndexByte(" \t\r\n", s[i]) >= 0 {
		i++
	}
	return i
}

// skipJSON returns the end of the JSON value that starts at s[i]: a
// string, an array or object (nesting and strings inside respected), or a
// scalar. Text that ends early ends the value.
func skipJSON(s string, i int) int {
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '"':
		for i++; i < len(s); i++ {
			switch s[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return len(s)
	case '[', '{':
		depth := 0
		for i < len(s) {
			switch s[i] {
			case '"':
				i = skipJSON(s, i)
				continue
			case '[', '{':
				depth++
			case ']', '}':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(s)
	}
	for i < len(s) && strings.IndexByte(",}] \t\r\n", s[i]) < 0 {
		i++
	}
	return i
}

// emails removes e-mail addresses.
func emails(s string) string {
	e := editor{s: s}
	for i := 0; ; {
		j := strings.IndexByte(s[i:], '@')
		if j < 0 {
			break
		}
		at := i + j
		i = at + 1
		start := at
		for start > 0 && (isAlnum(s[start-1]) || strings.IndexByte("._%+-", s[start-1]) >= 0) {
			start--
		}
		end := at + 1
		for end < len(s) && (isAlnum(s[end]) || s[end] == '.' || s[end] == '-') {
			end++
		}
		for end > at+1 && (s[end-1] == '.' || s[end-1] == '-') {
			end--
		}
		dot := strings.LastIndexByte(s[at+1:end], '.')
		if start == at || dot < 1 || !allLetters(s[at+2+dot:end]) || end-(at+2+dot) < 2 {
			continue
		}
		e.replace(start, end, Redacted)
		i = end
	}
	return e.String()
}

func allLetters(s string) bool {
	for _, c := range []byte(s) {
		if !isAlnum(c) || isDigit(c) {
			return false
		}
	}
	return true
}

// Shapes of numbers that identify a person. In a shape, 9 is a digit, ?
// an optional digit, ~ a dash or dot, _ an optional space; anything else
// stands for itself.
var identityShapes = []string{
	"999-99-9999",    // SSN
	"9999-99-99",     // ISO date (unless a time follows)
	"9?/9?/9999",     // US date
	"(999)_999~9999", // US phone numbers
	"999~999~9999",
}

// numbers removes birth-date-like dates, SSNs and phone numbers standing
// as words, and any run of nine or more digits (MRNs, member and account
// numbers, NPIs) wherever it is.
func numbers(s string) string {
	e := editor{s: s}
	for i := 0; i < len(s); {
		if !isDigit(s[i]) && s[i] != '(' {
			i++
			continue
		}
		if i == 0 || !isAlnum(s[i-1]) {
			if end, shape := matchShapes(s, i); end > 0 {
				if shape == "9999-99-99" && isTime(s[end:]) {
					i = end // a timestamp, not a birth date
					continue
				}
				e.replace(i, end, Redacted)
				i = end
				continue
			}
		}
		start := i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		if i-start >= 9 {
			e.replace(start, i, Redacted)
		}
		if i == start {
			i++ // a '(' that starts no phone number
		}
	}
	return e.String()
}

// matchShapes returns the end of the first identity shape that s[i:]
// matches as a whole word, and that shape.
func matchShapes(s string, i int) (end int, shape string) {
	for _, shape := range identityShapes {
		if end := matchShape(s, i, shape); end > 0 && (end == len(s) || !isAlnum(s[end])) {
			return end, shape
		}
	}
	return 0, ""
}

// matchShape returns the end of shape matched at s[i:], or 0.
func matchShape(s string, i int, shape string) int {
	for _, c := range []byte(shape) {
		if c == '?' || c == '_' { // optional: take it if present
			if i < len(s) && (c == '?' && isDigit(s[i]) || c == '_' && s[i] == ' ') {
				i++
			}
			continue
		}
		if i >= len(s) {
			return 0
		}
		switch c {
		case '9':
			if !isDigit(s[i]) {
				return 0
			}
		case '~':
			if s[i] != '-' && s[i] != '.' {
				return 0
			}
		default:
			if s[i] != c {
				return 0
			}
		}
		i++
	}
	return i
}

// isTime reports whether s starts with a time of day ("T15:04", " 15:04").
func isTime(s string) bool {
	return len(s) >= 6 && (s[0] == 'T' || s[0] == ' ') && matchShape(s, 1, "99:99") == 6
}

// sensitiveName reports whether a key (normalised by normKey) names a
// patient's data or a secret: a listed name, or one that plainly says so
// (patient_name, birth_place, refresh_token, client_secret).
func sensitiveName(n string) bool {
	if sensitiveNames[n] {
		return true
	}
	for _, p := range []string{"patient", "birth", "family", "given"} {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	for _, s := range []string{"token", "secret", "password", "passphrase"} {
		if strings.HasSuffix(n, s) {
			return true
		}
	}
	return false
}

var sensitiveNames = map[string]bool{
	"patient": true, "name": true, "family": true, "given": true, "birthdate": true, "dob": true,
	"address": true, "ssn": true, "mrn": true, "identifier": true,
	"token": true, "accesstoken": true, "assertion": true, "clientassertion": true, "authorization": true,
	"password": true, "passphrase": true, "pin": true, "pinvalue": true, "secret": true, "keymaterial": true,
	"body": true,
}

// normKey folds the spellings of a key: birthDate, birth_date and
// birth-date are one key.
func normKey(k string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r == '.' || r == ' ' {
			return -1
		}
		return r
	}, strings.ToLower(k))
}
