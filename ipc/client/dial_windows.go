package client

import (
	"context"
	"net"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"
)

// dialPipe opens the agent's pipe. It asks for GENERIC_READ|FILE_WRITE_DATA
// because the agent's DACL withholds the rest of GENERIC_WRITE
// (FILE_CREATE_PIPE_INSTANCE), and connects at the identification level so
// that the agent can read, but not use, this process's token.
func dialPipe(ctx context.Context, name string) (net.Conn, error) {
	return winio.DialPipeAccessImpLevel(ctx, name, windows.GENERIC_READ|windows.FILE_WRITE_DATA, winio.PipeImpLevelIdentification)
}
