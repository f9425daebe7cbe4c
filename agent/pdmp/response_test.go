package pdmp

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"testing"
)

// asResponse puts a history-result Bundle into a response Parameters.
func asResponse(bundle []byte) []byte {
	return []byte(`{"resourceType":"Parameters","parameter":[{"name":"pdmp-history-data","resource":` + string(bundle) + `}]}`)
}

func TestResponseFixtures(t *testing.T) {
	oneDispense := map[string]int{"MedicationDispense": 1, "Patient": 1, "Organization": 1}
	tests := []struct {
		file     string
		wrap     bool // a history-result Bundle, to put into Parameters
		status   Status
		failed   bool
		patients int
		counts   map[string]int
		alerts   []SummaryAlert
		link     string
		key      string
		issues   []Status // each issue's ResponseStatus
	}{
		{file: "Parameters-pdmp-history-output-parameters-1.json", status: StatusComplete, patients: 1, counts: oneDispense},
		{file: "Parameters-pdmp-history-output-parameters-2-minimal-history.json", status: StatusComplete, patients: 1, counts: oneDispense},
		{file: "Parameters-pdmp-history-output-parameters-3-patient-not-found.json", status: StatusNoData,
			issues: []Status{StatusNoData}},
		{file: "Parameters-pdmp-history-output-parameters-4-link-response.json", status: StatusComplete,
			link: "http://pdmp.example.org/response/013050650054450"},
		{file: "Parameters-pdmp-history-output-parameters-5-pre-stage-response.json", status: StatusPreStageAccepted,
			key: "0938e860-2f61-433b-982a-9044bd2f42d5", issues: []Status{StatusPreStageAccepted}},
		// A warning whose PMIX status is error: one state PDMP timed out,
		// the rest of the answer stands.
		{file: "Parameters-pdmp-history-output-parameters-6-non-fatal-warning.json", status: StatusComplete,
			link: "http://pdmp.example.org/response/976a5495-72b6-4ed2-b913-a7dc21e7e5e0", issues: []Status{StatusError}},
		{file: "Parameters-pdmp-history-output-parameters-7-fatal-error.json", status: StatusError, failed: true,
			issues: []Status{StatusError}},
		{file: "Bundle-pdmp-bundle-history-result-1.json", wrap: true, status: StatusComplete, patients: 1, counts: oneDispense},
		{file: "Bundle-pdmp-bundle-history-result-2.json", wrap: true, status: StatusComplete, patients: 2,
			counts: map[string]int{"MedicationDispense": 2, "Patient": 2, "Organization": 2, "DetectedIssue": 1, "MedicationRequest": 2, "Practitioner": 2},
			alerts: []SummaryAlert{{Code: "03", Display: "Doctor/pharmacy shopping alert"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body := fixture(t, tt.file)
			if tt.wrap {
				body = asResponse(body)
			}
			r, err := ParseResponse(body)
			if err != nil {
				t.Fatal(err)
			}
			s := r.Summary()
			if s.Status != tt.status || r.Status() != tt.status || s.Failed != tt.failed || r.Failed() != tt.failed {
				t.Errorf("status %s failed %v, want %s %v", s.Status, s.Failed, tt.status, tt.failed)
			}
			if s.Patients != tt.patients || !maps.Equal(s.Counts, tt.counts) {
				t.Errorf("patients %d counts %v, want %d %v", s.Patients, s.Counts, tt.patients, tt.counts)
			}
			if !slices.Equal(s.Alerts, tt.alerts) {
				t.Errorf("alerts %v, want %v", s.Alerts, tt.alerts)
			}
			if r.Link != tt.link || r.RetrievalKey != tt.key || s.Link != tt.link || s.RetrievalKey != tt.key {
				t.Errorf("link %q key %q", r.Link, r.RetrievalKey)
			}
			var issues []Status
			for _, is := range r.Issues {
				issues = append(issues, is.ResponseStatus())
			}
			if !slices.Equal(issues, tt.issues) {
				t.Errorf("issue statuses %v, want %v", issues, tt.issues)
			}
			if h := r.History; h != nil {
				// Raw is the responder's Bundle byte for byte.
				if !bytes.Contains(body, h.Raw) || typeOf(h.Raw) != "Bundle" || h.Unreadable != 0 {
					t.Errorf("Raw %.60s, %d unreadable", h.Raw, h.Unreadable)
				}
			} else if tt.counts != nil {
				t.Error("no History")
			}
		})
	}
}

func TestHistoryDetails(t *testing.T) {
	r, err := ParseResponse(asResponse(fixture(t, "Bundle-pdmp-bundle-history-result-2.json")))
	if err != nil {
		t.Fatal(err)
	}
	h := r.History
	codeine, alprazolam := h.Dispenses[0], h.Dispenses[1]
	if rx, _ := codeine.Medication.Find(SystemRxNorm); rx.Code != "993781" {
		t.Errorf("codeine RxNorm %+v", rx)
	}
	if ndc, _ := alprazolam.Medication.Find(SystemNDC); ndc.Code != "00093545106" {
		t.Errorf("alprazolam NDC %+v", ndc)
	}
	if codeine.Key != "meddispense-res-1" || codeine.Source != "http://example.org/ma-pdmp" || alprazolam.Source != "http://example.org/ri-pdmp" {
		t.Errorf("entries %+v %+v", codeine.Entry, alprazolam.Entry)
	}
	if *codeine.Quantity != (Quantity{Value: 10, Unit: "each"}) || codeine.DaysSupply.Value != 5 || codeine.WhenPrepared != "2023-06-05" {
		t.Errorf("codeine %+v %+v %s", codeine.Quantity, codeine.DaysSupply, codeine.WhenPrepared)
	}
	// whenHandedOver is absent, with a data-absent-reason (mdd-1 is not ours to enforce).
	if codeine.WhenHandedOver != "" || alprazolam.WhenHandedOver != "2023-07-08" {
		t.Errorf("whenHandedOver %q %q", codeine.WhenHandedOver, alprazolam.WhenHandedOver)
	}
	if alprazolam.FillNumber != 4 || alprazolam.LME == nil || *alprazolam.LME != 4 || alprazolam.MME != nil ||
		alprazolam.TransmissionMethod == nil || alprazolam.TransmissionMethod.Code != "05" {
		t.Errorf("alprazolam extensions %+v", alprazolam)
	}
	// Each dispense names its own Patient of the two (an uncertain match).
	if codeine.Subject.Reference != h.Patients[0].FullURL || alprazolam.Subject.Reference != h.Patients[1].FullURL {
		t.Errorf("subjects %q %q", codeine.Subject.Reference, alprazolam.Subject.Reference)
	}
	if p := alprazolam.Performers; len(p) != 1 || p[0].Reference != h.Pharmacies[1].FullURL || p[0].Identifier.Value != "990717" {
		t.Errorf("performers %+v", p)
	}
	if a := alprazolam.AuthorizingPrescription; len(a) != 1 || a[0].Identifier.Value != "580331" {
		t.Errorf("authorizing prescription %+v", a)
	}
	if len(h.Practitioners) != 2 || h.Practitioners[0].Identifiers[0] != npi("9941339100") {
		t.Errorf("practitioners %+v", h.Practitioners)
	}
	if a := h.Alerts[0]; a.Code.System != SystemPMIXAlert || a.Patient.Reference != h.Patients[1].FullURL || a.Status != "final" {
		t.Errorf("alert %+v", a)
	}

	r, err = ParseResponse(fixture(t, "Parameters-pdmp-history-output-parameters-1.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Quirk 5: the dispense has no id, so its key is its fullUrl.
	d := r.History.Dispenses[0]
	if d.Key != "urn:uuid:9ce2a97b-5cab-4986-814f-4734016e6084" || d.MME == nil || *d.MME != 18 || d.FillNumber != 1 {
		t.Errorf("dispense %+v", d)
	}
}

func TestMedicationReference(t *testing.T) {
	bundle := `{"resourceType":"Bundle","type":"collection","entry":[
		{"fullUrl":"urn:uuid:m1","resource":{"resourceType":"Medication","id":"m1","code":{"coding":[{"system":"http://www.nlm.nih.gov/research/umls/rxnorm","code":"1049621"}]}}},
		{"fullUrl":"urn:uuid:d1","resource":{"resourceType":"MedicationDispense","medicationReference":{"reference":"urn:uuid:m1"}}},
		{"fullUrl":"urn:uuid:a1","resource":{"resourceType":"MedicationAdministration","medicationReference":{"reference":"Medication/m1"},
			"effectivePeriod":{"start":"2024-01-02"},"dosage":{"dose":{"value":2,"unit":"mg"}}}},
		{"fullUrl":"urn:uuid:x","resource":{"resourceType":"MedicationDispense","quantity":"ten"}},
		{"fullUrl":"urn:uuid:y","resource":{"id":"no-type"}}]}`
	r, err := ParseResponse(asResponse([]byte(bundle)))
	if err != nil {
		t.Fatal(err)
	}
	h := r.History
	if rx, _ := h.Dispenses[0].Medication.Find(SystemRxNorm); rx.Code != "1049621" {
		t.Errorf("dispense medication %+v", h.Dispenses[0].Medication)
	}
	a := h.Administrations[0]
	if rx, _ := a.Medication.Find(SystemRxNorm); rx.Code != "1049621" || a.Effective != "2024-01-02" || a.Dose.Value != 2 {
		t.Errorf("administration %+v", a)
	}
	if h.Unreadable != 2 || h.Counts["MedicationDispense"] != 2 {
		t.Errorf("unreadable %d, counts %v", h.Unreadable, h.Counts)
	}
}

func TestSummaryJSON(t *testing.T) {
	tests := []struct {
		body []byte
		want string
	}{
		{asResponse(fixture(t, "Bundle-pdmp-bundle-history-result-2.json")),
			`{"status":"complete","failed":false,"patients":2,` +
				`"counts":{"DetectedIssue":1,"MedicationDispense":2,"MedicationRequest":2,"Organization":2,"Patient":2,"Practitioner":2},` +
				`"alerts":[{"code":"03","display":"Doctor/pharmacy shopping alert"}]}`},
		{fixture(t, "Parameters-pdmp-history-output-parameters-6-non-fatal-warning.json"),
			`{"status":"complete","failed":false,"patients":0,"link":"http://pdmp.example.org/response/976a5495-72b6-4ed2-b913-a7dc21e7e5e0",` +
				`"issues":[{"severity":"warning","code":"incomplete","status":"error",` +
				`"diagnostics":"Incomplete results: History includes only information from the MN PDMP. Iowa PDMP did not respond within the timeout window"}]}`},
		{fixture(t, "Parameters-pdmp-history-output-parameters-5-pre-stage-response.json"),
			`{"status":"pre-stage-accepted","failed":false,"patients":0,"retrievalKey":"0938e860-2f61-433b-982a-9044bd2f42d5",` +
				`"issues":[{"severity":"information","code":"informational","status":"pre-stage-accepted"}]}`},
	}
	for _, tt := range tests {
		r, err := ParseResponse(tt.body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(r.Summary())
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("summary\n got %s\nwant %s", got, tt.want)
		}
	}
}

// outcome returns an OperationOutcome with one issue.
func outcome(severity, code, system, status string) string {
	details := ""
	if status != "" {
		details = `,"details":{"coding":[{"system":"` + system + `","code":"` + status + `"}]}`
	}
	return `{"resourceType":"OperationOutcome","issue":[{"severity":"` + severity + `","code":"` + code + `"` + details + `}]}`
}

func TestStatus(t *testing.T) {
	const (
		pmix = "http://terminology.hl7.org/CodeSystem/PMIXStatusCode"
		link = `{"name":"pdmp-history-link","valueUrl":"https://pdmp.example/r/1"}`
		data = `{"name":"pdmp-history-data","resource":{"resourceType":"Bundle","type":"collection","entry":[]}}`
	)
	withOutcome := func(oo string, more ...string) []byte {
		return request(append([]string{`{"name":"outcome","resource":` + oo + `}`}, more...)...)
	}
	tests := []struct {
		name   string
		body   []byte
		bare   bool // ParseOutcome
		status Status
		failed bool
	}{
		{"error with a specific status", withOutcome(outcome("error", "forbidden", pmix, "disallowed")), false, StatusDisallowed, true},
		{"information disallowed", withOutcome(outcome("information", "informational", pmix, "disallowed")), false, StatusDisallowed, true},
		{"deferred", withOutcome(outcome("information", "informational", pmix, "deferred")), false, StatusDeferred, false},
		{"version mismatch", withOutcome(outcome("warning", "not-supported", pmix, "version-mismatch")), false, StatusVersionMismatch, true},
		{"fatal without status", withOutcome(outcome("fatal", "exception", "", ""), link), false, StatusError, true},
		{"data with one state's no-data", withOutcome(outcome("information", "informational", pmix, "no-data"), data), false, StatusComplete, false},
		{"no-data with a not-found report", withOutcome(outcome("information", "informational", pmix, "no-data"), link), false, StatusNoData, false},
		{"warning error without data", withOutcome(outcome("warning", "incomplete", pmix, "error")), false, StatusError, true},
		{"information only", withOutcome(outcome("information", "informational", "", "")), false, StatusNoData, false},
		{"PMIX code in another system", withOutcome(outcome("information", "informational", "urn:other", "deferred")), false, StatusNoData, false},
		{"bare error", []byte(outcome("error", "processing", "", "")), true, StatusError, true},
		{"bare no-data", []byte(outcome("information", "not-found", pmix, "no-data")), true, StatusNoData, false},
		{"bare information", []byte(outcome("information", "informational", "", "")), true, StatusError, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := ParseResponse
			if tt.bare {
				parse = ParseOutcome
			}
			r, err := parse(tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status() != tt.status || r.Failed() != tt.failed {
				t.Errorf("status %s failed %v, want %s %v", r.Status(), r.Failed(), tt.status, tt.failed)
			}
		})
	}
	// ParseResponse takes a bare OperationOutcome too.
	if r, err := ParseResponse([]byte(outcome("error", "processing", "", ""))); err != nil || r.Status() != StatusError {
		t.Errorf("bare outcome through ParseResponse: %v", err)
	}
}

func TestParseResponseRefuses(t *testing.T) {
	link := func(url string) string { return `{"name":"pdmp-history-link","valueUrl":"` + url + `"}` }
	tests := []struct {
		name string
		body []byte
	}{
		{"not JSON", []byte("<html>Bad Gateway</html>")},
		{"another resource", fixture(t, "Bundle-pdmp-bundle-history-result-1.json")},
		{"no output", request(`{"name":"something-else","valueString":"x"}`)},
		{"two histories", request(`{"name":"pdmp-history-data","resource":{"resourceType":"Bundle"}}`, `{"name":"pdmp-history-data","resource":{"resourceType":"Bundle"}}`)},
		{"history not a Bundle", request(`{"name":"pdmp-history-data","resource":{"resourceType":"Patient"}}`)},
		{"script link", request(link("javascript:alert(1)"))},
		{"relative link", request(link("/report/1"))},
		{"link without value", request(`{"name":"pdmp-history-link","valueString":"https://x.example"}`)},
		{"empty key", request(`{"name":"pre-stage-retrieval-key","valueString":""}`)},
		{"outcome not an OperationOutcome", request(`{"name":"outcome","resource":{"resourceType":"Bundle"}}`)},
		{"wrong type", request(`{"name":"outcome","resource":{"resourceType":"OperationOutcome","issue":[{"severity":1}]}}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, err := ParseResponse(tt.body); err == nil {
				t.Errorf("accepted: %+v", r.Summary())
			}
		})
	}
	if _, err := ParseOutcome(fixture(t, "Parameters-pdmp-history-output-parameters-7-fatal-error.json")); err == nil {
		t.Error("ParseOutcome took a Parameters")
	}
}
