package pdmp

import (
	"encoding/json"
	"errors"
)

// History is the content of a pdmp-history-data Bundle (profile
// pdmp-bundle-history-result), read for the agent's own use. What goes back
// to the EHR is Raw.
//
// Resources from several PDMPs may arrive together, told apart by Source;
// several Patients mean the match was uncertain or the sources differ, and
// each record's Subject (or Patient) names which one it belongs to, by
// FullURL as a rule.
type History struct {
	Raw             json.RawMessage // the Bundle exactly as the responder sent it
	Patients        []Patient
	Dispenses       []Dispense
	Administrations []Administration
	Pharmacies      []Organization // the Bundle's Organizations
	Practitioners   []Practitioner
	Alerts          []Alert        // DetectedIssues
	Counts          map[string]int // entries by resourceType
	// Unreadable counts the entries that could not be read: without a
	// resourceType, or with an element of the wrong JSON type (those are
	// in Counts too). They are in Raw all the same.
	Unreadable int
}

// Entry identifies a resource of the history Bundle.
type Entry struct {
	// Key is the resource id or, when the resource has none, the entry's
	// fullUrl. (Some IG examples set Bundle.entry.id instead of the id.)
	Key string
	// FullURL is the entry's fullUrl, which the Bundle's references use.
	FullURL string
	// Source is meta.source: the PDMP the record comes from.
	Source string
}

// Patient is a Patient record of the responder, matching the request's.
type Patient struct {
	Entry
	Name        []HumanName
	BirthDate   string
	Gender      string
	Identifiers []Identifier
}

// Dispense is a MedicationDispense (profile pdmp-medicationdispense).
type Dispense struct {
	Entry
	Status string
	// Medication is medicationCodeableConcept, or the code of the
	// Medication entry that medicationReference names. Find(SystemRxNorm)
	// and Find(SystemNDC) give the usual codes.
	Medication              CodeableConcept
	Quantity                *Quantity
	DaysSupply              *Quantity
	WhenPrepared            string
	WhenHandedOver          string      // "" when absent, often with a data-absent-reason
	Subject                 Reference   // the Patient entry
	Performers              []Reference // performer.actor: the pharmacy, by reference and/or identifier
	AuthorizingPrescription []Reference

	// From the IG's extensions.
	FillNumber         int      // 0 when absent
	MME, LME           *float64 // morphine and lorazepam milligram equivalents
	TransmissionMethod *Coding  // how the prescription reached the pharmacy
	PaymentMethod      *Coding
	OpioidTreatment    *Coding // reason for an opioid prescription
}

// Administration is a MedicationAdministration (profile
// pdmp-medicationadministration).
type Administration struct {
	Entry
	Status     string
	Medication CodeableConcept
	Dose       *Quantity
	Effective  string // effectiveDateTime, or effectivePeriod.start
	Subject    Reference
	Performers []Reference
}

// Organization is an Organization, usually a pharmacy (profile
// pdmp-organization-pharmacy, identified by NPI, NCPDP or DEA numbers).
type Organization struct {
	Entry
	Name        string
	Identifiers []Identifier
}

// Practitioner is a Practitioner, usually a prescriber.
type Practitioner struct {
	Entry
	Name        []HumanName
	Identifiers []Identifier
}

// Alert is a DetectedIssue raised by the PDMP.
type Alert struct {
	Entry
	Status string
	// Code is the PMIX alert category coding (system SystemPMIXAlert, e.g.
	// 03 doctor/pharmacy shopping) or else the first coding.
	Code    Coding
	Text    string // code.text
	Patient Reference
}

// Display returns the alert's display text, else its code's text.
func (a Alert) Display() string {
	if a.Code.Display != "" {
		return a.Code.Display
	}
	return a.Text
}

const extensionBase = "http://hl7.org/fhir/us/pdmp/StructureDefinition/"

type extension struct {
	URL              string   `json:"url"`
	ValuePositiveInt *int     `json:"valuePositiveInt"`
	ValueDecimal     *float64 `json:"valueDecimal"`
	ValueCoding      *Coding  `json:"valueCoding"`
}

type performer struct {
	Actor Reference `json:"actor"`
}

func actors(ps []performer) []Reference {
	var refs []Reference
	for _, p := range ps {
		refs = append(refs, p.Actor)
	}
	return refs
}

// entryOf is one Bundle entry with the parts common to every resource.
type entryOf struct {
	Entry
	resourceType string
	resource     json.RawMessage
}

func parseHistory(raw json.RawMessage) (*History, error) {
	var b struct {
		ResourceType string `json:"resourceType"`
		Entry        []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.ResourceType != "Bundle" {
		return nil, errors.New("pdmp: the response's pdmp-history-data is not a readable Bundle")
	}
	h := &History{Raw: raw, Counts: map[string]int{}}
	var entries []entryOf
	medications := map[string]CodeableConcept{} // by fullUrl and by Medication/id
	for _, e := range b.Entry {
		var head struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
			Meta         struct {
				Source string `json:"source"`
			} `json:"meta"`
		}
		if json.Unmarshal(e.Resource, &head) != nil || head.ResourceType == "" {
			h.Unreadable++
			continue
		}
		h.Counts[head.ResourceType]++
		key := head.ID
		if key == "" {
			key = e.FullURL
		}
		entries = append(entries, entryOf{Entry{key, e.FullURL, head.Meta.Source}, head.ResourceType, e.Resource})
		if head.ResourceType != "Medication" {
			continue
		}
		var med struct {
			Code CodeableConcept `json:"code"`
		}
		if json.Unmarshal(e.Resource, &med) != nil {
			h.Unreadable++
			continue
		}
		if e.FullURL != "" {
			medications[e.FullURL] = med.Code
		}
		if head.ID != "" {
			medications["Medication/"+head.ID] = med.Code
		}
	}
	for _, e := range entries {
		var err error
		switch e.resourceType {
		case "Patient":
			err = h.addPatient(e)
		case "MedicationDispense":
			err = h.addDispense(e, medications)
		case "MedicationAdministration":
			err = h.addAdministration(e, medications)
		case "Organization":
			err = h.addOrganization(e)
		case "Practitioner":
			err = h.addPractitioner(e)
		case "DetectedIssue":
			err = h.addAlert(e)
		}
		if err != nil {
			h.Unreadable++
		}
	}
	return h, nil
}

func (h *History) addPatient(e entryOf) error {
	var w struct {
		Name       []HumanName  `json:"name"`
		BirthDate  string       `json:"birthDate"`
		Gender     string       `json:"gender"`
		Identifier []Identifier `json:"identifier"`
	}
	if err := json.Unmarshal(e.resource, &w); err != nil {
		return err
	}
	h.Patients = append(h.Patients, Patient{e.Entry, w.Name, w.BirthDate, w.Gender, w.Identifier})
	return nil
}

// medication returns a resource's medication code, resolving a reference
// to a Medication entry.
func medication(cc *CodeableConcept, ref *Reference, medications map[string]CodeableConcept) CodeableConcept {
	switch {
	case cc != nil:
		return *cc
	case ref != nil:
		if m, ok := medications[ref.Reference]; ok {
			return m
		}
		return CodeableConcept{Text: ref.Display}
	}
	return CodeableConcept{}
}

func (h *History) addDispense(e entryOf, medications map[string]CodeableConcept) error {
	var w struct {
		Extension                 []extension      `json:"extension"`
		Status                    string           `json:"status"`
		MedicationCodeableConcept *CodeableConcept `json:"medicationCodeableConcept"`
		MedicationReference       *Reference       `json:"medicationReference"`
		Subject                   Reference        `json:"subject"`
		Performer                 []performer      `json:"performer"`
		AuthorizingPrescription   []Reference      `json:"authorizingPrescription"`
		Quantity                  *Quantity        `json:"quantity"`
		DaysSupply                *Quantity        `json:"daysSupply"`
		WhenPrepared              string           `json:"whenPrepared"`
		WhenHandedOver            string           `json:"whenHandedOver"`
	}
	if err := json.Unmarshal(e.resource, &w); err != nil {
		return err
	}
	d := Dispense{
		Entry:                   e.Entry,
		Status:                  w.Status,
		Medication:              medication(w.MedicationCodeableConcept, w.MedicationReference, medications),
		Quantity:                w.Quantity,
		DaysSupply:              w.DaysSupply,
		WhenPrepared:            w.WhenPrepared,
		WhenHandedOver:          w.WhenHandedOver,
		Subject:                 w.Subject,
		Performers:              actors(w.Performer),
		AuthorizingPrescription: w.AuthorizingPrescription,
	}
	for _, x := range w.Extension {
		switch x.URL {
		case extensionBase + "pdmp-extension-rx-fill-number":
			if x.ValuePositiveInt != nil {
				d.FillNumber = *x.ValuePositiveInt
			}
		case extensionBase + "pdmp-extension-mme":
			d.MME = x.ValueDecimal
		case extensionBase + "pdmp-extension-lme":
			d.LME = x.ValueDecimal
		case extensionBase + "pdmp-extension-rx-transmission-method":
			d.TransmissionMethod = x.ValueCoding
		case extensionBase + "pdmp-extension-method-of-payment":
			d.PaymentMethod = x.ValueCoding
		case extensionBase + "pdmp-extension-opioid-treatment-code":
			d.OpioidTreatment = x.ValueCoding
		}
	}
	h.Dispenses = append(h.Dispenses, d)
	return nil
}

func (h *History) addAdministration(e entryOf, medications map[string]CodeableConcept) error {
	var w struct {
		Status                    string           `json:"status"`
		MedicationCodeableConcept *CodeableConcept `json:"medicationCodeableConcept"`
		MedicationReference       *Reference       `json:"medicationReference"`
		Subject                   Reference        `json:"subject"`
		Performer                 []performer      `json:"performer"`
		EffectiveDateTime         string           `json:"effectiveDateTime"`
		EffectivePeriod           struct {
			Start string `json:"start"`
		} `json:"effectivePeriod"`
		Dosage struct {
			Dose *Quantity `json:"dose"`
		} `json:"dosage"`
	}
	if err := json.Unmarshal(e.resource, &w); err != nil {
		return err
	}
	effective := w.EffectiveDateTime
	if effective == "" {
		effective = w.EffectivePeriod.Start
	}
	h.Administrations = append(h.Administrations, Administration{
		Entry:      e.Entry,
		Status:     w.Status,
		Medication: medication(w.MedicationCodeableConcept, w.MedicationReference, medications),
		Dose:       w.Dosage.Dose,
		Effective:  effective,
		Subject:    w.Subject,
		Performers: actors(w.Performer),
	})
	return nil
}

func (h *History) addOrganization(e entryOf) error {
	var w struct {
		Name       string       `json:"name"`
		Identifier []Identifier `json:"identifier"`
	}
	if err := json.Unmarshal(e.resource, &w); err != nil {
		return err
	}
	h.Pharmacies = append(h.Pharmacies, Organization{e.Entry, w.Name, w.Identifier})
	return nil
}

func (h *History) addPractitioner(e entryOf) error {
	var w struct {
		Name       []HumanName  `json:"name"`
		Identifier []Identifier `json:"identifier"`
	}
	if err := json.Unmarshal(e.resource, &w); err != nil {
		return err
	}
	h.Practitioners = append(h.Practitioners, Practitioner{e.Entry, w.Name, w.Identifier})
	return nil
}

func (h *History) addAlert(e entryOf) error {
	var w struct {
		Status  string          `json:"status"`
		Code    CodeableConcept `json:"code"`
		Patient Reference       `json:"patient"`
	}
	if err := json.Unmarshal(e.resource, &w); err != nil {
		return err
	}
	code, ok := w.Code.Find(SystemPMIXAlert)
	if !ok && len(w.Code.Coding) > 0 {
		code = w.Code.Coding[0]
	}
	h.Alerts = append(h.Alerts, Alert{Entry: e.Entry, Status: w.Status, Code: code, Text: w.Code.Text, Patient: w.Patient})
	return nil
}
