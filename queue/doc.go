// Package queue is pdmp-agent's durable local job queue.
//
// A request handed to [Queue.Submit] is accepted only once its record has
// been fsynced to a bbolt file in the agent's state directory; from then on
// it survives crashes and restarts and is retried autonomously by
// [Queue.Run] until it succeeds, fails for good, runs out of retry budget or
// is cancelled. Delivery is at least once: a job that was in flight when the
// process died is queued again on the next [Open] and keeps its RequestID,
// so a responder sees the same X-Request-ID on every attempt.
//
// The queue knows nothing of FHIR, tokens or HTTP. Request and result bodies
// are opaque bytes that may contain protected health information (PHI), and
// the package is built around three rules:
//
//   - It never logs, prints or formats a body, nor puts one in an error.
//   - It never stores a body in clear: bodies are sealed with AES-256-GCM
//     under a key derived from [Options.DataKey], bound to their job id.
//     Only scheduling metadata (ids, state, times, responder, attempts,
//     labels, idempotency key, error text) is stored in clear, which is why
//     labels, idempotency keys and error messages must never carry PHI.
//   - It never scans the backlog on a hot path: Submit does a few keyed
//     writes, and picking the next due job is an index seek, so their cost
//     does not grow with the number of queued jobs. Only Open (which checks
//     every record's checksum and rebuilds counters), List and Compact walk
//     the file.
//
// Corrupt records are moved to a quarantine bucket and reported through the
// logger and [Queue.Stats]; they never crash the process.
//
// The package must not import other packages of pdmp-agent: callers adapt
// their own types to [Request], [Handler] and [Outcome].
package queue
