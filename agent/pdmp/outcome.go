package pdmp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// Severity is a FHIR issue-severity code.
type Severity string

// The FHIR R4 issue-severity codes.
const (
	SeverityFatal       Severity = "fatal"
	SeverityError       Severity = "error"
	SeverityWarning     Severity = "warning"
	SeverityInformation Severity = "information"
)

// IssueType is a FHIR issue-type code. The constants are those this package
// produces; any other code of the value set may be used as IssueType("...").
type IssueType string

// FHIR R4 issue-type codes.
const (
	IssueStructure    IssueType = "structure"
	IssueRequired     IssueType = "required"
	IssueValue        IssueType = "value"
	IssueInvalid      IssueType = "invalid"
	IssueDuplicate    IssueType = "duplicate"
	IssueNotSupported IssueType = "not-supported"
	IssueBusinessRule IssueType = "business-rule"
	IssueException    IssueType = "exception"
	IssueTransient    IssueType = "transient"
	IssueSecurity     IssueType = "security"
	IssueForbidden    IssueType = "forbidden"
)

// OperationOutcome is a FHIR OperationOutcome. It marshals with its
// resourceType, so a literal is a complete resource.
type OperationOutcome struct {
	ID    string  `json:"id,omitempty"`
	Issue []Issue `json:"issue"`
}

// MarshalJSON adds the resourceType.
func (o OperationOutcome) MarshalJSON() ([]byte, error) {
	type plain OperationOutcome // without the method, to avoid recursion
	return json.Marshal(struct {
		ResourceType string `json:"resourceType"`
		plain
	}{"OperationOutcome", plain(o)})
}

// Issue is one OperationOutcome.issue.
type Issue struct {
	Severity Severity  `json:"severity"`
	Code     IssueType `json:"code"`
	// Details.Coding carries the PDMP status (ResponseStatus) in responses.
	Details     *CodeableConcept `json:"details,omitempty"`
	Diagnostics string           `json:"diagnostics,omitempty"`
	// Expression names the elements concerned; for request issues, the
	// form is Parameters.parameter[NAME].resource.path.
	Expression []string `json:"expression,omitempty"`
}

// ResponseStatus returns the issue's code from the IG's pdmp-response-status
// value set (PMIX status codes and pre-stage-accepted), "" if it has none.
func (i Issue) ResponseStatus() Status {
	if i.Details == nil {
		return ""
	}
	for _, c := range i.Details.Coding {
		s := Status(c.Code)
		switch {
		case c.System == systemPMIXStatus && s != StatusPreStageAccepted && knownStatus(s),
			c.System == systemPDMPStatus && s == StatusPreStageAccepted:
			return s
		}
	}
	return ""
}

// failing reports an issue that, per the IG, makes the lookup a failure.
func (i Issue) failing() bool {
	return i.Severity == SeverityFatal || i.Severity == SeverityError
}

// OutcomeError is an error that carries the OperationOutcome to send back
// to the EHR that made the request, with the HTTP status to send it with.
//
// Its Error string holds only severities, codes and element paths: issue
// diagnostics may quote a responder's free text, which can name the patient,
// and errors end up in logs.
type OutcomeError struct {
	outcome *OperationOutcome
	status  int
}

// NewOutcomeError returns an OutcomeError for issues, to be answered with
// HTTP status (500 if status is not an error status).
func NewOutcomeError(status int, issues ...Issue) *OutcomeError {
	if status < 400 || status > 599 {
		status = http.StatusInternalServerError
	}
	return &OutcomeError{outcome: &OperationOutcome{Issue: issues}, status: status}
}

// Outcome returns the OperationOutcome for the EHR.
func (e *OutcomeError) Outcome() *OperationOutcome { return e.outcome }

// HTTPStatus suggests the status of the response that carries Outcome:
// 400 when a request could not be read as a Parameters resource, 422 when it
// breaks the request profile, 502 or 503 when the responder failed.
func (e *OutcomeError) HTTPStatus() int { return e.status }

func (e *OutcomeError) Error() string {
	const shown = 3
	issues := e.outcome.Issue
	if len(issues) == 0 {
		return "pdmp: operation outcome without issues"
	}
	var b strings.Builder
	b.WriteString("pdmp: ")
	for i, is := range issues {
		if i == shown {
			fmt.Fprintf(&b, "; and %d more", len(issues)-shown)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(printable(string(is.Severity)))
		b.WriteByte(' ')
		b.WriteString(printable(string(is.Code)))
		for j, x := range is.Expression {
			if j == 0 {
				b.WriteString(" at ")
			} else {
				b.WriteString(", ")
			}
			b.WriteString(printable(x))
		}
	}
	return b.String()
}

// printable returns s if it looks like a code or an element path, "?"
// otherwise. A responder's issue expression may be a FHIRPath such as
// name.where(family = '...') that quotes a value, and this keeps those out
// of error strings.
func printable(s string) string {
	if s == "" || len(s) > 200 {
		return "?"
	}
	for _, r := range s {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9',
			r == '.', r == '-', r == '_', r == '[', r == ']':
		default:
			return "?"
		}
	}
	return s
}
