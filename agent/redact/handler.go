package redact

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Options configures NewHandler.
type Options struct {
	// Redactor holds the strings registered at run time; nil means none.
	Redactor *Redactor
	// SensitiveKeys are attribute keys whose values are replaced whole, in
	// addition to the built-in ones: patient, name, family, given,
	// birthdate, dob, address, ssn, mrn, identifier, token, access_token,
	// assertion, client_assertion, authorization, password, passphrase,
	// pin, pin-value, secret, key_material, body, and any key that starts
	// with patient, birth, family or given or ends in token, secret,
	// password or passphrase. Case, '_', '-', '.' and ' ' are ignored:
	// birthDate and birth_date are one key.
	SensitiveKeys []string
	// PlainKeys are attribute keys whose string values are identifiers the
	// agent made up, in addition to job, job_id, request_id, kid and
	// caller. The patterns would take a 32-hex-digit job id for a secret,
	// so only registered strings are cut from these values.
	PlainKeys []string
}

// maxDepth bounds how far into groups, structs and maps the handler goes;
// anything deeper is replaced, which also stops reference cycles.
const maxDepth = 8

// NewHandler returns a handler that redacts every record, and every
// attribute given to WithAttrs, before passing it to inner. It visits
// nested groups, resolves slog.LogValuers, and turns errors and
// fmt.Stringers into their text, so that an error wrapped from a library
// is scrubbed like any string. Other values (structs, maps, slices) become
// groups keyed by field name, JSON tag, map key or index, so that
// sensitive keys inside them are caught too.
//
// Numbers, booleans, times and durations pass unchanged: an identifier
// logged as a number is caught only by its key. Attributes given to
// WithAttrs are redacted once, when it is called: strings registered
// later are not cut from them.
func NewHandler(inner slog.Handler, opts Options) slog.Handler {
	h := &handler{inner: inner, r: opts.Redactor, sensitive: map[string]bool{}, plain: map[string]bool{}}
	for _, k := range opts.SensitiveKeys {
		h.sensitive[normKey(k)] = true
	}
	for _, k := range append([]string{"job", "job_id", "request_id", "kid", "caller"}, opts.PlainKeys...) {
		h.plain[normKey(k)] = true
	}
	return h
}

type handler struct {
	inner     slog.Handler
	r         *Redactor
	sensitive map[string]bool // Options.SensitiveKeys, normalised; never written after NewHandler
	plain     map[string]bool
	// redactAll is set under a WithGroup whose name is sensitive.
	redactAll bool
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.RedactString(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a, 0))
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = h.attr(a, 0)
	}
	c := *h
	c.inner = h.inner.WithAttrs(out)
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.inner = h.inner.WithGroup(name)
	c.redactAll = h.redactAll || h.sensitiveKey(normKey(name))
	return &c
}

// sensitiveKey reports whether values under n, a key normalised by
// normKey, are to be replaced whole.
func (h *handler) sensitiveKey(n string) bool { return h.sensitive[n] || sensitiveName(n) }

func (h *handler) attr(a slog.Attr, depth int) slog.Attr {
	if a.Key == "" {
		if a.Value.Kind() != slog.KindGroup {
			return a // handlers drop empty attributes
		}
		return slog.Attr{Value: h.value(a.Value, false, depth)} // handlers inline a group without a key
	}
	n := normKey(a.Key)
	if h.redactAll || h.sensitiveKey(n) {
		return slog.String(a.Key, Redacted)
	}
	return slog.Attr{Key: a.Key, Value: h.value(a.Value, h.plain[n], depth)}
}

func (h *handler) value(v slog.Value, plain bool, depth int) slog.Value {
	if depth > maxDepth {
		return slog.StringValue(Redacted)
	}
	v = v.Resolve() // a LogValue that panics resolves to an error, scrubbed below
	switch v.Kind() {
	case slog.KindString:
		return slog.StringValue(h.text(v.String(), plain))
	case slog.KindGroup:
		as := v.Group()
		out := make([]slog.Attr, len(as))
		for i, a := range as {
			out[i] = h.attr(a, depth+1)
		}
		return slog.GroupValue(out...)
	case slog.KindAny:
		return h.anyValue(v.Any(), plain, depth)
	}
	return v // numbers, booleans, times, durations
}

func (h *handler) text(s string, plain bool) string {
	if plain {
		return h.r.cut(s)
	}
	return h.r.RedactString(s)
}

// anyValue handles what slog leaves as KindAny: errors and Stringers by
// their text, everything else by its structure.
func (h *handler) anyValue(x any, plain bool, depth int) slog.Value {
	switch x := x.(type) {
	case nil:
		return slog.AnyValue(nil)
	case error, fmt.Stringer:
		// fmt.Sprint prefers Error to String and survives nil receivers
		// and methods that panic.
		return slog.StringValue(h.text(fmt.Sprint(x), plain))
	case []byte:
		return slog.StringValue(h.text(string(x), plain))
	}
	rv := reflect.ValueOf(x)
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return slog.StringValue("<nil>")
		}
		return h.value(slog.AnyValue(rv.Elem().Interface()), plain, depth+1)
	case reflect.Struct:
		var as []slog.Attr
		for f, fv := range rv.Fields() {
			if !f.IsExported() {
				continue
			}
			key := f.Name
			if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == "-" {
				continue
			} else if tag != "" {
				key = tag
			}
			as = append(as, h.attr(slog.Any(key, fv.Interface()), depth+1))
		}
		return slog.GroupValue(as...)
	case reflect.Map:
		as := make([]slog.Attr, 0, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			// The key may itself be an identity (a map keyed by name).
			key := h.r.RedactString(fmt.Sprint(it.Key().Interface()))
			as = append(as, h.attr(slog.Any(key, it.Value().Interface()), depth+1))
		}
		slices.SortFunc(as, func(a, b slog.Attr) int { return cmp.Compare(a.Key, b.Key) })
		return slog.GroupValue(as...)
	case reflect.Slice, reflect.Array:
		as := make([]slog.Attr, rv.Len())
		for i := range as {
			as[i] = h.attr(slog.Any(strconv.Itoa(i), rv.Index(i).Interface()), depth+1)
		}
		return slog.GroupValue(as...)
	case reflect.String:
		return slog.StringValue(h.text(rv.String(), plain))
	case reflect.Bool:
		return slog.BoolValue(rv.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return slog.Int64Value(rv.Int())
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return slog.Uint64Value(rv.Uint())
	case reflect.Float32, reflect.Float64:
		return slog.Float64Value(rv.Float())
	}
	return slog.StringValue(h.text(fmt.Sprint(x), plain)) // complex, func, chan
}
