// Package pdmptest provides an in-process sandbox of the servers a PDMP
// requester agent talks to, in the spirit of net/http/httptest.
//
// NewServer starts a loopback HTTP(S) server that implements the SMART
// Backend Services authorization flow (client_credentials grant with a
// private_key_jwt client assertion, RS384 or ES384) as strictly as real
// deployments do, together with knobs that real servers do not offer:
// injected token endpoint faults, a skewed Date header, a log of every token
// request and the ability to revoke all issued tokens. Rejections always
// carry an error_description naming the exact check that failed, so a failing
// agent test says why.
//
// The server's Mux is exposed so that further FHIR routes can be added next
// to the authorization server; Authorize checks the bearer tokens it issued.
//
// # PDMP responder
//
// The same server is a sandbox PDMP responder (HL7 US PDMP IG STU1):
//
//	POST {FHIRBase}/Patient/$pdmp-history   Parameters in, Parameters out
//	POST {FHIRBase}/$pdmp-history           the same (the OperationDefinition's system-level path)
//	POST {FHIRBase}/$process-message        message Bundle in, response message Bundle out
//	GET  {FHIRBase}/metadata                CapabilityStatement; no token needed
//	GET  {URL}/reports/{id}                 HTML report behind a pdmp-history-link
//
// The operations and reports need "Authorization: Bearer <token>" with a
// token from this server granting system/Patient.rs and
// system/MedicationDispense.rs (system/*.read does; see SetResponderScopes).
// No token: 401 with WWW-Authenticate `Bearer realm="pdmptest"` (no error
// code, RFC 6750 §3.1); an unknown, expired or revoked token: 401 with
// error="invalid_token"; too little scope: 403 with
// error="insufficient_scope". Each comes with an OperationOutcome (issue code
// login or forbidden). Requests must send Content-Type application/fhir+json
// or application/json with charset utf-8 if any (else 415), and an Accept
// that allows one of them (else 406). X-Request-ID is recorded and echoed.
// Responses are application/fhir+json (application/json if only that is
// accepted), resourceType first, Cache-Control no-store.
//
// The input Parameters is validated strictly, independently of the agent's
// own code: exactly one patient (Patient with name.family, name.given,
// gender, and birthDate as a full date unless _birthDate carries an
// extension), authorized-practitioner (Practitioner with an identifier
// having system and value), authorized-practitioner-role (PractitionerRole)
// and authorized-practitioner-organization (Organization with name); at most
// one of delegate-practitioner (as authorized-practitioner),
// delegate-practitioner-role, delegate-organization (with name),
// animal-owner (RelatedPerson), pre-stage-only (valueBoolean) and
// pre-stage-retrieval-key (non-empty valueString, not together with
// pre-stage-only = true). Resources must be inline in parameter.resource;
// unknown parameter names are rejected. Any violation is answered 400 with
// an OperationOutcome listing every problem, each issue's expression naming
// the element, e.g.
// "Parameters.parameter.where(name = 'patient').resource.birthDate".
//
// # Scenarios
//
// The answer to a valid request is chosen by the requested patient's family
// name (name[0].family, case-insensitively). History Bundles (type
// collection, urn:uuid fullUrls, meta.source on every resource) are derived
// from the IG example pdmp-bundle-history-result-2 (see responses/README.md);
// their Patient records take the requested family name, first given name and
// birth date. Ids, report ids and retrieval keys are random; the rest is
// deterministic. Outcome codings below are PMIX
// (http://terminology.hl7.org/CodeSystem/PMIXStatusCode) unless noted.
//
//	PatientHistory ("Hollowell"), and any family name not listed:
//	    200 Parameters [pdmp-history-data]: 1 Patient, 2 MedicationDispenses
//	    (rx-fill-number, MME or LME extensions), 2 MedicationRequests,
//	    2 Practitioners, 2 pharmacies, 1 DetectedIssue (PMIX alert 03), all
//	    from http://example.org/ma-pdmp.
//	PatientUncertainMatch ("Twomey"): 200 [pdmp-history-data] with 2 Patients,
//	    one per source (ma-pdmp, ri-pdmp), each dispense referencing its own.
//	PatientAlerts ("Vigil"): as PatientHistory with 3 DetectedIssues (PMIX
//	    alert categories 03, 04 and 05).
//	PatientNoData ("Nolan"): 200 [outcome] information/informational no-data.
//	PatientLinkOnly ("Linkletter"): 200 [pdmp-history-link] valueUrl
//	    {URL}/reports/{id}, a report of PatientHistory's data. GET it with a
//	    token as for the operations (any client): 200 text/html; an unknown
//	    id is 404 with an OperationOutcome.
//	PatientWarning ("Warner"): 200 [pdmp-history-data, outcome]: PatientHistory's
//	    data and warning/incomplete error (one state PDMP timed out).
//	PatientFatalError ("Fallon"): 200 [outcome] error/exception error, as in
//	    the IG's fatal-error example.
//	PatientServerError ("Crashaw"): 500 with a bare OperationOutcome
//	    error/exception error.
//	PatientDeferred ("Deferrari"): 200 [outcome] information/informational
//	    deferred.
//	PatientDisallowed ("Forbes"): 200 [outcome] error/forbidden disallowed.
//	    HTTP 200, not 403, so that clients can tell a state's refusal of the
//	    requester's role from a token lacking scope.
//
// Pre-staging works for any family name. pre-stage-only = true is answered
// 200 [pre-stage-retrieval-key, outcome]: a random UUID key and
// information/informational
// http://hl7.org/fhir/us/pdmp/CodeSystem/temporary-pdmp-response-status#pre-stage-accepted.
// A later request carrying the key (pre-stage-only absent or false) from the
// same client for the same patient (family and first given name
// case-insensitively, birth date) gets the family name's scenario; keys can
// be reused until they expire (15 minutes by the server clock, see
// SetPreStageTTL and ExpirePreStageKeys). A key that is unknown, expired, or
// was issued to another client or for another patient is answered 404 with
// an OperationOutcome (issue code not-found, expression naming
// pre-stage-retrieval-key): the IG leaves this open, and a client should
// fall back to a plain request.
//
// # Messaging
//
// $process-message takes the request message Bundle as the body (or a
// Parameters holding it in content; async = true is refused). The Bundle
// must be type message, its MessageHeader with an id (the Bundle with an id
// under RequestBundleID), without total or entry.request/response/search; its
// first entry a MessageHeader with eventCoding
// urn:ietf:rfc:3986#http://hl7.org/fhir/us/pdmp/OperationDefinition/pdmp-history,
// source.endpoint, and exactly one focus that resolves (by fullUrl, or a
// relative Type/id reference by resource type and id, as in the IG example)
// to the single Parameters entry, which is validated as above. The answer is
// 200 with a response message Bundle (pdmp-bundle-response-message): a
// MessageHeader with response.code ok, response.identifier the request's
// MessageHeader.id, destination the request's source.endpoint and focus the
// urn:uuid of the second entry, the Parameters $pdmp-history would have
// returned. FHIR R4 defines response.identifier so, and the IG's example
// follows it; SetResponseIdentifier(RequestBundleID) echoes the Bundle.id
// instead, as some servers do. Invalid messages
// or Parameters (400), unknown retrieval keys (404) and PatientServerError
// (500) are answered as HTTP errors with an OperationOutcome, not as
// response messages.
//
// # Faults and observation
//
// InjectFault queues ResponderFaults, consumed one per $pdmp-history or
// $process-message request (never by metadata or reports) before the token
// is checked: an error status with an OperationOutcome or a raw body, a
// delay, a truncated non-JSON 200, a TCP reset, or the revocation of every
// token with a 401. Requests lists every request to the responder routes
// (time, path, X-Request-ID, client, requested family name, status, fault).
// The package never logs; only tests read that PHI.
//
// This package is test infrastructure: production code must never import it.
// The only exception is the demo command, which uses it to stand in for a
// state PDMP.
package pdmptest
