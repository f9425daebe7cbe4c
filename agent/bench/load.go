package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Cell is one load measurement: callers calling in a loop for a while.
type Cell struct {
	Path     string  `json:"path"` // direct, agent-tcp or agent-unix
	Callers  int     `json:"callers"`
	Requests int     `json:"requests"` // answered as expected
	Errors   int     `json:"errors"`
	P50MS    float64 `json:"p50_ms"`
	P99MS    float64 `json:"p99_ms"`
	PerSec   float64 `json:"per_s"`
	// FirstError is why the first failed request failed.
	FirstError string `json:"first_error,omitempty"`
}

// load runs callers goroutines that call do in a loop, each call with the
// next sequence number, until d has passed, and summarises the calls that
// succeeded. Latency is per call, so p50 and p99 are what one caller
// waits; throughput counts every caller.
func load(ctx context.Context, path string, callers int, d time.Duration, do func(ctx context.Context, i int) error) Cell {
	var (
		seq      atomic.Int64
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range callers {
		wg.Go(func() {
			var mine []time.Duration
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(seq.Add(1) - 1)
				t0 := time.Now()
				err := do(ctx, i)
				if err == nil {
					mine = append(mine, time.Since(t0))
					continue
				}
				mu.Lock()
				if errs++; firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	c := Cell{Path: path, Callers: callers, Requests: len(all), Errors: errs, PerSec: float64(len(all)) / elapsed.Seconds()}
	if firstErr != nil {
		c.FirstError = firstErr.Error()
	}
	slices.Sort(all)
	c.P50MS, c.P99MS = ms(percentile(all, 0.50)), ms(percentile(all, 0.99))
	return c
}

// percentile is the nearest-rank q-quantile of sorted; 0 if empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[max(0, int(math.Ceil(q*float64(len(sorted))))-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
