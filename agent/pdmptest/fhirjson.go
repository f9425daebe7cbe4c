package pdmptest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// The responder builds FHIR resources as generic JSON values: objects are
// map[string]any, arrays []any, numbers json.Number (so that decimals from
// the embedded responses keep their exact spelling).
type (
	object = map[string]any
	array  = []any
)

// decodeJSON decodes one JSON value, keeping numbers as json.Number.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON value")
	}
	return v, nil
}

// marshalFHIR encodes v as JSON with "resourceType" first in every object
// and the other keys sorted, as FHIR JSON is conventionally written (key
// order carries no meaning, but readers and naive streaming parsers
// expect resourceType first). HTML is not escaped, so narratives stay
// readable.
func marshalFHIR(v any) []byte {
	var buf bytes.Buffer
	appendFHIR(&buf, v)
	return buf.Bytes()
}

func appendFHIR(buf *bytes.Buffer, v any) {
	switch v := v.(type) {
	case object:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b string) int {
			switch {
			case a == b:
				return 0
			case a == "resourceType":
				return -1
			case b == "resourceType":
				return 1
			case a < b:
				return -1
			default:
				return 1
			}
		})
		buf.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			appendScalar(buf, k)
			buf.WriteByte(':')
			appendFHIR(buf, v[k])
		}
		buf.WriteByte('}')
	case array:
		buf.WriteByte('[')
		for i, e := range v {
			if i > 0 {
				buf.WriteByte(',')
			}
			appendFHIR(buf, e)
		}
		buf.WriteByte(']')
	default:
		appendScalar(buf, v)
	}
}

func appendScalar(buf *bytes.Buffer, v any) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("pdmptest: cannot encode %T: %v", v, err)) // a bug in this package
	}
	buf.Truncate(buf.Len() - 1) // Encode's newline
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Small accessors for generic JSON.

func getObject(m object, key string) (object, bool) {
	v, ok := m[key].(object)
	return v, ok
}

func getArray(m object, key string) (array, bool) {
	v, ok := m[key].(array)
	return v, ok
}

func getString(m object, key string) (string, bool) {
	v, ok := m[key].(string)
	return v, ok
}
