package clinical

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
)

// Test histories are written as the responder would send them and read
// by package pdmp, so that History.Raw is the real thing too.

type resource map[string]any

const extMME = "http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-extension-mme"
const extLME = "http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-extension-lme"

// history builds a history-result Bundle from resources, each under the
// fullUrl urn:uuid:<id>, and reads it.
func history(t *testing.T, resources ...resource) *pdmp.History {
	t.Helper()
	entries := []any{}
	for _, r := range resources {
		entries = append(entries, map[string]any{"fullUrl": "urn:uuid:" + r["id"].(string), "resource": r})
	}
	bundle := map[string]any{"resourceType": "Bundle", "type": "collection", "entry": entries}
	body, err := json.Marshal(map[string]any{
		"resourceType": "Parameters",
		"parameter":    []any{map[string]any{"name": "pdmp-history-data", "resource": bundle}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return parse(t, body)
}

func parse(t *testing.T, body []byte) *pdmp.History {
	t.Helper()
	r, err := pdmp.ParseResponse(body)
	if err != nil {
		t.Fatal(err)
	}
	if r.History == nil {
		t.Fatal("no history")
	}
	return r.History
}

// fixture reads an IG example from package pdmp's testdata; a bare
// history-result Bundle is put into response Parameters first.
func fixture(t *testing.T, name string) *pdmp.History {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "pdmp", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var head struct{ ResourceType string }
	if err := json.Unmarshal(body, &head); err != nil {
		t.Fatal(err)
	}
	if head.ResourceType == "Bundle" {
		body = []byte(`{"resourceType":"Parameters","parameter":[{"name":"pdmp-history-data","resource":` + string(body) + `}]}`)
	}
	return parse(t, body)
}

// dispense is a completed MedicationDispense of med (an RxNorm-style
// name, as the coding's display) to patient p1, handed over on date.
func dispense(id, med string, qty, days float64, date string, opts ...func(resource)) resource {
	r := resource{
		"resourceType":              "MedicationDispense",
		"id":                        id,
		"status":                    "completed",
		"medicationCodeableConcept": map[string]any{"coding": []any{map[string]any{"system": pdmp.SystemRxNorm, "display": med}}},
		"subject":                   map[string]any{"reference": "urn:uuid:p1"},
		"quantity":                  map[string]any{"value": qty, "unit": "each"},
		"daysSupply":                map[string]any{"value": days},
		"whenPrepared":              date,
		"whenHandedOver":            date,
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

func extension(url string, v float64) func(resource) {
	return func(r resource) {
		ext, _ := r["extension"].([]any)
		r["extension"] = append(ext, map[string]any{"url": url, "valueDecimal": v})
	}
}

func mme(v float64) func(resource) { return extension(extMME, v) }
func lme(v float64) func(resource) { return extension(extLME, v) }

func unit(u string) func(resource) {
	return func(r resource) { r["quantity"].(map[string]any)["unit"] = u }
}

func rxnorm(code string) func(resource) {
	return func(r resource) {
		cc := r["medicationCodeableConcept"].(map[string]any)
		cc["coding"].([]any)[0].(map[string]any)["code"] = code
	}
}

// text replaces the medication by free text only.
func text(s string) func(resource) {
	return func(r resource) { r["medicationCodeableConcept"] = map[string]any{"text": s} }
}

func status(s string) func(resource) { return func(r resource) { r["status"] = s } }

func subject(id string) func(resource) {
	return func(r resource) { r["subject"] = map[string]any{"reference": "urn:uuid:" + id} }
}

// prepared sets whenPrepared and drops whenHandedOver.
func prepared(date string) func(resource) {
	return func(r resource) {
		r["whenPrepared"] = date
		delete(r, "whenHandedOver")
	}
}

func noDaysSupply(r resource) { delete(r, "daysSupply") }

// atPharmacy names the performer by a reference to an Organization entry.
func atPharmacy(id string) func(resource) {
	return func(r resource) {
		r["performer"] = []any{map[string]any{"actor": map[string]any{"reference": "urn:uuid:" + id}}}
	}
}

// atNCPDP names the performer by NCPDP number only.
func atNCPDP(number string) func(resource) {
	return func(r resource) {
		r["performer"] = []any{map[string]any{"actor": map[string]any{
			"identifier": map[string]any{"system": nationalSystems[1], "value": number},
		}}}
	}
}

// prescribedBy references a MedicationRequest entry.
func prescribedBy(requestID string) func(resource) {
	return func(r resource) {
		r["authorizingPrescription"] = []any{map[string]any{"reference": "urn:uuid:" + requestID}}
	}
}

func patient(id, family, given, birth string) resource {
	return resource{"resourceType": "Patient", "id": id, "name": []any{map[string]any{"family": family, "given": []any{given}}}, "birthDate": birth}
}

func pharmacy(id, npi, ncpdp string) resource {
	return resource{"resourceType": "Organization", "id": id, "name": "Pharmacy " + id, "identifier": []any{
		map[string]any{"system": pdmp.SystemNPI, "value": npi},
		map[string]any{"system": nationalSystems[1], "value": ncpdp},
	}}
}

func practitioner(id, npi string) resource {
	return resource{"resourceType": "Practitioner", "id": id, "identifier": []any{map[string]any{"system": pdmp.SystemNPI, "value": npi}}}
}

func request(id, practitionerID string) resource {
	return resource{"resourceType": "MedicationRequest", "id": id, "status": "active", "intent": "order",
		"subject": map[string]any{"reference": "urn:uuid:p1"}, "requester": map[string]any{"reference": "urn:uuid:" + practitionerID}}
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t, err = time.Parse(time.DateOnly, s)
	}
	if err != nil {
		panic(err)
	}
	return t
}

func keys(refs []Ref) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.Key)
	}
	return out
}

func flagsOf(s Summary, code FlagCode) []Flag {
	return slices.DeleteFunc(slices.Clone(s.Flags), func(f Flag) bool { return f.Code != code })
}
