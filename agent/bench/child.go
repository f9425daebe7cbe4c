package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"
)

// child is an agent running as a process of its own, for the sections
// that read its RSS and CPU time or restart it.
type child struct {
	cmd    *exec.Cmd
	out    *tail
	exited chan struct{} // closed once Wait returned
	err    error         // Wait's, once exited is closed
	// ready is the time from starting the process to the first answer of
	// its local API's /healthz.
	ready time.Duration
}

// readyTimeout bounds a child's start, which includes opening (and
// checking) a queue of 100,000 jobs.
const readyTimeout = 2 * time.Minute

// startChild runs command with "--config" d.config and waits until the
// agent's local API answers /healthz on its Unix socket. The child is
// killed if ctx ends, and when this process dies.
func startChild(ctx context.Context, command []string, d *agentDir) (*child, error) {
	cmd := exec.CommandContext(ctx, command[0], append(slices.Clone(command[1:]), "--config", d.config)...)
	c := &child{cmd: cmd, out: &tail{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = childAttr()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	if err := c.waitReady(ctx, d.unix); err != nil {
		c.stop()
		return nil, err
	}
	c.ready = time.Since(start)
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) waitReady(ctx context.Context, sock string) error {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Second}
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	// Often enough that the time to ready is right to a few milliseconds.
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://localhost/healthz", nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.exited:
			return fmt.Errorf("agent %q exited before it was ready: %v; its output ends:\n%s", c.cmd.Path, c.err, c.out)
		case <-deadline.C:
			return fmt.Errorf("agent not ready within %v", readyTimeout)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// stop asks the agent to stop (SIGTERM, as a service manager would) and
// kills it if it has not within 15 s.
func (c *child) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// tail keeps the last few KiB written to it: a child's log, for the error
// when it does not start.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

const tailSize = 4 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = slices.Delete(t.buf, 0, over)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
