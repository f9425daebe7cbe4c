package pdmp

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// Parameter names of the $pdmp-history request.
const (
	paramPatient        = "patient"
	paramAnimalOwner    = "animal-owner"
	paramPractitioner   = "authorized-practitioner"
	paramRole           = "authorized-practitioner-role"
	paramOrganization   = "authorized-practitioner-organization"
	paramDelegate       = "delegate-practitioner"
	paramDelegateRole   = "delegate-practitioner-role"
	paramDelegateOrg    = "delegate-organization"
	paramPreStageOnly   = "pre-stage-only"
	paramRetrievalKey   = "pre-stage-retrieval-key"
	paramPractitionerID = "authorized-practitioner-identifier"
)

// Request is a $pdmp-history request: a Parameters resource meant to
// conform to pdmp-parameters-request. It keeps the JSON as the EHR sent it;
// the accessors read it and Validate checks it.
//
// Besides the IG's parameters, an EHR may send the agent
// authorized-practitioner-identifier (valueIdentifier, system and value) in
// place of authorized-practitioner: Complete turns it into a Practitioner.
// It is this agent's convenience, never sent to a responder.
type Request struct {
	top    object   // the Parameters resource; its "parameter" is rebuilt from params
	params []object // Parameters.parameter, in order
}

// ParseRequest reads an EHR's request body. It fails, with an *OutcomeError
// for HTTP 400, only when the body is not a Parameters resource whose
// parameters are JSON objects; everything else is Validate's job.
//
// JSON in which an object repeats a member name (compared without regard to
// case) is refused: parsers disagree on which copy wins, and the responder
// must read the request the way it was validated. The issue's expression
// gives the path of the repeated member.
func ParseRequest(body []byte) (*Request, error) {
	if err := checkJSON(body); err != nil {
		return nil, err
	}
	top, ok := asObject(body)
	if !ok {
		return nil, badRequest(IssueStructure, "Parameters", "the body must be a JSON object: a FHIR Parameters resource")
	}
	if rt, _ := top.str("resourceType"); rt != "Parameters" {
		return nil, badRequest(IssueInvalid, "Parameters.resourceType", "the body must be a FHIR Parameters resource")
	}
	r := &Request{top: top}
	if raw := top.get("parameter"); raw != nil {
		if err := json.Unmarshal(raw, &r.params); err != nil {
			return nil, badRequest(IssueStructure, "Parameters.parameter", "parameter must be an array of objects")
		}
	}
	return r, nil
}

func badRequest(code IssueType, expression, diagnostics string) *OutcomeError {
	return NewOutcomeError(http.StatusBadRequest, Issue{
		Severity: SeverityError, Code: code, Diagnostics: diagnostics, Expression: []string{expression},
	})
}

// checkJSON refuses a body that is not exactly one JSON value, or in which
// an object repeats a member name. Parsers disagree on which copy of a
// repeated member wins, and some (encoding/json among them) fold case when
// they match names, so names are compared without regard to case. The
// issue names the path of the repeated member.
func checkJSON(body []byte) error {
	type frame struct {
		object  bool
		keys    map[string]bool // object: member names read, case-folded
		wantKey bool            // object: the next token is a member name
		key     string          // object: the member being read
		index   int             // array: the element being read
	}
	var stack []*frame
	path := func() string {
		var b strings.Builder
		b.WriteString("Parameters")
		for _, f := range stack[:len(stack)-1] {
			if f.object {
				b.WriteString("." + elementName(f.key))
			} else {
				fmt.Fprintf(&b, "[%d]", f.index)
			}
		}
		return b.String()
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // only syntax matters here; do not fail on 1e400
	for started := false; ; started = true {
		if started && len(stack) == 0 {
			if _, err := dec.Token(); err != io.EOF {
				return badRequest(IssueStructure, "Parameters", "the body must hold one JSON value only")
			}
			return nil
		}
		t, err := dec.Token()
		if err != nil {
			diag := "the body is not valid JSON"
			if se := (*json.SyntaxError)(nil); errors.As(err, &se) {
				diag = fmt.Sprintf("the body is not valid JSON (at byte %d)", se.Offset)
			}
			return badRequest(IssueStructure, "Parameters", diag)
		}
		if key, ok := t.(string); ok && len(stack) > 0 && stack[len(stack)-1].wantKey {
			f := stack[len(stack)-1]
			folded := strings.ToLower(strings.ToUpper(key)) // also folds ſ and K (Kelvin) as encoding/json does
			if f.keys[folded] {
				return badRequest(IssueStructure, path()+"."+elementName(key), "the JSON object repeats this member name")
			}
			f.keys[folded], f.key, f.wantKey = true, key, false
			continue
		}
		switch t {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended.
		if len(stack) > 0 {
			f := stack[len(stack)-1]
			f.wantKey = f.object
			f.index++
		}
	}
}

// elementName returns a member name for an issue expression, or "*" when it
// does not look like a FHIR element name: names are the EHR's text too.
func elementName(s string) string {
	if printable(s) == "?" || strings.ContainsAny(s, ".[]") {
		return "*"
	}
	return s
}

// index returns the position of the first parameter called name, or -1.
func (r *Request) index(name string) int {
	for i, p := range r.params {
		if n, _ := p.str("name"); n == name {
			return i
		}
	}
	return -1
}

// param returns the member key of the first parameter called name: its
// resource or value[x], nil when there is none.
func (r *Request) param(name, key string) json.RawMessage {
	if i := r.index(name); i >= 0 {
		return r.params[i].get(key)
	}
	return nil
}

// resource returns the inline resource of the first parameter called name.
func (r *Request) resource(name string) object {
	o, _ := asObject(r.param(name, "resource"))
	return o
}

// PractitionerIdentifiers returns the identifiers (with system and value)
// of the authorized practitioner: those of the authorized-practitioner
// resource, of authorized-practitioner-identifier, and of the
// authorized-practitioner-role's practitioner reference, without
// duplicates. They select the registration that requests for this
// practitioner.
func (r *Request) PractitionerIdentifiers() []Identifier {
	ids := identifiers(r.resource(paramPractitioner).get("identifier"))
	if id, ok := identifierIn(r.param(paramPractitionerID, "valueIdentifier")); ok {
		ids = append(ids, id)
	}
	ref, _ := asObject(r.resource(paramRole).get("practitioner"))
	if id, ok := identifierIn(ref.get("identifier")); ok {
		ids = append(ids, id)
	}
	return dedupe(ids)
}

// OrganizationIdentifiers returns the identifiers (with system and value)
// of the authorized-practitioner-organization and of the
// authorized-practitioner-role's organization reference, without
// duplicates.
func (r *Request) OrganizationIdentifiers() []Identifier {
	ids := identifiers(r.resource(paramOrganization).get("identifier"))
	ref, _ := asObject(r.resource(paramRole).get("organization"))
	if id, ok := identifierIn(ref.get("identifier")); ok {
		ids = append(ids, id)
	}
	return dedupe(ids)
}

func identifiers(raw json.RawMessage) []Identifier {
	elems, _ := asArray(raw)
	var ids []Identifier
	for _, e := range elems {
		if id, ok := identifierIn(e); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

func dedupe(ids []Identifier) []Identifier {
	var out []Identifier
	for _, id := range ids {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// HasDelegate reports whether someone requests on behalf of the authorized
// practitioner (any delegate-* parameter).
func (r *Request) HasDelegate() bool {
	return r.index(paramDelegate) >= 0 || r.index(paramDelegateRole) >= 0 || r.index(paramDelegateOrg) >= 0
}

// PreStageOnly reports pre-stage-only = true: the responder is to gather
// the history for a later retrieval rather than return it.
func (r *Request) PreStageOnly() bool {
	return string(r.param(paramPreStageOnly, "valueBoolean")) == "true"
}

// RetrievalKey returns pre-stage-retrieval-key, "" if absent.
func (r *Request) RetrievalKey() string {
	s, _ := asString(r.param(paramRetrievalKey, "valueString"))
	return s
}

// SetRetrievalKey sets pre-stage-retrieval-key to the key a pre-stage
// response returned, or removes it when key is "". Setting a key also
// turns an existing pre-stage-only to false: a retrieval is an ordinary
// request that names the staged data.
func (r *Request) SetRetrievalKey(key string) {
	i := r.index(paramRetrievalKey)
	if key == "" {
		if i >= 0 {
			r.params = slices.Delete(r.params, i, i+1)
		}
		return
	}
	p := object{{"name", quote(paramRetrievalKey)}, {"valueString", quote(key)}}
	if i >= 0 {
		r.params[i] = p
	} else {
		r.params = append(r.params, p)
	}
	if j := r.index(paramPreStageOnly); j >= 0 {
		r.params[j].set("valueBoolean", json.RawMessage("false"))
	}
}

// PatientKey returns a hex HMAC-SHA256, under secret, of the patient's
// normalised family name, given names and birthDate. It lets a retrieval
// be matched with its earlier pre-stage request without keeping the
// patient's data: store the key, never the name. The name used is the first
// official one, else the first. Call it on a validated request, which has
// the three.
func (r *Request) PatientKey(secret []byte) string {
	family, given, birthDate := r.PatientIdentity()
	// JSON keeps the three fields apart whatever they contain; a separator
	// character could occur inside a name.
	msg, _ := json.Marshal([]string{normalise(family), normalise(given), strings.TrimSpace(birthDate)})
	mac := hmac.New(sha256.New, secret)
	mac.Write(msg)
	return hex.EncodeToString(mac.Sum(nil))
}

// PatientIdentity returns the patient's family name, given names (joined
// by spaces) and birth date as sent, from the official name or else the
// first. It is PHI: only for keyed hashing, never for logs.
func (r *Request) PatientIdentity() (family, given, birthDate string) {
	p := r.resource(paramPatient)
	names, _ := asArray(p.get("name"))
	var name object
	for i, raw := range names {
		n, _ := asObject(raw)
		if use, _ := n.str("use"); i == 0 || use == "official" {
			name = n
			if use == "official" {
				break
			}
		}
	}
	family, _ = name.str("family")
	var gs []string
	elems, _ := asArray(name.get("given"))
	for _, e := range elems {
		if g, ok := asString(e); ok {
			gs = append(gs, g)
		}
	}
	birthDate, _ = p.str("birthDate")
	return family, strings.Join(gs, " "), birthDate
}

// RoleCodes returns every code of the authorized practitioner role's
// PractitionerRole.code, for checking a responder's allowed requester
// kinds.
func (r *Request) RoleCodes() []string {
	var out []string
	ccs, _ := asArray(r.resource(paramRole).get("code"))
	for _, raw := range ccs {
		cc, _ := asObject(raw)
		codings, _ := asArray(cc.get("coding"))
		for _, c := range codings {
			co, _ := asObject(c)
			if code, ok := co.str("code"); ok && code != "" {
				out = append(out, code)
			}
		}
	}
	return out
}

// normalise folds case and runs of white space, the differences between
// two EHR screens that send the same name.
func normalise(s string) string {
	return strings.ToLower(strings.Join(strings.Fields(s), " "))
}

// Marshal returns the request as JSON: the EHR's members in their order and
// with their values, plus what Complete and SetRetrievalKey changed.
func (r *Request) Marshal() ([]byte, error) {
	top := slices.Clone(r.top)
	params := r.params
	if params == nil {
		params = []object{}
	}
	ps, err := encode(params)
	if err != nil {
		return nil, err
	}
	top.set("parameter", ps)
	return encode(top)
}
