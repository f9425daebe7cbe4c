package ipc

import "context"

// Transport is how a caller reached the agent.
type Transport string

// The three transports.
const (
	TransportTCP  Transport = "tcp"  // loopback TCP; callers prove themselves with the credential file
	TransportUnix Transport = "unix" // Unix domain socket; the kernel tells us the peer's uid
	TransportPipe Transport = "pipe" // Windows named pipe; the client's token tells us its SIDs
)

// Caller is who is calling, as far as the transport can tell. It is
// established once per connection (per request for TCP, whose credential
// travels in each request).
type Caller struct {
	Transport Transport
	// UID is the peer's uid on a Unix socket, -1 elsewhere.
	UID int
	// GIDs are the peer's primary gid followed by the supplementary groups
	// of its user in the user database (Unix socket only).
	GIDs []int
	// SIDs are the client's user SID followed by its enabled groups
	// (named pipe only).
	SIDs []string
	// PID is the peer's process id, 0 when unknown (TCP). It is recorded
	// for audit only and never used to authorize: PIDs are reused.
	PID int
	// Credential is true when a TCP caller presented the bearer credential.
	Credential bool
	// Name is the name of the policy rule the caller matched.
	Name string
}

type callerKey struct{}

// CallerFrom returns the authorized caller of the request whose context is
// ctx, as seen by the handlers the Server runs.
func CallerFrom(ctx context.Context) (Caller, bool) {
	rs, ok := ctx.Value(callerKey{}).(*requestState)
	if !ok {
		return Caller{}, false
	}
	return rs.caller, true
}

// requestState is what ServeHTTP learned about a request before routing it.
type requestState struct {
	caller    Caller
	rule      *rule
	requestID string
}
