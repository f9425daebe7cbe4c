// Package cli implements pdmp-agent's subcommands. cmd/pdmp-agent only
// calls Main; everything a command does is built here from the agent's
// packages.
//
// Commands must never print a private key, a token or an assertion; PHI is
// printed only where a command's purpose is to show it to the operator.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/pdmp-agent/pdmp-agent/agent/bench"
	"github.com/pdmp-agent/pdmp-agent/agent/config"
)

// Version is set at build time with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// env is what every command gets.
type env struct {
	stdout, stderr io.Writer
	hooks          Hooks
}

// Hooks are what main supplies from packages the CLI must not import
// (the installer sits beside the agent, not under it).
type Hooks struct {
	// ServiceCommands are the installer's commands, for the usage text.
	ServiceCommands map[string]string
	// ServiceState reports the OS service's state.
	ServiceState func() (string, error)
}

type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"version": {"print the version", runVersion},
		"config":  {"config validate FILE: check a configuration file", runConfig},
		"keys":    {"keys create|list|rotate|prune|delete: manage signing keys", runKeys},
		"jwks":    {"print the public JWK Set to register with a responder", runJWKS},
		"demo":    {"run the agent against a built-in sandbox PDMP and send a query", runDemo},
		"status":  {"status [-config FILE]: service state and the running agent's status", runStatus},
		"query":   {"query -responder NAME (-file PARAMS.json | -family F -given G -birthdate D -npi N): send a query", runQuery},
		"queue":   {"queue list|show|retry|cancel|purge: inspect the durable queue (agent stopped)", runQueue},
		"audit":   {"audit verify|search|export: check and search the audit trail", runAudit},
		"doctor":  {"check configuration, keys, tokens, responders and listeners", runDoctor},
		"bench":   {"bench [-quick] [-json]: overhead, durability, token economy, footprint, backlog and fault matrix on loopback", runBench},
	}
}

// errUsage means the command line was wrong; the usage was printed.
var errUsage = errors.New("usage")

// exitCode ends a command with a given exit status, its message already
// printed.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

// Main runs the command line args (without the program name) and returns
// the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, hooks Hooks) int {
	e := &env{stdout: stdout, stderr: stderr, hooks: hooks}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr, hooks)
		return 2
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pdmp-agent: unknown command %q\n\n", args[0])
		usage(stderr, hooks)
		return 2
	}
	if err := cmd.run(ctx, e, args[1:]); err != nil {
		if errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
			return 2
		}
		var code exitCode
		if errors.As(err, &code) {
			return int(code)
		}
		fmt.Fprintf(stderr, "pdmp-agent %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer, hooks Hooks) {
	fmt.Fprintln(w, "usage: pdmp-agent <command> [flags]\n\ncommands:")
	all := map[string]string{}
	for n, c := range commands {
		all[n] = c.summary
	}
	for n, s := range hooks.ServiceCommands {
		if _, ok := all[n]; !ok {
			all[n] = s
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, all[n])
	}
}

func newFlags(e *env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: pdmp-agent %s\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

func runBench(ctx context.Context, e *env, args []string) error {
	if code := bench.Main(ctx, args, e.stdout, e.stderr); code != 0 {
		return exitCode(code)
	}
	return nil
}

func runVersion(_ context.Context, e *env, _ []string) error {
	v := Version
	if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	fmt.Fprintf(e.stdout, "pdmp-agent %s\n", v)
	return nil
}

// DefaultConfigPath is where install puts the configuration.
func DefaultConfigPath() string {
	if p := os.Getenv("PDMP_AGENT_CONFIG"); p != "" {
		return p
	}
	if os.PathSeparator == '\\' {
		return `C:\ProgramData\pdmp-agent\config.yaml`
	}
	return "/etc/pdmp-agent/config.yaml"
}

func runConfig(_ context.Context, e *env, args []string) error {
	if len(args) < 1 || args[0] != "validate" {
		fmt.Fprintln(e.stderr, "usage: pdmp-agent config validate [FILE]")
		return errUsage
	}
	path := DefaultConfigPath()
	if len(args) > 1 {
		path = args[1]
	}
	c, err := config.Load(path)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, x := range errs {
				fmt.Fprintln(e.stderr, x)
			}
			return fmt.Errorf("%s: %d problem(s)", path, len(errs))
		}
		return err
	}
	fmt.Fprintf(e.stdout, "%s: valid (%d responders, %d registrations)\n", path, len(c.Responders), len(c.Registrations))
	return nil
}

// plural formats n with a noun.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, strings.TrimSuffix(noun, "s"))
}
