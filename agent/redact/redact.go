// Package redact keeps PHI and secrets out of the agent's logs and crash
// output. [NewHandler] wraps a log/slog handler so that every attribute
// and message passes through it; [RedactString] does the same for text
// such as a panic and its stack.
//
// Three rules apply, most precise first:
//
//   - values under sensitive keys (patient, name, birthdate, token, pin, …)
//     are replaced whole, whatever they hold;
//   - strings registered at run time with [Redactor.Add] (the access
//     tokens the agent holds, the names in the request being served) are
//     cut out wherever they appear;
//   - patterns catch what slipped through: JWS/JWT, bearer tokens, PEM
//     blocks, long random-looking base64 or hex, dates (but not timestamps
//     with a time of day), SSNs, runs of nine or more digits, e-mail
//     addresses, US phone numbers, and the values of sensitive keys in
//     key=value text (query strings, form bodies) and in JSON text.
//
// Patterns are a safety net, not a guarantee: a bare name in free text is
// caught only if it was registered. Code that logs must still log no PHI.
//
// A crash handler should pass the panic value and stack through
// [Redactor.RedactString], which also cuts the registered strings, or
// [RedactString] when it has no Redactor.
package redact

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// Redacted replaces whatever is removed.
const Redacted = "[REDACTED]"

// Redactor is a set of literal strings to cut out of logs, changed at run
// time: the agent adds each access token it obtains and, for the duration
// of a request, the patient's names. Matching ignores case. Strings
// shorter than four characters match only as whole words, so that
// registering "Li" or "Eve" does not shred "list" and "event".
//
// Add and Remove pair up: a string added twice (two requests for the same
// patient) stays until it has been removed twice. The zero value is an
// empty set; a Redactor must not be copied after first use. Its methods
// are safe for concurrent use and cheap for readers, which never block.
type Redactor struct {
	mu     sync.Mutex
	counts map[string]int // lowercased string → times added
	set    atomic.Pointer[[]secret]
}

type secret struct {
	text string // lowercased
	word bool   // match only between non-alphanumerics
}

// minSubstring is the length from which a registered string is matched
// anywhere, not just as a whole word.
const minSubstring = 4

// Add registers s. Empty strings are ignored.
func (r *Redactor) Add(s string) {
	s = strings.ToLower(s)
	if s == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[s]++
	if r.counts[s] == 1 {
		r.publish()
	}
}

// Remove undoes one Add of s.
func (r *Redactor) Remove(s string) {
	s = strings.ToLower(s)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.counts[s] {
	case 0:
	case 1:
		delete(r.counts, s)
		r.publish()
	default:
		r.counts[s]--
	}
}

// publish makes a new snapshot for readers.
func (r *Redactor) publish() {
	set := make([]secret, 0, len(r.counts))
	for s := range r.counts {
		set = append(set, secret{text: s, word: utf8.RuneCountInString(s) < minSubstring})
	}
	r.set.Store(&set)
}

// RedactString removes registered strings, then pattern matches, from s.
// A nil Redactor applies the patterns only.
func (r *Redactor) RedactString(s string) string {
	return scrub(r.cut(s))
}

// RedactString removes pattern matches from s: secrets and identities that
// have a recognisable shape. It is meant for text that did not go through
// the log handler, such as a panic value and its stack trace.
func RedactString(s string) string { return scrub(s) }

// cut replaces every occurrence of a registered string in s.
func (r *Redactor) cut(s string) string {
	if r == nil || s == "" {
		return s
	}
	p := r.set.Load()
	if p == nil || len(*p) == 0 {
		return s
	}
	// Search a lowercased copy and cut the original at the same offsets.
	// Lowercasing a few exotic runes changes their length; for those rare
	// strings fold ASCII only, which keeps offsets aligned.
	low := strings.ToLower(s)
	if len(low) != len(s) {
		low = asciiLower(s)
	}
	var spans [][2]int
	for _, sec := range *p {
		for i := 0; ; {
			j := strings.Index(low[i:], sec.text)
			if j < 0 {
				break
			}
			start, end := i+j, i+j+len(sec.text)
			if !sec.word || (wordEdge(low[:start], true) && wordEdge(low[end:], false)) {
				spans = append(spans, [2]int{start, end})
			}
			i = start + 1
		}
	}
	if spans == nil {
		return s
	}
	// Matches of different strings may overlap ("john doe", "doe"):
	// cut their union.
	slices.SortFunc(spans, func(a, b [2]int) int { return a[0] - b[0] })
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		if sp[1] <= last {
			continue // inside a span already cut
		}
		if sp[0] >= last {
			b.WriteString(s[last:sp[0]])
			b.WriteString(Redacted)
		}
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// wordEdge reports whether the text beside a match (before it if before,
// after it otherwise) does not continue a word.
func wordEdge(beside string, before bool) bool {
	var c rune
	if before {
		c, _ = utf8.DecodeLastRuneInString(beside)
	} else {
		c, _ = utf8.DecodeRuneInString(beside)
	}
	return beside == "" || !(unicode.IsLetter(c) || unicode.IsDigit(c))
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
