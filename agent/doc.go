// Package agent is the pdmp-agent daemon and its domain: it turns the
// configuration into open key rings, HTTP clients with the responders' TLS
// settings, and SMART token clients, and wires them to the queue and the
// local API. Subpackages hold the parts: config (the file), smart (tokens),
// pdmptest (the sandbox used by tests and the demo), cli (subcommands).
//
// The agent must never log or return in an error a patient's data, an
// access token, a client assertion or key material, and must never send a
// token anywhere but its own responder's origin.
package agent
