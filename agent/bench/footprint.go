package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
)

// Idle is a child agent's footprint while it has nothing to do.
type Idle struct {
	WindowS  float64 `json:"window_s"`
	RSSStart RSS     `json:"rss_start"`
	RSSEnd   RSS     `json:"rss_end"`
	PeakMB   float64 `json:"rss_peak_mib"` // since the process started
	// CPUSeconds is user + system time over the window, in the 10 ms
	// ticks /proc counts in.
	CPUSeconds float64 `json:"cpu_s"`
	CPUPercent float64 `json:"cpu_percent"` // of one core
}

// runIdle starts a child agent, lets it answer one query (so it holds a
// token, its key and connections, as an agent in service does) and then
// samples /proc over the idle window.
func runIdle(ctx context.Context, h *harness, p plan) (*Idle, error) {
	sb, err := h.sandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	d, err := h.newAgentDir(0, responder{name: "state", fhirBase: sb.FHIRBase})
	if err != nil {
		return nil, err
	}
	ch, err := startChild(ctx, p.command, d)
	if err != nil {
		return nil, err
	}
	defer ch.stop()
	c, err := d.client("unix")
	if err != nil {
		return nil, err
	}
	err = agentSender(c)(ctx, 0)
	c.Close()
	if err != nil {
		return nil, fmt.Errorf("warm-up query: %w", err)
	}
	s0, err := readProc(ch.pid())
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := sleep(ctx, p.idle); err != nil {
		return nil, err
	}
	s1, err := readProc(ch.pid())
	if err != nil {
		return nil, err
	}
	window := time.Since(t0)
	cpu := (s1.cpu - s0.cpu).Seconds()
	return &Idle{WindowS: window.Seconds(), RSSStart: s0.rss, RSSEnd: s1.rss, PeakMB: s1.peakMB,
		CPUSeconds: cpu, CPUPercent: 100 * cpu / window.Seconds()}, nil
}

// Backlog is how a child agent fills, restarts with and drains a large
// queue.
type Backlog struct {
	Jobs int `json:"jobs"` // accepted while the responder was down
	// Enqueue rates (asynchronous submissions from backlogSubmitters):
	// over the whole fill, over its first tenth (an empty queue) and its
	// last tenth (a queue nine tenths full).
	FillS          float64 `json:"fill_s"`
	FillPerSec     float64 `json:"fill_per_s"`
	EmptyPerSec    float64 `json:"enqueue_empty_per_s"`
	BacklogPerSec  float64 `json:"enqueue_backlog_per_s"`
	QueueFileMB    float64 `json:"queue_file_mib"`
	ReadyEmptyMS   float64 `json:"ready_empty_ms"`   // first start, empty state
	ReadyBacklogMS float64 `json:"ready_backlog_ms"` // restart with the backlog
	RSSEmpty       RSS     `json:"rss_ready_empty"`
	RSSBacklog     RSS     `json:"rss_ready_backlog"`
	PeakMB         float64 `json:"rss_peak_draining_mib"` // since the restart
	// Drain is observed at the responder for DrainWindowS from its first
	// request after the restart.
	DrainWindowS float64 `json:"drain_window_s"`
	Drained      int     `json:"drained"`
	DrainPerSec  float64 `json:"drain_per_s"`
	// RateLimit and Burst are the responder's configured limits, which
	// allow RateLimit + Burst requests a second. PerSecond counts what the
	// responder saw in each consecutive 1 s window from its first request;
	// MaxSliding1s is the most in any 1 s. The agent throttles attempts
	// as they start, and takes its tokens before draining a backlog so
	// that no attempt waits for one after taking its slot.
	RateLimit     float64 `json:"rate_limit"`
	Burst         int     `json:"burst"`
	PerSecond     []int   `json:"per_second"`
	MaxSliding1s  int     `json:"max_sliding_1s"`
	RateRespected bool    `json:"rate_respected"` // every PerSecond ≤ RateLimit + Burst
}

// Backlog responder limits: a rate a state PDMP might ask for, and as
// many connections as it takes to reach it.
const (
	backlogRate        = 200
	backlogBurst       = 10
	backlogConcurrency = 16
	backlogSubmitters  = 64
)

// runBacklog fills a child agent's queue while the responder is down
// (nothing listens on its address), stops the agent, brings the responder
// up on that address, and starts the agent again: time to ready and RSS
// with the backlog, then the drain under the responder's rate limit.
//
// The responder comes back before the restart rather than after: an agent
// that meets a dead responder opens its circuit breaker, and would only
// start draining after the breaker's 30 s cooldown, which measures the
// breaker rather than the drain.
func runBacklog(ctx context.Context, h *harness, p plan) (*Backlog, error) {
	sb, err := h.sandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	fhirAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	d, err := h.newAgentDir(0, responder{name: "state", fhirBase: "http://" + fhirAddr + "/fhir", tokenEndpoint: sb.TokenURL,
		limits: config.Limits{Concurrency: backlogConcurrency, Rate: backlogRate, Burst: backlogBurst}})
	if err != nil {
		return nil, err
	}
	b := &Backlog{RateLimit: backlogRate, Burst: backlogBurst}

	first, err := startChild(ctx, p.command, d)
	if err != nil {
		return nil, err
	}
	defer first.stop()
	b.ReadyEmptyMS = ms(first.ready)
	s, err := readProc(first.pid())
	if err != nil {
		return nil, err
	}
	b.RSSEmpty = s.rss
	if err := fill(ctx, d, p.backlog, b); err != nil {
		return nil, err
	}
	first.stop()
	if fi, err := os.Stat(filepath.Join(d.state, "queue.db")); err == nil {
		b.QueueFileMB = float64(fi.Size()) / (1 << 20)
	}

	// The responder is back, on the address the agent is configured with.
	l, err := net.Listen("tcp", fhirAddr)
	if err != nil {
		return nil, fmt.Errorf("bringing the responder back on %s: %w", fhirAddr, err)
	}
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	defer srv.Close()

	second, err := startChild(ctx, p.command, d)
	if err != nil {
		return nil, err
	}
	defer second.stop()
	b.ReadyBacklogMS = ms(second.ready)
	if s, err = readProc(second.pid()); err != nil {
		return nil, err
	}
	b.RSSBacklog = s.rss
	if err := drain(ctx, sb, p.drain, b); err != nil {
		return nil, err
	}
	if s, err = readProc(second.pid()); err != nil {
		return nil, err
	}
	b.PeakMB = s.peakMB
	return b, nil
}

// fill submits n queries asynchronously from backlogSubmitters callers and
// records the enqueue rates.
func fill(ctx context.Context, d *agentDir, n int, b *Backlog) error {
	c, err := d.client("unix")
	if err != nil {
		return err
	}
	defer c.Close()
	submit := asyncSender(c)
	var (
		next, accepted atomic.Int64
		doneAt         = make([]time.Time, n) // when the k'th acceptance came
		errOnce        sync.Once
		firstErr       error
		wg             sync.WaitGroup
	)
	start := time.Now()
	for range backlogSubmitters {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := submit(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				doneAt[accepted.Add(1)-1] = time.Now()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("filling the queue: %w", firstErr)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Completion times are recorded slightly out of order under
	// concurrency; the rates only need them to the millisecond.
	tenth := max(n/10, 1)
	end := latest(doneAt)
	b.Jobs = n
	b.FillS = end.Sub(start).Seconds()
	b.FillPerSec = float64(n) / b.FillS
	b.EmptyPerSec = float64(tenth) / latest(doneAt[:tenth]).Sub(start).Seconds()
	b.BacklogPerSec = float64(tenth) / end.Sub(latest(doneAt[:n-tenth])).Seconds()
	return nil
}

func latest(ts []time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// drain waits for the responder's first request after the restart,
// watches it for window, and records the drain rate and the most requests
// in any 1 s window.
func drain(ctx context.Context, sb *pdmptest.Server, window time.Duration, b *Backlog) error {
	for waited := time.Duration(0); sb.RequestCount() == 0; waited += 10 * time.Millisecond {
		if waited > 30*time.Second {
			return errors.New("the restarted agent sent the responder nothing within 30 s")
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	t0 := sb.Requests()[0].Time
	if err := sleep(ctx, time.Until(t0.Add(window))); err != nil {
		return err
	}
	var arrivals []time.Time
	for _, r := range sb.Requests() {
		if r.Time.Before(t0.Add(window)) {
			arrivals = append(arrivals, r.Time)
			if r.Status == http.StatusOK {
				b.Drained++
			}
		}
	}
	if b.Drained == 0 {
		return errors.New("the responder answered none of the restarted agent's requests with 200")
	}
	b.DrainWindowS = window.Seconds()
	b.DrainPerSec = float64(b.Drained) / window.Seconds()
	// Arrival times are taken before the sandbox's log lock: sort them.
	slices.SortFunc(arrivals, time.Time.Compare)
	b.PerSecond = perWindow(arrivals, t0, time.Second)
	b.MaxSliding1s = maxSliding(arrivals, time.Second)
	b.RateRespected = slices.Max(b.PerSecond) <= backlogRate+backlogBurst
	return nil
}

// perWindow counts the sorted times ts, none before t0, in consecutive
// windows of length w from t0.
func perWindow(ts []time.Time, t0 time.Time, w time.Duration) []int {
	var counts []int
	for _, t := range ts {
		k := int(t.Sub(t0) / w)
		for len(counts) <= k {
			counts = append(counts, 0)
		}
		counts[k]++
	}
	return counts
}

// maxSliding is the most of the sorted times within any window of length
// w.
func maxSliding(ts []time.Time, w time.Duration) int {
	best, lo := 0, 0
	for hi, t := range ts {
		for t.Sub(ts[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
