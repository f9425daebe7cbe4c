package pdmp

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// The event of both PDMP messages: the operation's canonical URL as a
// urn:ietf:rfc:3986 code. (The IG's intro pages mention older
// pdmp-event-type codes; the profiles fix these.)
const (
	eventSystem = "urn:ietf:rfc:3986"
	eventCode   = "http://hl7.org/fhir/us/pdmp/OperationDefinition/pdmp-history"
)

// MessageInfo is what the MessageHeader of a request message says about
// its route.
type MessageInfo struct {
	// SourceEndpoint is MessageHeader.source.endpoint (required): this
	// agent, as the responder knows it.
	SourceEndpoint string
	// DestinationEndpoint is MessageHeader.destination.endpoint, which
	// intermediaries route on; optional.
	DestinationEndpoint string
}

type messageBundle struct {
	ResourceType string         `json:"resourceType"`
	ID           string         `json:"id,omitempty"`
	Meta         *meta          `json:"meta,omitempty"`
	Type         string         `json:"type"`
	Timestamp    string         `json:"timestamp,omitempty"`
	Entry        []messageEntry `json:"entry"`
}

type messageEntry struct {
	FullURL  string          `json:"fullUrl,omitempty"`
	Resource json.RawMessage `json:"resource"`
}

type meta struct {
	Profile []string `json:"profile,omitempty"`
}

type messageHeader struct {
	ResourceType string           `json:"resourceType"`
	ID           string           `json:"id,omitempty"`
	Meta         *meta            `json:"meta,omitempty"`
	EventCoding  Coding           `json:"eventCoding"`
	Destination  []endpoint       `json:"destination,omitempty"`
	Source       endpoint         `json:"source"`
	Response     *messageResponse `json:"response,omitempty"`
	Focus        []Reference      `json:"focus,omitempty"`
}

type endpoint struct {
	Endpoint string `json:"endpoint"`
}

type messageResponse struct {
	Identifier string     `json:"identifier"`
	Code       string     `json:"code"`
	Details    *Reference `json:"details,omitempty"`
}

// WrapMessage wraps request Parameters in a pdmp-bundle-request-message for
// the FHIR messaging option ($process-message): a message Bundle with a
// fresh id and timestamp whose first entry is the MessageHeader (event
// pdmp-history, focus the Parameters) and second the Parameters, unchanged.
// messageID is the MessageHeader id, which the response message names in
// MessageHeader.response.identifier; keep it for UnwrapMessage.
func WrapMessage(params []byte, m MessageInfo) (bundle []byte, messageID string, err error) {
	if m.SourceEndpoint == "" {
		return nil, "", errors.New("pdmp: a request message needs a source endpoint")
	}
	if typeOf(params) != "Parameters" {
		return nil, "", errors.New("pdmp: the focus of a request message must be a Parameters resource")
	}
	messageID = newUUID()
	focus := "urn:uuid:" + newUUID()
	h := messageHeader{
		ResourceType: "MessageHeader",
		ID:           messageID,
		Meta:         &meta{Profile: []string{"http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-messageheader-request"}},
		EventCoding:  Coding{System: eventSystem, Code: eventCode},
		Source:       endpoint{m.SourceEndpoint},
		Focus:        []Reference{{Reference: focus}},
	}
	if m.DestinationEndpoint != "" {
		h.Destination = []endpoint{{m.DestinationEndpoint}}
	}
	hb, err := encode(h)
	if err != nil {
		return nil, "", err
	}
	bundle, err = encode(messageBundle{
		ResourceType: "Bundle",
		ID:           newUUID(),
		Meta:         &meta{Profile: []string{"http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-bundle-request-message"}},
		Type:         "message",
		Timestamp:    time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		Entry:        []messageEntry{{FullURL: "urn:uuid:" + messageID, Resource: hb}, {FullURL: focus, Resource: params}},
	})
	if err != nil {
		return nil, "", err
	}
	return bundle, messageID, nil
}

// UnwrapMessage checks a response message and returns the Parameters it
// focuses on, as the responder sent them, for ParseResponse. The Bundle
// must be a message whose first entry is a pdmp-history MessageHeader that
// answers requestMessageID: a mismatch means the answer is to another
// request, possibly about another patient, and is an error.
//
// MessageHeader.response.code transient-error or fatal-error yields an
// *OutcomeError (HTTP 503 or 502) that holds the issues of the
// OperationOutcome in response.details, or else of the focused Parameters'
// outcome.
func UnwrapMessage(bundle []byte, requestMessageID string) ([]byte, error) {
	var b messageBundle
	if err := json.Unmarshal(bundle, &b); err != nil || b.ResourceType != "Bundle" {
		return nil, errors.New("pdmp: the response message is not a readable Bundle")
	}
	if b.Type != "message" {
		return nil, errors.New("pdmp: the response Bundle is not of type message")
	}
	var h messageHeader
	if len(b.Entry) == 0 || json.Unmarshal(b.Entry[0].Resource, &h) != nil || h.ResourceType != "MessageHeader" {
		return nil, errors.New("pdmp: the response message does not start with a readable MessageHeader")
	}
	if h.EventCoding.System != eventSystem || h.EventCoding.Code != eventCode {
		return nil, errors.New("pdmp: the response message is not a pdmp-history message")
	}
	if h.Response == nil {
		return nil, errors.New("pdmp: the message is not a response (no MessageHeader.response)")
	}
	if requestMessageID == "" || h.Response.Identifier != requestMessageID {
		return nil, errors.New("pdmp: the response message answers another message (MessageHeader.response.identifier)")
	}
	switch h.Response.Code {
	case "ok":
	case "transient-error", "fatal-error":
		return nil, b.failure(h)
	default:
		return nil, errors.New("pdmp: the response message has an unknown MessageHeader.response.code")
	}
	if len(h.Focus) == 0 {
		return nil, errors.New("pdmp: the response message has no focus")
	}
	params := b.resolve(h.Focus[0].Reference)
	if typeOf(params) != "Parameters" {
		return nil, errors.New("pdmp: the response message's focus is not a Parameters entry of the Bundle")
	}
	return params, nil
}

// failure turns an error response message into an OutcomeError.
func (b messageBundle) failure(h messageHeader) *OutcomeError {
	status, code := http.StatusBadGateway, IssueException
	if h.Response.Code == "transient-error" {
		status, code = http.StatusServiceUnavailable, IssueTransient
	}
	issues := []Issue{{
		Severity: SeverityError, Code: code,
		Diagnostics: "the PDMP responder answered with MessageHeader.response.code " + h.Response.Code,
	}}
	var oo *OperationOutcome
	if h.Response.Details != nil {
		oo, _ = parseOutcome(b.resolve(h.Response.Details.Reference))
	}
	if oo != nil {
		issues = append(issues, oo.Issue...)
	} else if len(h.Focus) > 0 {
		if resp, err := ParseResponse(b.resolve(h.Focus[0].Reference)); err == nil {
			issues = append(issues, resp.Issues...)
		}
	}
	return NewOutcomeError(status, issues...)
}

// resolve returns the resource of the entry that ref names: by fullUrl, or
// for a relative reference Type/id by the resource's type and id.
func (b messageBundle) resolve(ref string) json.RawMessage {
	if ref == "" {
		return nil
	}
	for _, e := range b.Entry {
		if e.FullURL == ref {
			return e.Resource
		}
	}
	typ, id, ok := strings.Cut(ref, "/")
	if !ok {
		return nil
	}
	for _, e := range b.Entry {
		var head struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
		}
		if json.Unmarshal(e.Resource, &head) == nil && head.ResourceType == typ && head.ID == id {
			return e.Resource
		}
	}
	return nil
}

// typeOf returns the resourceType of a JSON resource, "" if unreadable.
func typeOf(raw json.RawMessage) string {
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	if raw == nil || json.Unmarshal(raw, &head) != nil {
		return ""
	}
	return head.ResourceType
}
