package ipc

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"time"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"
)

// ListenPipe listens on the named pipe name (default DefaultPipeName) with
// the security descriptor sddl (default PipeSDDL for DefaultPipeGroup).
// name must pass CheckPipeName. If an agent already answers on the pipe it
// fails with ErrAlreadyRunning; any other existing pipe of that name makes
// go-winio's FILE_CREATE fail, so the agent never shares a pipe with a
// squatter. Remote clients are rejected by go-winio
// (FILE_PIPE_REJECT_REMOTE_CLIENTS, always set) and by the SDDL.
func ListenPipe(name, sddl string) (*Listener, error) {
	if name == "" {
		name = DefaultPipeName
	}
	if err := CheckPipeName(name); err != nil {
		return nil, err
	}
	if sddl == "" {
		var err error
		if sddl, err = PipeSDDL(winSIDs{}, DefaultPipeGroup); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if c, err := winio.DialPipeContext(ctx, name); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w at %s", ErrAlreadyRunning, name)
	}
	l, err := winio.ListenPipe(name, &winio.PipeConfig{
		SecurityDescriptor: sddl,
		InputBufferSize:    64 << 10,
		OutputBufferSize:   64 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("ipc: pipe %s: %w", name, err)
	}
	return &Listener{Listener: l, transport: TransportPipe, peer: pipePeer}, nil
}

var procImpersonateNamedPipeClient = windows.NewLazySystemDLL("advapi32.dll").NewProc("ImpersonateNamedPipeClient")

// pipePeer identifies a pipe client by its token, in the manner of
// tailscale's safesocket: impersonate the client on a locked OS thread,
// open the thread's token, revert. The token is what the client presented
// when it opened the pipe, so it is authoritative; the alternative, the
// client's PID (GetNamedPipeClientProcessId) and then its process token,
// races with the PID being reused and needs the right to open the
// process. The PID is still recorded, for audit. A client that connected
// with SECURITY_ANONYMOUS yields no token and is refused.
func pipePeer(c net.Conn) (Caller, error) {
	fc, ok := c.(interface{ Fd() uintptr })
	if !ok {
		return Caller{}, fmt.Errorf("ipc: unexpected pipe connection type %T", c)
	}
	h := windows.Handle(fc.Fd())
	tok, err := clientToken(h)
	if err != nil {
		return Caller{}, err
	}
	defer tok.Close()
	user, err := tok.GetTokenUser()
	if err != nil {
		return Caller{}, fmt.Errorf("ipc: pipe client token user: %w", err)
	}
	groups, err := tok.GetTokenGroups()
	if err != nil {
		return Caller{}, fmt.Errorf("ipc: pipe client token groups: %w", err)
	}
	sids := []string{user.User.Sid.String()}
	for _, g := range groups.AllGroups() {
		// A deny-only group, such as Administrators in a UAC-filtered
		// token, must not grant what membership would.
		if g.Attributes&windows.SE_GROUP_ENABLED != 0 && g.Attributes&windows.SE_GROUP_USE_FOR_DENY_ONLY == 0 {
			sids = append(sids, g.Sid.String())
		}
	}
	var pid uint32
	_ = windows.GetNamedPipeClientProcessId(h, &pid) // 0, unknown, on failure
	return Caller{Transport: TransportPipe, UID: -1, SIDs: sids, PID: int(pid)}, nil
}

func clientToken(h windows.Handle) (windows.Token, error) {
	// Impersonation is per thread: keep this goroutine on one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if r, _, err := procImpersonateNamedPipeClient.Call(uintptr(h)); r == 0 {
		return 0, fmt.Errorf("ipc: ImpersonateNamedPipeClient: %w", err)
	}
	var tok windows.Token
	err := windows.OpenThreadToken(windows.CurrentThread(), windows.TOKEN_QUERY, true, &tok)
	if rerr := windows.RevertToSelf(); rerr != nil {
		// Carrying on as the client would run the agent with its rights.
		panic(fmt.Sprintf("ipc: RevertToSelf failed: %v", rerr))
	}
	if err != nil {
		return 0, fmt.Errorf("ipc: pipe client token: %w", err)
	}
	return tok, nil
}
