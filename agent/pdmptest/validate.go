package pdmptest

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// issue is one OperationOutcome.issue.
type issue struct {
	severity    string // fatal | error | warning | information
	code        string // FHIR R4 issue-type
	expression  string // FHIRPath of the element at fault, if any
	diagnostics string
}

func (i issue) toJSON() object {
	o := object{"severity": i.severity, "code": i.code}
	if i.expression != "" {
		o["expression"] = array{i.expression}
	}
	if i.diagnostics != "" {
		o["diagnostics"] = i.diagnostics
	}
	return o
}

func errorIssue(code, expression, format string, args ...any) issue {
	return issue{severity: "error", code: code, expression: expression, diagnostics: fmt.Sprintf(format, args...)}
}

// historyQuery is what the responder needs from a valid request.
type historyQuery struct {
	family       string   // name[0].family of the patient parameter
	given        []string // name[0].given
	birthDate    string   // full YYYY-MM-DD, or "" when absent or partial
	preStageOnly bool
	key          string // pre-stage-retrieval-key, "" if absent
}

// paramKind is the type an input parameter must carry.
type paramKind int

const (
	kindResource paramKind = iota
	kindBoolean
	kindString
)

type paramSpec struct {
	kind         paramKind
	resourceType string // for kindResource
	required     bool
}

// requestParams are the inputs of $pdmp-history (OperationDefinition
// pdmp-history and profile pdmp-parameters-request). Every parameter is at
// most 1: the OperationDefinition's 0..1 for pre-stage-* wins over the
// profile's 0..*, and the profile's 1..1 for authorized-practitioner-
// organization wins over the OperationDefinition's 0..1.
var requestParams = map[string]paramSpec{
	"patient":                              {kindResource, "Patient", true},
	"authorized-practitioner":              {kindResource, "Practitioner", true},
	"authorized-practitioner-role":         {kindResource, "PractitionerRole", true},
	"authorized-practitioner-organization": {kindResource, "Organization", true},
	"delegate-practitioner":                {kindResource, "Practitioner", false},
	"delegate-practitioner-role":           {kindResource, "PractitionerRole", false},
	"delegate-organization":                {kindResource, "Organization", false},
	"animal-owner":                         {kindResource, "RelatedPerson", false},
	"pre-stage-only":                       {kindBoolean, "", false},
	"pre-stage-retrieval-key":              {kindString, "", false},
}

// requestParamOrder lists requestParams in a stable order for reporting.
var requestParamOrder = []string{
	"patient", "authorized-practitioner", "authorized-practitioner-role", "authorized-practitioner-organization",
	"delegate-practitioner", "delegate-practitioner-role", "delegate-organization", "animal-owner",
	"pre-stage-only", "pre-stage-retrieval-key",
}

func paramPath(prefix, name string) string {
	return fmt.Sprintf("%s.parameter.where(name = '%s')", prefix, name)
}

// patientFamily digs name[0].family out of a request Parameters, however
// malformed the rest of it, for the request log.
func patientFamily(params object) string {
	ps, _ := getArray(params, "parameter")
	for _, p := range ps {
		po, _ := p.(object)
		if name, _ := getString(po, "name"); name != "patient" {
			continue
		}
		res, _ := getObject(po, "resource")
		names, _ := getArray(res, "name")
		if len(names) == 0 {
			return ""
		}
		n, _ := names[0].(object)
		family, _ := getString(n, "family")
		return family
	}
	return ""
}

// validateRequest checks a $pdmp-history input Parameters the way a strict
// responder would and returns the query it asks for, or every problem found.
// prefix is the FHIRPath of the Parameters resource in the body
// ("Parameters", or "Bundle.entry[1].resource" inside a message).
func validateRequest(params object, prefix string) (historyQuery, []issue) {
	var q historyQuery
	var issues []issue
	add := func(code, expr, format string, args ...any) {
		issues = append(issues, errorIssue(code, expr, format, args...))
	}

	if rt, _ := getString(params, "resourceType"); rt != "Parameters" {
		expr := prefix + ".resourceType"
		if prefix == "Parameters" {
			expr = "resourceType"
		}
		add("structure", expr, "resourceType is %q; want Parameters", rt)
		return q, issues
	}
	list, ok := getArray(params, "parameter")
	if !ok || len(list) == 0 {
		add("required", prefix+".parameter", "parameter missing: $pdmp-history needs patient, authorized-practitioner, authorized-practitioner-role and authorized-practitioner-organization")
		return q, issues
	}

	found := make(map[string][]object)
	for i, raw := range list {
		at := fmt.Sprintf("%s.parameter[%d]", prefix, i)
		p, ok := raw.(object)
		if !ok {
			add("structure", at, "parameter must be a JSON object")
			continue
		}
		name, _ := getString(p, "name")
		spec, known := requestParams[name]
		switch {
		case name == "":
			add("required", at+".name", "parameter name missing")
			continue
		case !known:
			add("not-supported", at+".name", "unknown parameter %q for $pdmp-history", name)
			continue
		}
		found[name] = append(found[name], p)
		issues = append(issues, checkParamShape(p, name, spec, paramPath(prefix, name))...)
	}

	for _, name := range requestParamOrder {
		spec, n := requestParams[name], len(found[name])
		switch {
		case n == 0 && spec.required:
			add("required", paramPath(prefix, name), "parameter %s missing (1..1)", name)
		case n > 1:
			add("structure", paramPath(prefix, name), "parameter %s appears %d times; at most one allowed", name, n)
		}
	}

	one := func(name string) (object, bool) {
		if ps := found[name]; len(ps) == 1 {
			return ps[0], true
		}
		return nil, false
	}
	resource := func(name, resourceType string) (object, string, bool) {
		p, ok := one(name)
		if !ok {
			return nil, "", false
		}
		res, ok := getObject(p, "resource")
		if !ok {
			return nil, "", false
		}
		if rt, _ := getString(res, "resourceType"); rt != resourceType {
			return nil, "", false // reported by checkParamShape
		}
		return res, paramPath(prefix, name) + ".resource", true
	}

	if pat, at, ok := resource("patient", "Patient"); ok {
		var pis []issue
		q, pis = checkPatient(pat, at)
		issues = append(issues, pis...)
	}
	for _, name := range []string{"authorized-practitioner", "delegate-practitioner"} {
		if prac, at, ok := resource(name, "Practitioner"); ok && !hasIdentifier(prac) {
			add("required", at+".identifier", "%s: Practitioner needs an identifier with system and value (e.g. NPI)", name)
		}
	}
	for _, name := range []string{"authorized-practitioner-organization", "delegate-organization"} {
		if org, at, ok := resource(name, "Organization"); ok {
			if s, _ := getString(org, "name"); strings.TrimSpace(s) == "" {
				add("required", at+".name", "%s: Organization name missing (US Core Organization 1..1)", name)
			}
		}
	}
	if p, ok := one("pre-stage-only"); ok {
		q.preStageOnly, _ = p["valueBoolean"].(bool)
	}
	if p, ok := one("pre-stage-retrieval-key"); ok {
		q.key, _ = getString(p, "valueString")
		if q.preStageOnly {
			add("business-rule", paramPath(prefix, "pre-stage-retrieval-key"),
				"pre-stage-retrieval-key retrieves staged data; it cannot be sent with pre-stage-only = true")
		}
	}
	return q, issues
}

// checkParamShape checks that a parameter carries the one kind of value its
// spec calls for.
func checkParamShape(p object, name string, spec paramSpec, at string) []issue {
	var issues []issue
	add := func(code, expr, format string, args ...any) {
		issues = append(issues, errorIssue(code, expr, format, args...))
	}
	var values []string
	for k := range p {
		if strings.HasPrefix(k, "value") {
			values = append(values, k)
		}
	}
	_, hasPart := p["part"]
	res, hasRes := p["resource"]

	switch spec.kind {
	case kindResource:
		if len(values) > 0 || hasPart {
			add("structure", at, "parameter %s must carry its %s inline in resource, not value[x] or part", name, spec.resourceType)
			return issues
		}
		obj, ok := res.(object)
		if !hasRes || !ok {
			add("required", at+".resource", "parameter %s needs an inline %s resource", name, spec.resourceType)
			return issues
		}
		if rt, _ := getString(obj, "resourceType"); rt != spec.resourceType {
			add("structure", at+".resource", "parameter %s holds a %q resource; want %s", name, rt, spec.resourceType)
		}
	case kindBoolean:
		if _, ok := p["valueBoolean"].(bool); !ok || len(values) != 1 || hasRes || hasPart {
			add("structure", at, "parameter %s must carry exactly one valueBoolean", name)
		}
	case kindString:
		v, ok := p["valueString"].(string)
		switch {
		case !ok || len(values) != 1 || hasRes || hasPart:
			add("structure", at, "parameter %s must carry exactly one valueString", name)
		case strings.TrimSpace(v) == "":
			add("value", at+".valueString", "parameter %s is empty", name)
		}
	}
	return issues
}

var (
	fullDate    = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}$`)
	partialDate = regexp.MustCompile(`^[0-9]{4}(-(0[1-9]|1[0-2]))?$`)
	genders     = map[string]bool{"male": true, "female": true, "other": true, "unknown": true}
)

// checkPatient applies the PDMP Patient profile's required elements: every
// name has family and given, gender is present (US Core), and birthDate is a
// full date unless _birthDate carries an extension (pdmp-full-birthdate).
func checkPatient(pat object, at string) (historyQuery, []issue) {
	var q historyQuery
	var issues []issue
	add := func(code, expr, format string, args ...any) {
		issues = append(issues, errorIssue(code, expr, format, args...))
	}

	names, ok := getArray(pat, "name")
	if !ok || len(names) == 0 {
		add("required", at+".name", "Patient.name missing (name.family and name.given are required)")
	}
	for i, raw := range names {
		n, ok := raw.(object)
		nat := fmt.Sprintf("%s.name[%d]", at, i)
		if !ok {
			add("structure", nat, "Patient.name must be an object")
			continue
		}
		family, _ := getString(n, "family")
		if strings.TrimSpace(family) == "" {
			add("required", nat+".family", "Patient.name.family missing")
		}
		var given []string
		gs, _ := getArray(n, "given")
		for _, g := range gs {
			if s, ok := g.(string); ok && strings.TrimSpace(s) != "" {
				given = append(given, s)
			} else {
				add("value", nat+".given", "Patient.name.given must hold non-empty strings")
				break
			}
		}
		if len(gs) == 0 {
			add("required", nat+".given", "Patient.name.given missing")
		}
		if i == 0 {
			q.family, q.given = family, given
		}
	}

	if g, ok := getString(pat, "gender"); !ok {
		add("required", at+".gender", "Patient.gender missing (US Core 1..1; send unknown if unknown)")
	} else if !genders[g] {
		add("value", at+".gender", "Patient.gender %q is not one of male, female, other, unknown", g)
	}

	bd, hasBD := pat["birthDate"]
	ext := false
	if pe, ok := getObject(pat, "_birthDate"); ok {
		exts, _ := getArray(pe, "extension")
		ext = len(exts) > 0
	}
	s, isString := bd.(string)
	switch {
	case !hasBD && !ext:
		add("required", at+".birthDate", "Patient.birthDate missing (1..1; use _birthDate with a data-absent-reason extension if unknown)")
	case !hasBD:
		// Absent value explained by an extension.
	case !isString:
		add("value", at+".birthDate", "Patient.birthDate must be a date string")
	case fullDate.MatchString(s):
		if _, err := time.Parse(time.DateOnly, s); err != nil {
			add("value", at+".birthDate", "Patient.birthDate %q is not a valid date", s)
		} else {
			q.birthDate = s
		}
	case partialDate.MatchString(s) && ext:
		// pdmp-full-birthdate allows a partial date with an extension.
	case partialDate.MatchString(s):
		add("value", at+".birthDate", "Patient.birthDate %q must be a full YYYY-MM-DD date unless _birthDate has an extension (pdmp-full-birthdate)", s)
	default:
		add("value", at+".birthDate", "Patient.birthDate %q is not a FHIR date", s)
	}
	return q, issues
}

// hasIdentifier reports whether r has an identifier with system and value.
func hasIdentifier(r object) bool {
	ids, _ := getArray(r, "identifier")
	for _, raw := range ids {
		id, _ := raw.(object)
		sys, _ := getString(id, "system")
		val, _ := getString(id, "value")
		if sys != "" && val != "" {
			return true
		}
	}
	return false
}
