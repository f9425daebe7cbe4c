package installer

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"

	"github.com/kardianos/service"
)

// logHandler is a slog.Handler that writes each record as one entry of a
// kardianos service.Logger (the Event Log, in a Windows service), with the
// record's level as the entry's type. The log keeps its own time and
// level, so the text is the message and attributes only.
type logHandler struct {
	out  service.Logger
	mu   *sync.Mutex
	buf  *bytes.Buffer
	text slog.Handler // formats into buf
}

func newLogHandler(out service.Logger) *logHandler {
	buf := new(bytes.Buffer)
	return &logHandler{
		out: out,
		mu:  new(sync.Mutex),
		buf: buf,
		text: slog.NewTextHandler(buf, &slog.HandlerOptions{
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
					return slog.Attr{}
				}
				return a
			},
		}),
	}
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.text.Enabled(ctx, l)
}

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.buf.Reset()
	err := h.text.Handle(ctx, r)
	entry := strings.TrimSuffix(h.buf.String(), "\n")
	h.mu.Unlock()
	if err != nil {
		return err
	}
	switch {
	case r.Level >= slog.LevelError:
		return h.out.Error(entry)
	case r.Level >= slog.LevelWarn:
		return h.out.Warning(entry)
	}
	return h.out.Info(entry)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.text = h.text.WithAttrs(attrs)
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.text = h.text.WithGroup(name)
	return &c
}
