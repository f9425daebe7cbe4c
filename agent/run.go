package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/pdmp-agent/pdmp-agent/agent/audit"
	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/redact"
	"github.com/pdmp-agent/pdmp-agent/ipc"
	"github.com/pdmp-agent/pdmp-agent/queue"
	"github.com/pdmp-agent/pdmp-agent/vault"
)

// RunOptions are what the service manager hands the agent.
type RunOptions struct {
	ConfigPath string
	// Log, if set, receives the agent's log (the Windows Event Log); else
	// stderr, JSON unless on a terminal. Either way it passes through the
	// redaction layer first.
	Log *slog.Logger
	// Ready is called once the local API listens.
	Ready func()
	// Reload delivers SIGHUP and service-manager reload requests.
	Reload <-chan struct{}
	// Options for the agent (tests and the demo use the sandbox client).
	Agent Options
}

// DefaultStateDir is where state lives unless the configuration says.
func DefaultStateDir() string {
	if runtime.GOOS == "windows" {
		return `C:\ProgramData\pdmp-agent\state`
	}
	return "/var/lib/pdmp-agent"
}

// Run runs the agent until ctx ends: the queue's workers, the local API,
// the metrics listener and the configuration watcher.
func Run(ctx context.Context, o RunOptions) error {
	level := new(slog.LevelVar)
	red := &redact.Redactor{}
	var inner slog.Handler
	if o.Log != nil {
		inner = levelHandler{o.Log.Handler(), level}
	} else {
		inner = NewLogger(config.Log{Format: "auto"}, os.Stderr).Handler()
		inner = levelHandler{inner, level}
	}
	log := slog.New(redact.NewHandler(inner, redact.Options{Redactor: red}))
	o.Agent.Logger = log

	svc, err := NewService(ctx, o.ConfigPath, level, o.Agent)
	if err != nil {
		return err
	}
	defer svc.Close()
	if err := svc.open(ctx); err != nil {
		return err
	}
	defer svc.closeStores()

	api, listeners, err := svc.listen(ctx)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	serveErr := make(chan error, len(listeners)+2)
	for _, l := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := api.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("local API (%s): %w", l.Transport(), err)
			}
		}()
	}
	metricsSrv, err := svc.serveMetrics(serveErr)
	if err != nil {
		return err
	}
	svc.onReload = func(c *config.Config) {
		if err := api.SetPolicy(policyOf(c)); err != nil {
			log.Error("caller policy not applied", "error", err)
		}
	}
	qctx, stopQueue := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(2)
	go func() {
		defer wg.Done()
		// With a backlog, tokens first: an attempt that waits for one after
		// taking its rate-limit slot would reach the responder bunched with
		// later ones, over the limit a backlog drain must respect.
		if st, err := svc.queue.Stats(qctx); err == nil && st[queue.Queued] > 0 {
			svc.warmTokens(qctx, 5*time.Second)
		}
		_ = svc.queue.Run(qctx, svc.handle)
	}()
	go func() { defer wg.Done(); _ = svc.Watch(qctx) }()
	if o.Ready != nil {
		o.Ready()
	}
	log.Info("pdmp-agent running", "config", o.ConfigPath, "listeners", len(listeners))

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-o.Reload:
			_ = svc.Reload(ctx)
		case runErr = <-serveErr:
			break loop
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = api.Shutdown(sctx)
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(sctx)
	}
	stopQueue()
	wg.Wait()
	log.Info("pdmp-agent stopped")
	return runErr
}

// levelHandler applies the live log level to a handler built elsewhere.
type levelHandler struct {
	slog.Handler
	level *slog.LevelVar
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level.Level() && h.Handler.Enabled(ctx, l)
}
func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{h.Handler.WithAttrs(as), h.level}
}
func (h levelHandler) WithGroup(g string) slog.Handler {
	return levelHandler{h.Handler.WithGroup(g), h.level}
}

// Names of the agent's own secrets in the vault.
const (
	QueueKeyName = "queue-data-key"
	AuditKeyName = "audit-key"
)

// SecretURI is the vault URI of one of the agent's own secrets: as
// configured, or beside the first keyring registration key.
func SecretURI(cfg *config.Config, configured, name string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	for _, g := range cfg.Registrations {
		if u, err := vault.Sibling(g.Key, name); err == nil && vault.CheckURI(u) == nil {
			if pu, _ := vault.ParseURI(u); pu.Scheme == "keyring" {
				return u, nil
			}
		}
	}
	return "", fmt.Errorf("no keyring registration to keep the %s beside; set it in the configuration", name)
}

// open opens what lives for the whole run: the queue and the audit log,
// with their keys from the vault.
func (s *Service) open(ctx context.Context) error {
	cfg := s.Agent().cfg
	state := cfg.StateDir
	if state == "" {
		state = DefaultStateDir()
	}
	if err := os.MkdirAll(state, 0o750); err != nil {
		return err
	}
	s.stateDir = state
	dataURI, err := SecretURI(cfg, cfg.Queue.DataKey, QueueKeyName)
	if err != nil {
		return fmt.Errorf("queue.data_key: %w", err)
	}
	dataKey, err := vault.Secret(ctx, dataURI, 32)
	if err != nil {
		return fmt.Errorf("queue data key: %w", err)
	}
	auditURI, err := SecretURI(cfg, cfg.Audit.Key, AuditKeyName)
	if err != nil {
		return fmt.Errorf("audit.key: %w", err)
	}
	if s.patientKey, err = vault.Secret(ctx, auditURI, audit.KeySize); err != nil {
		return fmt.Errorf("audit key: %w", err)
	}
	auditDir := cfg.Audit.Dir
	if auditDir == "" {
		auditDir = filepath.Join(state, "audit")
	}
	if s.audit, err = audit.Open(auditDir, audit.Options{MaxSize: cfg.Audit.MaxSize, MaxAge: cfg.Audit.MaxAge.D(0)}); err != nil {
		return err
	}
	s.maxAttempts = cfg.Queue.MaxAttempts
	if s.maxAttempts == 0 {
		s.maxAttempts = 10
	}
	limits := map[string]queue.Limits{}
	for _, r := range cfg.Responders {
		limits[r.Name] = queue.Limits{Concurrency: r.Limits.Concurrency, Rate: r.Limits.Rate, Burst: r.Limits.Burst}
	}
	ttl := cfg.Queue.ResultTTL.D(24 * time.Hour)
	dbPath := filepath.Join(state, "queue.db")
	if ratio, err := queue.FreeRatio(dbPath); err == nil && ratio > 0.5 {
		if err := queue.Compact(dbPath); err != nil {
			s.log.Warn("queue compaction skipped", "error", err)
		}
	}
	s.queue, err = queue.Open(dbPath, queue.Options{
		DataKey:           dataKey,
		Retry:             queue.RetryPolicy{MaxAttempts: s.maxAttempts, MaxAge: cfg.Queue.MaxAge.D(24 * time.Hour)},
		Limits:            func(r string) queue.Limits { return limits[r] },
		IdempotencyWindow: cfg.Queue.IdempotencyWindow.D(0),
		ResultTTL:         ttl,
		// Purge often enough that a short TTL is honoured promptly.
		PurgeInterval: min(10*time.Minute, max(time.Second, ttl/2)),
		Logger:        s.log,
	})
	clear(dataKey)
	if err != nil {
		return err
	}
	s.metrics = NewMetrics()
	s.tokens.OnEvent(s.metrics.Token)
	s.prestage = newPrestageStore(15 * time.Minute)
	return nil
}

func (s *Service) closeStores() {
	if s.queue != nil {
		s.queue.Close()
	}
	if s.audit != nil {
		s.audit.Close()
	}
}

// listen builds the local API and its listeners from the configuration.
func (s *Service) listen(ctx context.Context) (*ipc.Server, []*ipc.Listener, error) {
	cfg := s.Agent().cfg
	api, err := ipc.NewServer(ipc.Options{
		Backend:   s,
		Policy:    policyOf(cfg),
		LocalName: cfg.Listen.Host,
		SyncWait:  cfg.Listen.SyncWait.D(config.DefaultSyncWait),
		Logger:    s.log,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("callers: %w", err)
	}
	var ls []*ipc.Listener
	fail := func(err error) (*ipc.Server, []*ipc.Listener, error) {
		for _, l := range ls {
			l.Close()
		}
		return nil, nil, err
	}
	if a := cfg.Listen.TCP; a != "" {
		credPath := cfg.Listen.CredentialFile
		if credPath == "" {
			credPath = filepath.Join(s.stateDir, "api.credential")
		}
		cred, err := ipc.NewCredential(credPath, cfg.Listen.Group)
		if err != nil {
			return fail(err)
		}
		l, err := ipc.ListenTCP(ctx, a, cred)
		if err != nil {
			return fail(err)
		}
		ls = append(ls, l)
	}
	if p := cfg.Listen.Unix; p != "" {
		mode := os.FileMode(0o600)
		if cfg.Listen.Group != "" {
			mode = 0o660
		}
		l, err := ipc.ListenUnix(ctx, p, mode, cfg.Listen.Group)
		if err != nil {
			return fail(err)
		}
		ls = append(ls, l)
	}
	if p := cfg.Listen.Pipe; p != "" {
		l, err := ipc.ListenPipe(p, "")
		if err != nil {
			return fail(err)
		}
		ls = append(ls, l)
	}
	if len(ls) == 0 {
		return fail(errors.New("listen: configure at least one of tcp, unix or pipe"))
	}
	return api, ls, nil
}

func policyOf(c *config.Config) ipc.Policy {
	var p ipc.Policy
	for _, cl := range c.Callers {
		r := ipc.Rule{Name: cl.Name, Users: cl.Users, Groups: cl.Groups, SIDs: cl.SIDs, TCPCredential: cl.TCPCredential, Responders: cl.Responders}
		for _, op := range cl.Operations {
			r.Operations = append(r.Operations, ipc.Permission(op))
		}
		p.Rules = append(p.Rules, r)
	}
	return p
}

func (s *Service) serveMetrics(errs chan<- error) (*http.Server, error) {
	addr := s.Agent().cfg.Metrics.Listen
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("metrics: %w", err)
		}
	}()
	return srv, nil
}

// warmTokens obtains a token for every registration, concurrently, for at
// most d. Failures are logged by the token client and retried by the jobs
// that need them.
func (s *Service) warmTokens(ctx context.Context, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for _, reg := range s.Agent().registrations {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = s.tokens.Token(ctx, reg.SMART) }()
	}
	wg.Wait()
}

// noteError keeps the last few errors for status (never PHI: callers pass
// classified messages only).
func (s *Service) noteError(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErrors = append(s.lastErrors, timedError{time.Now().UTC(), redact.RedactString(msg)})
	if len(s.lastErrors) > 10 {
		s.lastErrors = s.lastErrors[len(s.lastErrors)-10:]
	}
}

type timedError struct {
	Time  time.Time `json:"time"`
	Error string    `json:"error"`
}
