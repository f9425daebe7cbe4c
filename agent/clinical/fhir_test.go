package clinical

import (
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
)

// outBundle is the FHIR form as a reader sees it.
type outBundle struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Timestamp    string `json:"timestamp"`
	Entry        []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

type outResource struct {
	ResourceType string `json:"resourceType"`
	Text         struct {
		Status string `json:"status"`
		Div    string `json:"div"`
	} `json:"text"`
	Status             string               `json:"status"`
	Code               pdmp.CodeableConcept `json:"code"`
	Severity           string               `json:"severity"`
	Patient            *pdmp.Reference      `json:"patient"`
	IdentifiedDateTime string               `json:"identifiedDateTime"`
	Author             pdmp.Reference       `json:"author"`
	Implicated         []pdmp.Reference     `json:"implicated"`
	Detail             string               `json:"detail"`
	EffectiveDateTime  string               `json:"effectiveDateTime"`
	ValueQuantity      *quantity            `json:"valueQuantity"`
	Note               []annotation         `json:"note"`
	Component          []component          `json:"component"`
}

func readFHIR(t *testing.T, s Summary) (outBundle, []outResource) {
	t.Helper()
	body, err := s.FHIR()
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(body) {
		t.Fatalf("invalid JSON: %s", body)
	}
	var b outBundle
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var rs []outResource
	for _, e := range b.Entry {
		if !strings.HasPrefix(e.FullURL, "urn:uuid:") || seen[e.FullURL] {
			t.Errorf("fullUrl %q", e.FullURL)
		}
		seen[e.FullURL] = true
		var r outResource
		if err := json.Unmarshal(e.Resource, &r); err != nil {
			t.Fatal(err)
		}
		if r.Text.Div != "" {
			wellFormed(t, r.Text.Div)
		}
		rs = append(rs, r)
	}
	return b, rs
}

// wellFormed checks a narrative is one XHTML div of well-formed XML.
func wellFormed(t *testing.T, div string) {
	t.Helper()
	if !strings.HasPrefix(div, `<div xmlns="http://www.w3.org/1999/xhtml">`) || !strings.HasSuffix(div, "</div>") {
		t.Errorf("narrative %q", div)
	}
	d := xml.NewDecoder(strings.NewReader(div))
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("narrative %q: %v", div, err)
		}
	}
}

func TestFHIR(t *testing.T) {
	alert := resource{"resourceType": "DetectedIssue", "id": "alert-1", "status": "final",
		"code":    map[string]any{"coding": []any{map[string]any{"system": pdmp.SystemPMIXAlert, "code": "03"}}, "text": "Doctor/pharmacy shopping alert"},
		"patient": map[string]any{"reference": "urn:uuid:p2"}}
	h := history(t,
		patient("p1", "Samuels", "August", "1989-03-12"), patient("p2", "Samuels", "August T", "1989-03-12"),
		alert,
		dispense("o1", oxy10, 120, 30, "2024-01-01"),
		dispense("o2", oxy10, 120, 30, "2024-01-20"),
		dispense("u", "morphine sulfate 4 MG/ML Injectable Solution", 10, 30, "2024-01-20", unit("mL")),
		dispense("b", "alprazolam 0.5 MG Oral Tablet", 30, 30, "2024-01-22", lme(1)),
		dispense("x", "", 10, 5, "2024-01-02", text("<Oxycodone> & 5 MG \"Oral\" Tablet"), noDaysSupply),
	)
	s := Summarize(h, at("2024-01-25T09:30:00Z"), Options{})
	b, rs := readFHIR(t, s)
	if b.ResourceType != "Bundle" || b.Type != "collection" || b.Timestamp != "2024-01-25T09:30:00Z" {
		t.Errorf("bundle %s %s %s", b.ResourceType, b.Type, b.Timestamp)
	}
	var order []string
	for _, r := range rs {
		order = append(order, r.ResourceType+" "+r.Code.Text)
	}
	want := []string{
		"DetectedIssue Several possible patient matches",
		"DetectedIssue Doctor/pharmacy shopping alert",
		"DetectedIssue High total daily MME of active opioids",
		"DetectedIssue Overlapping opioid and benzodiazepine supplies",
		"DetectedIssue Early refill of the same drug",
		"Observation Total daily MME of active opioid prescriptions",
		"Observation Distinct prescribers and pharmacies of the dispenses",
	}
	if !slices.Equal(order, want) {
		t.Fatalf("entries\n%q\nwant\n%q", order, want)
	}

	// The responder's alert is passed on as sent, under its fullUrl.
	var got, sent any
	_ = json.Unmarshal(b.Entry[1].Resource, &got)
	raw, _ := json.Marshal(alert)
	_ = json.Unmarshal(raw, &sent)
	if !reflect.DeepEqual(got, sent) || b.Entry[1].FullURL != "urn:uuid:alert-1" {
		t.Errorf("alert %v under %s", got, b.Entry[1].FullURL)
	}

	// Each computed DetectedIssue carries its flag.
	computed := []outResource{rs[0], rs[2], rs[3], rs[4]}
	pmix := []string{"", "05", "04", "04"}
	for i, f := range s.Flags {
		r := computed[i]
		if r.Status != "final" || r.Severity != string(f.Severity) || r.Detail != f.Detail || r.IdentifiedDateTime != "2024-01-25T09:30:00Z" ||
			r.Author.Display == "" || r.Text.Status != "generated" {
			t.Errorf("%s: %+v", f.Code, r)
		}
		var codes []string
		for _, c := range r.Code.Coding {
			codes = append(codes, c.System+"#"+c.Code)
		}
		wantCodes := []string{CodeSystemFlag + "#" + string(f.Code)}
		if pmix[i] != "" {
			wantCodes = slices.Insert(wantCodes, 0, pdmp.SystemPMIXAlert+"#"+pmix[i])
		}
		if !slices.Equal(codes, wantCodes) {
			t.Errorf("%s: codes %v, want %v", f.Code, codes, wantCodes)
		}
		var implicated []string
		for j, ref := range r.Implicated {
			implicated = append(implicated, ref.Reference)
			if ref.Display != f.On[j].Display || !strings.Contains(r.Text.Div, esc(ref.Display)) {
				t.Errorf("%s: implicated %+v", f.Code, ref)
			}
		}
		var wantRefs []string
		for _, k := range keys(f.On) {
			wantRefs = append(wantRefs, "urn:uuid:"+k)
		}
		if !slices.Equal(implicated, wantRefs) {
			t.Errorf("%s: implicated %v, want %v", f.Code, implicated, wantRefs)
		}
	}
	if rs[0].Detail != "The responder returned 2 possible patient matches; review before acting." || rs[0].Patient != nil {
		t.Errorf("%+v", rs[0])
	}
	// All of one patient: the DetectedIssue names it.
	if p := rs[3].Patient; p == nil || p.Reference != "urn:uuid:p1" {
		t.Errorf("patient %+v", p)
	}
	if !strings.Contains(rs[3].Detail, "The PDMP reports 1 LME for the alprazolam 0.5 MG Oral Tablet dispensed 2024-01-22.") {
		t.Errorf("detail %q", rs[3].Detail)
	}

	mme := rs[5]
	wantQ := quantity{Value: 120, Comparator: ">=", Unit: "MME/d", System: "http://unitsofmeasure.org", Code: "{MME}/d"}
	if mme.ValueQuantity == nil || *mme.ValueQuantity != wantQ || mme.Status != "final" || mme.EffectiveDateTime != "2024-01-25T09:30:00Z" {
		t.Errorf("MME %+v", mme)
	}
	for _, s := range []string{"at least 120 MME/day", "MME unknown: not an oral form", "60 (computed)", "2024-01-30", "&lt;Oxycodone&gt; &amp; 5 MG"} {
		if !strings.Contains(mme.Text.Div, s) {
			t.Errorf("MME narrative lacks %q: %s", s, mme.Text.Div)
		}
	}
	if len(mme.Note) != 1 || !strings.Contains(mme.Note[0].Text, `<Oxycodone> & 5 MG "Oral" Tablet, 2024-01-02 [x]: it has no days supply`) {
		t.Errorf("notes %+v", mme.Note)
	}

	var comps []string
	for _, c := range rs[6].Component {
		q := c.ValueQuantity
		comps = append(comps, c.Code.Coding[0].Code+"="+q.Comparator+formatNumber(q.Value)+" "+q.Unit)
	}
	wantComps := []string{"prescribers-6-months=>=0 prescribers", "pharmacies-6-months=>=0 pharmacies", "prescribers-12-months=>=0 prescribers", "pharmacies-12-months=>=0 pharmacies"}
	if !slices.Equal(comps, wantComps) {
		t.Errorf("components %q", comps)
	}
}

func TestFHIRNothingFound(t *testing.T) {
	s := Summarize(fixture(t, "Bundle-pdmp-bundle-history-result-1.json"), at("2024-06-01"), Options{})
	_, rs := readFHIR(t, s)
	if len(rs) != 2 || rs[0].ValueQuantity.Value != 0 || rs[0].ValueQuantity.Comparator != "" || !strings.Contains(rs[0].Text.Div, "No active opioid dispenses.") {
		t.Fatalf("%+v", rs)
	}
	// One pharmacy in 12 months; the prescriber is named only by an order
	// number, so the count is a lower bound.
	var comps []string
	for _, c := range rs[1].Component {
		comps = append(comps, c.ValueQuantity.Comparator+formatNumber(c.ValueQuantity.Value))
	}
	if want := []string{"0", "0", ">=0", "1"}; !slices.Equal(comps, want) {
		t.Errorf("components %q, want %q", comps, want)
	}
}

// TestFHIRAlertWithoutResource: an alert of a History built by hand, with
// no Bundle to copy it from, is given from its own fields.
func TestFHIRAlertWithoutResource(t *testing.T) {
	h := &pdmp.History{Alerts: []pdmp.Alert{{
		Entry:   pdmp.Entry{Key: "a1", FullURL: "urn:uuid:a1"},
		Status:  "final",
		Code:    pdmp.Coding{System: pdmp.SystemPMIXAlert, Code: "09"},
		Text:    "Naloxone dispensing alert",
		Patient: pdmp.Reference{Reference: "urn:uuid:p1"},
	}, {
		Entry:  pdmp.Entry{Key: "a2"},
		Status: "entered-in-error",
	}}}
	_, rs := readFHIR(t, Summarize(h, at("2024-06-01"), Options{}))
	a := rs[0]
	if a.ResourceType != "DetectedIssue" || a.Status != "final" || a.Code.Text != "Naloxone dispensing alert" ||
		len(a.Code.Coding) != 1 || a.Code.Coding[0].Code != "09" || a.Patient.Reference != "urn:uuid:p1" || a.Severity != "" || a.Detail != "" {
		t.Errorf("%+v", a)
	}
	if len(rs) != 3 {
		t.Errorf("%d entries: the alert entered in error is not passed on", len(rs))
	}
}
