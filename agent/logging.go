package agent

import (
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"

	"github.com/pdmp-agent/pdmp-agent/agent/config"
)

// NewLogger builds the logger the config asks for: JSON when not on a
// terminal (a service), text on one, unless the format says otherwise.
func NewLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	format := c.Format
	if format == "" || format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
