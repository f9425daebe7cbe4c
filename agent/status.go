package agent

import (
	"context"
	"encoding/json"
	"time"

	"github.com/pdmp-agent/pdmp-agent/ipc"
)

// Capabilities is the CapabilityStatement the local API offers for one
// responder, with the responder's data-use policy as an extension.
func (s *Service) Capabilities(_ context.Context, responder string) ([]byte, error) {
	r, ok := s.Agent().responders[responder]
	if !ok {
		return nil, ipc.ErrNotFound
	}
	policy := []map[string]any{
		{"url": "retention", "valueCode": r.Policy.Retention},
		{"url": "delegates", "valueCode": r.Policy.Delegates},
	}
	for _, k := range r.Policy.RequesterKinds {
		policy = append(policy, map[string]any{"url": "requester-kind", "valueCode": k})
	}
	op := map[string]any{"name": "pdmp-history", "definition": "http://hl7.org/fhir/us/pdmp/OperationDefinition/pdmp-history"}
	cs := map[string]any{
		"resourceType": "CapabilityStatement",
		"status":       "active",
		"date":         time.Now().UTC().Format(time.RFC3339),
		"kind":         "instance",
		"software":     map[string]any{"name": "pdmp-agent"},
		"implementation": map[string]any{
			"description": "pdmp-agent local API for responder " + r.Name,
		},
		"fhirVersion": "4.0.1",
		"format":      []string{"application/fhir+json", "application/json"},
		"extension":   []any{map[string]any{"url": "urn:pdmp-agent:data-use-policy", "extension": policy}},
		"rest": []any{map[string]any{
			"mode":      "server",
			"operation": []any{op},
			"resource": []any{map[string]any{
				"type":      "Patient",
				"operation": []any{op},
			}},
		}},
		"messaging": []any{map[string]any{
			"supportedMessage": []any{map[string]any{"mode": "receiver", "definition": "http://hl7.org/fhir/us/pdmp/OperationDefinition/pdmp-history"}},
		}},
	}
	return json.Marshal(cs)
}

// StatusDoc is the status the agent reports (pdmp-agent status, GET
// /status). It holds no PHI and no secret.
type StatusDoc struct {
	Config        ReloadStatus         `json:"config"`
	Responders    []ResponderStatus    `json:"responders"`
	Registrations []RegistrationStatus `json:"registrations"`
	Queue         map[string]int       `json:"queue"`
	ClockSkew     string               `json:"clock_skew"`
	LastErrors    []timedError         `json:"last_errors,omitempty"`
}

// ResponderStatus is one responder and its policy.
type ResponderStatus struct {
	Name           string   `json:"name"`
	FHIRBase       string   `json:"fhir_base"`
	Messaging      bool     `json:"messaging"`
	Retention      string   `json:"retention"`
	Delegates      string   `json:"delegates"`
	RequesterKinds []string `json:"requester_kinds,omitempty"`
}

// RegistrationStatus is one registration, its key's health and its token.
type RegistrationStatus struct {
	Name         string `json:"name"`
	Responder    string `json:"responder"`
	ClientID     string `json:"client_id"`
	Key          string `json:"key"` // redacted URI
	KeyID        string `json:"kid,omitempty"`
	KeyHealth    string `json:"key_health"`
	TokenExpires string `json:"token_expires,omitempty"`
}

// Status reports the agent's state.
func (s *Service) Status(ctx context.Context) ([]byte, error) {
	a := s.Agent()
	doc := StatusDoc{Config: s.LastReload(), ClockSkew: s.tokens.ClockSkew().String(), Queue: map[string]int{}}
	for _, r := range a.cfg.Responders {
		doc.Responders = append(doc.Responders, ResponderStatus{Name: r.Name, FHIRBase: r.FHIRBase, Messaging: r.Messaging,
			Retention: r.Policy.Retention, Delegates: r.Policy.Delegates, RequesterKinds: r.Policy.RequesterKinds})
	}
	for _, g := range a.cfg.Registrations {
		reg := a.registrations[g.Name]
		rs := RegistrationStatus{Name: g.Name, Responder: g.Responder, ClientID: g.ClientID, Key: reg.Ring.URI(), KeyHealth: "ok"}
		if k, err := reg.Ring.Current(ctx); err != nil {
			rs.KeyHealth = "degraded: " + err.Error()
		} else {
			rs.KeyID = k.KID()
		}
		if exp, ok := s.tokens.Expiry(reg.SMART); ok {
			rs.TokenExpires = exp.UTC().Format(time.RFC3339)
		}
		doc.Registrations = append(doc.Registrations, rs)
	}
	if s.queue != nil {
		stats, err := s.queue.Stats(ctx)
		if err == nil {
			for st, n := range stats {
				doc.Queue[string(st)] = n
			}
			s.metrics.QueueDepth(doc.Queue)
		}
	}
	s.mu.Lock()
	doc.LastErrors = append(doc.LastErrors, s.lastErrors...)
	s.mu.Unlock()
	return json.MarshalIndent(doc, "", "  ")
}
