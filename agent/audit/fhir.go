package audit

import (
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Code systems and identifier systems used in exported AuditEvents. The
// urn:pdmp-agent ones are local: they name this agent's own identifiers.
const (
	sysEventType    = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	sysDICOM        = "http://dicom.nema.org/resources/ontology/DCM"
	sysInteraction  = "http://hl7.org/fhir/restful-interaction"
	sysEntityType   = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	sysObjectRole   = "http://terminology.hl7.org/CodeSystem/object-role"
	sysSourceType   = "http://terminology.hl7.org/CodeSystem/security-source-type"
	sysSubtype      = "urn:pdmp-agent:audit-subtype"
	sysCaller       = "urn:pdmp-agent:caller"
	sysRegistration = "urn:pdmp-agent:registration"
	sysRequestID    = "urn:pdmp-agent:request-id"
)

// SysPatientRef is the identifier system of an exported AuditEvent's
// patient entity: the value is the PatientRef, so a clinic holding the key
// can match it.
const SysPatientRef = "urn:pdmp-agent:patient-ref:hmac-sha256"

type coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

type concept struct {
	Coding []coding `json:"coding"`
}

type identifier struct {
	System string `json:"system,omitempty"`
	Value  string `json:"value"`
}

type reference struct {
	Identifier *identifier `json:"identifier,omitempty"`
	Display    string      `json:"display,omitempty"`
}

type period struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type agent struct {
	Type      *concept   `json:"type,omitempty"`
	Who       *reference `json:"who,omitempty"`
	Requestor bool       `json:"requestor"`
}

type source struct {
	Observer reference `json:"observer"`
	Type     []coding  `json:"type"`
}

type entityDetail struct {
	Type        string `json:"type"`
	ValueString string `json:"valueString"`
}

type entity struct {
	What   reference      `json:"what"`
	Type   *coding        `json:"type,omitempty"`
	Role   *coding        `json:"role,omitempty"`
	Detail []entityDetail `json:"detail,omitempty"`
}

// auditEvent is the subset of FHIR R4 AuditEvent the export fills in.
type auditEvent struct {
	ResourceType string   `json:"resourceType"`
	ID           string   `json:"id"`
	Type         coding   `json:"type"`
	Subtype      []coding `json:"subtype,omitempty"`
	Action       string   `json:"action"`
	Period       *period  `json:"period,omitempty"`
	Recorded     string   `json:"recorded"`
	Outcome      string   `json:"outcome"`
	OutcomeDesc  string   `json:"outcomeDesc,omitempty"`
	Agent        []agent  `json:"agent"`
	Source       source   `json:"source"`
	Entity       []entity `json:"entity,omitempty"`
}

// ExportAuditEvents writes every readable record in dir to w as a FHIR R4
// AuditEvent, one JSON object per line, for a clinic's audit repository or
// SIEM. Like the log, the events hold no PHI: the patient entity is
// identified by the PatientRef (system SysPatientRef). The event id is the
// record's hash. It does not check the chain; run Verify for that.
func ExportAuditEvents(dir string, w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return eachRecord(dir, func(r Record) error { return enc.Encode(toAuditEvent(r)) })
}

func toAuditEvent(r Record) auditEvent {
	e := auditEvent{
		ResourceType: "AuditEvent",
		ID:           r.Hash,
		Action:       "E",
		Recorded:     r.Time.UTC().Format(time.RFC3339Nano),
		Outcome:      outcomeCode(r),
		OutcomeDesc:  outcomeDesc(r),
		Source: source{
			Observer: reference{Display: "pdmp-agent"},
			Type:     []coding{{System: sysSourceType, Code: "4", Display: "Application Server"}},
		},
	}
	switch r.Type {
	case TypeLookup:
		e.Type = coding{System: sysEventType, Code: "rest", Display: "RESTful Operation"}
		e.Subtype = []coding{
			{System: sysInteraction, Code: "operation", Display: "operation"},
			{System: sysSubtype, Code: "pdmp-history", Display: "PDMP history request ($pdmp-history)"},
		}
	case TypeConfig:
		e.Type = coding{System: sysDICOM, Code: "110100", Display: "Application Activity"}
	default: // security, key
		e.Type = coding{System: sysDICOM, Code: "110113", Display: "Security Alert"}
	}
	if r.Event != "" {
		e.Subtype = append(e.Subtype, coding{System: sysSubtype, Code: r.Event})
	}
	if r.DurationMS > 0 {
		start := r.Time.Add(-time.Duration(r.DurationMS) * time.Millisecond)
		e.Period = &period{Start: start.UTC().Format(time.RFC3339Nano), End: e.Recorded}
	}

	caller := agent{Requestor: true}
	if r.Caller != "" {
		caller.Who = &reference{Identifier: &identifier{System: sysCaller, Value: r.Caller}}
	}
	e.Agent = append(e.Agent, caller)
	if r.Registration != "" {
		e.Agent = append(e.Agent, agent{Who: &reference{Identifier: &identifier{System: sysRegistration, Value: r.Registration}}})
	}
	if r.Responder != "" {
		e.Agent = append(e.Agent, agent{
			Type: &concept{Coding: []coding{{System: sysDICOM, Code: "110152", Display: "Destination Role ID"}}},
			Who:  &reference{Display: r.Responder},
		})
	}

	if r.Patient != "" {
		e.Entity = append(e.Entity, entity{
			What: reference{Identifier: &identifier{System: SysPatientRef, Value: r.Patient}},
			Type: &coding{System: sysEntityType, Code: "1", Display: "Person"},
			Role: &coding{System: sysObjectRole, Code: "1", Display: "Patient"},
		})
	}
	if r.RequestID != "" || r.JobID != "" || len(r.Counts) > 0 {
		q := entity{
			Type: &coding{System: sysEntityType, Code: "2", Display: "System Object"},
			Role: &coding{System: sysObjectRole, Code: "24", Display: "Query"},
		}
		if r.RequestID != "" {
			q.What.Identifier = &identifier{System: sysRequestID, Value: r.RequestID}
		}
		if r.JobID != "" {
			q.Detail = append(q.Detail, entityDetail{Type: "job_id", ValueString: r.JobID})
		}
		for _, k := range slices.Sorted(maps.Keys(r.Counts)) {
			q.Detail = append(q.Detail, entityDetail{Type: "count:" + k, ValueString: strconv.Itoa(r.Counts[k])})
		}
		e.Entity = append(e.Entity, q)
	}
	return e
}

// outcomeCode maps a record to the FHIR audit-event-outcome codes: 0
// success, 4 minor failure, 8 serious failure, 12 major failure.
func outcomeCode(r Record) string {
	switch strings.ToLower(r.Outcome) {
	case "ok", "done", "success":
		return "0"
	case "failed", "refused", "denied", "cancelled", "rejected", "not-found":
		return "4"
	case "error", "dead", "timeout", "unavailable":
		return "8"
	case "crash", "panic":
		return "12"
	}
	switch s := r.HTTPStatus; {
	case s == 0 && r.Outcome == "":
		return "0" // an event that reports no outcome is a fact, not a failure
	case s >= 200 && s < 300:
		return "0"
	case s >= 400 && s < 500:
		return "4"
	}
	return "8"
}

func outcomeDesc(r Record) string {
	var parts []string
	if r.Outcome != "" {
		parts = append(parts, r.Outcome)
	}
	if r.HTTPStatus != 0 {
		parts = append(parts, "HTTP "+strconv.Itoa(r.HTTPStatus))
	}
	if r.Detail != "" {
		parts = append(parts, r.Detail)
	}
	return strings.Join(parts, "; ")
}
