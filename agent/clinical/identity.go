package clinical

import (
	"encoding/json"
	"slices"

	"github.com/pdmp-agent/pdmp-agent/agent/pdmp"
)

// identities groups records that name the same thing by different means:
// two records that share any key are one. A pharmacy may be named by its
// entry's reference in one dispense and by its NCPDP number in another, and
// one prescriber may come as two Practitioner entries from two state PDMPs
// sharing an NPI. It is a union-find over the keys.
type identities struct {
	parent []int
	byKey  map[string]int
}

// add records one thing's keys and returns its node, or -1 when there are
// no keys (the thing is unknown).
func (g *identities) add(keys []string) int {
	if len(keys) == 0 {
		return -1
	}
	if g.byKey == nil {
		g.byKey = map[string]int{}
	}
	node := len(g.parent)
	g.parent = append(g.parent, node)
	for _, k := range keys {
		if other, ok := g.byKey[k]; ok {
			g.parent[g.find(other)] = g.find(node)
		} else {
			g.byKey[k] = node
		}
	}
	return node
}

func (g *identities) find(n int) int {
	for g.parent[n] != n {
		g.parent[n] = g.parent[g.parent[n]]
		n = g.parent[n]
	}
	return n
}

// nationalSystems are the identifier systems that name one prescriber or
// pharmacy nationally, whichever PDMP sent the record. Other identifiers
// of a Practitioner or Organization entry (a state licence, a chain's tax
// number) are not used: a tax number shared by a chain's stores would merge
// them.
var nationalSystems = []string{
	pdmp.SystemNPI,
	"http://terminology.hl7.org/CodeSystem/NCPDPProviderIdentificationNumber",
	"http://terminology.hl7.org/NamingSystem/usdeanumber",
}

// party is a Practitioner or Organization entry of the history.
type party struct {
	entry       pdmp.Entry
	identifiers []pdmp.Identifier
}

// parties indexes entries by the references the Bundle may use for them:
// the fullUrl and Type/id.
func parties(typ string, entries []party) map[string]party {
	m := map[string]party{}
	for _, e := range entries {
		if e.entry.FullURL != "" {
			m[e.entry.FullURL] = e
		}
		m[typ+"/"+e.entry.Key] = e
	}
	return m
}

// actorKeys returns the keys naming the prescriber or pharmacy a
// reference points to: the entry it resolves to (and that entry's
// national identifiers), the reference as written when it resolves to
// nothing, and the identifier it carries.
func actorKeys(ref pdmp.Reference, entries map[string]party) []string {
	var keys []string
	if ref.Reference != "" {
		if e, ok := entries[ref.Reference]; ok {
			keys = append(keys, "entry:"+e.entry.FullURL+"|"+e.entry.Key)
			for _, id := range e.identifiers {
				if id.Value != "" && slices.Contains(nationalSystems, id.System) {
					keys = append(keys, "id:"+id.String())
				}
			}
		} else {
			keys = append(keys, "ref:"+ref.Reference)
		}
	}
	if id := ref.Identifier; id != nil && id.System != "" && id.Value != "" {
		keys = append(keys, "id:"+id.String())
	}
	return keys
}

// bundle is what the summary reads from the responder's Bundle beyond
// History: the MedicationRequests, whose requesters are the prescribers,
// and the DetectedIssues as sent, to pass on unchanged.
type bundle struct {
	requests []medicationRequest
	issues   map[string]json.RawMessage // by fullUrl and by id
}

type medicationRequest struct {
	fullURL, id string
	identifiers []pdmp.Identifier
	requester   pdmp.Reference
}

// readBundle reads raw, the Bundle History was read from. What does not
// read is left out: History has already counted it as unreadable.
func readBundle(raw json.RawMessage) bundle {
	var b struct {
		Entry []struct {
			FullURL  string          `json:"fullUrl"`
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	out := bundle{issues: map[string]json.RawMessage{}}
	if json.Unmarshal(raw, &b) != nil {
		return out
	}
	for _, e := range b.Entry {
		var r struct {
			ResourceType string            `json:"resourceType"`
			ID           string            `json:"id"`
			Identifier   []pdmp.Identifier `json:"identifier"`
			Requester    pdmp.Reference    `json:"requester"`
		}
		if json.Unmarshal(e.Resource, &r) != nil {
			continue
		}
		switch r.ResourceType {
		case "MedicationRequest":
			out.requests = append(out.requests, medicationRequest{e.FullURL, r.ID, r.Identifier, r.Requester})
		case "DetectedIssue":
			for _, k := range []string{e.FullURL, r.ID} {
				if k != "" {
					out.issues[k] = e.Resource
				}
			}
		}
	}
	return out
}

// request finds the MedicationRequest an authorizingPrescription names, by
// reference or by identifier (the prescription number).
func (b bundle) request(ref pdmp.Reference) (medicationRequest, bool) {
	for _, r := range b.requests {
		if ref.Reference != "" && (ref.Reference == r.fullURL || ref.Reference == "MedicationRequest/"+r.id) {
			return r, true
		}
		if id := ref.Identifier; id != nil && id.Value != "" && slices.Contains(r.identifiers, *id) {
			return r, true
		}
	}
	return medicationRequest{}, false
}
