package agent

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pdmp-agent/pdmp-agent/agent/smart"
)

func TestMetricsLint(t *testing.T) {
	m := NewMetrics()
	// Touch every vector so its series exist for the linter.
	m.Lookup("state-a", "done")
	m.Attempt("state-a", "ok", 0)
	m.Token(smart.Event{Registration: "r"})
	m.Reload(nil)
	m.Refusal("policy")
	m.QueueDepth(map[string]int{"queued": 1})
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
