package installer

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/kardianos/service"
	"golang.org/x/sys/windows/svc"
)

// runUnderSCM runs p as a Windows service when the Service Control Manager
// started this process. It uses x/sys/windows/svc directly rather than
// kardianos' Run, whose handler only leaves its loop on Stop or Shutdown: a
// program that failed would leave a dead service reported as running, and
// the recovery actions would never fire.
func runUnderSCM(ctx context.Context, o Options, p Program) (bool, error) {
	if service.Interactive() {
		return false, nil
	}
	s, err := service.New(nil, serviceConfig(o))
	if err != nil {
		return true, err
	}
	l, err := s.SystemLogger(nil)
	if err != nil {
		return true, err
	}
	h := &scmHandler{ctx: ctx, o: o, p: p, log: slog.New(newLogHandler(l))}
	// The SCM starts services in System32; relative paths should mean what
	// they mean next to the executable.
	if err := os.Chdir(filepath.Dir(o.Executable)); err != nil {
		h.log.Warn("cannot change to the executable's directory", "err", err)
	}
	if err := svc.Run(o.Name, h); err != nil {
		return true, err
	}
	return true, h.err
}

// scmHandler runs the program for the SCM: Running once the program is
// ready, StopPending while it stops, and a service-specific exit code 1
// when it fails, which the recovery actions set by Install answer with a
// restart.
type scmHandler struct {
	ctx context.Context
	o   Options
	p   Program
	log *slog.Logger
	err error // the program's failure, read after svc.Run returns
}

func (h *scmHandler) Execute(_ []string, requests <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	const accepts = svc.AcceptStop | svc.AcceptShutdown | svc.AcceptParamChange
	status <- svc.Status{State: svc.StartPending}

	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	ready := make(chan struct{}, 1)
	reload := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- h.p.Run(ctx, Service{
			ConfigPath: h.o.ConfigPath,
			Log:        h.log,
			Ready: func() {
				select {
				case ready <- struct{}{}:
				default:
				}
			},
			Reload: reload,
		})
	}()
	h.log.Info("service starting", "name", h.o.Name, "config", h.o.ConfigPath)

	stopping, running := false, false
	parent := h.ctx.Done()
	for {
		select {
		case <-ready:
			if !stopping && !running {
				running = true
				status <- svc.Status{State: svc.Running, Accepts: accepts}
			}
		case <-parent:
			parent = nil
			stopping = true
		case c := <-requests:
			switch c.Cmd {
			case svc.Interrogate:
				status <- c.CurrentStatus
			case svc.ParamChange:
				select {
				case reload <- struct{}{}:
					h.log.Info("reload requested")
				default:
				}
			case svc.Stop, svc.Shutdown:
				if !stopping {
					stopping = true
					h.log.Info("service stopping")
					status <- svc.Status{State: svc.StopPending, WaitHint: 30_000}
					cancel()
				}
			}
		case err := <-done:
			stopping = stopping || h.ctx.Err() != nil
			if h.err = exitError(err, stopping); h.err != nil {
				h.log.Error("service failed", "err", h.err)
				return true, 1
			}
			h.log.Info("service stopped")
			return false, 0
		}
	}
}
