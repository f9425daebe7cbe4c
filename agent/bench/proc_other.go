//go:build !linux

package bench

import "syscall"

// childAttr is nil: Run refuses to run off Linux, and this file only
// keeps the package building there.
func childAttr() *syscall.SysProcAttr { return nil }
