//go:build !windows

package installer

import "context"

// runUnderSCM is for Windows; elsewhere the service manager runs the
// program in the foreground.
func runUnderSCM(context.Context, Options, Program) (bool, error) { return false, nil }
