package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent"
)

// TestMain lets the test binary stand in for pdmp-agent as the child
// agent: the bench runs it as "run --config FILE".
func TestMain(m *testing.M) {
	if len(os.Args) == 4 && os.Args[1] == "run" && os.Args[2] == "--config" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := agent.Run(ctx, agent.RunOptions{ConfigPath: os.Args[3]})
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func newTestHarness(t *testing.T) *harness {
	t.Helper()
	h, err := newHarness(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)
	return h
}

func TestFaultMatrix(t *testing.T) {
	rows, err := runFaultMatrix(t.Context(), newTestHarness(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(faultCases) {
		t.Fatalf("%d rows, want %d", len(rows), len(faultCases))
	}
	for _, r := range rows {
		if !r.Pass {
			t.Errorf("%s: %s", r.Fault, r.Why)
		}
	}
}

func TestTokenEconomy(t *testing.T) {
	te, err := runTokenEconomy(t.Context(), newTestHarness(t))
	if err != nil {
		t.Fatal(err)
	}
	if !te.Pass {
		t.Fatalf("%d/%d answered (first error: %q); token requests %v, want 1 per registration",
			te.Answered, te.Queries, te.FirstError, te.TokenRequests)
	}
}

// TestChildSections runs the sections that start the agent as a child
// process, scaled down.
func TestChildSections(t *testing.T) {
	if testing.Short() {
		t.Skip("starts agent processes and fills a queue")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := newTestHarness(t)
	p := plan{idle: time.Second, backlog: 2000, drain: 2 * time.Second, command: []string{exe, "run"}}
	idle, err := runIdle(t.Context(), h, p)
	if err != nil {
		t.Fatal(err)
	}
	if idle.RSSEnd.TotalMB <= 0 || idle.CPUSeconds < 0 {
		t.Errorf("idle footprint %+v", idle)
	}
	b, err := runBacklog(t.Context(), h, p)
	if err != nil {
		t.Fatal(err)
	}
	if b.Jobs != p.backlog || b.Drained == 0 || b.ReadyBacklogMS <= 0 || b.RSSBacklog.TotalMB <= 0 {
		t.Errorf("backlog %+v", b)
	}
	// Every second, the first included: the agent takes its tokens before
	// the drain starts, so attempts are not bunched behind a token fetch.
	if len(b.PerSecond) < 2 || slices.Max(b.PerSecond) > backlogRate+backlogBurst {
		t.Errorf("responder saw %v requests per second, limit %d", b.PerSecond, backlogRate+backlogBurst)
	}
}

func TestWindows(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var ts []time.Time
	for _, ms := range []int{0, 800, 900, 1000, 1100, 1200, 2500} {
		ts = append(ts, t0.Add(time.Duration(ms)*time.Millisecond))
	}
	if got := perWindow(ts, t0, time.Second); !slices.Equal(got, []int{3, 3, 1}) {
		t.Errorf("perWindow = %v, want [3 3 1]", got)
	}
	if got := maxSliding(ts, time.Second); got != 5 { // 800 ms to 1200 ms
		t.Errorf("maxSliding = %d, want 5", got)
	}
}

func TestMainUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := Main(t.Context(), []string{"--nope"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if code := Main(t.Context(), []string{"extra"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}
