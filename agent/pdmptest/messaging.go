package pdmptest

import (
	"fmt"
	"net/http"
	"strings"
	"time"
)

const eventSystem = "urn:ietf:rfc:3986"

// message is a validated pdmp-history request message.
type message struct {
	params         object // the focused Parameters
	paramsPath     string // its FHIRPath in the request body
	responseTo     string // what response.identifier echoes
	sourceEndpoint string // request MessageHeader.source.endpoint
}

// serveMessage answers POST [base]/$process-message, FHIR messaging
// (synchronous only). The body is the request message Bundle, or a
// $process-message Parameters holding it in content. A valid message is
// answered 200 with a response message Bundle whose Parameters is what
// $pdmp-history would have returned; an invalid message or request, an
// unknown pre-stage key and the 500 scenario are answered with the same
// HTTP status and OperationOutcome as $pdmp-history, not as a message.
func (s *Server) serveMessage(x *exchange) {
	x.readBody()
	if x.injectFault() || !x.authorize() || !x.negotiate(true) {
		return
	}
	body, ok := x.decodeBody()
	if !ok {
		return
	}
	if x.r.URL.Query().Get("async") == "true" {
		x.writeOutcome(http.StatusBadRequest, errorIssue("not-supported", "async", "asynchronous messaging is not supported"))
		return
	}
	rs := &s.responder
	rs.mu.Lock()
	respID := rs.respID
	rs.mu.Unlock()

	bundle, prefix, issues := unwrapMessage(body)
	var m message
	if len(issues) == 0 {
		m, issues = checkMessage(bundle, prefix, respID)
	}
	if m.params != nil {
		x.family = patientFamily(m.params)
	}
	if len(issues) > 0 {
		x.writeOutcome(http.StatusBadRequest, issues...)
		return
	}
	q, issues := validateRequest(m.params, m.paramsPath)
	if len(issues) > 0 {
		x.writeOutcome(http.StatusBadRequest, issues...)
		return
	}
	a := x.answer(q, m.paramsPath)
	if a.status != http.StatusOK {
		x.reply(a)
		return
	}
	x.writeFHIR(http.StatusOK, s.responseMessage(m, a.body))
}

// unwrapMessage returns the message Bundle of a $process-message body and
// its FHIRPath.
func unwrapMessage(body object) (object, string, []issue) {
	rt, _ := getString(body, "resourceType")
	if rt == "Bundle" {
		return body, "Bundle", nil
	}
	if rt == "Parameters" {
		params, _ := getArray(body, "parameter")
		var content object
		for _, raw := range params {
			p, _ := raw.(object)
			switch name, _ := getString(p, "name"); name {
			case "content":
				content, _ = getObject(p, "resource")
			case "async":
				if v, _ := p["valueBoolean"].(bool); v {
					return nil, "", []issue{errorIssue("not-supported", "Parameters.parameter.where(name = 'async')",
						"asynchronous messaging is not supported")}
				}
			}
		}
		if content != nil {
			return content, "Parameters.parameter.where(name = 'content').resource", nil
		}
	}
	return nil, "", []issue{errorIssue("structure", "resourceType",
		"$process-message takes a message Bundle (or a Parameters with the Bundle in content), not %q; "+
			"post pdmp-history Parameters to $pdmp-history instead", rt)}
}

// checkMessage validates a pdmp-bundle-request-message: type message, the
// pdmp-history MessageHeader first, its focus resolving to the one
// Parameters entry.
func checkMessage(b object, prefix string, respID ResponseIdentifier) (message, []issue) {
	var m message
	var issues []issue
	add := func(code, expr, format string, args ...any) {
		issues = append(issues, errorIssue(code, expr, format, args...))
	}
	if rt, _ := getString(b, "resourceType"); rt != "Bundle" {
		add("structure", prefix+".resourceType", "content is %q; want a message Bundle", rt)
		return m, issues
	}
	if t, _ := getString(b, "type"); t != "message" {
		add("value", prefix+".type", "Bundle.type is %q; want message", t)
	}
	bundleID, _ := getString(b, "id")
	if respID == RequestBundleID && bundleID == "" {
		add("required", prefix+".id", "Bundle.id missing: the response message echoes it in MessageHeader.response.identifier")
	}
	if _, ok := b["total"]; ok {
		add("structure", prefix+".total", "Bundle.total is not allowed in a message")
	}
	entries, _ := getArray(b, "entry")
	if len(entries) == 0 {
		add("required", prefix+".entry", "message Bundle has no entries")
		return m, issues
	}

	resources := make([]object, len(entries))
	var headers, parameters []int
	for i, raw := range entries {
		at := fmt.Sprintf("%s.entry[%d]", prefix, i)
		e, ok := raw.(object)
		if !ok {
			add("structure", at, "entry must be a JSON object")
			continue
		}
		for _, k := range []string{"request", "response", "search"} {
			if _, ok := e[k]; ok {
				add("structure", at+"."+k, "entry.%s is not allowed in a message", k)
			}
		}
		res, ok := getObject(e, "resource")
		if !ok {
			add("required", at+".resource", "entry has no resource")
			continue
		}
		resources[i] = res
		switch rt, _ := getString(res, "resourceType"); rt {
		case "MessageHeader":
			headers = append(headers, i)
		case "Parameters":
			parameters = append(parameters, i)
		}
	}
	if len(headers) == 0 || headers[0] != 0 {
		add("structure", prefix+".entry[0].resource", "the first entry must be the MessageHeader")
		return m, issues
	}
	if len(headers) > 1 {
		add("structure", fmt.Sprintf("%s.entry[%d].resource", prefix, headers[1]), "only one MessageHeader allowed")
	}
	if len(parameters) != 1 {
		add("structure", prefix+".entry", "a pdmp-history request message holds exactly one Parameters entry; found %d", len(parameters))
	}

	hdr, hat := resources[0], prefix+".entry[0].resource"
	ev, _ := getObject(hdr, "eventCoding")
	sys, _ := getString(ev, "system")
	code, _ := getString(ev, "code")
	if sys != eventSystem || code != historyOperation {
		add("value", hat+".eventCoding", "eventCoding is %s#%s; want %s#%s", sys, code, eventSystem, historyOperation)
	}
	src, _ := getObject(hdr, "source")
	if m.sourceEndpoint, _ = getString(src, "endpoint"); m.sourceEndpoint == "" {
		add("required", hat+".source.endpoint", "MessageHeader.source.endpoint missing (1..1)")
	}
	headerID, _ := getString(hdr, "id")
	if respID == RequestHeaderID && headerID == "" {
		add("required", hat+".id", "MessageHeader.id missing: the response message echoes it in MessageHeader.response.identifier")
	}
	m.responseTo = bundleID
	if respID == RequestHeaderID {
		m.responseTo = headerID
	}

	focus, _ := getArray(hdr, "focus")
	if len(focus) != 1 {
		add("structure", hat+".focus", "MessageHeader.focus must reference the one Parameters entry; found %d", len(focus))
		return m, issues
	}
	fo, _ := focus[0].(object)
	ref, _ := getString(fo, "reference")
	j := resolveEntry(entries, resources, ref)
	switch {
	case ref == "":
		add("required", hat+".focus[0].reference", "MessageHeader.focus has no reference")
	case j < 0:
		add("not-found", hat+".focus[0].reference", "focus %q resolves to no entry of the message", ref)
	default:
		if rt, _ := getString(resources[j], "resourceType"); rt != "Parameters" {
			add("structure", hat+".focus[0].reference", "focus %q is a %s; want the Parameters entry", ref, rt)
			break
		}
		m.params, m.paramsPath = resources[j], fmt.Sprintf("%s.entry[%d].resource", prefix, j)
	}
	return m, issues
}

// resolveEntry finds the entry a reference points at: by fullUrl, or, for
// a relative Type/id reference (as in the IG's request-message example),
// by resource type and id.
func resolveEntry(entries array, resources []object, ref string) int {
	if ref == "" {
		return -1
	}
	for i, raw := range entries {
		e, _ := raw.(object)
		if full, _ := getString(e, "fullUrl"); full == ref {
			return i
		}
	}
	typ, id, ok := strings.Cut(ref, "/")
	if !ok || strings.ContainsAny(typ, ":") || strings.Contains(id, "/") {
		return -1
	}
	for i, res := range resources {
		rt, _ := getString(res, "resourceType")
		rid, _ := getString(res, "id")
		if rt == typ && rid == id {
			return i
		}
	}
	return -1
}

// responseMessage wraps response Parameters in a pdmp-bundle-response-message.
func (s *Server) responseMessage(m message, params object) object {
	headerID, paramsID := newUUID(), newUUID()
	params["id"] = paramsID
	header := object{
		"resourceType": "MessageHeader",
		"id":           headerID,
		"meta":         object{"profile": array{profileRespHeader}},
		"eventCoding":  object{"system": eventSystem, "code": historyOperation, "display": "pdmp-history"},
		"destination":  array{object{"endpoint": m.sourceEndpoint}},
		"source":       object{"name": "pdmptest", "endpoint": s.FHIRBase + "/$process-message"},
		"response":     object{"identifier": m.responseTo, "code": "ok"},
		"focus":        array{object{"reference": "urn:uuid:" + paramsID}},
	}
	return object{
		"resourceType": "Bundle",
		"id":           newUUID(),
		"meta":         object{"profile": array{profileRespMessage}},
		"type":         "message",
		"timestamp":    s.now().UTC().Format(time.RFC3339),
		"entry": array{
			object{"fullUrl": "urn:uuid:" + headerID, "resource": header},
			object{"fullUrl": "urn:uuid:" + paramsID, "resource": params},
		},
	}
}
