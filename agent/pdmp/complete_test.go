package pdmp

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

const minimalPatient = `{"name":"patient","resource":{"resourceType":"Patient","name":[{"family":"Samuels","given":["August"]}],"birthDate":"1989-03-12"}}`

// requester is a registration's configuration, as in input-parameters-1.
var requester = Requester{
	Practitioner: json.RawMessage(`{"resourceType":"Practitioner","id":"dr-amster",
		"identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"1928340565"}],"name":[{"family":"Amster","given":["Adam"]}]}`),
	PractitionerRole: json.RawMessage(`{"resourceType":"PractitionerRole",
		"practitioner":{"reference":"Practitioner/stale","display":"Adam Amster"},
		"telecom":[{"system":"phone","value":"951-555-5555"}]}`),
	Organization: json.RawMessage(`{"resourceType":"Organization","id":"highview",
		"identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"9851234689"}],"active":true,"name":"Highview Clinic"}`),
}

func request(params ...string) []byte {
	return []byte(`{"resourceType":"Parameters","parameter":[` + strings.Join(params, ",") + `]}`)
}

// roleRefs returns the completed role's practitioner and organization
// references.
func roleRefs(t *testing.T, r *Request) (practitioner, organization string) {
	t.Helper()
	role := r.resource(paramRole)
	p, _ := asObject(role.get("practitioner"))
	o, _ := asObject(role.get("organization"))
	practitioner, _ = p.str("reference")
	organization, _ = o.str("reference")
	return practitioner, organization
}

func TestComplete(t *testing.T) {
	tests := []struct {
		name     string
		body     []byte
		reg      Requester
		wantPrac string // the role's practitioner reference
		wantOrg  string
		check    func(t *testing.T, r *Request)
	}{
		{
			name:     "identifier parameter, configured practitioner",
			body:     request(minimalPatient, `{"name":"authorized-practitioner-identifier","valueIdentifier":{"system":"http://hl7.org/fhir/sid/us-npi","value":"1928340565"}}`),
			reg:      requester,
			wantPrac: "Practitioner/dr-amster", wantOrg: "Organization/highview",
			check: func(t *testing.T, r *Request) {
				if r.index(paramPractitionerID) >= 0 {
					t.Error("authorized-practitioner-identifier is still there")
				}
				if name, _ := asArray(r.resource(paramPractitioner).get("name")); len(name) != 1 {
					t.Error("the configured Practitioner was not used")
				}
				// The configured role's reference keeps its display.
				p, _ := asObject(r.resource(paramRole).get("practitioner"))
				if d, _ := p.str("display"); d != "Adam Amster" {
					t.Errorf("role practitioner display = %q", d)
				}
			},
		},
		{
			name:     "identifier parameter, organization registration",
			body:     request(minimalPatient, `{"name":"authorized-practitioner-identifier","valueIdentifier":{"system":"http://hl7.org/fhir/sid/us-npi","value":"1111111111"}}`),
			reg:      Requester{Organization: requester.Organization},
			wantPrac: "Practitioner/authorized-practitioner", wantOrg: "Organization/highview",
			check: func(t *testing.T, r *Request) {
				if got := r.PractitionerIdentifiers(); !slices.Equal(got, []Identifier{npi("1111111111")}) {
					t.Errorf("PractitionerIdentifiers = %v", got)
				}
			},
		},
		{
			name:     "Practitioner with only an identifier",
			body:     request(minimalPatient, `{"name":"authorized-practitioner","resource":{"resourceType":"Practitioner","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"1111111111"}]}}`),
			reg:      Requester{PractitionerRole: requester.PractitionerRole, Organization: requester.Organization},
			wantPrac: "Practitioner/authorized-practitioner", wantOrg: "Organization/highview",
		},
		{
			name: "the EHR's role gains only missing references",
			body: request(minimalPatient,
				`{"name":"authorized-practitioner","resource":{"resourceType":"Practitioner","id":"p1","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"1928340565"}]}}`,
				`{"name":"authorized-practitioner-role","resource":{"resourceType":"PractitionerRole","practitioner":{"reference":"Practitioner/p1"}}}`),
			reg:      requester,
			wantPrac: "Practitioner/p1", wantOrg: "Organization/highview",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRequest(tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Complete(tt.reg); err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if err := r.Validate(); err != nil {
				t.Fatalf("Validate after Complete: %v", err)
			}
			prac, org := roleRefs(t, r)
			if prac != tt.wantPrac || org != tt.wantOrg {
				t.Errorf("role references %q, %q; want %q, %q", prac, org, tt.wantPrac, tt.wantOrg)
			}
			// The references resolve to the inline resources.
			if id, _ := r.resource(paramPractitioner).str("id"); "Practitioner/"+id != prac {
				t.Errorf("Practitioner id %q does not match %q", id, prac)
			}
			if id, _ := r.resource(paramOrganization).str("id"); "Organization/"+id != org {
				t.Errorf("Organization id %q does not match %q", id, org)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
			// What goes out reads back the same.
			out, err := r.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			parseValid(t, out)
		})
	}
}

func TestCompleteLeavesCompleteRequestsAlone(t *testing.T) {
	body := fixture(t, input2Minimum)
	r := parseValid(t, body)
	if err := r.Complete(requester); err != nil {
		t.Fatal(err)
	}
	out, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != compact(t, body) {
		t.Errorf("Complete changed a complete request:\n%s", out)
	}
}

func TestCompleteRefuses(t *testing.T) {
	for _, tt := range []struct{ param, expr string }{
		{`{"name":"authorized-practitioner-identifier","valueIdentifier":{"system":"http://hl7.org/fhir/sid/us-npi","value":"1111111111"}}`,
			"Parameters.parameter[authorized-practitioner-identifier].valueIdentifier"},
		{`{"name":"authorized-practitioner","resource":{"resourceType":"Practitioner","identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"1111111111"}]}}`,
			"Parameters.parameter[authorized-practitioner].resource.identifier"},
	} {
		t.Run("another practitioner than the registration's", func(t *testing.T) {
			r, _ := ParseRequest(request(minimalPatient, tt.param))
			var oe *OutcomeError
			if err := r.Complete(requester); !errors.As(err, &oe) || oe.HTTPStatus() != 422 ||
				!slices.Contains(oe.Outcome().Issue[0].Expression, tt.expr) {
				t.Fatalf("Complete = %v", err)
			}
		})
	}
	t.Run("unusable configuration", func(t *testing.T) {
		r, _ := ParseRequest(request(minimalPatient))
		err := r.Complete(Requester{Organization: json.RawMessage(`{"resourceType":"Practitioner"}`)})
		var oe *OutcomeError
		if err == nil || errors.As(err, &oe) {
			t.Fatalf("Complete = %v, want a plain error", err)
		}
	})
	t.Run("nothing to complete from", func(t *testing.T) {
		r, _ := ParseRequest(request(minimalPatient))
		if err := r.Complete(Requester{Organization: requester.Organization}); err != nil {
			t.Fatal(err)
		}
		var oe *OutcomeError
		if err := r.Validate(); !errors.As(err, &oe) ||
			!slices.Contains(oe.Outcome().Issue[0].Expression, "Parameters.parameter[authorized-practitioner]") {
			t.Fatalf("Validate = %v, want authorized-practitioner missing", err)
		}
	})
	t.Run("identifier without system", func(t *testing.T) {
		r, _ := ParseRequest(request(minimalPatient, `{"name":"authorized-practitioner-identifier","valueIdentifier":{"value":"1928340565"}}`))
		if err := r.Complete(requester); err != nil {
			t.Fatal(err)
		}
		var oe *OutcomeError
		if err := r.Validate(); !errors.As(err, &oe) ||
			!slices.ContainsFunc(oe.Outcome().Issue, func(is Issue) bool {
				return slices.Contains(is.Expression, "Parameters.parameter[authorized-practitioner-identifier].valueIdentifier")
			}) {
			t.Fatalf("Validate = %v", err)
		}
	})
}
