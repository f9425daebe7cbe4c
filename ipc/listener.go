package ipc

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// ErrAlreadyRunning is returned by ListenUnix and ListenPipe when another
// agent answers at the address.
var ErrAlreadyRunning = errors.New("ipc: another pdmp-agent is already listening")

// A Listener is a net.Listener of one of the three transports, with what
// the Server needs to identify the peers of the connections it accepts.
// Make one with ListenTCP, ListenUnix or ListenPipe, and hand it to
// Server.Serve.
type Listener struct {
	net.Listener
	transport Transport
	// peer identifies the peer of a connection; nil for TCP, where
	// callers prove themselves in each request.
	peer func(net.Conn) (Caller, error)
	cred *Credential // TCP only
}

// Transport reports which transport l listens on.
func (l *Listener) Transport() Transport { return l.transport }

// ListenTCP listens on a loopback address and admits requests that carry
// cred. It refuses any address that is not loopback (127.0.0.0/8, ::1):
// the API must never face the network. "localhost" is resolved, all its
// addresses must be loopback, and the listener binds the first, so that a
// hosts file mapping localhost elsewhere cannot widen it.
func ListenTCP(ctx context.Context, addr string, cred *Credential) (*Listener, error) {
	if cred == nil {
		return nil, errors.New("ipc: ListenTCP needs a credential")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("ipc: tcp address %q: %w", addr, err)
	}
	var ip net.IP
	switch {
	case host == "localhost":
		ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("ipc: resolving localhost: %w", err)
		}
		for _, a := range ips {
			if !a.IsLoopback() {
				return nil, fmt.Errorf("ipc: localhost resolves to %v, which is not loopback", a)
			}
		}
		ip = ips[0]
	default:
		// Other names are refused rather than resolved: what a name
		// resolves to can change after the check.
		ip = net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("ipc: tcp address %q is not a loopback address", addr)
		}
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", net.JoinHostPort(ip.String(), port))
	if err != nil {
		return nil, fmt.Errorf("ipc: %w", err)
	}
	return &Listener{Listener: l, transport: TransportTCP, cred: cred}, nil
}
