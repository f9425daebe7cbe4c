package installer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// commands are the subcommands Command runs, with their usage.
var commands = map[string]string{
	"install":   "install [--config FILE] [--state-dir DIR] [--group NAME] [--allow-devices] [--no-start]: install and start the OS service",
	"uninstall": "uninstall [--purge]: remove the OS service (--purge: also its configuration, state and accounts)",
	"start":     "start: start the OS service",
	"stop":      "stop: stop the OS service",
	"restart":   "restart: restart the OS service",
	"status":    "status: print running, stopped or not installed (exit 0, 3 or 4)",
	"run":       "run [--config FILE]: run the agent in the foreground or under the service manager",
}

// Commands returns the subcommands Command runs, each with a one-line
// usage, for the caller's help text.
func Commands() map[string]string {
	m := make(map[string]string, len(commands))
	for k, v := range commands {
		m[k] = v
	}
	return m
}

// Exit codes of "status", as LSB init scripts and systemctl use them.
const (
	exitStopped      = 3
	exitNotInstalled = 4
)

// Command runs one service subcommand; args[0] is its name (see Commands).
// o supplies what flags do not: the caller's DefaultConfig, and its
// default configuration path. It returns the process exit code: 0, 1 on
// failure, 2 for a usage error.
func Command(ctx context.Context, args []string, o Options, p Program, stdout, stderr io.Writer) int {
	if len(args) == 0 || commands[args[0]] == "" {
		fmt.Fprintln(stderr, "usage: pdmp-agent install|uninstall|start|stop|restart|status|run [flags]")
		return 2
	}
	name := args[0]
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: pdmp-agent %s\n", commands[name])
		fs.PrintDefaults()
	}
	var purge bool
	switch name {
	case "install":
		fs.StringVar(&o.ConfigPath, "config", o.ConfigPath, "configuration `file` the service loads (default per OS)")
		fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "state `directory` (default per OS)")
		fs.StringVar(&o.Group, "group", o.Group, "Windows: the local `group` whose members may call the API (default pdmp-agent-users); Linux: the service's group (default pdmp-agent)")
		fs.BoolVar(&o.AllowDevices, "allow-devices", o.AllowDevices, "Linux: let the service open USB and hidraw devices (PKCS#11 tokens without pcscd)")
		fs.BoolVar(&o.NoStart, "no-start", o.NoStart, "register and enable the service but do not start it")
		fs.BoolVar(&o.FromPackage, "from-package", o.FromPackage, "run by a package's maintainer script: service manager failures are warnings")
	case "uninstall":
		fs.BoolVar(&purge, "purge", false, "also delete the configuration, the state and the accounts")
		fs.BoolVar(&o.FromPackage, "from-package", o.FromPackage, "run by a package's maintainer script: service manager failures are warnings")
	case "run":
		fs.StringVar(&o.ConfigPath, "config", o.ConfigPath, "configuration `file` (default per OS)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	o.Logf = func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }

	var err error
	switch name {
	case "install":
		err = Install(ctx, o)
	case "uninstall":
		err = Uninstall(ctx, o, purge)
	case "start", "stop", "restart":
		ctx, cancel := context.WithTimeout(ctx, stopTimeout)
		defer cancel()
		err = Control(ctx, o, name)
	case "status":
		var st string
		if st, err = Status(o); err == nil {
			fmt.Fprintln(stdout, st)
			switch st {
			case StateStopped:
				return exitStopped
			case StateNotInstalled:
				return exitNotInstalled
			}
		}
	case "run":
		err = Run(ctx, o, p)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pdmp-agent %s: %v\n", name, err)
		if errors.Is(err, errNoServiceManager) && name == "status" {
			return exitNotInstalled
		}
		return 1
	}
	return 0
}
