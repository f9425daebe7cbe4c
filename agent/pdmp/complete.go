package pdmp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
)

// Requester holds the resources configured for a registration: who requests
// when the EHR sends only the patient and a practitioner identifier. Each is
// a FHIR resource of that type, or nil. The practitioner is absent from an
// organization's registration, whose requests each name their practitioner.
type Requester struct {
	Practitioner     json.RawMessage
	PractitionerRole json.RawMessage
	Organization     json.RawMessage
}

// Complete fills in what minimal input leaves out, so an EHR may send only
// patient plus either authorized-practitioner-identifier or an
// authorized-practitioner Practitioner with just an identifier:
//
//   - authorized-practitioner-identifier becomes authorized-practitioner:
//     the configured Practitioner, or else a Practitioner with only the
//     identifier;
//   - absent authorized-practitioner and authorized-practitioner-organization
//     are the configured ones;
//   - absent authorized-practitioner-role is the configured PractitionerRole
//     (a bare one if none is configured), made to reference the
//     practitioner and organization as Practitioner/ID and Organization/ID,
//     matching their inline ids, as the IG examples do. A role the EHR sent
//     only gains the references it lacks.
//
// What the EHR sent is never replaced. Call Validate afterwards.
//
// When a Practitioner is configured, the registration requests for that
// practitioner only: a request whose practitioner identifiers are all
// different gets an *OutcomeError, since sending it would put the lookup on
// the wrong prescriber's record at the PDMP. An unusable configuration gets
// a plain error.
func (r *Request) Complete(reg Requester) error {
	prac, err := configured(reg.Practitioner, "Practitioner")
	if err != nil {
		return err
	}
	role, err := configured(reg.PractitionerRole, "PractitionerRole")
	if err != nil {
		return err
	}
	org, err := configured(reg.Organization, "Organization")
	if err != nil {
		return err
	}
	if prac != nil {
		if err := r.samePractitioner(identifiers(prac.get("identifier"))); err != nil {
			return err
		}
	}

	if r.index(paramPractitioner) < 0 {
		r.completePractitioner(prac)
	}
	if r.index(paramOrganization) < 0 && org != nil {
		r.add(paramOrganization, org)
	}
	roleIndex := r.index(paramRole)
	fromEHR := roleIndex >= 0
	if !fromEHR {
		if role == nil {
			role = object{{"resourceType", quote("PractitionerRole")}}
		}
		r.add(paramRole, role)
		roleIndex = len(r.params) - 1
	}
	r.linkRole(roleIndex, !fromEHR)
	return nil
}

// samePractitioner refuses a request that identifies its practitioner,
// by authorized-practitioner or authorized-practitioner-identifier, with
// none of the configured identifiers. (The role's practitioner reference is
// not considered: the IG's own message example gets it wrong.)
func (r *Request) samePractitioner(configured []Identifier) error {
	given := identifiers(r.resource(paramPractitioner).get("identifier"))
	at := expr(paramPractitioner, "resource", "identifier")
	if id, ok := identifierIn(r.param(paramPractitionerID, "valueIdentifier")); ok && len(given) == 0 {
		given, at = []Identifier{id}, expr(paramPractitionerID, "valueIdentifier")
	}
	if len(given) == 0 || slices.ContainsFunc(given, func(id Identifier) bool { return slices.Contains(configured, id) }) {
		return nil
	}
	return NewOutcomeError(http.StatusUnprocessableEntity, Issue{
		Severity: SeverityError, Code: IssueBusinessRule, Expression: []string{at},
		Diagnostics: "the practitioner is not the one this agent registration requests for",
	})
}

// completePractitioner adds authorized-practitioner, which is absent, from
// the configuration or from authorized-practitioner-identifier.
func (r *Request) completePractitioner(prac object) {
	i := r.index(paramPractitionerID)
	var id Identifier
	given := false
	if i >= 0 {
		if id, given = identifierIn(r.params[i].get("valueIdentifier")); !given {
			return // left for Validate to report
		}
	}
	switch {
	case prac == nil && !given:
		return // nothing to complete from; Validate reports the absence
	case prac == nil:
		ids, _ := encode([]Identifier{id}) // plain strings always encode
		prac = object{{"resourceType", quote("Practitioner")}, {"identifier", ids}}
	}
	if given {
		r.params = slices.Delete(r.params, i, i+1)
	}
	r.add(paramPractitioner, prac)
}

// configured decodes one configured resource, nil when not configured.
func configured(raw json.RawMessage, resourceType string) (object, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	o, ok := asObject(raw)
	if rt, _ := o.str("resourceType"); !ok || rt != resourceType {
		return nil, fmt.Errorf("pdmp: the configured %s is not a %s resource", resourceType, resourceType)
	}
	return o, nil
}

// add appends a resource parameter.
func (r *Request) add(name string, resource object) {
	res, _ := resource.MarshalJSON() // an object always marshals
	r.params = append(r.params, object{{"name", quote(name)}, {"resource", res}})
}

// linkRole makes the role at index reference the authorized practitioner
// and organization, replacing the references of a configured role (a
// template) but only adding those an EHR's role lacks.
func (r *Request) linkRole(index int, replace bool) {
	role, ok := asObject(r.params[index].get("resource"))
	if rt, _ := role.str("resourceType"); !ok || rt != "PractitionerRole" {
		return // Validate reports it
	}
	for _, link := range []struct{ key, param, resourceType string }{
		{"practitioner", paramPractitioner, "Practitioner"},
		{"organization", paramOrganization, "Organization"},
	} {
		current, isObject := asObject(role.get(link.key))
		if role.get(link.key) != nil && (!replace || !isObject) {
			continue
		}
		id, ok := r.resourceID(link.param, link.resourceType)
		if !ok {
			continue
		}
		// Keep a configured reference's identifier and display, which a
		// responder may use, and point it at the inline resource.
		current.set("reference", quote(link.resourceType+"/"+id))
		ref, _ := current.MarshalJSON()
		role.set(link.key, ref)
	}
	res, _ := role.MarshalJSON()
	r.params[index].set("resource", res)
}

// resourceID returns the id of the resource in the named parameter, giving
// it the parameter's name as id when it has none, so that it can be
// referenced.
func (r *Request) resourceID(name, resourceType string) (string, bool) {
	i := r.index(name)
	if i < 0 {
		return "", false
	}
	res, ok := asObject(r.params[i].get("resource"))
	if rt, _ := res.str("resourceType"); !ok || rt != resourceType {
		return "", false
	}
	if id, ok := res.str("id"); ok && id != "" {
		return id, true
	}
	res.set("id", quote(name))
	b, _ := res.MarshalJSON()
	r.params[i].set("resource", b)
	return name, true
}
