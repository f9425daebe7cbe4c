// Package bench measures pdmp-agent on this machine against the pdmptest
// sandbox, over loopback only, and checks the behaviours the design
// promises: it is what "pdmp-agent bench" runs.
//
// Sections, in the order they run:
//
//   - Overhead: one query mix (the sandbox's history, no-data and alerts
//     scenarios) sent straight to the sandbox responder with a token in
//     hand, then through the agent's local API over loopback TCP and over
//     the Unix socket, at 1 and 16 concurrent callers: p50, p99,
//     throughput, and what the agent adds to p50 and p99.
//   - Durable acceptance: asynchronous submissions per second, each fsynced
//     before the agent answers 202, at 1, 16 and 64 submitters, with the
//     responder down so that only acceptance is measured.
//   - Token economy: 1,000 concurrent queries on a cold token cache over
//     two registrations; the sandbox must see exactly one token request
//     per registration.
//   - Fault matrix: one row per fault a responder or token endpoint can
//     show, each checked against the designed behaviour (see faults.go).
//   - Idle footprint: a child agent's RSS and CPU time over an idle minute.
//   - Backlog: a child agent fills its queue with the responder down, is
//     restarted with the responder back, and drains under a rate limit:
//     enqueue rates, time to ready, RSS, drain rate, and whether the
//     responder saw more than the limit allows.
//
// The in-process sections run agent.Run in this process; the footprint
// and backlog sections need a process of their own, so they start the
// agent as a child (Options.AgentCommand) and read /proc: the bench runs
// on Linux only.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"
)

// Options select how long and how the bench runs.
type Options struct {
	// Quick bounds the whole run to under a minute: shorter cells, a 10 s
	// idle window and a 10,000-job backlog instead of 60 s and 100,000.
	Quick bool
	// JSON prints the Report as JSON instead of a table.
	JSON bool
	// Duration is the length of each overhead and acceptance cell; 0
	// means 4 s (1.5 s with Quick).
	Duration time.Duration
	// AgentCommand runs the agent in the foreground for the sections that
	// need it in a process of its own; "--config FILE" is appended. The
	// default is this executable with "run", which pdmp-agent provides.
	AgentCommand []string
	// Progress, if set, receives a line as each section starts.
	Progress io.Writer
}

// plan is what Options mean in sizes and durations; tests build smaller
// ones.
type plan struct {
	cell    time.Duration // each overhead and acceptance cell
	idle    time.Duration // idle footprint window
	backlog int           // jobs queued before the restart
	drain   time.Duration // drain observation window
	command []string      // agent command, without --config FILE
}

func planFor(o Options) (plan, error) {
	p := plan{cell: 4 * time.Second, idle: time.Minute, backlog: 100_000, drain: 10 * time.Second, command: o.AgentCommand}
	if o.Quick {
		p = plan{cell: 1500 * time.Millisecond, idle: 10 * time.Second, backlog: 10_000, drain: 5 * time.Second, command: o.AgentCommand}
	}
	if o.Duration > 0 {
		p.cell = o.Duration
	}
	if len(p.command) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return plan{}, fmt.Errorf("finding this executable to run the agent: %w", err)
		}
		p.command = []string{exe, "run"}
	}
	return p, nil
}

// Report is everything the bench measured. Times are in milliseconds or
// seconds as the field names say, sizes in MiB.
type Report struct {
	Machine    Machine       `json:"machine"`
	Quick      bool          `json:"quick"`
	ElapsedS   float64       `json:"elapsed_s"`
	Overhead   []OverheadRow `json:"overhead"`
	Acceptance []Cell        `json:"acceptance"`
	Tokens     *TokenEconomy `json:"token_economy,omitempty"`
	Faults     []FaultRow    `json:"fault_matrix"`
	Idle       *Idle         `json:"idle_footprint,omitempty"`
	Backlog    *Backlog      `json:"backlog,omitempty"`
	// Errors names the sections that could not run, and why.
	Errors []string `json:"errors,omitempty"`
}

// OK reports whether every section ran, every fault-matrix row passed and
// the token economy was one token request per registration.
func (r *Report) OK() bool {
	if len(r.Errors) > 0 || r.Tokens == nil || !r.Tokens.Pass || len(r.Faults) == 0 {
		return false
	}
	for _, f := range r.Faults {
		if !f.Pass {
			return false
		}
	}
	return true
}

// Run runs every section and writes the table (or JSON) to w. A section
// that cannot run is noted in Report.Errors and the others still run; the
// error is for what stops the whole bench: no Linux, no temporary
// directory, ctx ending.
func Run(ctx context.Context, o Options, w io.Writer) (Report, error) {
	start := time.Now()
	rep := Report{Quick: o.Quick}
	if runtime.GOOS != "linux" {
		return rep, errors.New("the bench reads /proc and runs on Linux only")
	}
	p, err := planFor(o)
	if err != nil {
		return rep, err
	}
	rep.Machine = describeMachine()
	h, err := newHarness(ctx)
	if err != nil {
		return rep, err
	}
	defer h.close()

	progress := func(format string, args ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "bench: "+format+"\n", args...)
		}
	}
	section := func(name string, f func() error) {
		if ctx.Err() != nil {
			return
		}
		progress("%s", name)
		if err := f(); err != nil && ctx.Err() == nil {
			progress("%s could not run: %v", name, err)
			rep.Errors = append(rep.Errors, name+": "+err.Error())
		}
	}
	section("overhead", func() (err error) { rep.Overhead, err = runOverhead(ctx, h, p); return })
	section("durable acceptance", func() (err error) { rep.Acceptance, err = runAcceptance(ctx, h, p); return })
	section("token economy", func() (err error) { rep.Tokens, err = runTokenEconomy(ctx, h); return })
	section("fault matrix", func() (err error) { rep.Faults, err = runFaultMatrix(ctx, h); return })
	section("idle footprint", func() (err error) { rep.Idle, err = runIdle(ctx, h, p); return })
	section("backlog", func() (err error) { rep.Backlog, err = runBacklog(ctx, h, p); return })
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	rep.ElapsedS = time.Since(start).Seconds()
	if o.JSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return rep, enc.Encode(rep)
	}
	return rep, writeTable(w, &rep)
}

// Main is "pdmp-agent bench": args are the command's flags (without
// "bench"). It prints the report to stdout, progress to stderr, and
// returns the exit code: 0, 1 if a section could not run, a fault-matrix
// row failed or the token economy was not one request per registration,
// 2 for a usage error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: pdmp-agent bench [--quick] [--json] [--duration D]")
		fs.PrintDefaults()
	}
	var o Options
	fs.BoolVar(&o.Quick, "quick", false, "run in under a minute (shorter cells, smaller backlog)")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	fs.DurationVar(&o.Duration, "duration", 0, "length of each overhead and acceptance cell (default 4s, 1.5s with --quick)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	o.Progress = stderr
	rep, err := Run(ctx, o, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "pdmp-agent bench: %v\n", err)
		return 1
	}
	if !rep.OK() {
		return 1
	}
	return 0
}
