package installer

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"
)

// fakeLogger records entries as "type: text".
type fakeLogger struct{ entries []string }

func (l *fakeLogger) add(kind string, v ...any) error {
	l.entries = append(l.entries, kind+": "+fmt.Sprint(v...))
	return nil
}
func (l *fakeLogger) Error(v ...any) error   { return l.add("error", v...) }
func (l *fakeLogger) Warning(v ...any) error { return l.add("warning", v...) }
func (l *fakeLogger) Info(v ...any) error    { return l.add("info", v...) }
func (l *fakeLogger) Errorf(f string, a ...any) error {
	return l.add("error", fmt.Sprintf(f, a...))
}
func (l *fakeLogger) Warningf(f string, a ...any) error {
	return l.add("warning", fmt.Sprintf(f, a...))
}
func (l *fakeLogger) Infof(f string, a ...any) error { return l.add("info", fmt.Sprintf(f, a...)) }

func TestLogHandler(t *testing.T) {
	out := &fakeLogger{}
	log := slog.New(newLogHandler(out))
	log.Debug("not shown")
	log.Info("service starting", "name", "pdmp-agent")
	log.With("registration", "dr-adams").WithGroup("token").Warn("slow", "ms", 1200)
	log.Error("service failed", "err", "boom")
	want := []string{
		"info: msg=\"service starting\" name=pdmp-agent",
		"warning: msg=slow registration=dr-adams token.ms=1200",
		"error: msg=\"service failed\" err=boom",
	}
	if !slices.Equal(out.entries, want) {
		t.Errorf("entries:\n%q\nwant:\n%q", out.entries, want)
	}
}
