package pdmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The IG's examples, translated from its FSH (see testdata/README.md).
const (
	input1        = "Parameters-pdmp-history-input-parameters-1.json"
	input2Minimum = "Parameters-pdmp-history-input-parameters-2-minimum.json"
	input3Vet     = "Parameters-pdmp-history-input-parameters-3-veterinary.json"
	input4Del     = "Parameters-pdmp-history-input-parameters-4-delegate.json"
	requestMsg    = "Bundle-pdmp-bundle-request-message-1.json"
	responseMsg   = "Bundle-pdmp-bundle-response-message-1.json"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compact(t testing.TB, b []byte) string {
	t.Helper()
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// messageEntryResource returns the resource of entry i of a message Bundle.
func messageEntryResource(t testing.TB, bundle []byte, i int) []byte {
	t.Helper()
	var b messageBundle
	if err := json.Unmarshal(bundle, &b); err != nil || len(b.Entry) <= i {
		t.Fatalf("entry %d of the bundle: %v", i, err)
	}
	return b.Entry[i].Resource
}

func parseValid(t *testing.T, body []byte) *Request {
	t.Helper()
	r, err := ParseRequest(body)
	if err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return r
}

func npi(v string) Identifier { return Identifier{System: SystemNPI, Value: v} }

func TestRequestFixturesValidate(t *testing.T) {
	tests := []struct {
		name          string
		body          func(t *testing.T) []byte
		practitioners []Identifier
		organizations []Identifier
		delegate      bool
	}{
		{name: "1", body: file(input1),
			practitioners: []Identifier{npi("1928340565")}, organizations: []Identifier{npi("9851234689")}},
		{name: "2-minimum", body: file(input2Minimum),
			practitioners: []Identifier{npi("1928340565")}},
		// The owner RelatedPerson reuses the animal Patient's id
		// (patient-req-3). Inline resources of different parameters are
		// separate resources of different types, so that is no error for
		// us; _birthDate's data-absent-reason excuses the missing birthDate.
		{name: "3-veterinary", body: file(input3Vet),
			practitioners: []Identifier{npi("1928340565")}},
		{name: "4-delegate", body: file(input4Del),
			practitioners: []Identifier{npi("1665015602")}, delegate: true},
		// parameters-req-op-1 swaps the NPIs in its PractitionerRole's
		// identifier references: the role's practitioner identifier is the
		// organization's NPI and vice versa. Not a validation error (the
		// role's references are SHOULDs), but the accessors report both,
		// and a registration chosen by identifier must match the first.
		{name: "request-message-1 Parameters",
			body: func(t *testing.T) []byte {
				return messageEntryResource(t, fixture(t, requestMsg), 1)
			},
			practitioners: []Identifier{npi("1928340565"), npi("9851234689")},
			organizations: []Identifier{npi("9851234689"), npi("1928340565")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body(t)
			r := parseValid(t, body)
			if got := r.PractitionerIdentifiers(); !slices.Equal(got, tt.practitioners) {
				t.Errorf("PractitionerIdentifiers = %v, want %v", got, tt.practitioners)
			}
			if got := r.OrganizationIdentifiers(); !slices.Equal(got, tt.organizations) {
				t.Errorf("OrganizationIdentifiers = %v, want %v", got, tt.organizations)
			}
			if r.HasDelegate() != tt.delegate {
				t.Errorf("HasDelegate = %v", !tt.delegate)
			}
			if r.PreStageOnly() || r.RetrievalKey() != "" {
				t.Errorf("PreStageOnly = %v, RetrievalKey = %q; the examples send pre-stage-only false", r.PreStageOnly(), r.RetrievalKey())
			}
			// Nothing changed, so what goes out is what came in.
			out, err := r.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(out), compact(t, body); got != want {
				t.Errorf("Marshal changed the request:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func file(name string) func(t *testing.T) []byte {
	return func(t *testing.T) []byte { return fixture(t, name) }
}

// edit decodes input-1 generically, lets f change it, and encodes it.
func edit(t *testing.T, f func(p map[string]any)) []byte {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(fixture(t, input1), &p); err != nil {
		t.Fatal(err)
	}
	f(p)
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func params(p map[string]any) []any { return p["parameter"].([]any) }

// resourceOf returns the resource of input-1's parameter i.
func resourceOf(p map[string]any, i int) map[string]any {
	return params(p)[i].(map[string]any)["resource"].(map[string]any)
}

// Input-1's parameters: 0 patient, 1 authorized-practitioner, 2 -role,
// 3 -organization, 4 pre-stage-only.
func TestValidateRefusesBadRequests(t *testing.T) {
	tests := []struct {
		name   string
		body   []byte
		status int
		expr   string    // an issue must name this element
		code   IssueType // with this code
	}{
		{"missing birthDate",
			edit(t, func(p map[string]any) { delete(resourceOf(p, 0), "birthDate") }),
			422, "Parameters.parameter[patient].resource.birthDate", IssueRequired},
		{"partial birthDate without data-absent-reason",
			edit(t, func(p map[string]any) { resourceOf(p, 0)["birthDate"] = "1970-05" }),
			422, "Parameters.parameter[patient].resource.birthDate", IssueValue},
		{"impossible birthDate",
			edit(t, func(p map[string]any) { resourceOf(p, 0)["birthDate"] = "1970-02-30" }),
			422, "Parameters.parameter[patient].resource.birthDate", IssueValue},
		{"birthDate not a string",
			edit(t, func(p map[string]any) { resourceOf(p, 0)["birthDate"] = 19700530 }),
			422, "Parameters.parameter[patient].resource.birthDate", IssueStructure},
		{"no family name",
			edit(t, func(p map[string]any) { delete(resourceOf(p, 0)["name"].([]any)[0].(map[string]any), "family") }),
			422, "Parameters.parameter[patient].resource.name[0].family", IssueRequired},
		{"no given name",
			edit(t, func(p map[string]any) { resourceOf(p, 0)["name"].([]any)[0].(map[string]any)["given"] = []any{""} }),
			422, "Parameters.parameter[patient].resource.name[0].given", IssueRequired},
		{"no name",
			edit(t, func(p map[string]any) { delete(resourceOf(p, 0), "name") }),
			422, "Parameters.parameter[patient].resource.name", IssueRequired},
		{"no practitioner identifier",
			edit(t, func(p map[string]any) { delete(resourceOf(p, 1), "identifier") }),
			422, "Parameters.parameter[authorized-practitioner].resource.identifier", IssueRequired},
		{"practitioner identifier without system",
			edit(t, func(p map[string]any) {
				delete(resourceOf(p, 1)["identifier"].([]any)[0].(map[string]any), "system")
			}),
			422, "Parameters.parameter[authorized-practitioner].resource.identifier", IssueRequired},
		{"Organization in patient",
			edit(t, func(p map[string]any) { params(p)[0].(map[string]any)["resource"] = resourceOf(p, 3) }),
			422, "Parameters.parameter[patient].resource", IssueInvalid},
		{"patient by reference",
			edit(t, func(p map[string]any) {
				params(p)[0] = map[string]any{"name": "patient", "valueReference": map[string]any{"reference": "Patient/1"}}
			}),
			422, "Parameters.parameter[patient].resource", IssueRequired},
		{"patient with both resource and value",
			edit(t, func(p map[string]any) { params(p)[0].(map[string]any)["valueString"] = "x" }),
			422, "Parameters.parameter[patient]", IssueInvalid},
		{"duplicate patient",
			edit(t, func(p map[string]any) { p["parameter"] = append(params(p), params(p)[0]) }),
			422, "Parameters.parameter[patient]", IssueDuplicate},
		{"duplicate pre-stage-only",
			edit(t, func(p map[string]any) { p["parameter"] = append(params(p), params(p)[4]) }),
			422, "Parameters.parameter[pre-stage-only]", IssueDuplicate},
		{"pre-stage-only not a boolean",
			edit(t, func(p map[string]any) { params(p)[4] = map[string]any{"name": "pre-stage-only", "valueString": "true"} }),
			422, "Parameters.parameter[pre-stage-only].valueBoolean", IssueRequired},
		{"empty retrieval key",
			edit(t, func(p map[string]any) {
				p["parameter"] = append(params(p), map[string]any{"name": "pre-stage-retrieval-key", "valueString": ""})
			}),
			422, "Parameters.parameter[pre-stage-retrieval-key].valueString", IssueValue},
		{"unknown parameter",
			edit(t, func(p map[string]any) {
				p["parameter"] = append(params(p), map[string]any{"name": "Samuels", "valueString": "x"})
			}),
			422, "Parameters.parameter[5].name", IssueNotSupported},
		{"parameter without name",
			edit(t, func(p map[string]any) { delete(params(p)[4].(map[string]any), "name") }),
			422, "Parameters.parameter[4].name", IssueRequired},
		{"no organization",
			edit(t, func(p map[string]any) { p["parameter"] = slices.Delete(params(p), 3, 4) }),
			422, "Parameters.parameter[authorized-practitioner-organization]", IssueRequired},
		{"no parameters",
			[]byte(`{"resourceType":"Parameters"}`),
			422, "Parameters.parameter[patient]", IssueRequired},
		{"not a Parameters",
			edit(t, func(p map[string]any) { p["resourceType"] = "Bundle" }),
			400, "Parameters.resourceType", IssueInvalid},
		{"malformed JSON",
			fixture(t, input1)[:500],
			400, "Parameters", IssueStructure},
		{"two JSON values",
			append(fixture(t, input1), "{}"...),
			400, "Parameters", IssueStructure},
		{"a JSON array",
			[]byte(`[{"resourceType":"Parameters"}]`),
			400, "Parameters", IssueStructure},
		{"parameter not an array of objects",
			[]byte(`{"resourceType":"Parameters","parameter":[null]}`),
			400, "Parameters.parameter", IssueStructure},
		// encoding/json would read either copy; the responder may read the
		// other.
		{"member repeated in another case",
			bytes.Replace(fixture(t, input1), []byte(`"birthDate": "1989-03-12"`),
				[]byte(`"birthDate": "1989-03-12", "BirthDate": "1970-05"`), 1),
			400, "Parameters.parameter[0].resource.BirthDate", IssueStructure},
	}
	// Values of the patient's data that no error may quote.
	phi := []string{"Samuels", "August", "1989-03-12", "1970-05", "120-35-2435", "19700530"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRequest(tt.body)
			if err == nil {
				err = r.Validate()
			}
			var oe *OutcomeError
			if !errors.As(err, &oe) {
				t.Fatalf("got %v (%T), want an *OutcomeError", err, err)
			}
			if oe.HTTPStatus() != tt.status {
				t.Errorf("HTTPStatus = %d, want %d", oe.HTTPStatus(), tt.status)
			}
			outcome, _ := json.Marshal(oe.Outcome())
			found := false
			for _, is := range oe.Outcome().Issue {
				if slices.Contains(is.Expression, tt.expr) && is.Code == tt.code && is.Severity == SeverityError {
					found = true
				}
			}
			if !found {
				t.Errorf("no %s issue at %s in %s", tt.code, tt.expr, outcome)
			}
			if !strings.HasPrefix(string(outcome), `{"resourceType":"OperationOutcome","issue":[`) {
				t.Errorf("outcome JSON = %s", outcome)
			}
			for _, v := range phi {
				if strings.Contains(err.Error(), v) || strings.Contains(string(outcome), v) {
					t.Errorf("the refusal quotes %q:\n%s\n%s", v, err, outcome)
				}
			}
		})
	}
}

func TestCheckJSON(t *testing.T) {
	tests := []struct {
		body string
		expr string // "" when accepted
	}{
		{`{"":"a","a":1}`, ""},
		{`{"a":{"b":1},"b":2,"c":[{"a":1},{"a":1}]}`, ""},
		{`"just a string"`, ""},
		{`{"a":1,"A":2}`, "Parameters.A"},
		{`{"p":[{"x":1},{"y":{},"Y":2}]}`, "Parameters.p[1].Y"},
		{`{"p":{"q":[[],{"r.s":1,"R.S":2}]}}`, "Parameters.p.q[1].*"},
		{`{"kelvin":1,"\u212aELVIN":2}`, "Parameters.*"},
		{`{"a":1} x`, "Parameters"},
		{``, "Parameters"},
	}
	for _, tt := range tests {
		err := checkJSON([]byte(tt.body))
		var got string
		if oe := (*OutcomeError)(nil); errors.As(err, &oe) {
			got = oe.Outcome().Issue[0].Expression[0]
		} else if err != nil {
			t.Errorf("%s: %v is no *OutcomeError", tt.body, err)
		}
		if got != tt.expr {
			t.Errorf("%s: refused at %q, want %q", tt.body, got, tt.expr)
		}
	}
}

func TestValidateAcceptsPartialBirthDateWithAbsentReason(t *testing.T) {
	body := edit(t, func(p map[string]any) {
		pt := resourceOf(p, 0)
		pt["birthDate"] = "1970-05"
		pt["_birthDate"] = map[string]any{"extension": []any{map[string]any{
			"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown",
		}}}
	})
	parseValid(t, body)
}

func TestRetrievalKey(t *testing.T) {
	body := bytes.Replace(fixture(t, input1), []byte(`"valueBoolean": false`), []byte(`"valueBoolean" :  true`), 1)
	r := parseValid(t, body)
	if !r.PreStageOnly() {
		t.Fatal("PreStageOnly = false for pre-stage-only true")
	}
	r.SetRetrievalKey("0938e860-2f61-433b-982a-9044bd2f42d5")
	if r.PreStageOnly() {
		t.Error("a retrieval still asks to pre-stage")
	}
	out, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r = parseValid(t, out)
	if got := r.RetrievalKey(); got != "0938e860-2f61-433b-982a-9044bd2f42d5" {
		t.Errorf("RetrievalKey = %q", got)
	}
	r.SetRetrievalKey("other")
	r.SetRetrievalKey("")
	if got := r.RetrievalKey(); got != "" {
		t.Errorf("RetrievalKey after removal = %q", got)
	}
	if got := len(r.params); got != 5 {
		t.Errorf("%d parameters after setting and removing the key, want 5", got)
	}
}

func TestPatientKey(t *testing.T) {
	secret := []byte("registration secret")
	key := parseValid(t, fixture(t, input1)).PatientKey(secret)
	if len(key) != 64 {
		t.Fatalf("PatientKey = %q, want 64 hex digits", key)
	}
	same := edit(t, func(p map[string]any) {
		resourceOf(p, 0)["name"] = []any{
			map[string]any{"use": "nickname", "family": "Sam", "given": []any{"Augie"}},
			map[string]any{"use": "official", "family": " SAMUELS ", "given": []any{"august"}},
		}
		resourceOf(p, 0)["gender"] = "unknown" // not part of the key
	})
	if got := parseValid(t, same).PatientKey(secret); got != key {
		t.Error("case, spaces, other names and gender change the key")
	}
	other := edit(t, func(p map[string]any) { resourceOf(p, 0)["birthDate"] = "1989-03-13" })
	if parseValid(t, other).PatientKey(secret) == key {
		t.Error("another birthDate gives the same key")
	}
	if parseValid(t, fixture(t, input1)).PatientKey([]byte("other secret")) == key {
		t.Error("another secret gives the same key")
	}
	if strings.Contains(key, "Samuels") {
		t.Error("the key holds the name")
	}
}
