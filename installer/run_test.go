package installer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// listenNotify stands in for systemd's notification socket.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

func readNotify(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 256)
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// serve is a well-behaved program: ready at once, stops when asked.
func serve(started chan<- Service) Program {
	return ProgramFunc(func(ctx context.Context, s Service) error {
		s.Ready()
		started <- s
		<-ctx.Done()
		return ctx.Err()
	})
}

func TestRunNotifiesSystemd(t *testing.T) {
	notify := listenNotify(t)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan Service, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Options{ConfigPath: "/etc/x/config.yaml"}, serve(started)) }()

	s := <-started
	if s.ConfigPath != "/etc/x/config.yaml" || s.Log == nil {
		t.Errorf("program got %+v", s)
	}
	if got := readNotify(t, notify); got != "READY=1" {
		t.Errorf("first notification %q, want READY=1", got)
	}
	cancel()
	if got := readNotify(t, notify); got != "STOPPING=1" {
		t.Errorf("notification on stop %q, want STOPPING=1", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Run after a requested stop: %v", err)
	}
}

func TestRunFailures(t *testing.T) {
	boom := errors.New("boom")
	for name, c := range map[string]struct {
		run  func(ctx context.Context) error
		stop bool
		want error
	}{
		"fails":              {run: func(context.Context) error { return boom }, want: boom},
		"returns by itself":  {run: func(context.Context) error { return nil }, want: errStoppedItself},
		"fails when stopped": {run: func(ctx context.Context) error { <-ctx.Done(); return boom }, stop: true, want: boom},
		"stops cleanly":      {run: func(ctx context.Context) error { <-ctx.Done(); return nil }, stop: true},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.stop {
				cancel()
			}
			p := ProgramFunc(func(ctx context.Context, _ Service) error { return c.run(ctx) })
			if err := runForeground(ctx, Options{}.withDefaults(), p, discard); !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
				t.Errorf("Run = %v, want %v", err, c.want)
			}
		})
	}
}

func TestSDNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Errorf("sdNotify without $NOTIFY_SOCKET: %v", err)
	}
}
