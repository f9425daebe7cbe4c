package pdmp

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

// paramSpec is what pdmp-parameters-request, narrowed by the
// OperationDefinition, allows for one parameter name. Every parameter may
// appear at most once: where the OperationDefinition (0..1) and the profile
// (0..*) disagree on pre-stage-*, the IG's guidance is to send one.
type paramSpec struct {
	name     string
	required bool
	// resourceType, for a resource parameter; the resource goes inline in
	// parameter.resource as in every IG example, although the profile types
	// these as value[x] Reference, which no responder could resolve.
	resourceType string
	valueKey     string // for a primitive parameter: its value[x] member
	check        func(c *checker, at string, resource object)
}

var requestParams = []paramSpec{
	{name: paramPatient, required: true, resourceType: "Patient", check: checkPatient},
	{name: paramAnimalOwner, resourceType: "RelatedPerson"},
	{name: paramPractitioner, required: true, resourceType: "Practitioner", check: checkPractitioner},
	{name: paramRole, required: true, resourceType: "PractitionerRole"},
	// 0..1 in the OperationDefinition, 1..1 in the profile: the stricter wins.
	{name: paramOrganization, required: true, resourceType: "Organization"},
	{name: paramDelegate, resourceType: "Practitioner"},
	{name: paramDelegateRole, resourceType: "PractitionerRole"},
	{name: paramDelegateOrg, resourceType: "Organization"},
	{name: paramPreStageOnly, valueKey: "valueBoolean"},
	{name: paramRetrievalKey, valueKey: "valueString"},
}

// checker collects the issues of one validation.
type checker struct{ issues []Issue }

func (c *checker) fail(code IssueType, at, diagnostics string) {
	c.issues = append(c.issues, Issue{
		Severity: SeverityError, Code: code, Diagnostics: diagnostics, Expression: []string{at},
	})
}

// Validate checks the request against pdmp-parameters-request as this agent
// applies it. It returns nil or an *OutcomeError (HTTP 422) with one issue
// per problem, each naming the element in Expression.
//
// Checked: every parameter is known and appears at most once; patient,
// authorized-practitioner, -role and -organization are present; each
// resource parameter carries an inline resource of its type and each
// primitive one its value[x]; the Patient has name.family and name.given in
// every name and a full birthDate (YYYY-MM-DD) unless _birthDate carries an
// extension such as data-absent-reason (pdmp-full-birthdate); the
// authorized Practitioner has an identifier with system and value (the NPI,
// ideally). US Core rules beyond these are the responder's to enforce:
// refusing a request a responder would accept helps nobody.
func (r *Request) Validate() error {
	var c checker
	at := map[string][]int{}
	for i, p := range r.params {
		name, _ := p.str("name")
		switch {
		case name == "":
			c.fail(IssueRequired, fmt.Sprintf("Parameters.parameter[%d].name", i), "every parameter needs a name")
		case name == paramPractitionerID:
			c.fail(IssueInvalid, expr(paramPractitionerID, "valueIdentifier"),
				"authorized-practitioner-identifier stands in for an absent authorized-practitioner, and needs a valueIdentifier with system and value")
		case spec(name) == nil:
			// The index, not the name: the name is the EHR's free text.
			c.fail(IssueNotSupported, fmt.Sprintf("Parameters.parameter[%d].name", i), "$pdmp-history has no parameter of this name")
		default:
			at[name] = append(at[name], i)
		}
	}
	for _, s := range requestParams {
		switch n := len(at[s.name]); {
		case n == 0 && s.required:
			c.fail(IssueRequired, expr(s.name), s.name+" is required")
		case n > 1:
			c.fail(IssueDuplicate, expr(s.name), fmt.Sprintf("%s appears %d times; it is allowed once", s.name, n))
		case n == 1:
			s.validate(&c, r.params[at[s.name][0]])
		}
	}
	if len(c.issues) == 0 {
		return nil
	}
	return NewOutcomeError(http.StatusUnprocessableEntity, c.issues...)
}

func spec(name string) *paramSpec {
	for i := range requestParams {
		if requestParams[i].name == name {
			return &requestParams[i]
		}
	}
	return nil
}

// expr returns the expression of a request element:
// Parameters.parameter[name] followed by the path inside the parameter.
func expr(name string, path ...string) string {
	return strings.Join(append([]string{"Parameters.parameter[" + name + "]"}, path...), ".")
}

func (s paramSpec) validate(c *checker, p object) {
	want := s.valueKey
	if want == "" {
		want = "resource"
	}
	// Parameters invariant inv-1: one and only one of value[x], resource
	// and part.
	var kinds []string
	for _, m := range p {
		if m.key == "resource" || m.key == "part" || strings.HasPrefix(m.key, "value") {
			kinds = append(kinds, m.key)
		}
	}
	switch {
	case len(kinds) == 1 && kinds[0] == want:
	case len(kinds) > 1:
		c.fail(IssueInvalid, expr(s.name), s.name+" must carry only its "+want)
		return
	case s.valueKey != "":
		c.fail(IssueRequired, expr(s.name, want), s.name+" must be given as "+want)
		return
	default:
		c.fail(IssueRequired, expr(s.name, want), s.name+" must carry a "+s.resourceType+" inline in resource")
		return
	}
	raw := p.get(want)
	switch want {
	case "valueBoolean":
		if v := string(raw); v != "true" && v != "false" {
			c.fail(IssueValue, expr(s.name, want), want+" must be true or false")
		}
	case "valueString":
		if v, ok := asString(raw); !ok || strings.TrimSpace(v) == "" {
			c.fail(IssueValue, expr(s.name, want), want+" must be a non-empty string")
		}
	default:
		res, ok := asObject(raw)
		if rt, _ := res.str("resourceType"); !ok || rt != s.resourceType {
			c.fail(IssueInvalid, expr(s.name, want), s.name+" must be a "+s.resourceType+" resource")
			return
		}
		if s.check != nil {
			s.check(c, expr(s.name, want), res)
		}
	}
}

// checkPatient applies pdmp-patient's name and birthDate rules.
func checkPatient(c *checker, at string, p object) {
	names, ok := asArray(p.get("name"))
	if !ok || len(names) == 0 {
		c.fail(IssueRequired, at+".name", "the patient needs a name with family and given")
	}
	for i, raw := range names {
		n, ok := asObject(raw)
		if !ok {
			c.fail(IssueStructure, fmt.Sprintf("%s.name[%d]", at, i), "a name must be a HumanName object")
			continue
		}
		if f, _ := n.str("family"); strings.TrimSpace(f) == "" {
			c.fail(IssueRequired, fmt.Sprintf("%s.name[%d].family", at, i), "the patient's name needs a family name (for an animal, the owner's)")
		}
		if !hasGiven(n) {
			c.fail(IssueRequired, fmt.Sprintf("%s.name[%d].given", at, i), "the patient's name needs a given name")
		}
	}

	ext, _ := asObject(p.get("_birthDate"))
	exts, _ := asArray(ext.get("extension"))
	absentReason := len(exts) > 0
	raw := p.get("birthDate")
	bd, isString := asString(raw)
	switch {
	case raw == nil && !absentReason:
		c.fail(IssueRequired, at+".birthDate", "the patient's birthDate is required; if unknown, send _birthDate with a data-absent-reason extension")
	case raw == nil:
	case !isString:
		c.fail(IssueStructure, at+".birthDate", "birthDate must be a JSON string")
	case isDate(bd, "2006-01-02"):
	case absentReason && (isDate(bd, "2006-01") || isDate(bd, "2006")):
	default:
		c.fail(IssueValue, at+".birthDate", "birthDate must be a full date YYYY-MM-DD unless _birthDate carries an extension such as data-absent-reason (pdmp-full-birthdate)")
	}
}

func hasGiven(name object) bool {
	given, _ := asArray(name.get("given"))
	for _, g := range given {
		if s, _ := asString(g); strings.TrimSpace(s) != "" {
			return true
		}
	}
	return false
}

// isDate reports whether s is a valid date written exactly in layout.
func isDate(s, layout string) bool {
	_, err := time.Parse(layout, s)
	return err == nil && len(s) == len(layout)
}

// checkPractitioner requires an identifier the responder can authorise
// against. The NPI is what responders expect, but some accept a DEA or
// state licence number, so any system will do.
func checkPractitioner(c *checker, at string, p object) {
	if len(identifiers(p.get("identifier"))) == 0 {
		c.fail(IssueRequired, at+".identifier",
			"the authorized practitioner needs an identifier with system and value, preferably the NPI (system "+SystemNPI+")")
	}
}
