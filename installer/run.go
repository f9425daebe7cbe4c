package installer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// Program is the agent as the service runs it.
type Program interface {
	// Run runs until ctx is cancelled, then returns nil after cleaning
	// up; an error means the program failed and the service manager
	// should restart it.
	Run(ctx context.Context, s Service) error
}

// ProgramFunc adapts a function to Program.
type ProgramFunc func(ctx context.Context, s Service) error

// Run calls f.
func (f ProgramFunc) Run(ctx context.Context, s Service) error { return f(ctx, s) }

// Service is what Run hands the program.
type Service struct {
	// ConfigPath is the configuration file to load ("run --config").
	ConfigPath string
	// Log writes to the system's log: standard error (the journal, under
	// systemd) or, in a Windows service, the Event Log.
	Log *slog.Logger
	// Ready tells the service manager that the program is serving: it
	// sends systemd READY=1, and a Windows service reports Running. Call
	// it once the local API listens; calling it again is harmless.
	Ready func()
	// Reload receives when the operator asks for a configuration reload
	// (SIGHUP, "systemctl reload", or on Windows "sc control <name>
	// paramchange"). Requests arriving while one is pending are merged.
	Reload <-chan struct{}
}

// Run runs p as the service: under the Windows Service Control Manager
// when started by it, otherwise in the foreground, as systemd runs it. It
// cancels p's context on SIGTERM or interrupt (or a Stop from the SCM),
// tells systemd when p is ready and when it is stopping, and returns p's
// error. A program that returns before it was asked to stop has failed,
// so the service manager restarts it.
func Run(ctx context.Context, o Options, p Program) error {
	o = o.withDefaults()
	if ok, err := runUnderSCM(ctx, o, p); ok {
		return err
	}
	opts := &slog.HandlerOptions{}
	if os.Getenv("JOURNAL_STREAM") != "" {
		// The journal timestamps every line itself.
		opts.ReplaceAttr = dropTime
	}
	return runForeground(ctx, o, p, slog.New(slog.NewTextHandler(os.Stderr, opts)))
}

func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// errStoppedItself is returned when the program returns without being
// asked to stop.
var errStoppedItself = errors.New("the program stopped by itself")

// exitError is the error a program's return means: cancellation is a clean
// stop only when a stop was asked for, and so is returning at all.
func exitError(err error, stopping bool) error {
	if stopping && errors.Is(err, context.Canceled) {
		return nil
	}
	if err == nil && !stopping {
		return errStoppedItself
	}
	return err
}

func runForeground(ctx context.Context, o Options, p Program, log *slog.Logger) error {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	reload := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- p.Run(runCtx, Service{
			ConfigPath: o.ConfigPath,
			Log:        log,
			Ready: func() {
				if err := sdNotify("READY=1"); err != nil {
					log.Warn("cannot notify systemd", "err", err)
				}
			},
			Reload: reload,
		})
	}()
	log.Info("service starting", "name", o.Name, "config", o.ConfigPath)

	stopping := false
	stop := func(why string) {
		if stopping {
			return
		}
		stopping = true
		log.Info("service stopping", "reason", why)
		if err := sdNotify("STOPPING=1"); err != nil {
			log.Warn("cannot notify systemd", "err", err)
		}
		cancel()
	}
	parent := ctx.Done()
	for {
		select {
		case err := <-done:
			// The program may see the parent's cancellation before this
			// loop does.
			stopping = stopping || ctx.Err() != nil
			if err = exitError(err, stopping); err != nil {
				log.Error("service failed", "err", err)
				return err
			}
			log.Info("service stopped")
			return nil
		case <-parent:
			parent = nil
			stop("cancelled")
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				select {
				case reload <- struct{}{}:
					log.Info("reload requested")
				default:
				}
				continue
			}
			stop(sig.String())
		}
	}
}

// sdNotify sends a state change to systemd over $NOTIFY_SOCKET (see
// sd_notify(3)); without the variable it does nothing. Written out here
// because the protocol is one datagram.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	// An "@" prefix names an abstract socket; Go's net package maps it.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
