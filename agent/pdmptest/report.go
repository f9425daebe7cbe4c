package pdmptest

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"strings"
)

// report is a rendered history kept behind a pdmp-history-link.
type report struct {
	clientID string // client whose request created it
	family   string
	bundle   object // the history Bundle it renders
}

// storeReport keeps bundle as a report and returns its id. Reports live as
// long as the server.
func (s *Server) storeReport(clientID string, bundle object) string {
	id := newUUID()
	family := ""
	if pat := firstOfType(bundle, "Patient"); pat != nil {
		family = nameOf(pat, false)
	}
	rs := &s.responder
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.reports[id] = report{clientID: clientID, family: family, bundle: bundle}
	return id
}

// serveReport answers GET {URL}/reports/{id} with an HTML rendering of the
// report. It needs a valid token with the responder scopes, from any
// client; an unknown id gets 404 with an OperationOutcome.
func (s *Server) serveReport(x *exchange) {
	if !x.authorize() {
		return
	}
	rs := &s.responder
	rs.mu.Lock()
	rep, ok := rs.reports[x.r.PathValue("id")]
	rs.mu.Unlock()
	if !ok {
		x.writeOutcome(http.StatusNotFound, errorIssue("not-found", "", "no report with this id"))
		return
	}
	x.family = rep.family
	var buf bytes.Buffer
	if err := reportTemplate.Execute(&buf, reportView(rep.bundle)); err != nil {
		x.writeOutcome(http.StatusInternalServerError, errorIssue("exception", "", "rendering report: %v", err))
		return
	}
	h := x.w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'")
	x.w.WriteHeader(http.StatusOK)
	_, _ = x.w.Write(buf.Bytes())
}

var reportTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>PDMP report</title></head>
<body>
<h1>PDMP report (pdmptest sandbox)</h1>
<p>Patient: {{.Patient}}{{with .BirthDate}}, born {{.}}{{end}}</p>
<table>
<tr><th>Dispensed</th><th>Medication</th><th>Quantity</th><th>Days supply</th><th>Pharmacy</th><th>Source</th></tr>
{{range .Dispenses}}<tr><td>{{.When}}</td><td>{{.Medication}}</td><td>{{.Quantity}}</td><td>{{.DaysSupply}}</td><td>{{.Pharmacy}}</td><td>{{.Source}}</td></tr>
{{end}}</table>
{{with .Alerts}}<h2>Alerts</h2>
<ul>{{range .}}<li>{{.}}</li>{{end}}</ul>
{{end}}</body></html>
`))

type dispenseRow struct {
	When, Medication, Quantity, DaysSupply, Pharmacy, Source string
}

type reportData struct {
	Patient, BirthDate string
	Dispenses          []dispenseRow
	Alerts             []string
}

func reportView(bundle object) reportData {
	var d reportData
	if pat := firstOfType(bundle, "Patient"); pat != nil {
		d.Patient = nameOf(pat, true)
		d.BirthDate, _ = getString(pat, "birthDate")
	}
	entries, _ := getArray(bundle, "entry")
	for _, e := range entries {
		res, _ := getObject(e.(object), "resource")
		switch rt, _ := getString(res, "resourceType"); rt {
		case "MedicationDispense":
			var row dispenseRow
			row.When, _ = getString(res, "whenPrepared")
			med, _ := getObject(res, "medicationCodeableConcept")
			row.Medication, _ = getString(med, "text")
			qty, _ := getObject(res, "quantity")
			unit, _ := getString(qty, "unit")
			row.Quantity = strings.TrimSpace(fmt.Sprint(qty["value"]) + " " + unit)
			days, _ := getObject(res, "daysSupply")
			row.DaysSupply = fmt.Sprint(days["value"])
			if perf, _ := getArray(res, "performer"); len(perf) > 0 {
				actor, _ := getObject(perf[0].(object), "actor")
				row.Pharmacy, _ = getString(actor, "display")
			}
			meta, _ := getObject(res, "meta")
			row.Source, _ = getString(meta, "source")
			d.Dispenses = append(d.Dispenses, row)
		case "DetectedIssue":
			code, _ := getObject(res, "code")
			text, _ := getString(code, "text")
			d.Alerts = append(d.Alerts, text)
		}
	}
	return d
}

func firstOfType(bundle object, resourceType string) object {
	entries, _ := getArray(bundle, "entry")
	for _, e := range entries {
		eo, _ := e.(object)
		res, _ := getObject(eo, "resource")
		if rt, _ := getString(res, "resourceType"); rt == resourceType {
			return res
		}
	}
	return nil
}

// nameOf returns name[0].family, preceded by the given names if full.
func nameOf(res object, full bool) string {
	names, _ := getArray(res, "name")
	if len(names) == 0 {
		return ""
	}
	n, _ := names[0].(object)
	family, _ := getString(n, "family")
	if !full {
		return family
	}
	var parts []string
	given, _ := getArray(n, "given")
	for _, g := range given {
		if s, ok := g.(string); ok {
			parts = append(parts, s)
		}
	}
	return strings.Join(append(parts, family), " ")
}
