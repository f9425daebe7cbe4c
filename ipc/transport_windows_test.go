package ipc_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"testing"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"

	"github.com/pdmp-agent/pdmp-agent/ipc"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
)

type noLookup struct{}

func (noLookup) LookupSID(string) (string, error) { return "", errors.New("SID literals only") }

// pipeTransport is the named pipe, under a random protected name. Creating
// it needs an elevated administrator; the tests skip it otherwise.
func pipeTransport(t *testing.T) (transport, bool) {
	u, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		t.Fatal(err)
	}
	me := u.User.Sid.String()
	return transport{
		name: "pipe",
		listen: func(t *testing.T) (*ipc.Listener, client.Config, func(context.Context) (net.Conn, error)) {
			name := `\\.\pipe\ProtectedPrefix\Administrators\pdmp-agent-test\` + rand.Text()
			sddl, err := ipc.PipeSDDL(noLookup{}, me)
			if err != nil {
				t.Fatal(err)
			}
			l, err := ipc.ListenPipe(name, sddl)
			if err != nil {
				t.Skipf("cannot create a protected pipe (not elevated?): %v", err)
			}
			dial := func(ctx context.Context) (net.Conn, error) {
				return winio.DialPipeAccessImpLevel(ctx, name, windows.GENERIC_READ|windows.FILE_WRITE_DATA, winio.PipeImpLevelIdentification)
			}
			return l, client.Config{Network: "pipe", Address: name}, dial
		},
		admit: func(r *ipc.Rule) { r.SIDs = []string{me} },
		deny:  func(r *ipc.Rule) { r.SIDs = []string{"S-1-5-21-1-2-3-4242"} },
	}, true
}
