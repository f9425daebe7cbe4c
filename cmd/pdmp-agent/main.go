// Command pdmp-agent is the PDMP requester agent. Run "pdmp-agent" for the
// list of commands; "pdmp-agent demo" shows it working with no setup.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/pdmp-agent/pdmp-agent/agent/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
