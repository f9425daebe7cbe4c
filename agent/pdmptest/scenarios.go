package pdmptest

import (
	"embed"
	"net/http"
	"strings"
)

// Family names (Patient.name[0].family of the request, compared case-
// insensitively) that select the responder's answer. Any other family name
// gets PatientHistory's answer. See the package documentation for the exact
// responses.
const (
	PatientHistory        = "Hollowell"  // 200, pdmp-history-data: one Patient, dispenses, one alert
	PatientUncertainMatch = "Twomey"     // 200, pdmp-history-data with two Patients (MA and RI PDMPs)
	PatientAlerts         = "Vigil"      // 200, pdmp-history-data with three DetectedIssue alerts
	PatientNoData         = "Nolan"      // 200, outcome information/informational PMIX no-data
	PatientLinkOnly       = "Linkletter" // 200, pdmp-history-link to {URL}/reports/{id} only
	PatientWarning        = "Warner"     // 200, pdmp-history-data + outcome warning/incomplete PMIX error
	PatientFatalError     = "Fallon"     // 200, outcome error/exception PMIX error
	PatientServerError    = "Crashaw"    // 500, bare OperationOutcome error/exception PMIX error
	PatientDeferred       = "Deferrari"  // 200, outcome information/informational PMIX deferred
	PatientDisallowed     = "Forbes"     // 200, outcome error/forbidden PMIX disallowed
)

// Code systems and profiles of the PDMP IG.
const (
	pmixStatusSystem    = "http://terminology.hl7.org/CodeSystem/PMIXStatusCode"
	tempStatusSystem    = "http://hl7.org/fhir/us/pdmp/CodeSystem/temporary-pdmp-response-status"
	historyOperation    = "http://hl7.org/fhir/us/pdmp/OperationDefinition/pdmp-history"
	profileResponse     = "http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-parameters-response"
	profileRespMessage  = "http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-bundle-response-message"
	profileRespHeader   = "http://hl7.org/fhir/us/pdmp/StructureDefinition/pdmp-messageheader-response"
	dataAbsentReasonURL = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
)

//go:embed responses/*.json
var responseFiles embed.FS

// answer is the responder's reply to a valid request: a Parameters with
// status 200, or an OperationOutcome with an error status.
type answer struct {
	status int
	body   object
}

// scenario answers a valid, non-pre-stage $pdmp-history request; x gives
// access to the server (for report links) and the caller.
type scenario func(x *exchange, q historyQuery) answer

// scenarios maps a lower-cased family name to its scenario. To add one,
// export a family-name constant, add it here and describe it in doc.go.
var scenarios = map[string]scenario{
	strings.ToLower(PatientHistory):        historyScenario("history.json"),
	strings.ToLower(PatientUncertainMatch): historyScenario("history-multiple.json"),
	strings.ToLower(PatientAlerts):         historyScenario("history-alerts.json"),
	strings.ToLower(PatientNoData): outcomeScenario(issue{"information", "informational", "",
		"No PDMP history was found for the submitted patient"}, pmixStatusSystem, "no-data", "No Data"),
	strings.ToLower(PatientLinkOnly): linkScenario,
	strings.ToLower(PatientWarning):  warningScenario,
	strings.ToLower(PatientFatalError): outcomeScenario(issue{"error", "exception", "",
		"An unexpected system error occurred during processing. Please resubmit."}, pmixStatusSystem, "error", "Error"),
	strings.ToLower(PatientServerError): serverErrorScenario,
	strings.ToLower(PatientDeferred): outcomeScenario(issue{"information", "informational", "",
		"The request was queued for manual review; the history cannot be returned now"}, pmixStatusSystem, "deferred", ""),
	strings.ToLower(PatientDisallowed): outcomeScenario(issue{"error", "forbidden", "",
		"The requester's role is not allowed to obtain PDMP history in this state"}, pmixStatusSystem, "disallowed", ""),
}

// scenarioFor returns the scenario selected by family.
func scenarioFor(family string) scenario {
	if sc, ok := scenarios[strings.ToLower(family)]; ok {
		return sc
	}
	return scenarios[strings.ToLower(PatientHistory)]
}

// responseParameters wraps output parameters in a pdmp-parameters-response.
func responseParameters(params ...object) object {
	list := make(array, len(params))
	for i, p := range params {
		list[i] = p
	}
	return object{
		"resourceType": "Parameters",
		"id":           newUUID(),
		"meta":         object{"profile": array{profileResponse}},
		"parameter":    list,
	}
}

// operationOutcome builds an OperationOutcome from issues; if code is set,
// the first issue gets details.coding system#code (display).
func operationOutcome(issues []issue, system, code, display string) object {
	list := make(array, len(issues))
	for i, is := range issues {
		list[i] = is.toJSON()
	}
	if code != "" && len(list) > 0 {
		coding := object{"system": system, "code": code}
		if display != "" {
			coding["display"] = display
		}
		list[0].(object)["details"] = object{"coding": array{coding}}
	}
	return object{"resourceType": "OperationOutcome", "id": newUUID(), "issue": list}
}

func outcomeParam(is issue, system, code, display string) object {
	return object{"name": "outcome", "resource": operationOutcome([]issue{is}, system, code, display)}
}

func outcomeScenario(is issue, system, code, display string) scenario {
	return func(*exchange, historyQuery) answer {
		return answer{http.StatusOK, responseParameters(outcomeParam(is, system, code, display))}
	}
}

func historyScenario(file string) scenario {
	return func(_ *exchange, q historyQuery) answer {
		return answer{http.StatusOK, responseParameters(historyData(file, q))}
	}
}

// historyData returns the pdmp-history-data parameter holding the embedded
// history Bundle file, its Patients given the requested demographics.
func historyData(file string, q historyQuery) object {
	return object{"name": "pdmp-history-data", "resource": historyBundle(file, q)}
}

// historyBundle loads an embedded collection Bundle, gives it a fresh id
// and makes its Patient records those of the requested patient: name[0]
// family and first given name, and birthDate (a data-absent-reason
// extension when the request had no full birth date).
func historyBundle(file string, q historyQuery) object {
	b, err := responseFiles.ReadFile("responses/" + file)
	if err != nil {
		panic("pdmptest: " + err.Error()) // embedded; a bug in this package
	}
	v, err := decodeJSON(b)
	if err != nil {
		panic("pdmptest: responses/" + file + ": " + err.Error())
	}
	bundle := v.(object)
	bundle["id"] = newUUID()
	entries, _ := getArray(bundle, "entry")
	for _, e := range entries {
		res, _ := getObject(e.(object), "resource")
		if rt, _ := getString(res, "resourceType"); rt != "Patient" {
			continue
		}
		names, _ := getArray(res, "name")
		if len(names) > 0 {
			n := names[0].(object)
			n["family"] = q.family
			if given, _ := getArray(n, "given"); len(given) > 0 && len(q.given) > 0 {
				given[0] = q.given[0]
			}
		}
		if q.birthDate != "" {
			res["birthDate"] = q.birthDate
			delete(res, "_birthDate")
		} else {
			delete(res, "birthDate")
			res["_birthDate"] = object{"extension": array{object{"url": dataAbsentReasonURL, "valueCode": "unknown"}}}
		}
	}
	return bundle
}

func warningScenario(_ *exchange, q historyQuery) answer {
	return answer{http.StatusOK, responseParameters(
		historyData("history.json", q),
		outcomeParam(issue{"warning", "incomplete", "",
			"Incomplete results: History includes only information from the MA PDMP. RI PDMP did not respond within the timeout window"},
			pmixStatusSystem, "error", "Error"),
	)}
}

func serverErrorScenario(*exchange, historyQuery) answer {
	return answer{http.StatusInternalServerError, operationOutcome([]issue{{"error", "exception", "",
		"An unexpected system error occurred during processing. Please resubmit."}}, pmixStatusSystem, "error", "Error")}
}

// linkScenario stores a report of the patient's history and answers with a
// link to it only.
func linkScenario(x *exchange, q historyQuery) answer {
	id := x.s.storeReport(x.clientID, historyBundle("history.json", q))
	return answer{http.StatusOK, responseParameters(object{
		"name":     "pdmp-history-link",
		"valueUrl": x.s.URL + "/reports/" + id,
	})}
}

// preStageAccepted answers pre-stage-only = true with a retrieval key, in
// the shape of output-parameters-5.
func preStageAccepted(key string) answer {
	return answer{http.StatusOK, responseParameters(
		object{"name": "pre-stage-retrieval-key", "valueString": key},
		outcomeParam(issue{"information", "informational", "", "Pre-stage request was accepted successfully"},
			tempStatusSystem, "pre-stage-accepted", "Pre-Stage Request Accepted"),
	)}
}
