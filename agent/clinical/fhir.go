package clinical

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html"
	"strings"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
)

// Code systems of the FHIR form. The local ones are URNs, not URLs, so
// that nothing suggests they resolve.
const (
	// CodeSystemFlag codes the summary's flags (FlagCode values).
	CodeSystemFlag = "urn:pdmp-agent:clinical-flag"
	// CodeSystemMeasure codes the summary's Observations.
	CodeSystemMeasure = "urn:pdmp-agent:clinical-measure"
)

// flagCodings are each flag's display and, where the flag falls in one, its
// PMIX patient alert category, so that an EHR that knows the responders'
// own alert codes files the flag with them.
var flagCodings = map[FlagCode]struct{ display, pmix string }{
	FlagPatientMatches:    {"Several possible patient matches", ""},
	FlagDailyMME:          {"High total daily MME of active opioids", "05"},
	FlagOpioidBenzo:       {"Overlapping opioid and benzodiazepine supplies", "04"},
	FlagMultipleProviders: {"Multiple-provider episode", "03"},
	FlagEarlyRefill:       {"Early refill of the same drug", "04"},
}

// pmixDisplays are the displays of the PMIX codes used, from the IG's
// PMIX Patient Alert Category code system.
var pmixDisplays = map[string]string{
	"03": "Doctor/pharmacy shopping alert",
	"04": "Overlapping prescription alert",
	"05": "MME alert",
}

// The author of every computed resource: not a clinician, and not the
// PDMP.
var author = pdmp.Reference{Display: "pdmp-agent, computed from the PDMP's response"}

type fhirBundle struct {
	ResourceType string        `json:"resourceType"`
	Type         string        `json:"type"`
	Timestamp    string        `json:"timestamp"`
	Entry        []bundleEntry `json:"entry"`
}

type bundleEntry struct {
	FullURL  string `json:"fullUrl"`
	Resource any    `json:"resource"`
}

type narrative struct {
	Status string `json:"status"`
	Div    string `json:"div"`
}

type detectedIssue struct {
	ResourceType       string               `json:"resourceType"`
	Text               narrative            `json:"text"`
	Status             string               `json:"status,omitempty"`
	Code               pdmp.CodeableConcept `json:"code"`
	Severity           Severity             `json:"severity,omitempty"`
	Patient            *pdmp.Reference      `json:"patient,omitempty"`
	IdentifiedDateTime string               `json:"identifiedDateTime,omitempty"`
	Author             *pdmp.Reference      `json:"author,omitempty"`
	Implicated         []pdmp.Reference     `json:"implicated,omitempty"`
	Detail             string               `json:"detail,omitempty"`
}

type observation struct {
	ResourceType      string               `json:"resourceType"`
	Text              narrative            `json:"text"`
	Status            string               `json:"status"`
	Code              pdmp.CodeableConcept `json:"code"`
	Subject           *pdmp.Reference      `json:"subject,omitempty"`
	EffectiveDateTime string               `json:"effectiveDateTime"`
	Performer         []pdmp.Reference     `json:"performer,omitempty"`
	ValueQuantity     *quantity            `json:"valueQuantity,omitempty"`
	Note              []annotation         `json:"note,omitempty"`
	Component         []component          `json:"component,omitempty"`
}

type quantity struct {
	Value      float64 `json:"value"`
	Comparator string  `json:"comparator,omitempty"`
	Unit       string  `json:"unit"`
	System     string  `json:"system,omitempty"`
	Code       string  `json:"code,omitempty"`
}

type annotation struct {
	Text string `json:"text"`
}

type component struct {
	Code          pdmp.CodeableConcept `json:"code"`
	ValueQuantity quantity             `json:"valueQuantity"`
}

// FHIR returns the summary as a FHIR R4 Bundle of type collection, in the
// shape docs/clinical-summary.md documents: a DetectedIssue per flag and per
// responder alert (the alert as the responder sent it), the
// multiple-patient notice first, then the responder's alerts, then the
// computed flags; then an Observation of the total daily MME and one of
// the prescriber and pharmacy counts. Every resource carries a narrative,
// so a FHIR viewer shows it without knowing the local codes.
//
// References to the responder's records use the fullUrls of its Bundle
// (urn:uuid: as a rule), which stay valid next to that Bundle, and carry a
// display so that they read well without it.
func (s Summary) FHIR() ([]byte, error) {
	at := s.At.Format(time.RFC3339)
	b := fhirBundle{ResourceType: "Bundle", Type: "collection", Timestamp: at}
	add := func(r any) { b.Entry = append(b.Entry, bundleEntry{"urn:uuid:" + newUUID(), r}) }
	flags := s.Flags
	if len(flags) > 0 && flags[0].Code == FlagPatientMatches {
		add(s.issue(flags[0]))
		flags = flags[1:]
	}
	for _, a := range s.Alerts {
		if a.resource != nil {
			// As sent, under its own fullUrl: the EHR may already hold it.
			b.Entry = append(b.Entry, bundleEntry{cmp.Or(a.FullURL, "urn:uuid:"+newUUID()), a.resource})
			continue
		}
		add(alertIssue(a.Alert))
	}
	for _, f := range flags {
		add(s.issue(f))
	}
	add(s.mmeObservation())
	add(s.providerObservation())

	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false) // narratives are XHTML; keep them readable
	if err := enc.Encode(b); err != nil {
		return nil, fmt.Errorf("clinical: encoding the summary: %w", err)
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), nil
}

func (s Summary) issue(f Flag) detectedIssue {
	c := flagCodings[f.Code]
	code := pdmp.CodeableConcept{Text: c.display}
	if c.pmix != "" {
		code.Coding = append(code.Coding, pdmp.Coding{System: pdmp.SystemPMIXAlert, Code: c.pmix, Display: pmixDisplays[c.pmix]})
	}
	code.Coding = append(code.Coding, pdmp.Coding{System: CodeSystemFlag, Code: string(f.Code), Display: c.display})
	di := detectedIssue{
		ResourceType:       "DetectedIssue",
		Status:             "final",
		Code:               code,
		Severity:           f.Severity,
		Patient:            subjectOf(f.On),
		IdentifiedDateTime: s.At.Format(time.RFC3339),
		Author:             &author,
		Detail:             f.Detail,
	}
	var div strings.Builder
	fmt.Fprintf(&div, "<p><b>%s (%s)</b>: %s</p>", esc(c.display), f.Severity, esc(f.Detail))
	if len(f.On) > 0 {
		div.WriteString("<p>Based on:</p><ul>")
		for _, r := range f.On {
			di.Implicated = append(di.Implicated, pdmp.Reference{Reference: r.Reference(), Display: r.Display})
			fmt.Fprintf(&div, "<li>%s</li>", esc(r.Display))
		}
		div.WriteString("</ul>")
	}
	div.WriteString("<p>Computed by pdmp-agent from the PDMP's response.</p>")
	di.Text = xhtml(div.String())
	return di
}

// alertIssue stands in for a responder's alert whose resource is not in
// the Bundle (a History built by hand): the alert's own fields, nothing
// added.
func alertIssue(a pdmp.Alert) detectedIssue {
	code := pdmp.CodeableConcept{Text: a.Text}
	if a.Code != (pdmp.Coding{}) {
		code.Coding = []pdmp.Coding{a.Code}
	}
	di := detectedIssue{ResourceType: "DetectedIssue", Status: a.Status, Code: code}
	if a.Patient != (pdmp.Reference{}) {
		di.Patient = &a.Patient
	}
	di.Text = xhtml("<p><b>PDMP alert</b>: " + esc(cmp.Or(a.Display(), a.Code.Code)) + "</p>")
	return di
}

func (s Summary) mmeObservation() observation {
	q := &quantity{Value: s.DailyMME, Unit: "MME/d", System: "http://unitsofmeasure.org", Code: "{MME}/d"}
	total := formatNumber(s.DailyMME) + " MME/day"
	if s.DailyMMEAtLeast {
		q.Comparator = ">="
		total = "at least " + total
	}
	var on []Ref
	var div strings.Builder
	fmt.Fprintf(&div, "<p><b>Total daily MME of active opioid prescriptions: %s</b></p>", esc(total))
	if len(s.ActiveOpioids) == 0 {
		div.WriteString("<p>No active opioid dispenses.</p>")
	} else {
		div.WriteString("<table><tr><th>Dispense</th><th>Supplied until</th><th>MME/day</th></tr>")
		for _, o := range s.ActiveOpioids {
			on = append(on, o.Ref)
			mme := formatNumber(o.MME) + " (" + string(o.Source) + ")"
			switch o.Source {
			case MMEUnknown:
				mme = "MME unknown: " + o.Note
			case MMENotCounted:
				mme = "not counted: " + o.Note
			}
			last := o.End.AddDate(0, 0, -1).Format(time.DateOnly)
			fmt.Fprintf(&div, "<tr><td>%s</td><td>%s</td><td>%s</td></tr>", esc(o.Display), last, esc(mme))
		}
		div.WriteString("</table>")
	}
	var notes []annotation
	if len(s.Skipped) > 0 {
		var parts []string
		for _, k := range s.Skipped {
			parts = append(parts, k.Display+": "+k.Reason)
		}
		n := "Left out of the findings on supply: " + strings.Join(parts, "; ") + "."
		notes = append(notes, annotation{n})
		fmt.Fprintf(&div, "<p>%s</p>", esc(n))
	}
	o := observation{
		ResourceType:      "Observation",
		Text:              xhtml(div.String()),
		Status:            "final",
		Code:              measure("total-daily-mme", "Total daily MME of active opioid prescriptions"),
		Subject:           subjectOf(on),
		EffectiveDateTime: s.At.Format(time.RFC3339),
		Performer:         []pdmp.Reference{author},
		ValueQuantity:     q,
		Note:              notes,
	}
	return o
}

func (s Summary) providerObservation() observation {
	var div strings.Builder
	div.WriteString("<table><tr><th>Dispensed since</th><th>Prescribers</th><th>Pharmacies</th></tr>")
	var comps []component
	for _, w := range []struct {
		months int
		c      ProviderCounts
	}{{6, s.Last6Months}, {12, s.Last12Months}} {
		p := count(w.c.Prescribers, w.c.UnknownPrescriber, "prescribers")
		ph := count(w.c.Pharmacies, w.c.UnknownPharmacy, "pharmacies")
		comps = append(comps,
			component{measure(fmt.Sprintf("prescribers-%d-months", w.months), fmt.Sprintf("Distinct prescribers, last %d months", w.months)), p},
			component{measure(fmt.Sprintf("pharmacies-%d-months", w.months), fmt.Sprintf("Distinct pharmacies, last %d months", w.months)), ph})
		fmt.Fprintf(&div, "<tr><td>%s (%d months)</td><td>%s</td><td>%s</td></tr>",
			w.c.Since.Format(time.DateOnly), w.months, countText(p), countText(ph))
	}
	div.WriteString("</table>")
	return observation{
		ResourceType:      "Observation",
		Text:              xhtml(div.String()),
		Status:            "final",
		Code:              measure("provider-counts", "Distinct prescribers and pharmacies of the dispenses"),
		EffectiveDateTime: s.At.Format(time.RFC3339),
		Performer:         []pdmp.Reference{author},
		Component:         comps,
	}
}

// count is a count that is a lower bound when some records could not be
// told apart.
func count(n, unknown int, unit string) quantity {
	q := quantity{Value: float64(n), Unit: unit}
	if unknown > 0 {
		q.Comparator = ">="
	}
	return q
}

func countText(q quantity) string {
	if q.Comparator != "" {
		return "at least " + formatNumber(q.Value)
	}
	return formatNumber(q.Value)
}

func measure(code, display string) pdmp.CodeableConcept {
	return pdmp.CodeableConcept{Coding: []pdmp.Coding{{System: CodeSystemMeasure, Code: code, Display: display}}, Text: display}
}

// subjectOf returns the Patient the records belong to when they all name
// the same one.
func subjectOf(on []Ref) *pdmp.Reference {
	var subject *pdmp.Reference
	for _, r := range on {
		switch {
		case r.Subject.Reference == "":
			return nil
		case subject == nil:
			subject = &r.Subject
		case subject.Reference != r.Subject.Reference:
			return nil
		}
	}
	return subject
}

func xhtml(body string) narrative {
	return narrative{Status: "generated", Div: `<div xmlns="http://www.w3.org/1999/xhtml">` + body + `</div>`}
}

func esc(s string) string { return html.EscapeString(s) }

// newUUID returns a random (version 4) UUID for a fullUrl.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (it aborts the program instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
