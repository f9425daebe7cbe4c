package pdmp

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// addFixtures seeds f with every testdata file.
func addFixtures(f *testing.F) {
	names, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(names) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzParseResponse: whatever a responder sends, parsing and summarising
// must not panic, and a Summary must marshal.
func FuzzParseResponse(f *testing.F) {
	addFixtures(f)
	f.Add(asResponse([]byte(`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"MedicationDispense","extension":[{"url":"http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-extension-mme"}]}}]}`)))
	f.Add([]byte(outcome("error", "exception", "http://terminology.hl7.org/CodeSystem/PMIXStatusCode", "error")))
	f.Add([]byte(`{"resourceType":"Parameters","parameter":[{"name":"outcome"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, parse := range []func([]byte) (*Response, error){ParseResponse, ParseOutcome} {
			r, err := parse(body)
			if err != nil {
				continue
			}
			if s := r.Status(); !knownStatus(s) {
				t.Fatalf("Status %q", s)
			}
			if _, err := json.Marshal(r.Summary()); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = UnwrapMessage(body, "messageheader-req-op-1")
	})
}

// FuzzValidateRequest: whatever an EHR sends, ParseRequest and Validate
// refuse it with an *OutcomeError or accept it; completing, reading and
// marshalling do not panic; and an accepted request still validates after
// a Marshal round trip.
func FuzzValidateRequest(f *testing.F) {
	addFixtures(f)
	f.Add(request(minimalPatient, `{"name":"authorized-practitioner-identifier","valueIdentifier":{"system":"http://hl7.org/fhir/sid/us-npi","value":"1928340565"}}`))
	f.Add(request(`{"name":"patient","resource":{"resourceType":"Patient","birthDate":"1970-05","_birthDate":{"extension":[{}]}}}`))
	f.Add([]byte(`{"resourceType":"Parameters","parameter":[{"name":"patient","resource":{"resourceType":"Patient","name":[{"family":"A","FAMILY":"B"}]}}]}`))
	f.Add([]byte(`{"resourceType":"Parameters","parameter":{}}`))
	// Completion must not add "practitioner" beside a misspelled
	// "prACtiTioner", a pair that ParseRequest refuses.
	f.Add(request(minimalPatient,
		`{"name":"authorized-practitioner","resource":{"resourceType":"Practitioner","identifier":[{"system":"0","value":"0"}]}}`,
		`{"name":"authorized-practitioner-role","resource":{"resourceType":"PractitionerRole","prACtiTioner":[]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var oe *OutcomeError
		r, err := ParseRequest(body)
		if err != nil {
			if !errors.As(err, &oe) {
				t.Fatalf("ParseRequest: %v (%T)", err, err)
			}
			return
		}
		valid := r.Validate()
		if valid != nil && !errors.As(valid, &oe) {
			t.Fatalf("Validate: %v (%T)", valid, valid)
		}
		r.PractitionerIdentifiers()
		r.OrganizationIdentifiers()
		r.HasDelegate()
		r.PreStageOnly()
		r.PatientKey([]byte("k"))
		if err := r.Complete(requester); err != nil && !errors.As(err, &oe) {
			t.Fatalf("Complete: %v", err)
		}
		r.SetRetrievalKey("key")
		out, err := r.Marshal()
		if err != nil || !json.Valid(out) {
			t.Fatalf("Marshal: %v\n%s", err, out)
		}
		if valid != nil {
			return
		}
		again, err := ParseRequest(out)
		if err != nil {
			t.Fatalf("ParseRequest of our own output: %v\n%s", err, out)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("a valid request, completed and keyed, no longer validates: %v\n%s", err, out)
		}
	})
}
