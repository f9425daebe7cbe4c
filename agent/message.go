package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
)

// requestFromMessage takes the Parameters out of the message Bundle an EHR
// posted to $process-message, and the MessageHeader id to answer to.
func requestFromMessage(body []byte) ([]byte, string, error) {
	var b struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	bad := func(expr, msg string) error {
		return refuse(http.StatusBadRequest, pdmp.IssueStructure, expr, msg)
	}
	if json.Unmarshal(body, &b) != nil || b.ResourceType != "Bundle" || b.Type != "message" || len(b.Entry) < 2 {
		return nil, "", bad("Bundle", "$process-message needs a message Bundle: a MessageHeader, then the Parameters")
	}
	var h struct {
		ResourceType string `json:"resourceType"`
		ID           string `json:"id"`
		Focus        []struct {
			Reference string `json:"reference"`
		} `json:"focus"`
	}
	if json.Unmarshal(b.Entry[0].Resource, &h) != nil || h.ResourceType != "MessageHeader" || len(h.Focus) != 1 {
		return nil, "", bad("Bundle.entry[0].resource", "the first entry must be a MessageHeader with one focus")
	}
	ref := h.Focus[0].Reference
	for _, e := range b.Entry[1:] {
		var r struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
		}
		_ = json.Unmarshal(e.Resource, &r)
		if e.FullURL == ref || (r.ResourceType != "" && r.ResourceType+"/"+r.ID == ref) ||
			(r.ID != "" && strings.HasSuffix(e.FullURL, "/"+ref)) {
			return e.Resource, h.ID, nil
		}
	}
	return nil, "", bad("Bundle.entry[0].resource.focus", "the MessageHeader's focus is not in the Bundle")
}

// responseMessage wraps a responder's Parameters as the response message
// to the EHR's request message requestID.
func responseMessage(params []byte, requestID string) ([]byte, error) {
	id := func() string {
		b := make([]byte, 16)
		rand.Read(b)
		h := hex.EncodeToString(b)
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	paramsURL := "urn:uuid:" + id()
	header := map[string]any{
		"resourceType": "MessageHeader",
		"id":           id(),
		"eventCoding": map[string]any{
			"system": "urn:ietf:rfc:3986",
			"code":   "http://hl7.org/fhir/us/pdmp/OperationDefinition/pdmp-history",
		},
		"source":   map[string]any{"endpoint": "urn:pdmp-agent"},
		"response": map[string]any{"identifier": requestID, "code": "ok"},
		"focus":    []any{map[string]any{"reference": paramsURL}},
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"resourceType": "Bundle",
		"id":           id(),
		"type":         "message",
		"timestamp":    time.Now().UTC().Format(time.RFC3339),
		"entry": []any{
			map[string]any{"fullUrl": "urn:uuid:" + id(), "resource": json.RawMessage(hb)},
			map[string]any{"fullUrl": paramsURL, "resource": json.RawMessage(params)},
		},
	})
}
