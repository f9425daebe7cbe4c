package ipc_test

import (
	"testing"

	"github.com/pdmp-agent/pdmp-agent/ipc"
)

func TestListenTCPRefusesNonLoopback(t *testing.T) {
	cred, err := ipc.NewCredential(t.TempDir()+"/api.credential", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{":0", "0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0", "pdmp-agent:0", "127.0.0.1"} {
		if l, err := ipc.ListenTCP(t.Context(), addr, cred); err == nil {
			l.Close()
			t.Errorf("ListenTCP(%q) succeeded", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		l, err := ipc.ListenTCP(t.Context(), addr, cred)
		if err != nil {
			t.Errorf("ListenTCP(%q): %v", addr, err)
			continue
		}
		if l.Transport() != ipc.TransportTCP {
			t.Errorf("transport %s", l.Transport())
		}
		l.Close()
	}
	if _, err := ipc.ListenTCP(t.Context(), "127.0.0.1:0", nil); err == nil {
		t.Error("ListenTCP without a credential succeeded")
	}
}
