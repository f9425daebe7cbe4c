// Package pdmp is the FHIR side of the agent: the request and response
// shapes of the HL7 US PDMP IG (STU1, FHIR R4) $pdmp-history operation. It
// validates the Parameters an EHR submits against pdmp-parameters-request,
// completes minimal input from the registration's configured practitioner,
// role and organization, wraps the request in a FHIR message and unwraps the
// answer when a responder uses the messaging option, parses
// pdmp-parameters-response (or a bare OperationOutcome) into a typed result,
// and summarises it. It does no HTTP and knows nothing about tokens.
//
// What it must never do:
//
//   - log anything: it has no logger, and callers must not log what it
//     returns either, since requests and histories are patient data;
//   - put patient data into an error string. The only place a problem with
//     the EHR's input is described is the OperationOutcome handed back to the
//     same EHR (see OutcomeError), and even there an issue names the element
//     (its expression), never the value found in it;
//   - alter the responder's answer that is passed back: parsing reads it,
//     and the raw bytes (History.Raw, UnwrapMessage's result) are what was
//     received.
//
// Requests keep every JSON member in order and byte for byte, so what the
// package does not interpret reaches the responder exactly as the EHR wrote
// it; only completion and SetRetrievalKey add to or change a request.
package pdmp
