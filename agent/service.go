package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/pdmp-agent/pdmp-agent/agent/audit"
	"github.com/pdmp-agent/pdmp-agent/agent/config"
	"github.com/pdmp-agent/pdmp-agent/agent/smart"
	"github.com/pdmp-agent/pdmp-agent/queue"
)

// Service is the running agent: the current configuration's Agent, swapped
// whole on reload, plus what lives across reloads (tokens, key rings, the
// queue, listeners).
type Service struct {
	path   string
	log    *slog.Logger
	level  *slog.LevelVar
	tokens *smart.Client
	rings  *Rings
	opts   Options

	cur atomic.Pointer[Agent]

	mu         sync.Mutex
	reload     ReloadStatus
	lastErrors []timedError
	onReload   func(*config.Config)

	// Opened by Run for the whole run.
	stateDir    string
	queue       *queue.Queue
	audit       *audit.Log
	patientKey  []byte
	prestage    *prestageStore
	metrics     *Metrics
	maxAttempts int
}

// ReloadStatus is the result of the last configuration load.
type ReloadStatus struct {
	Time    time.Time `json:"time"`
	Version string    `json:"version"` // SHA-256 prefix of the applied file
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	// NeedsRestart lists changed settings that apply only after a restart.
	NeedsRestart []string `json:"needs_restart,omitempty"`
}

// NewService loads the configuration at path and builds the first Agent.
// level, if set, is adjusted on every reload to the configured log level.
func NewService(ctx context.Context, path string, level *slog.LevelVar, opts Options) (*Service, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Service{path: path, log: log, level: level, rings: NewRings(), opts: opts}
	s.tokens = opts.Tokens
	if s.tokens == nil {
		s.tokens = smart.New(append([]smart.Option{smart.WithLogger(log)}, opts.TokenOptions...)...)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Parse(path, data)
	if err != nil {
		return nil, err
	}
	a, err := s.build(ctx, cfg, data)
	if err != nil {
		return nil, err
	}
	s.cur.Store(a)
	s.applyLevel(cfg)
	s.reload = ReloadStatus{Time: time.Now(), Version: version(data), OK: true}
	return s, nil
}

func (s *Service) build(ctx context.Context, cfg *config.Config, data []byte) (*Agent, error) {
	o := s.opts
	o.Logger, o.Tokens, o.Rings = s.log, s.tokens, s.rings
	a, err := New(ctx, cfg, o)
	var ce *config.Error
	if errors.As(err, &ce) && ce.File == "" {
		config.Locate(s.path, data, ce)
	}
	return a, err
}

func (s *Service) applyLevel(cfg *config.Config) {
	if s.level == nil {
		return
	}
	var l slog.Level
	if l.UnmarshalText([]byte(cfg.Log.Level)) == nil {
		s.level.Set(l)
	}
}

func version(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}

// Agent returns the current configuration's Agent.
func (s *Service) Agent() *Agent { return s.cur.Load() }

// Close releases the key rings.
func (s *Service) Close() error { return s.rings.Close() }

// LastReload reports the last load's result.
func (s *Service) LastReload() ReloadStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reload
}

// Reload reads the file again and, if it is valid in full and every key it
// names opens, swaps it in. On any error the running configuration stays
// and the error is recorded and returned. An unchanged file is a no-op.
func (s *Service) Reload(ctx context.Context) error {
	data, err := os.ReadFile(s.path)
	if err == nil && version(data) == s.LastReload().Version {
		return nil
	}
	var cfg *config.Config
	if err == nil {
		cfg, err = config.Parse(s.path, data)
	}
	var a *Agent
	if err == nil {
		a, err = s.build(ctx, cfg, data)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ReloadStatus{Time: time.Now(), Version: s.reload.Version}
	if err != nil {
		st.Error = err.Error()
		s.reload = st
		s.metrics.Reload(err)
		s.log.Error("configuration not applied; still running on the previous one", "file", s.path, "error", err)
		return err
	}
	old := s.cur.Load()
	st.NeedsRestart = restartOnly(old.cfg, cfg)
	st.OK, st.Version = true, version(data)
	s.cur.Store(a)
	s.applyLevel(cfg)
	s.reload = st
	s.metrics.Reload(nil)
	if s.onReload != nil {
		s.onReload(cfg)
	}
	s.log.Info("configuration applied", "file", s.path, "version", st.Version,
		"registrations", len(cfg.Registrations), "needs_restart", st.NeedsRestart)
	return nil
}

// restartOnly names the settings that differ but cannot change live: the
// listeners, the state directory and what is opened once at start.
func restartOnly(old, cur *config.Config) []string {
	var out []string
	for _, c := range []struct {
		name     string
		old, cur any
	}{
		{"state_dir", old.StateDir, cur.StateDir},
		{"listen", old.Listen, cur.Listen},
		{"queue", old.Queue, cur.Queue},
		{"audit", old.Audit, cur.Audit},
		{"metrics", old.Metrics, cur.Metrics},
		{"responders[].limits", limitsOf(old), limitsOf(cur)},
	} {
		if !reflect.DeepEqual(c.old, c.cur) {
			out = append(out, c.name)
		}
	}
	return out
}

func limitsOf(c *config.Config) map[string]config.Limits {
	m := map[string]config.Limits{}
	for _, r := range c.Responders {
		m[r.Name] = r.Limits
	}
	return m
}

// debounce lets an editor finish writing before the file is read.
const debounce = 300 * time.Millisecond

// Watch reloads whenever the configuration file changes, until ctx ends.
// It watches the directory, not the file: editors replace files by
// renaming a new one over them, which a watch on the old inode would miss.
func (s *Service) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	dir, base := filepath.Split(s.path)
	if dir == "" {
		dir = "."
	}
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	var timer <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("config watcher closed")
			}
			if filepath.Base(ev.Name) == base && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename|fsnotify.Remove) != 0 {
				timer = time.After(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("config watcher closed")
			}
			s.log.Warn("config watcher", "error", err)
		case <-timer:
			timer = nil
			// A remove with no replacement yet: wait for the new file.
			if _, err := os.Stat(s.path); err != nil {
				continue
			}
			_ = s.Reload(ctx)
		}
	}
}
