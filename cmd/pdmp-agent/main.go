// Command pdmp-agent is the PDMP requester agent. Run "pdmp-agent" for the
// list of commands; "pdmp-agent demo" shows it working with no setup.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/pdmp-agent/pdmp-agent/agent"
	"github.com/pdmp-agent/pdmp-agent/agent/cli"
	"github.com/pdmp-agent/pdmp-agent/installer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	args := os.Args[1:]
	var code int
	if len(args) > 0 && args[0] != "status" && installer.Commands()[args[0]] != "" {
		code = installer.Command(ctx, args, installer.Options{DefaultConfig: agent.DefaultConfig}, installer.ProgramFunc(run), os.Stdout, os.Stderr)
	} else {
		code = cli.Main(ctx, args, os.Stdout, os.Stderr, cli.Hooks{
			ServiceCommands: installer.Commands(),
			ServiceState:    func() (string, error) { return installer.Status(installer.Options{}) },
		})
	}
	stop()
	os.Exit(code)
}

// run is the service: the agent under the OS service manager's control.
func run(ctx context.Context, s installer.Service) error {
	return agent.Run(ctx, agent.RunOptions{ConfigPath: s.ConfigPath, Log: s.Log, Ready: s.Ready, Reload: s.Reload})
}
