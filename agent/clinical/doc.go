// Package clinical computes the prescriber's first screen from a PDMP
// history: the responder's own alerts, a plain warning when it returned
// several possible patient matches, the active opioid prescriptions and
// their total daily morphine milligram equivalents (MME), overlapping
// opioid and benzodiazepine supplies, the number of distinct prescribers
// and pharmacies (multiple-provider episodes), and early refills of the
// same drug. Summarize computes it; Summary.FHIR gives it as a FHIR
// Bundle an EHR can display without custom code. docs/clinical-summary.md
// documents the rules, thresholds, sources and the FHIR shape.
//
// What it must never do:
//
//   - invent data. Every finding is read or computed from what the
//     responder sent (pdmp.History, and the Bundle in History.Raw) with
//     the fixed tables in table.go; what cannot be read, such as a strength
//     missing from a medication's name, is reported as unknown and makes a
//     total a lower bound ("at least"), never a guess. Each flag names the
//     records it rests on so a clinician can check it;
//   - log anything: it has no logger, and a Summary is patient data, for
//     the EHR that asked and never for logs or error strings;
//   - run when the responder's policy forbids discrete data. A summary is
//     discrete data derived from the history, bound by the same policy
//     (docs/state-policy.md) and delivered and kept no more than the
//     history itself. This package cannot see the policy: the caller
//     enforces it, and does not call Summarize where discrete data is
//     forbidden.
//
// The findings support a clinician's judgement and replace none: MME
// conversions are estimates (the CDC says so of its own table), and the
// thresholds are conventions, not limits.
package clinical
