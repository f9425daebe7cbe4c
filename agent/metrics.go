package agent

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pdmp-agent/pdmp-agent/agent/smart"
)

// Metrics are the agent's Prometheus metrics. Labels carry only configured
// names (responder, registration) and small fixed sets (outcome, state):
// never a patient, an id or anything unbounded.
type Metrics struct {
	reg *prometheus.Registry

	lookups    *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	attempts   *prometheus.CounterVec
	tokens     *prometheus.CounterVec
	keyOps     *prometheus.CounterVec
	reloads    *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	queueDepth *prometheus.GaugeVec
}

// NewMetrics registers the agent's metrics on a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdmp_agent_lookups_total",
			Help: "PDMP lookups finished, by responder and outcome (done, failed, dead, cancelled).",
		}, []string{"responder", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pdmp_agent_responder_request_duration_seconds",
			Help:    "Duration of one HTTP exchange with a responder, by responder.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"responder"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdmp_agent_responder_attempts_total",
			Help: "Attempts sent to a responder, by responder and result class (ok, retry, permanent).",
		}, []string{"responder", "result"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdmp_agent_token_requests_total",
			Help: "Token endpoint exchanges, by registration and result (ok, error).",
		}, []string{"registration", "result"}),
		keyOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdmp_agent_key_operations_total",
			Help: "Operations on signing keys by the running agent, by operation (sign) and result.",
		}, []string{"operation", "result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdmp_agent_config_reloads_total",
			Help: "Configuration reloads, by result (applied, rejected).",
		}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pdmp_agent_api_refusals_total",
			Help: "Local API requests refused, by reason (auth, origin, host, policy).",
		}, []string{"reason"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pdmp_agent_queue_jobs",
			Help: "Jobs in the durable queue, by state.",
		}, []string{"state"}),
	}
	m.reg.MustRegister(m.lookups, m.latency, m.attempts, m.tokens, m.keyOps, m.reloads, m.refusals, m.queueDepth,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the metrics live (for tests and lint).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Lookup counts a finished lookup.
func (m *Metrics) Lookup(responder, outcome string) {
	if m != nil {
		m.lookups.WithLabelValues(responder, outcome).Inc()
	}
}

// Attempt records one exchange with a responder.
func (m *Metrics) Attempt(responder, result string, d time.Duration) {
	if m != nil {
		m.attempts.WithLabelValues(responder, result).Inc()
		m.latency.WithLabelValues(responder).Observe(d.Seconds())
	}
}

// Token records a token endpoint exchange; hook it with smart.Client.OnEvent.
func (m *Metrics) Token(ev smart.Event) {
	if m == nil {
		return
	}
	result := "ok"
	if ev.Err != nil {
		result = "error"
	}
	m.tokens.WithLabelValues(ev.Registration, result).Inc()
	// Each exchange signed one assertion with the registration's key.
	m.keyOps.WithLabelValues("sign", "ok").Inc()
}

// Reload records a configuration reload.
func (m *Metrics) Reload(err error) {
	if m == nil {
		return
	}
	r := "applied"
	if err != nil {
		r = "rejected"
	}
	m.reloads.WithLabelValues(r).Inc()
}

// Refusal counts a refused API request.
func (m *Metrics) Refusal(reason string) {
	if m != nil {
		m.refusals.WithLabelValues(reason).Inc()
	}
}

// QueueDepth sets the queue gauge from a state → count map.
func (m *Metrics) QueueDepth(byState map[string]int) {
	if m == nil {
		return
	}
	for s, n := range byState {
		m.queueDepth.WithLabelValues(s).Set(float64(n))
	}
}
