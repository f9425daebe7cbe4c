package pdmptest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	fhirScope       = "system/*.read"
	historyPath     = "/Patient/$pdmp-history"
	systemPath      = "/$pdmp-history"
	messagePath     = "/$process-message"
	requestFixture  = "testdata/Parameters-pdmp-history-input-parameters-1.json"
	messageFixture  = "testdata/Bundle-pdmp-bundle-request-message-1.json"
	mmeExtension    = "http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-extension-mme"
	fillNumberExt   = "http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-extension-rx-fill-number"
	alertCategories = "http://terminology.hl7.org/CodeSystem/PMIXPatientAlertCatCode"
)

type fhirResult struct {
	status int
	header http.Header
	raw    []byte
	body   object // nil unless the body was a JSON object
}

// do sends a request to the sandbox. body may be nil, []byte, string or a
// JSON value; edit may change the request after the defaults are set.
func (f *fixture) do(t *testing.T, method, url, token string, body any, edit func(*http.Request)) fhirResult {
	t.Helper()
	res, err := f.doErr(method, url, token, body, edit)
	must(t, err)
	return res
}

func (f *fixture) doErr(method, url, token string, body any, edit func(*http.Request)) (fhirResult, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		rd = bytes.NewReader(marshalFHIR(b))
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return fhirResult{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", fhirJSON)
	}
	req.Header.Set("Accept", fhirJSON)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return fhirResult{}, err
	}
	defer resp.Body.Close()
	res := fhirResult{status: resp.StatusCode, header: resp.Header}
	if res.raw, err = io.ReadAll(resp.Body); err != nil {
		return res, err
	}
	if v, err := decodeJSON(res.raw); err == nil {
		res.body, _ = v.(object)
	}
	return res, nil
}

func (f *fixture) history(t *testing.T, path, token string, params object) fhirResult {
	t.Helper()
	return f.do(t, http.MethodPost, f.srv.FHIRBase+path, token, params, nil)
}

func loadJSON(t *testing.T, path string) object {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	v, err := decodeJSON(b)
	must(t, err)
	return v.(object)
}

// request is input-parameters-1 asking about a patient named family.
func request(t *testing.T, family string) object {
	t.Helper()
	params := loadJSON(t, requestFixture)
	patient(params)["name"].(array)[0].(object)["family"] = family
	return params
}

func inputParam(params object, name string) object {
	for _, p := range params["parameter"].(array) {
		if p.(object)["name"] == name {
			return p.(object)
		}
	}
	return nil
}

func patient(params object) object { return inputParam(params, "patient")["resource"].(object) }

func setInput(params object, name string, p object) {
	list := params["parameter"].(array)
	for i, old := range list {
		if old.(object)["name"] == name {
			list[i] = p
			return
		}
	}
	params["parameter"] = append(list, p)
}

func paramNames(params object) []string {
	var names []string
	list, _ := getArray(params, "parameter")
	for _, p := range list {
		names = append(names, p.(object)["name"].(string))
	}
	return names
}

// firstIssue returns severity, code and details code of the first issue of
// an OperationOutcome, or of a Parameters' outcome parameter.
func firstIssue(res object) (severity, code, details string) {
	if res["resourceType"] == "Parameters" {
		p := inputParam(res, "outcome")
		if p == nil {
			return "", "", ""
		}
		res = p["resource"].(object)
	}
	issues, _ := getArray(res, "issue")
	if len(issues) == 0 {
		return "", "", ""
	}
	is := issues[0].(object)
	severity, _ = getString(is, "severity")
	code, _ = getString(is, "code")
	if d, ok := getObject(is, "details"); ok {
		c := d["coding"].(array)[0].(object)
		details = c["system"].(string) + "#" + c["code"].(string)
	}
	return severity, code, details
}

// expressions lists the issue expressions of an OperationOutcome.
func expressions(oo object) []string {
	var out []string
	issues, _ := getArray(oo, "issue")
	for _, is := range issues {
		ex, _ := getArray(is.(object), "expression")
		for _, e := range ex {
			out = append(out, e.(string))
		}
	}
	return out
}

func countTypes(bundle object) map[string]int {
	n := map[string]int{}
	for _, e := range bundle["entry"].(array) {
		n[e.(object)["resource"].(object)["resourceType"].(string)]++
	}
	return n
}

// checkHistoryBundle checks the IG rules every history Bundle must meet
// and returns it.
func checkHistoryBundle(t *testing.T, params object, family string) object {
	t.Helper()
	p := inputParam(params, "pdmp-history-data")
	if p == nil {
		t.Fatalf("no pdmp-history-data in %v", paramNames(params))
	}
	bundle := p["resource"].(object)
	if bundle["resourceType"] != "Bundle" || bundle["type"] != "collection" {
		t.Fatalf("pdmp-history-data is %v type %v", bundle["resourceType"], bundle["type"])
	}
	fullUrls := map[string]bool{}
	var dispenses []object
	for _, raw := range bundle["entry"].(array) {
		e := raw.(object)
		full, _ := getString(e, "fullUrl")
		if !strings.HasPrefix(full, "urn:uuid:") {
			t.Errorf("fullUrl %q is not a urn:uuid", full)
		}
		fullUrls[full] = true
		res := e["resource"].(object)
		if src, _ := getString(res["meta"].(object), "source"); src == "" {
			t.Errorf("%s %v has no meta.source", res["resourceType"], res["id"])
		}
		switch res["resourceType"] {
		case "Patient":
			if got := nameOf(res, false); got != family {
				t.Errorf("Patient family %q, want the requested %q", got, family)
			}
		case "MedicationDispense":
			dispenses = append(dispenses, res)
		}
	}
	exts := map[string]bool{}
	for _, d := range dispenses {
		for _, x := range d["extension"].(array) {
			exts[x.(object)["url"].(string)] = true
		}
		if !fullUrls[d["subject"].(object)["reference"].(string)] {
			t.Errorf("dispense subject %v does not resolve in the Bundle", d["subject"])
		}
	}
	if len(dispenses) < 2 || !exts[fillNumberExt] || !exts[mmeExtension] {
		t.Errorf("%d dispenses with extensions %v; want several, with rx-fill-number and MME", len(dispenses), exts)
	}
	return bundle
}

func TestScenarios(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, inlineClient, "ES384", fhirScope)
	const (
		pmix = pmixStatusSystem + "#"
	)
	for _, tc := range []struct {
		family   string
		status   int
		params   []string // parameter names, in order; nil for a bare OperationOutcome
		issue    [3]string
		patients int
		alerts   int
	}{
		{PatientHistory, 200, []string{"pdmp-history-data"}, [3]string{}, 1, 1},
		{"Smith", 200, []string{"pdmp-history-data"}, [3]string{}, 1, 1},
		{strings.ToUpper(PatientUncertainMatch), 200, []string{"pdmp-history-data"}, [3]string{}, 2, 1},
		{PatientAlerts, 200, []string{"pdmp-history-data"}, [3]string{}, 1, 3},
		{PatientNoData, 200, []string{"outcome"}, [3]string{"information", "informational", pmix + "no-data"}, 0, 0},
		{PatientLinkOnly, 200, []string{"pdmp-history-link"}, [3]string{}, 0, 0},
		{PatientWarning, 200, []string{"pdmp-history-data", "outcome"}, [3]string{"warning", "incomplete", pmix + "error"}, 1, 1},
		{PatientFatalError, 200, []string{"outcome"}, [3]string{"error", "exception", pmix + "error"}, 0, 0},
		{PatientServerError, 500, nil, [3]string{"error", "exception", pmix + "error"}, 0, 0},
		{PatientDeferred, 200, []string{"outcome"}, [3]string{"information", "informational", pmix + "deferred"}, 0, 0},
		{PatientDisallowed, 200, []string{"outcome"}, [3]string{"error", "forbidden", pmix + "disallowed"}, 0, 0},
	} {
		for _, path := range []string{historyPath, systemPath} {
			t.Run(tc.family+path, func(t *testing.T) {
				res := f.history(t, path, token, request(t, tc.family))
				if res.status != tc.status || res.body == nil {
					t.Fatalf("status %d, body %s", res.status, res.raw)
				}
				if ct := res.header.Get("Content-Type"); ct != "application/fhir+json; charset=utf-8" {
					t.Errorf("Content-Type %q", ct)
				}
				wantType := "Parameters"
				if tc.params == nil {
					wantType = "OperationOutcome"
				}
				if res.body["resourceType"] != wantType {
					t.Fatalf("resourceType %v, want %s", res.body["resourceType"], wantType)
				}
				if got := paramNames(res.body); !slices.Equal(got, tc.params) {
					t.Errorf("parameters %v, want %v", got, tc.params)
				}
				if sev, code, det := firstIssue(res.body); [3]string{sev, code, det} != tc.issue {
					t.Errorf("outcome %s/%s/%s, want %v", sev, code, det, tc.issue)
				}
				if tc.patients > 0 {
					n := countTypes(checkHistoryBundle(t, res.body, tc.family))
					if n["Patient"] != tc.patients || n["DetectedIssue"] != tc.alerts || n["Organization"] != 2 || n["Practitioner"] != 2 {
						t.Errorf("resource counts %v", n)
					}
				}
				if tc.family == PatientLinkOnly {
					link := inputParam(res.body, "pdmp-history-link")["valueUrl"].(string)
					if !strings.HasPrefix(link, f.srv.URL+"/reports/") {
						t.Errorf("link %s", link)
					}
				}
			})
		}
	}
}

func TestUncertainMatchReferences(t *testing.T) {
	f := newFixture(t)
	res := f.history(t, historyPath, f.token(t, inlineClient, "ES384", fhirScope), request(t, PatientUncertainMatch))
	bundle := checkHistoryBundle(t, res.body, PatientUncertainMatch)
	subjects := map[string]string{} // patient fullUrl → source
	for _, raw := range bundle["entry"].(array) {
		res := raw.(object)["resource"].(object)
		if res["resourceType"] == "Patient" {
			subjects[raw.(object)["fullUrl"].(string)] = res["meta"].(object)["source"].(string)
		}
	}
	refs := map[string]bool{}
	for _, raw := range bundle["entry"].(array) {
		res := raw.(object)["resource"].(object)
		if res["resourceType"] == "MedicationDispense" {
			ref := res["subject"].(object)["reference"].(string)
			if subjects[ref] != res["meta"].(object)["source"] {
				t.Errorf("dispense from %v references patient %s from %s", res["meta"].(object)["source"], ref, subjects[ref])
			}
			refs[ref] = true
		}
	}
	if len(subjects) != 2 || len(refs) != 2 {
		t.Errorf("patients %v, referenced %v; want dispenses referencing each of two", subjects, refs)
	}
}

func TestFixtureRequestsAccepted(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, urlClient, "RS384", fhirScope)
	for _, name := range []string{"1", "2-minimum", "3-veterinary", "4-delegate"} {
		t.Run(name, func(t *testing.T) {
			params := loadJSON(t, "testdata/Parameters-pdmp-history-input-parameters-"+name+".json")
			res := f.history(t, historyPath, token, params)
			if res.status != http.StatusOK {
				t.Fatalf("status %d: %s", res.status, res.raw)
			}
			bundle := checkHistoryBundle(t, res.body, nameOf(patient(params), false))
			pat := firstOfType(bundle, "Patient")
			_, hasDate := pat["birthDate"]
			if vet := name == "3-veterinary"; hasDate == vet || (vet && pat["_birthDate"] == nil) {
				t.Errorf("birthDate %v, _birthDate %v", pat["birthDate"], pat["_birthDate"])
			}
		})
	}
}

func TestInvalidRequests(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, inlineClient, "ES384", fhirScope)
	const pp = "Parameters.parameter.where(name = 'patient').resource"
	for _, tc := range []struct {
		name  string
		edit  func(object)
		code  string
		exprs []string
	}{
		{"birthDate missing", func(p object) { delete(patient(p), "birthDate") }, "required", []string{pp + ".birthDate"}},
		{"birthDate partial", func(p object) { patient(p)["birthDate"] = "1989-03" }, "value", []string{pp + ".birthDate"}},
		{"birthDate invalid", func(p object) { patient(p)["birthDate"] = "1989-02-30" }, "value", []string{pp + ".birthDate"}},
		{"family missing", func(p object) { delete(patient(p)["name"].(array)[0].(object), "family") }, "required", []string{pp + ".name[0].family"}},
		{"given missing", func(p object) { delete(patient(p)["name"].(array)[0].(object), "given") }, "required", []string{pp + ".name[0].given"}},
		{"name missing", func(p object) { delete(patient(p), "name") }, "required", []string{pp + ".name"}},
		{"gender missing", func(p object) { delete(patient(p), "gender") }, "required", []string{pp + ".gender"}},
		{"practitioner missing", func(p object) {
			p["parameter"] = slices.DeleteFunc(p["parameter"].(array), func(v any) bool { return v.(object)["name"] == "authorized-practitioner" })
		}, "required", []string{"Parameters.parameter.where(name = 'authorized-practitioner')"}},
		{"patient twice", func(p object) { p["parameter"] = append(p["parameter"].(array), inputParam(p, "patient")) },
			"structure", []string{"Parameters.parameter.where(name = 'patient')"}},
		{"practitioner without identifier", func(p object) { delete(inputParam(p, "authorized-practitioner")["resource"].(object), "identifier") },
			"required", []string{"Parameters.parameter.where(name = 'authorized-practitioner').resource.identifier"}},
		{"role of wrong type", func(p object) {
			inputParam(p, "authorized-practitioner-role")["resource"].(object)["resourceType"] = "Practitioner"
		}, "structure", []string{"Parameters.parameter.where(name = 'authorized-practitioner-role').resource"}},
		{"organization as reference", func(p object) {
			setInput(p, "authorized-practitioner-organization", object{"name": "authorized-practitioner-organization",
				"valueReference": object{"reference": "Organization/1"}})
		}, "structure", []string{"Parameters.parameter.where(name = 'authorized-practitioner-organization')"}},
		{"organization without name", func(p object) {
			delete(inputParam(p, "authorized-practitioner-organization")["resource"].(object), "name")
		}, "required", []string{"Parameters.parameter.where(name = 'authorized-practitioner-organization').resource.name"}},
		{"unknown parameter", func(p object) { setInput(p, "state", object{"name": "state", "valueString": "MA"}) },
			"not-supported", []string{"Parameters.parameter[5].name"}},
		{"pre-stage-only as string", func(p object) { setInput(p, "pre-stage-only", object{"name": "pre-stage-only", "valueString": "true"}) },
			"structure", []string{"Parameters.parameter.where(name = 'pre-stage-only')"}},
		{"key with pre-stage-only", func(p object) {
			setInput(p, "pre-stage-only", object{"name": "pre-stage-only", "valueBoolean": true})
			setInput(p, "pre-stage-retrieval-key", object{"name": "pre-stage-retrieval-key", "valueString": "k"})
		}, "business-rule", []string{"Parameters.parameter.where(name = 'pre-stage-retrieval-key')"}},
		{"not Parameters", func(p object) { p["resourceType"] = "Bundle" }, "structure", []string{"resourceType"}},
		{"no parameters", func(p object) { delete(p, "parameter") }, "required", []string{"Parameters.parameter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			params := request(t, PatientHistory)
			tc.edit(params)
			res := f.history(t, systemPath, token, params)
			if res.status != http.StatusBadRequest || res.body["resourceType"] != "OperationOutcome" {
				t.Fatalf("status %d: %s", res.status, res.raw)
			}
			if _, code, _ := firstIssue(res.body); code != tc.code || !slices.Equal(expressions(res.body), tc.exprs) {
				t.Errorf("code %s, expressions %q; want %s, %q\n%s", code, expressions(res.body), tc.code, tc.exprs, res.raw)
			}
		})
	}

	// A partial birth date is fine with an extension explaining it.
	params := request(t, PatientHistory)
	patient(params)["birthDate"] = "1989"
	patient(params)["_birthDate"] = object{"extension": array{object{"url": dataAbsentReasonURL, "valueCode": "unknown"}}}
	if res := f.history(t, systemPath, token, params); res.status != http.StatusOK {
		t.Errorf("partial birthDate with extension: %d %s", res.status, res.raw)
	}

	if res := f.do(t, http.MethodPost, f.srv.FHIRBase+systemPath, token, nil, nil); res.status != http.StatusUnsupportedMediaType {
		t.Errorf("no body, no Content-Type: %d", res.status)
	}
	for name, body := range map[string]string{"not JSON": "{", "array": "[]", "trailing data": `{"resourceType":"Parameters"} {}`} {
		res := f.do(t, http.MethodPost, f.srv.FHIRBase+systemPath, token, body, nil)
		if _, code, _ := firstIssue(res.body); res.status != http.StatusBadRequest || code != "structure" {
			t.Errorf("%s: %d %s", name, res.status, res.raw)
		}
	}
}

func TestContentNegotiation(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, inlineClient, "ES384", fhirScope)
	for _, tc := range []struct {
		header, value string
		status        int
		ct            string
	}{
		{"Content-Type", "application/json", 200, "application/fhir+json; charset=utf-8"},
		{"Content-Type", "application/fhir+json; charset=UTF-8", 200, "application/fhir+json; charset=utf-8"},
		{"Content-Type", "application/fhir+json; charset=latin1", 415, "application/fhir+json; charset=utf-8"},
		{"Content-Type", "text/plain", 415, "application/fhir+json; charset=utf-8"},
		{"Content-Type", "application/x-www-form-urlencoded", 415, "application/fhir+json; charset=utf-8"},
		{"Accept", "application/json", 200, "application/json; charset=utf-8"},
		{"Accept", "*/*", 200, "application/fhir+json; charset=utf-8"},
		{"Accept", "application/fhir+xml, application/fhir+json;q=0.5", 200, "application/fhir+json; charset=utf-8"},
		{"Accept", "application/fhir+xml", 406, "application/fhir+json; charset=utf-8"},
		{"Accept", "application/fhir+json;q=0", 406, "application/fhir+json; charset=utf-8"},
	} {
		res := f.do(t, http.MethodPost, f.srv.FHIRBase+historyPath, token, request(t, PatientNoData), func(r *http.Request) {
			r.Header.Set(tc.header, tc.value)
		})
		if res.status != tc.status || res.header.Get("Content-Type") != tc.ct || res.body == nil {
			t.Errorf("%s: %s → %d %s, want %d %s", tc.header, tc.value, res.status, res.header.Get("Content-Type"), tc.status, tc.ct)
		}
	}
	res := f.do(t, http.MethodPost, f.srv.FHIRBase+historyPath+"?_format=xml", token, request(t, PatientNoData), nil)
	if res.status != http.StatusNotAcceptable {
		t.Errorf("_format=xml: %d", res.status)
	}
}

func TestResponderAuthorization(t *testing.T) {
	f := newFixture(t)
	url := f.srv.FHIRBase + historyPath
	body := request(t, PatientNoData)

	check := func(name string, res fhirResult, status int, challenge string) {
		t.Helper()
		if _, code, _ := firstIssue(res.body); res.status != status || res.body["resourceType"] != "OperationOutcome" ||
			code != map[int]string{401: "login", 403: "forbidden"}[status] {
			t.Errorf("%s: %d %s", name, res.status, res.raw)
		}
		if got := res.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, challenge) {
			t.Errorf("%s: WWW-Authenticate %q, want prefix %q", name, got, challenge)
		}
	}
	check("no token", f.do(t, http.MethodPost, url, "", body, nil), 401, `Bearer realm="pdmptest"`)
	if got := f.do(t, http.MethodPost, url, "", body, nil).header.Get("WWW-Authenticate"); strings.Contains(got, "error=") {
		t.Errorf("no token: WWW-Authenticate %q carries an error code", got)
	}
	check("basic auth", f.do(t, http.MethodPost, url, "", body, func(r *http.Request) { r.SetBasicAuth("a", "b") }), 401, `Bearer realm="pdmptest"`)
	check("unknown token", f.do(t, http.MethodPost, url, "made-up", body, nil), 401, `Bearer realm="pdmptest", error="invalid_token"`)

	token := f.token(t, inlineClient, "ES384", fhirScope)
	if res := f.do(t, http.MethodPost, url, token, body, nil); res.status != 200 {
		t.Fatalf("valid token: %d %s", res.status, res.raw)
	}
	f.clock.advance(300 * time.Second)
	check("expired token", f.do(t, http.MethodPost, url, token, body, nil), 401, `Bearer realm="pdmptest", error="invalid_token"`)

	token = f.token(t, inlineClient, "ES384", fhirScope)
	f.srv.ExpireTokens()
	check("revoked token", f.do(t, http.MethodPost, url, token, body, nil), 401, `Bearer realm="pdmptest", error="invalid_token"`)

	for _, scope := range []string{"system/Observation.rs", "system/Patient.rs", "system/MedicationDispense.r system/Patient.rs"} {
		token := f.token(t, inlineClient, "ES384", scope)
		check(scope, f.do(t, http.MethodPost, url, token, body, nil), 403, `Bearer realm="pdmptest", error="insufficient_scope"`)
		// The message path and reports are guarded alike.
		if res := f.do(t, http.MethodPost, f.srv.FHIRBase+messagePath, token, loadJSON(t, messageFixture), nil); res.status != 403 {
			t.Errorf("%s: $process-message %d", scope, res.status)
		}
	}
	for _, scope := range []string{"system/MedicationDispense.rs system/Patient.rs", "system/*.rs", "system/*.*"} {
		token := f.token(t, inlineClient, "ES384", scope)
		if res := f.do(t, http.MethodPost, url, token, body, nil); res.status != 200 {
			t.Errorf("%s: %d", scope, res.status)
		}
	}

	must(t, f.srv.SetResponderScopes())
	token = f.token(t, inlineClient, "ES384", "system/Observation.rs")
	if res := f.do(t, http.MethodPost, url, token, body, nil); res.status != 200 {
		t.Errorf("no required scopes: %d", res.status)
	}
	if err := f.srv.SetResponderScopes("patient/*.read"); err == nil {
		t.Error("SetResponderScopes accepted a patient/ scope")
	}

	// The log names the client of every token it could read.
	var clients []string
	for _, r := range f.srv.Requests() {
		clients = append(clients, fmt.Sprintf("%d:%s", r.Status, r.ClientID))
	}
	if want := "401: 401: 401: 401: 200:" + inlineClient + " 401: 401: 403:" + inlineClient; !strings.HasPrefix(strings.Join(clients, " "), want) {
		t.Errorf("log %v, want prefix %s", clients, want)
	}
}

func TestMessaging(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, inlineClient, "ES384", fhirScope)
	url := f.srv.FHIRBase + messagePath

	msg := func(family string) object {
		m := loadJSON(t, messageFixture)
		params := m["entry"].(array)[1].(object)["resource"].(object)
		patient(params)["name"].(array)[0].(object)["family"] = family
		return m
	}
	check := func(res fhirResult, wantResponseTo string) object {
		t.Helper()
		if res.status != http.StatusOK || res.body["resourceType"] != "Bundle" || res.body["type"] != "message" {
			t.Fatalf("status %d: %s", res.status, res.raw)
		}
		entries := res.body["entry"].(array)
		hdr := entries[0].(object)["resource"].(object)
		if hdr["resourceType"] != "MessageHeader" || len(entries) != 2 {
			t.Fatalf("entries: %s", res.raw)
		}
		ev := hdr["eventCoding"].(object)
		if ev["system"] != eventSystem || ev["code"] != historyOperation {
			t.Errorf("eventCoding %v", ev)
		}
		if r := hdr["response"].(object); r["identifier"] != wantResponseTo || r["code"] != "ok" {
			t.Errorf("response %v, want identifier %s", r, wantResponseTo)
		}
		if d := hdr["destination"].(array)[0].(object)["endpoint"]; d != "http://pdmpserver.example.org/api" {
			t.Errorf("destination %v", d)
		}
		focus := hdr["focus"].(array)[0].(object)["reference"]
		pe := entries[1].(object)
		if focus != pe["fullUrl"] || !strings.HasPrefix(pe["fullUrl"].(string), "urn:uuid:") {
			t.Errorf("focus %v, Parameters entry %v", focus, pe["fullUrl"])
		}
		params := pe["resource"].(object)
		if params["resourceType"] != "Parameters" || "urn:uuid:"+params["id"].(string) != pe["fullUrl"] {
			t.Errorf("focused %v id %v", params["resourceType"], params["id"])
		}
		return params
	}

	// The IG example as is: relative focus reference, Bundle.id echoed
	// (as some servers do; the default below is FHIR's MessageHeader.id).
	f.srv.SetResponseIdentifier(RequestBundleID)
	params := check(f.do(t, http.MethodPost, url, token, loadJSON(t, messageFixture), nil), "pdmp-bundle-request-message-1")
	checkHistoryBundle(t, params, "Samuels")

	params = check(f.do(t, http.MethodPost, url, token, msg(PatientNoData), nil), "pdmp-bundle-request-message-1")
	if _, _, det := firstIssue(params); det != pmixStatusSystem+"#no-data" {
		t.Errorf("no-data in a message: %v", det)
	}

	// $process-message Parameters with the Bundle in content.
	wrapped := object{"resourceType": "Parameters", "parameter": array{object{"name": "content", "resource": msg(PatientHistory)}}}
	checkHistoryBundle(t, check(f.do(t, http.MethodPost, url, token, wrapped, nil), "pdmp-bundle-request-message-1"), PatientHistory)

	// fullUrl focus, and the MessageHeader.id choice.
	m := msg(PatientHistory)
	m["entry"].(array)[0].(object)["resource"].(object)["focus"] = array{object{"reference": "http://example.org/MyEHR/Parameters/parameters-req-op-1"}}
	f.srv.SetResponseIdentifier(RequestHeaderID)
	check(f.do(t, http.MethodPost, url, token, m, nil), "messageheader-req-op-1")
	f.srv.SetResponseIdentifier(RequestBundleID)

	// Pre-stage by message, retrieval by message.
	m = msg(PatientHistory)
	setInput(m["entry"].(array)[1].(object)["resource"].(object), "pre-stage-only", object{"name": "pre-stage-only", "valueBoolean": true})
	params = check(f.do(t, http.MethodPost, url, token, m, nil), "pdmp-bundle-request-message-1")
	key := inputParam(params, "pre-stage-retrieval-key")["valueString"].(string)
	m = msg(PatientHistory)
	setInput(m["entry"].(array)[1].(object)["resource"].(object), "pre-stage-retrieval-key", object{"name": "pre-stage-retrieval-key", "valueString": key})
	checkHistoryBundle(t, check(f.do(t, http.MethodPost, url, token, m, nil), "pdmp-bundle-request-message-1"), PatientHistory)

	// Errors come back as HTTP errors with an OperationOutcome.
	const hdr = "Bundle.entry[0].resource"
	for _, tc := range []struct {
		name   string
		edit   func(m object)
		status int
		expr   string
	}{
		{"wrong event", func(m object) {
			m["entry"].(array)[0].(object)["resource"].(object)["eventCoding"].(object)["code"] = "pdmp-history"
		},
			400, hdr + ".eventCoding"},
		{"focus unresolved", func(m object) {
			m["entry"].(array)[0].(object)["resource"].(object)["focus"] = array{object{"reference": "urn:uuid:0"}}
		}, 400, hdr + ".focus[0].reference"},
		{"no Bundle.id", func(m object) { delete(m, "id") }, 400, "Bundle.id"},
		{"not a message", func(m object) { m["type"] = "collection" }, 400, "Bundle.type"},
		{"header not first", func(m object) { slices.Reverse(m["entry"].(array)) }, 400, hdr},
		{"no source endpoint", func(m object) { delete(m["entry"].(array)[0].(object)["resource"].(object), "source") }, 400, hdr + ".source.endpoint"},
		{"invalid Parameters", func(m object) { delete(patient(m["entry"].(array)[1].(object)["resource"].(object)), "birthDate") },
			400, "Bundle.entry[1].resource.parameter.where(name = 'patient').resource.birthDate"},
		{"unknown key", func(m object) {
			setInput(m["entry"].(array)[1].(object)["resource"].(object), "pre-stage-retrieval-key", object{"name": "pre-stage-retrieval-key", "valueString": "nope"})
		}, 404, "Bundle.entry[1].resource.parameter.where(name = 'pre-stage-retrieval-key')"},
		{"server error", func(m object) {
			patient(m["entry"].(array)[1].(object)["resource"].(object))["name"].(array)[0].(object)["family"] = PatientServerError
		}, 500, ""},
	} {
		m := loadJSON(t, messageFixture)
		tc.edit(m)
		res := f.do(t, http.MethodPost, url, token, m, nil)
		if got := strings.Join(expressions(res.body), " "); res.status != tc.status || res.body["resourceType"] != "OperationOutcome" || got != tc.expr {
			t.Errorf("%s: %d, expressions %q; want %d %q\n%s", tc.name, res.status, got, tc.status, tc.expr, res.raw)
		}
	}
	// pdmp-history Parameters posted to $process-message by mistake.
	if res := f.do(t, http.MethodPost, url, token, request(t, PatientHistory), nil); res.status != 400 {
		t.Errorf("Parameters to $process-message: %d", res.status)
	}
	if res := f.do(t, http.MethodPost, url+"?async=true", token, loadJSON(t, messageFixture), nil); res.status != 400 {
		t.Errorf("async: %d", res.status)
	}
}

func TestPreStage(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, inlineClient, "ES384", fhirScope)
	withParam := func(params object, p object) object {
		setInput(params, p["name"].(string), p)
		return params
	}
	stageOnly := object{"name": "pre-stage-only", "valueBoolean": true}
	keyParam := func(k string) object { return object{"name": "pre-stage-retrieval-key", "valueString": k} }

	stage := func(family string) string {
		t.Helper()
		res := f.history(t, historyPath, token, withParam(request(t, family), stageOnly))
		if res.status != 200 || !slices.Equal(paramNames(res.body), []string{"pre-stage-retrieval-key", "outcome"}) {
			t.Fatalf("pre-stage: %d %s", res.status, res.raw)
		}
		if sev, code, det := firstIssue(res.body); sev != "information" || code != "informational" || det != tempStatusSystem+"#pre-stage-accepted" {
			t.Errorf("pre-stage outcome %s/%s/%s", sev, code, det)
		}
		return inputParam(res.body, "pre-stage-retrieval-key")["valueString"].(string)
	}
	unknown := func(name string, res fhirResult) {
		t.Helper()
		_, code, _ := firstIssue(res.body)
		if res.status != http.StatusNotFound || code != "not-found" ||
			!slices.Equal(expressions(res.body), []string{"Parameters.parameter.where(name = 'pre-stage-retrieval-key')"}) {
			t.Errorf("%s: %d %s", name, res.status, res.raw)
		}
	}

	key := stage(PatientHistory)
	if other := stage(PatientHistory); other == key {
		t.Error("retrieval keys repeat")
	}
	// The examples send pre-stage-only=false along with the key.
	for range 2 {
		res := f.history(t, systemPath, token, withParam(request(t, PatientHistory), keyParam(key)))
		if res.status != 200 {
			t.Fatalf("retrieval: %d %s", res.status, res.raw)
		}
		checkHistoryBundle(t, res.body, PatientHistory)
	}
	// The staged patient's scenario applies on retrieval.
	noData := stage(PatientNoData)
	res := f.history(t, systemPath, token, withParam(request(t, PatientNoData), keyParam(noData)))
	if _, _, det := firstIssue(res.body); det != pmixStatusSystem+"#no-data" {
		t.Errorf("retrieval for %s: %s", PatientNoData, res.raw)
	}

	unknown("unknown key", f.history(t, systemPath, token, withParam(request(t, PatientHistory), keyParam("no-such-key"))))
	unknown("other patient", f.history(t, systemPath, token, withParam(request(t, PatientAlerts), keyParam(key))))
	other := request(t, PatientHistory)
	patient(other)["birthDate"] = "1990-01-01"
	unknown("other birth date", f.history(t, systemPath, token, withParam(other, keyParam(key))))
	unknown("other client", f.history(t, systemPath, f.token(t, urlClient, "ES384", fhirScope), withParam(request(t, PatientHistory), keyParam(key))))

	f.clock.advance(15*time.Minute - time.Second)
	token = f.token(t, inlineClient, "ES384", fhirScope)
	if res := f.history(t, systemPath, token, withParam(request(t, PatientHistory), keyParam(key))); res.status != 200 {
		t.Errorf("before expiry: %d", res.status)
	}
	f.clock.advance(time.Second)
	unknown("expired key", f.history(t, systemPath, token, withParam(request(t, PatientHistory), keyParam(key))))

	f.srv.SetPreStageTTL(time.Hour)
	key = stage(PatientHistory)
	f.srv.ExpirePreStageKeys()
	unknown("after ExpirePreStageKeys", f.history(t, systemPath, token, withParam(request(t, PatientHistory), keyParam(key))))
}

func TestReportLink(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, inlineClient, "ES384", fhirScope)
	res := f.history(t, historyPath, token, request(t, PatientLinkOnly))
	link := inputParam(res.body, "pdmp-history-link")["valueUrl"].(string)

	if res := f.do(t, http.MethodGet, link, "", nil, nil); res.status != 401 || res.header.Get("WWW-Authenticate") == "" {
		t.Errorf("report without token: %d", res.status)
	}
	if res := f.do(t, http.MethodGet, link, f.token(t, inlineClient, "ES384", "system/Observation.rs"), nil, nil); res.status != 403 {
		t.Errorf("report with wrong scope: %d", res.status)
	}
	rep := f.do(t, http.MethodGet, link, f.token(t, urlClient, "RS384", fhirScope), nil, nil)
	page := string(rep.raw)
	if rep.status != 200 || !strings.HasPrefix(rep.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(page, "August "+PatientLinkOnly) || !strings.Contains(page, "Acetaminophen 300 mg / Codeine 30 mg oral tablet") ||
		!strings.Contains(page, "Doctor/pharmacy shopping alert") {
		t.Errorf("report: %d %s\n%s", rep.status, rep.header.Get("Content-Type"), page)
	}
	if res := f.do(t, http.MethodGet, f.srv.URL+"/reports/nope", token, nil, nil); res.status != 404 || res.body["resourceType"] != "OperationOutcome" {
		t.Errorf("unknown report: %d %s", res.status, res.raw)
	}
	reqs := f.srv.Requests()
	if last := reqs[len(reqs)-2]; last.Path != strings.TrimPrefix(link, f.srv.URL) || last.Family != PatientLinkOnly || last.ClientID != urlClient {
		t.Errorf("report request logged as %+v", last)
	}
}

func TestMetadata(t *testing.T) {
	f := newFixture(t)
	res := f.do(t, http.MethodGet, f.srv.FHIRBase+"/metadata", "", nil, nil)
	if res.status != 200 || res.body["resourceType"] != "CapabilityStatement" || res.body["fhirVersion"] != "4.0.1" {
		t.Fatalf("metadata: %d %s", res.status, res.raw)
	}
	if !bytes.HasPrefix(res.raw, []byte(`{"resourceType":"CapabilityStatement",`)) {
		t.Errorf("resourceType not first: %.60s", res.raw)
	}
	if !strings.Contains(string(res.raw), f.srv.TokenURL) || !strings.Contains(string(res.raw), historyOperation) {
		t.Errorf("metadata lacks the token URL or operation: %s", res.raw)
	}
}

func TestResponderFaults(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, inlineClient, "ES384", fhirScope)
	url := f.srv.FHIRBase + historyPath
	post := func() (fhirResult, error) {
		return f.doErr(http.MethodPost, url, token, request(t, PatientNoData), nil)
	}
	ok := func(name string) {
		t.Helper()
		if res, err := post(); err != nil || res.status != 200 {
			t.Errorf("%s: %v %d", name, err, res.status)
		}
	}

	f.srv.InjectFault(ResponderFault{Status: 503, RetryAfter: "2", Times: 2})
	f.srv.InjectFault(ResponderFault{Status: 429, Body: "slow down"})
	for i := range 2 {
		res, err := post()
		must(t, err)
		if _, code, _ := firstIssue(res.body); res.status != 503 || res.header.Get("Retry-After") != "2" || code != "transient" {
			t.Errorf("503 #%d: %d %q %s", i, res.status, res.header.Get("Retry-After"), res.raw)
		}
	}
	res, err := post()
	must(t, err)
	if res.status != 429 || string(res.raw) != "slow down" || !strings.HasPrefix(res.header.Get("Content-Type"), "text/plain") {
		t.Errorf("429: %d %q %s", res.status, res.header.Get("Content-Type"), res.raw)
	}
	ok("after status faults")

	f.srv.InjectFault(ResponderFault{Malformed: true})
	res, err = post()
	must(t, err)
	if res.status != 200 || res.header.Get("Content-Type") != "application/fhir+json; charset=utf-8" || json.Valid(res.raw) || len(res.raw) == 0 {
		t.Errorf("malformed: %d %s", res.status, res.raw)
	}

	f.srv.InjectFault(ResponderFault{ResetConnection: true})
	if _, err := post(); err == nil {
		t.Error("reset: request succeeded")
	}
	ok("after reset")

	f.srv.InjectFault(ResponderFault{ExpireTokenFirst: true})
	res, err = post()
	must(t, err)
	if res.status != 401 || !strings.Contains(res.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("expire-token: %d %s", res.status, res.raw)
	}
	if res, _ := post(); res.status != 401 {
		t.Errorf("token still valid after ExpireTokenFirst: %d", res.status)
	}
	token = f.token(t, inlineClient, "ES384", fhirScope)
	ok("new token")

	// A delay alone lets the request through afterwards; a client that
	// gives up during a delay is recorded with status 0.
	f.srv.InjectFault(ResponderFault{Delay: 10 * time.Millisecond})
	ok("short delay")
	f.srv.InjectFault(ResponderFault{Delay: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = f.doErr(http.MethodPost, url, token, request(t, PatientNoData), func(r *http.Request) { *r = *r.WithContext(ctx) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("long delay: %v", err)
	}

	// Faults are for the operations: metadata passes them by.
	f.srv.InjectFault(ResponderFault{Status: 500})
	if res := f.do(t, http.MethodGet, f.srv.FHIRBase+"/metadata", "", nil, nil); res.status != 200 {
		t.Errorf("metadata consumed a fault: %d", res.status)
	}
	if res := f.do(t, http.MethodPost, f.srv.FHIRBase+messagePath, token, loadJSON(t, messageFixture), nil); res.status != 500 {
		t.Errorf("$process-message did not get the fault: %d", res.status)
	}

	// Wait for the abandoned request's handler to finish recording.
	deadline := time.Now().Add(5 * time.Second)
	var faults []string
	for {
		faults = faults[:0]
		for _, r := range f.srv.Requests() {
			faults = append(faults, fmt.Sprintf("%s:%d", cmpOr(r.Fault, "-"), r.Status))
		}
		want := "status:503 status:503 status:429 -:200 malformed:200 reset:0 -:200 expire-token:401 -:401 -:200 delay:200 delay:0 -:200 status:500"
		if got := strings.Join(faults, " "); got == want {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("log\n%s\nwant\n%s", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestResetOverTLS(t *testing.T) {
	f := newFixture(t, WithTLS())
	token := f.token(t, inlineClient, "ES384", fhirScope)
	f.srv.InjectFault(ResponderFault{ResetConnection: true})
	if _, err := f.doErr(http.MethodPost, f.srv.FHIRBase+historyPath, token, request(t, PatientHistory), nil); err == nil {
		t.Error("reset over TLS: request succeeded")
	}
	if res := f.history(t, historyPath, token, request(t, PatientHistory)); res.status != 200 {
		t.Errorf("after reset: %d", res.status)
	}
}

func TestRequestLog(t *testing.T) {
	f := newFixture(t)
	token := f.token(t, inlineClient, "ES384", fhirScope)
	start := f.clock.now()
	res := f.do(t, http.MethodPost, f.srv.FHIRBase+historyPath, token, request(t, PatientAlerts), func(r *http.Request) {
		r.Header.Set("X-Request-ID", "req-1")
	})
	if res.header.Get("X-Request-ID") != "req-1" {
		t.Errorf("X-Request-ID not echoed: %q", res.header.Get("X-Request-ID"))
	}
	bad := request(t, PatientNoData)
	delete(patient(bad), "gender")
	f.do(t, http.MethodPost, f.srv.FHIRBase+systemPath, token, bad, func(r *http.Request) { r.Header.Set("X-Request-ID", "req-2") })
	f.do(t, http.MethodPost, f.srv.FHIRBase+messagePath, token, loadJSON(t, messageFixture), func(r *http.Request) { r.Header.Set("X-Request-ID", "req-3") })
	f.do(t, http.MethodPost, f.srv.FHIRBase+systemPath, "", request(t, PatientNoData), nil)

	want := []ResponderRequest{
		{Time: start, Method: "POST", Path: "/fhir/Patient/$pdmp-history", RequestID: "req-1", ClientID: inlineClient, Family: PatientAlerts, Status: 200},
		{Time: start, Method: "POST", Path: "/fhir/$pdmp-history", RequestID: "req-2", ClientID: inlineClient, Family: PatientNoData, Status: 400},
		{Time: start, Method: "POST", Path: "/fhir/$process-message", RequestID: "req-3", ClientID: inlineClient, Family: "Samuels", Status: 200},
		{Time: start, Method: "POST", Path: "/fhir/$pdmp-history", Status: 401},
	}
	if got := f.srv.Requests(); !slices.Equal(got, want) || f.srv.RequestCount() != 4 {
		t.Errorf("Requests\n%+v\nwant\n%+v", got, want)
	}
	f.srv.ResetRequests()
	if f.srv.RequestCount() != 0 || len(f.srv.Requests()) != 0 {
		t.Error("ResetRequests kept requests")
	}
	if f.srv.TokenRequests() != 1 {
		t.Errorf("responder requests leaked into the token log: %d", f.srv.TokenRequests())
	}
}

func TestMarshalFHIR(t *testing.T) {
	v, err := decodeJSON([]byte(`{"b":[{"z":1,"resourceType":"X","a":"<div>&</div>"}],"resourceType":"Y","m":4.50}`))
	must(t, err)
	if got, want := string(marshalFHIR(v)), `{"resourceType":"Y","b":[{"resourceType":"X","a":"<div>&</div>","z":1}],"m":4.50}`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
