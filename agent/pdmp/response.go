package pdmp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
)

// Status is the outcome of a lookup, in the terms of the IG's
// pdmp-response-status value set.
type Status string

// The pdmp-response-status codes: PMIX status codes and the IG's
// temporary pre-stage-accepted.
const (
	StatusComplete         Status = "complete"
	StatusNoData           Status = "no-data"
	StatusDisallowed       Status = "disallowed" // the requester's role may not query this PDMP
	StatusError            Status = "error"
	StatusDeferred         Status = "deferred" // queued for manual review; no answer now
	StatusVersionMismatch  Status = "version-mismatch"
	StatusPreStageAccepted Status = "pre-stage-accepted"
)

func knownStatus(s Status) bool {
	switch s {
	case StatusComplete, StatusNoData, StatusDisallowed, StatusError, StatusDeferred, StatusVersionMismatch, StatusPreStageAccepted:
		return true
	}
	return false
}

// Response is a responder's answer to $pdmp-history, read from a
// pdmp-parameters-response or from an OperationOutcome sent in its place.
type Response struct {
	History      *History // pdmp-history-data; nil when absent
	Link         string   // pdmp-history-link: a report for the clinician to open
	RetrievalKey string   // pre-stage-retrieval-key, for the later retrieval
	Issues       []Issue  // outcome's issues

	bare bool // the body was an OperationOutcome, not Parameters
}

// ParseResponse reads a responder's answer: a Parameters resource (or an
// OperationOutcome, see ParseOutcome). Unknown parameters are ignored. It
// fails when the body is not one of those resources, when a 0..1 output
// appears twice, when the link is not an http(s) URL (the EHR will show it
// to a clinician), and when none of the four outputs is present.
func ParseResponse(body []byte) (*Response, error) {
	switch typeOf(body) {
	case "Parameters":
	case "OperationOutcome":
		return ParseOutcome(body)
	default:
		return nil, errors.New("pdmp: the response is neither a Parameters nor an OperationOutcome resource")
	}
	var p struct {
		Parameter []struct {
			Name        string          `json:"name"`
			ValueURL    *string         `json:"valueUrl"`
			ValueURI    *string         `json:"valueUri"` // url's parent type, which some servers write
			ValueString *string         `json:"valueString"`
			Resource    json.RawMessage `json:"resource"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, readError("the response Parameters", err)
	}
	r := &Response{}
	seen := map[string]bool{}
	for _, prm := range p.Parameter {
		switch prm.Name {
		case "pdmp-history-data", "pdmp-history-link", "pre-stage-retrieval-key":
			if seen[prm.Name] {
				return nil, fmt.Errorf("pdmp: the response has more than one %s", prm.Name)
			}
		case "outcome":
		default:
			continue
		}
		seen[prm.Name] = true
		switch prm.Name {
		case "pdmp-history-data":
			h, err := parseHistory(prm.Resource)
			if err != nil {
				return nil, err
			}
			r.History = h
		case "pdmp-history-link":
			link := prm.ValueURL
			if link == nil {
				link = prm.ValueURI
			}
			if link == nil || !webURL(*link) {
				return nil, errors.New("pdmp: the response's pdmp-history-link is not an http(s) URL")
			}
			r.Link = *link
		case "pre-stage-retrieval-key":
			if prm.ValueString == nil || *prm.ValueString == "" {
				return nil, errors.New("pdmp: the response's pre-stage-retrieval-key has no valueString")
			}
			r.RetrievalKey = *prm.ValueString
		case "outcome":
			oo, err := parseOutcome(prm.Resource)
			if err != nil {
				return nil, err
			}
			// The profile allows one outcome; merging more loses nothing.
			r.Issues = append(r.Issues, oo.Issue...)
		}
	}
	if len(seen) == 0 {
		return nil, errors.New("pdmp: the response has none of pdmp-history-data, pdmp-history-link, pre-stage-retrieval-key and outcome")
	}
	return r, nil
}

// ParseOutcome reads an OperationOutcome that a responder sent in place of
// the response Parameters, as it may with an HTTP 4xx or 5xx status. Since
// the operation then produced no output, the Response's Status is error
// unless an issue carries a more specific status (such as no-data or
// disallowed).
func ParseOutcome(body []byte) (*Response, error) {
	oo, err := parseOutcome(body)
	if err != nil {
		return nil, err
	}
	return &Response{Issues: oo.Issue, bare: true}, nil
}

func parseOutcome(raw json.RawMessage) (*OperationOutcome, error) {
	if typeOf(raw) != "OperationOutcome" {
		return nil, errors.New("pdmp: the response's outcome is not an OperationOutcome resource")
	}
	var oo OperationOutcome
	if err := json.Unmarshal(raw, &oo); err != nil {
		return nil, readError("the response's OperationOutcome", err)
	}
	return &oo, nil
}

// readError reports unreadable responder JSON by element path only: the
// encoding/json message could quote a piece of the value.
func readError(what string, err error) error {
	if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("pdmp: %s is not readable: %s has the wrong JSON type", what, printable(te.Field))
	}
	return fmt.Errorf("pdmp: %s is not readable JSON", what)
}

func webURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// Status interprets the response. In order:
//
//   - an issue of severity error or fatal makes it error, or that issue's
//     own status if it has one (disallowed, say);
//   - a history Bundle makes it complete: the IG sends none when there is
//     no history, and other issues then concern part of the answer (a state
//     PDMP that did not answer, say);
//   - otherwise an issue's disallowed, version-mismatch, deferred,
//     pre-stage-accepted or no-data status, in that order;
//   - a bare OperationOutcome is error;
//   - a link makes it complete, a retrieval key pre-stage-accepted;
//   - an issue with status error makes it error, and anything else is
//     no-data.
func (r *Response) Status() Status {
	failed := false
	for _, is := range r.Issues {
		if is.failing() {
			if s := is.ResponseStatus(); s != "" && s != StatusComplete {
				return s
			}
			failed = true
		}
	}
	switch {
	case failed:
		return StatusError
	case r.History != nil:
		return StatusComplete
	}
	for _, s := range []Status{StatusDisallowed, StatusVersionMismatch, StatusDeferred, StatusPreStageAccepted, StatusNoData} {
		if r.hasStatus(s) {
			return s
		}
	}
	switch {
	case r.bare:
		return StatusError
	case r.Link != "":
		return StatusComplete
	case r.RetrievalKey != "":
		return StatusPreStageAccepted
	case r.hasStatus(StatusError):
		return StatusError
	}
	return StatusNoData
}

func (r *Response) hasStatus(s Status) bool {
	for _, is := range r.Issues {
		if is.ResponseStatus() == s {
			return true
		}
	}
	return false
}

// Failed reports a failed lookup: any issue of severity error or fatal, as
// the IG says to treat them, or Status error, disallowed or
// version-mismatch. Deferred, no-data and pre-stage-accepted are answers,
// not failures.
func (r *Response) Failed() bool {
	for _, is := range r.Issues {
		if is.failing() {
			return true
		}
	}
	switch r.Status() {
	case StatusError, StatusDisallowed, StatusVersionMismatch:
		return true
	}
	return false
}
