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
// The server's Mux is exposed so that further FHIR routes (such as the PDMP
// $pdmp-history responder) can be added next to the authorization server;
// Authorize checks the bearer tokens it issued.
//
// This package is test infrastructure: production code must never import it.
// The only exception is the demo command, which uses it to stand in for a
// state PDMP.
package pdmptest
