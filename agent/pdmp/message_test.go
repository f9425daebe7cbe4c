package pdmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRequestMessageFixture(t *testing.T) {
	bundle := fixture(t, requestMsg)
	var h messageHeader
	if err := json.Unmarshal(messageEntryResource(t, bundle, 0), &h); err != nil {
		t.Fatal(err)
	}
	if h.EventCoding.System != eventSystem || h.EventCoding.Code != eventCode {
		t.Errorf("the IG's request message has event %+v", h.EventCoding)
	}
	// The relative focus reference resolves to the inline Parameters,
	// which is a valid request (see TestRequestFixturesValidate).
	var b messageBundle
	if err := json.Unmarshal(bundle, &b); err != nil {
		t.Fatal(err)
	}
	if got := b.resolve(h.Focus[0].Reference); !bytes.Equal(got, messageEntryResource(t, bundle, 1)) {
		t.Errorf("focus %q resolves to %.60s", h.Focus[0].Reference, got)
	}
}

func TestWrapMessage(t *testing.T) {
	params := fixture(t, input1)
	before := time.Now().UTC().Add(-time.Second)
	bundle, id, err := WrapMessage(params, MessageInfo{SourceEndpoint: "https://clinic.example/agent", DestinationEndpoint: "https://pdmp.example/fhir"})
	if err != nil {
		t.Fatal(err)
	}
	var b messageBundle
	if err := json.Unmarshal(bundle, &b); err != nil {
		t.Fatal(err)
	}
	if b.ResourceType != "Bundle" || b.Type != "message" || b.ID == "" || len(b.Entry) != 2 {
		t.Fatalf("bundle %s", bundle)
	}
	if ts, err := time.Parse(time.RFC3339, b.Timestamp); err != nil || ts.Before(before) {
		t.Errorf("timestamp %q: %v", b.Timestamp, err)
	}
	var h messageHeader
	if err := json.Unmarshal(b.Entry[0].Resource, &h); err != nil {
		t.Fatal(err)
	}
	switch {
	case h.ResourceType != "MessageHeader" || h.ID != id || b.Entry[0].FullURL != "urn:uuid:"+id:
		t.Errorf("header %s, message id %q", b.Entry[0].Resource, id)
	case h.EventCoding != Coding{System: "urn:ietf:rfc:3986", Code: "http://hl7.org/fhir/us/pdmp/OperationDefinition/pdmp-history"}:
		t.Errorf("event %+v", h.EventCoding)
	case h.Source.Endpoint != "https://clinic.example/agent" || len(h.Destination) != 1 || h.Destination[0].Endpoint != "https://pdmp.example/fhir":
		t.Errorf("source %+v, destination %+v", h.Source, h.Destination)
	case len(h.Focus) != 1 || h.Focus[0].Reference != b.Entry[1].FullURL || !strings.HasPrefix(b.Entry[1].FullURL, "urn:uuid:"):
		t.Errorf("focus %+v, entry %q", h.Focus, b.Entry[1].FullURL)
	case string(b.Entry[1].Resource) != compact(t, params):
		t.Errorf("the Parameters changed:\n%s", b.Entry[1].Resource)
	}

	_, id2, _ := WrapMessage(params, MessageInfo{SourceEndpoint: "x"})
	if id2 == id {
		t.Error("two messages with one id")
	}
	if _, _, err := WrapMessage(params, MessageInfo{}); err == nil {
		t.Error("no source endpoint accepted")
	}
	if _, _, err := WrapMessage(fixture(t, responseMsg), MessageInfo{SourceEndpoint: "x"}); err == nil {
		t.Error("a Bundle accepted as the focus")
	}
}

// respond edits the IG's response message: its MessageHeader's response
// and the Bundle's entries.
func respond(t *testing.T, f func(header map[string]any, bundle map[string]any)) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(fixture(t, responseMsg), &b); err != nil {
		t.Fatal(err)
	}
	f(b["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any), b)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestUnwrapMessage(t *testing.T) {
	bundle := fixture(t, responseMsg)
	// The IG's response answers the request message's MessageHeader id.
	params, err := UnwrapMessage(bundle, "messageheader-req-op-1")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bundle, params) || typeOf(params) != "Parameters" {
		t.Fatalf("not the focused Parameters as sent: %.80s", params)
	}
	r, err := ParseResponse(params)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status() != StatusComplete || len(r.History.Dispenses) != 1 || len(r.History.Patients) != 1 {
		t.Errorf("status %s, %+v", r.Status(), r.Summary())
	}
	// Quirk 6: the responder's Patient name.given was overwritten.
	if got := r.History.Patients[0].Name[0].Given; len(got) != 1 || got[0] != "John" {
		t.Errorf("given = %v", got)
	}
	// Quirk 5: the dispense has no id (the FSH set Bundle.entry.id).
	if d := r.History.Dispenses[0]; d.Key != "urn:uuid:9ce2a97b-5cab-4986-814f-4734016e6084" {
		t.Errorf("dispense key %q", d.Key)
	}
}

func TestMessageRoundTrip(t *testing.T) {
	_, id, err := WrapMessage(fixture(t, input1), MessageInfo{SourceEndpoint: "https://clinic.example/agent"})
	if err != nil {
		t.Fatal(err)
	}
	answer := respond(t, func(h, _ map[string]any) { h["response"].(map[string]any)["identifier"] = id })
	params, err := UnwrapMessage(answer, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseResponse(params); err != nil {
		t.Fatal(err)
	}
	// An answer to another message may concern another patient.
	for _, other := range []string{"messageheader-req-op-1", ""} {
		if _, err := UnwrapMessage(answer, other); err == nil || !strings.Contains(err.Error(), "response.identifier") {
			t.Errorf("answer to %q accepted: %v", other, err)
		}
	}
}

func TestUnwrapMessageRefuses(t *testing.T) {
	const id = "messageheader-req-op-1"
	tests := []struct {
		name string
		body []byte
	}{
		{"not JSON", []byte("<Bundle/>")},
		{"not a message", respond(t, func(_, b map[string]any) { b["type"] = "collection" })},
		{"header not first", respond(t, func(_, b map[string]any) {
			e := b["entry"].([]any)
			e[0], e[1] = e[1], e[0]
		})},
		{"another event", respond(t, func(h, _ map[string]any) { h["eventCoding"].(map[string]any)["code"] = "pdmp-patient-response" })},
		{"not a response", respond(t, func(h, _ map[string]any) { delete(h, "response") })},
		{"unknown code", respond(t, func(h, _ map[string]any) { h["response"].(map[string]any)["code"] = "maybe" })},
		{"no focus", respond(t, func(h, _ map[string]any) { delete(h, "focus") })},
		{"focus not in the bundle", respond(t, func(h, _ map[string]any) {
			h["focus"] = []any{map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}}
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := UnwrapMessage(tt.body, id); err == nil {
				t.Errorf("accepted, returning %.60s", p)
			}
		})
	}
}

func TestUnwrapMessageErrorCodes(t *testing.T) {
	const id = "messageheader-req-op-1"
	outcome := map[string]any{
		"fullUrl": "urn:uuid:5f0c6a43-1f0e-4c57-a1a7-3d0a3c5b9a11",
		"resource": map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{
			"severity": "error", "code": "timeout", "diagnostics": "Iowa PDMP did not answer",
		}}},
	}
	tests := []struct {
		name   string
		code   string
		edit   func(h, b map[string]any)
		status int
		issues int // beyond the agent's own
	}{
		{"transient", "transient-error", nil, 503, 0},
		{"fatal", "fatal-error", nil, 502, 0},
		{"fatal with details", "fatal-error", func(h, b map[string]any) {
			b["entry"] = append(b["entry"].([]any), outcome)
			h["response"].(map[string]any)["details"] = map[string]any{"reference": outcome["fullUrl"]}
		}, 502, 1},
		{"fatal with the outcome in the focus", "fatal-error", func(h, b map[string]any) {
			params := b["entry"].([]any)[1].(map[string]any)["resource"].(map[string]any)
			params["parameter"] = []any{map[string]any{"name": "outcome", "resource": outcome["resource"]}}
		}, 502, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := respond(t, func(h, b map[string]any) {
				h["response"].(map[string]any)["code"] = tt.code
				if tt.edit != nil {
					tt.edit(h, b)
				}
			})
			_, err := UnwrapMessage(body, id)
			var oe *OutcomeError
			if !errors.As(err, &oe) {
				t.Fatalf("got %v, want an *OutcomeError", err)
			}
			issues := oe.Outcome().Issue
			if oe.HTTPStatus() != tt.status || len(issues) != 1+tt.issues || issues[0].Severity != SeverityError {
				t.Errorf("status %d, issues %+v", oe.HTTPStatus(), issues)
			}
			if tt.issues > 0 && issues[1].Diagnostics != "Iowa PDMP did not answer" {
				t.Errorf("the responder's issue is lost: %+v", issues)
			}
			if strings.Contains(err.Error(), "Iowa") {
				t.Errorf("Error() quotes diagnostics: %s", err)
			}
		})
	}
}
