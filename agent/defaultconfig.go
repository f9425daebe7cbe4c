package agent

import _ "embed"

// DefaultConfig is the commented configuration install lays down when none
// exists. It is deliberately incomplete: the agent refuses to start until
// IT staff fill in a responder and a registration.
//
//go:embed defaultconfig.yaml
var DefaultConfig []byte
