package pdmp

import "maps"

// Summary is a compact, JSON-ready account of a Response. Its JSON:
//
//	{
//	  "status": "complete",            // Status: complete, no-data, disallowed, error,
//	                                   //   deferred, version-mismatch, pre-stage-accepted
//	  "failed": false,                 // Failed
//	  "patients": 2,                   // Patient records: more than one means an uncertain match
//	  "counts": {"MedicationDispense": 2, "Patient": 2, ...},  // history entries by resourceType
//	  "unreadable": 0,                 // history entries that could not be read (omitted if 0)
//	  "alerts": [{"code": "03", "display": "Doctor/pharmacy shopping alert"}],
//	  "link": "https://...",           // pdmp-history-link
//	  "retrievalKey": "...",           // pre-stage-retrieval-key
//	  "issues": [{"severity": "warning", "code": "incomplete", "status": "error",
//	              "diagnostics": "..."}]  // status: the issue's pdmp-response-status code
//	}
//
// Members other than status, failed and patients are omitted when empty.
// Diagnostics are the responder's free text and may name the patient: a
// Summary is for the EHR that asked, never for logs.
type Summary struct {
	Status       Status         `json:"status"`
	Failed       bool           `json:"failed"`
	Patients     int            `json:"patients"`
	Counts       map[string]int `json:"counts,omitempty"`
	Unreadable   int            `json:"unreadable,omitempty"`
	Alerts       []SummaryAlert `json:"alerts,omitempty"`
	Link         string         `json:"link,omitempty"`
	RetrievalKey string         `json:"retrievalKey,omitempty"`
	Issues       []SummaryIssue `json:"issues,omitempty"`
}

// SummaryAlert is an alert of a Summary.
type SummaryAlert struct {
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

// SummaryIssue is an issue of a Summary.
type SummaryIssue struct {
	Severity    Severity  `json:"severity"`
	Code        IssueType `json:"code"`
	Status      Status    `json:"status,omitempty"`
	Diagnostics string    `json:"diagnostics,omitempty"`
}

// Summary summarises the response.
func (r *Response) Summary() Summary {
	s := Summary{
		Status:       r.Status(),
		Failed:       r.Failed(),
		Link:         r.Link,
		RetrievalKey: r.RetrievalKey,
	}
	if h := r.History; h != nil {
		s.Patients = len(h.Patients)
		if len(h.Counts) > 0 {
			s.Counts = maps.Clone(h.Counts)
		}
		s.Unreadable = h.Unreadable
		for _, a := range h.Alerts {
			s.Alerts = append(s.Alerts, SummaryAlert{Code: a.Code.Code, Display: a.Display()})
		}
	}
	for _, is := range r.Issues {
		s.Issues = append(s.Issues, SummaryIssue{
			Severity: is.Severity, Code: is.Code, Status: is.ResponseStatus(), Diagnostics: is.Diagnostics,
		})
	}
	return s
}
