package bench

import "syscall"

// childAttr makes the kernel kill a child agent when the bench dies, so
// that none outlives an interrupted run.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
