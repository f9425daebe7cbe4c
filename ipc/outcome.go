package ipc

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Content types.
const (
	fhirJSON  = "application/fhir+json"
	plainJSON = "application/json"
)

// FHIR issue-type codes used in the OperationOutcomes ipc writes.
const (
	codeInvalid       = "invalid"
	codeStructure     = "structure"
	codeTooLong       = "too-long"
	codeSecurity      = "security"
	codeLogin         = "login"
	codeForbidden     = "forbidden"
	codeNotFound      = "not-found"
	codeNotSupported  = "not-supported"
	codeConflict      = "conflict"
	codeDeleted       = "deleted"
	codeException     = "exception"
	codeInformational = "informational"
)

type outcomeIssue struct {
	Severity    string `json:"severity"`
	Code        string `json:"code"`
	Diagnostics string `json:"diagnostics,omitempty"`
}

type operationOutcome struct {
	ResourceType string         `json:"resourceType"`
	Issue        []outcomeIssue `json:"issue"`
}

// outcome is an OperationOutcome with one issue. Its diagnostics are ipc's
// own fixed texts: never a request's content, which may be PHI.
func outcome(severity, code, diagnostics string) []byte {
	b, err := json.Marshal(operationOutcome{
		ResourceType: "OperationOutcome",
		Issue:        []outcomeIssue{{Severity: severity, Code: code, Diagnostics: diagnostics}},
	})
	if err != nil {
		panic(err) // a struct of strings always marshals
	}
	return b
}

// writeError answers with an error OperationOutcome.
func writeError(w http.ResponseWriter, status int, code, diagnostics string) {
	writeBody(w, status, fhirJSON, outcome("error", code, diagnostics))
}

func writeBody(w http.ResponseWriter, status int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body) //nolint:errcheck // the client went away; nothing to do
}
