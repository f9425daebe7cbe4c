package pdmp

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Systems of the identifiers and codes a PDMP history carries.
const (
	SystemNPI       = "http://hl7.org/fhir/sid/us-npi"
	SystemRxNorm    = "http://www.nlm.nih.gov/research/umls/rxnorm"
	SystemNDC       = "http://hl7.org/fhir/sid/ndc"
	SystemPMIXAlert = "http://terminology.hl7.org/CodeSystem/PMIXPatientAlertCatCode"
)

// Code systems of the pdmp-response-status value set.
const (
	systemPMIXStatus = "http://terminology.hl7.org/CodeSystem/PMIXStatusCode"
	systemPDMPStatus = "http://hl7.org/fhir/us/pdmp/CodeSystem/temporary-pdmp-response-status"
)

// Coding is a FHIR Coding.
type Coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

// CodeableConcept is a FHIR CodeableConcept.
type CodeableConcept struct {
	Coding []Coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

// Find returns the first coding from system.
func (c CodeableConcept) Find(system string) (Coding, bool) {
	for _, cd := range c.Coding {
		if cd.System == system {
			return cd, true
		}
	}
	return Coding{}, false
}

// Identifier is a FHIR Identifier reduced to what identifies: system and
// value.
type Identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value,omitempty"`
}

// String returns the FHIR token form system|value.
func (i Identifier) String() string { return i.System + "|" + i.Value }

// Reference is a FHIR Reference. PDMP resources often identify a pharmacy
// or prescriber by Identifier only.
type Reference struct {
	Reference  string      `json:"reference,omitempty"`
	Identifier *Identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

// Quantity is a FHIR Quantity (or SimpleQuantity).
type Quantity struct {
	Value  float64 `json:"value"`
	Unit   string  `json:"unit,omitempty"`
	System string  `json:"system,omitempty"`
	Code   string  `json:"code,omitempty"`
}

// HumanName is a FHIR HumanName reduced to family and given names.
type HumanName struct {
	Family string   `json:"family,omitempty"`
	Given  []string `json:"given,omitempty"`
}

// object is a JSON object that keeps its members in order and their values
// as received, so that what this package does not interpret is passed on
// exactly as written. It also gives exact-case member lookup, which
// encoding/json's struct decoding does not: FHIR names are case-sensitive,
// and a validator that accepted "BirthDate" for "birthDate" would pass
// requests the responder then reads differently.
type object []member

type member struct {
	key   string
	value json.RawMessage
}

var errNotObject = errors.New("not a JSON object")

func (o *object) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errNotObject
	}
	out := object{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string) // the decoder yields only strings as keys
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		out = append(out, member{key, v})
	}
	*o = out
	return nil
}

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(quote(m.key))
		b.WriteByte(':')
		b.Write(m.value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// get returns the member's value, nil when absent.
func (o object) get(key string) json.RawMessage {
	for _, m := range o {
		if m.key == key {
			return m.value
		}
	}
	return nil
}

// set replaces the member's value in place, or appends the member. A
// member whose name differs from key only in case is replaced too: FHIR
// has no two elements so named, so it is a misspelling of key, and leaving
// both would make a pair that parsers read differently (see checkJSON).
func (o *object) set(key string, value json.RawMessage) {
	for i := range *o {
		if (*o)[i].key == key {
			(*o)[i].value = value
			return
		}
	}
	for i := range *o {
		if strings.EqualFold((*o)[i].key, key) {
			(*o)[i] = member{key, value}
			return
		}
	}
	*o = append(*o, member{key, value})
}

// str returns the member as a string; ok is false when it is absent or not
// a JSON string.
func (o object) str(key string) (string, bool) {
	return asString(o.get(key))
}

func asObject(raw json.RawMessage) (object, bool) {
	var o object
	if raw == nil || json.Unmarshal(raw, &o) != nil {
		return nil, false
	}
	return o, true
}

func asArray(raw json.RawMessage) ([]json.RawMessage, bool) {
	var a []json.RawMessage
	if raw == nil || json.Unmarshal(raw, &a) != nil || a == nil { // null decodes to nil
		return nil, false
	}
	return a, true
}

func asString(raw json.RawMessage) (string, bool) {
	var s *string
	if raw == nil || json.Unmarshal(raw, &s) != nil || s == nil {
		return "", false
	}
	return *s, true
}

// identifierIn reads an Identifier object with exact-case members, keeping
// it only when both system and value are non-empty strings.
func identifierIn(raw json.RawMessage) (Identifier, bool) {
	o, _ := asObject(raw)
	sys, _ := o.str("system")
	val, _ := o.str("value")
	return Identifier{System: sys, Value: val}, sys != "" && val != ""
}

// encode is json.Marshal without HTML escaping: narratives are XHTML, and
// escaping their < and > would make what the agent sends on needlessly
// differ from what it was given.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// quote encodes s as a JSON string.
func quote(s string) json.RawMessage {
	b, _ := encode(s) // a string always encodes; invalid UTF-8 becomes U+FFFD
	return b
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (it aborts the program instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
