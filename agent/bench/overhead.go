package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/pdmptest"
	"github.com/pdmp-agent/pdmp-agent/agent/smart"
	"github.com/pdmp-agent/pdmp-agent/ipc/client"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

// OverheadRow is an overhead cell and, for the agent's paths, what it
// adds to the direct path's p50 and p99 at the same concurrency.
type OverheadRow struct {
	Cell
	DeltaP50MS float64 `json:"delta_p50_ms"`
	DeltaP99MS float64 `json:"delta_p99_ms"`
}

// overheadCallers are the concurrencies measured: one EHR user, and a
// busy clinic.
var overheadCallers = []int{1, 16}

// runOverhead sends the query mix straight to a sandbox responder and
// through the agent. The responder keeps results (retention data) and
// allows 64 concurrent requests at no rate limit, so that the agent's own
// cost is what differs, not its politeness towards the responder.
func runOverhead(ctx context.Context, h *harness, p plan) ([]OverheadRow, error) {
	sb, err := h.sandbox()
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	d, err := h.newAgentDir(0, responder{name: "state", fhirBase: sb.FHIRBase, limits: config.Limits{Concurrency: 64}})
	if err != nil {
		return nil, err
	}
	stop, err := d.run(ctx)
	if err != nil {
		return nil, err
	}
	defer stop()

	// As many idle connections as the agent's responder client keeps.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	direct, err := directSender(ctx, h, sb, hc)
	if err != nil {
		return nil, err
	}
	paths := []sender{{"direct", direct}}
	for _, network := range []string{"tcp", "unix"} {
		c, err := d.client(network)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		paths = append(paths, sender{"agent-" + network, agentSender(c)})
	}

	var rows []OverheadRow
	for _, callers := range overheadCallers {
		var base Cell
		for _, path := range paths {
			// Warm up at this concurrency (connections, token, caches)
			// and discard the numbers.
			load(ctx, path.name, callers, min(p.cell/4, time.Second), path.do)
			c := load(ctx, path.name, callers, p.cell, path.do)
			if path.name == "direct" {
				base = c
			}
			rows = append(rows, OverheadRow{Cell: c, DeltaP50MS: c.P50MS - base.P50MS, DeltaP99MS: c.P99MS - base.P99MS})
		}
	}
	return rows, ctx.Err()
}

// sender is one way of sending the i'th query of the mix.
type sender struct {
	name string
	do   func(ctx context.Context, i int) error
}

// agentSender queries the agent's responder "state" for the i'th query of
// the mix, as an EHR would (minimal input, waiting for the answer).
func agentSender(c *client.Client) func(context.Context, int) error {
	return func(ctx context.Context, i int) error {
		r, err := c.Query(ctx, "state", params(mix[i%len(mix)], adams), nil)
		if err != nil {
			return err
		}
		if r.StatusCode != http.StatusOK {
			return fmt.Errorf("agent answered %d", r.StatusCode)
		}
		return nil
	}
}

// directSender posts the completed Parameters of the query mix to the
// sandbox over hc with a token from a SMART client of its own, signed with
// the same key: the cost of a lookup without the agent.
func directSender(ctx context.Context, h *harness, sb *pdmptest.Server, hc *http.Client) (func(context.Context, int) error, error) {
	ring, err := vault.Open(ctx, h.keyURI)
	if err != nil {
		return nil, err
	}
	defer ring.Close()
	tok, err := smart.New().Token(ctx, &smart.Registration{
		Name: "direct", TokenEndpoint: sb.TokenURL, ClientID: adams.name, Scope: config.DefaultScope, Keys: ring,
	})
	if err != nil {
		return nil, err
	}
	bodies := make([][]byte, len(mix))
	for i, family := range mix {
		if bodies[i], err = completeParams(family, adams); err != nil {
			return nil, err
		}
	}
	target := sb.FHIRBase + "/Patient/$pdmp-history"
	return func(ctx context.Context, i int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(bodies[i%len(bodies)]))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Accept", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		req.Header.Set("X-Request-ID", randomHex(32))
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("sandbox answered %d", resp.StatusCode)
		}
		return nil
	}, nil
}
