package bench

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
)

// acceptanceSubmitters are the concurrencies of asynchronous submitters.
var acceptanceSubmitters = []int{1, 16, 64}

// runAcceptance measures how many asynchronous submissions per second the
// agent accepts: each is fsynced to the queue before the 202. The
// responder is down (nothing listens on its port) so that no attempt
// competes for long: after a few failures its circuit breaker stops
// attempts for longer than the section runs.
func runAcceptance(ctx context.Context, h *harness, p plan) ([]Cell, error) {
	sb, err := h.sandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	down, err := freePort()
	if err != nil {
		return nil, err
	}
	_, c, stop, err := h.startAgent(ctx, 0, responder{name: "state", fhirBase: "http://" + down + "/fhir", tokenEndpoint: sb.TokenURL})
	if err != nil {
		return nil, err
	}
	defer stop()
	submit := asyncSender(c)
	var cells []Cell
	for _, n := range acceptanceSubmitters {
		cells = append(cells, load(ctx, "agent-unix", n, p.cell, submit))
	}
	return cells, ctx.Err()
}

// asyncSender submits the i'th query of the mix asynchronously: done when
// the agent has stored it and answered 202.
func asyncSender(c *client.Client) func(context.Context, int) error {
	return func(ctx context.Context, i int) error {
		r, err := c.Query(ctx, "state", params(mix[i%len(mix)], adams), &client.QueryOptions{Async: true})
		if err != nil {
			return err
		}
		if r.StatusCode != http.StatusAccepted {
			return fmt.Errorf("agent answered %d", r.StatusCode)
		}
		return nil
	}
}

// TokenEconomy is how many token requests a burst of queries on a cold
// token cache cost.
type TokenEconomy struct {
	Queries  int     `json:"queries"`
	Answered int     `json:"answered"` // 200 with the responder's answer
	Seconds  float64 `json:"seconds"`
	// TokenRequests is what the sandbox's token endpoint saw, by
	// client_id: one per registration.
	TokenRequests map[string]int `json:"token_requests"`
	Pass          bool           `json:"pass"`
	FirstError    string         `json:"first_error,omitempty"`
}

// tokenBurst is how many queries arrive at once at a freshly started agent.
const tokenBurst = 1000

// runTokenEconomy starts a fresh agent, so its token cache is cold, and
// sends tokenBurst queries at once, half for each of two practitioners
// with a registration each. The agent must ask the token endpoint once
// per registration, however many queries wait for the token.
func runTokenEconomy(ctx context.Context, h *harness) (*TokenEconomy, error) {
	sb, err := h.sandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	_, c, stop, err := h.startAgent(ctx, 0, responder{name: "state", fhirBase: sb.FHIRBase, limits: config.Limits{Concurrency: 64}})
	if err != nil {
		return nil, err
	}
	defer stop()

	qctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var (
		answered atomic.Int64
		firstErr error
		once     sync.Once
		wg       sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range tokenBurst {
		wg.Go(func() {
			who := []practitioner{adams, baker}[i%2]
			<-start
			r, err := c.Query(qctx, "state", params(mix[i%len(mix)], who), nil)
			if err == nil && r.StatusCode != http.StatusOK {
				err = fmt.Errorf("agent answered %d", r.StatusCode)
			}
			if err != nil {
				once.Do(func() { firstErr = err })
				return
			}
			answered.Add(1)
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	te := &TokenEconomy{Queries: tokenBurst, Answered: int(answered.Load()), Seconds: time.Since(t0).Seconds(), TokenRequests: tokenCounts(sb)}
	if firstErr != nil {
		te.FirstError = firstErr.Error()
	}
	te.Pass = te.Answered == tokenBurst && len(te.TokenRequests) == 2 &&
		te.TokenRequests[adams.name] == 1 && te.TokenRequests[baker.name] == 1
	return te, ctx.Err()
}

// tokenCounts counts the sandbox's token requests by client_id.
func tokenCounts(sb *pdmptest.Server) map[string]int {
	n := map[string]int{}
	for _, t := range sb.TokenLog() {
		n[t.ClientID]++
	}
	return n
}
