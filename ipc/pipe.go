package ipc

import (
	"fmt"
	"strings"
)

// The Windows named pipe. This file has no build tag so that the naming and
// security descriptor rules are tested everywhere; the listener itself is in
// pipe_windows.go.
//
// What protects the pipe:
//   - Its name lies under \\.\pipe\ProtectedPrefix\Administrators\, where
//     only administrators (and SYSTEM) can create a pipe, so an ordinary
//     process cannot squat the name before the agent starts and receive the
//     requests (and their PHI) meant for it.
//   - go-winio creates the first instance with FILE_CREATE, so the agent
//     never joins a pipe someone else created, and always sets
//     FILE_PIPE_REJECT_REMOTE_CLIENTS, so SMB clients from other machines
//     are refused by the pipe file system itself. The SDDL also denies
//     NETWORK logons, in case a future go-winio changed that default.
//   - The DACL lets SYSTEM and Administrators do anything and the callers'
//     groups read and write, but not FILE_CREATE_PIPE_INSTANCE: that right
//     is FILE_APPEND_DATA, which GENERIC_WRITE includes, and with it a
//     caller could open its own server instance of the pipe and answer
//     other callers' requests. Clients must therefore ask for
//     GENERIC_READ|FILE_WRITE_DATA, not GENERIC_WRITE (ipc/client does).
//   - Clients must connect with at least SECURITY_IDENTIFICATION (the
//     Win32 default when no SQOS flags are given is impersonation, which
//     also works): the agent reads the client's token to identify it, and
//     an anonymous client is refused.

// DefaultPipeName is where the agent listens on Windows.
const DefaultPipeName = `\\.\pipe\ProtectedPrefix\Administrators\pdmp-agent\api`

// DefaultPipeGroup is the local group whose members may open the pipe.
const DefaultPipeGroup = "pdmp-agent-users"

const (
	pipeRoot      = `\\.\pipe\`
	protectedRoot = pipeRoot + `ProtectedPrefix\Administrators\`
	// pipeClientRights is FILE_GENERIC_READ|FILE_GENERIC_WRITE without
	// FILE_CREATE_PIPE_INSTANCE (0x4).
	pipeClientRights = "0x12019b"
)

// CheckPipeName reports whether name is a pipe only administrators can
// create: the agent refuses to listen on, and the client to connect to,
// any other, since any user could have created it first.
func CheckPipeName(name string) error {
	// Pipe names are case-insensitive.
	if !strings.HasPrefix(strings.ToLower(name), strings.ToLower(protectedRoot)) {
		return fmt.Errorf("ipc: pipe %q is not under %s: any user could create it first", name, protectedRoot)
	}
	rest := name[len(protectedRoot):]
	if rest == "" || strings.HasSuffix(rest, `\`) || strings.Contains(rest, `\\`) || strings.ContainsAny(rest, "/\x00") {
		return fmt.Errorf("ipc: pipe %q: malformed name", name)
	}
	if len(name) > 256 {
		return fmt.Errorf("ipc: pipe %q: longer than 256 characters", name)
	}
	return nil
}

// SIDLookup resolves a Windows account name to its SID string. On Windows
// it is LookupAccountName; tests substitute a map.
type SIDLookup interface {
	LookupSID(account string) (string, error)
}

// PipeSDDL builds the pipe's security descriptor: NETWORK logons denied,
// SYSTEM and Administrators full control, and each of accounts (group or
// user names, or SID strings, typically DefaultPipeGroup or the groups of
// the policy) read and write without the right to create pipe instances.
// The deny comes first because Windows stops at the first ACE that
// decides. The DACL is protected (P) so that nothing is inherited.
func PipeSDDL(l SIDLookup, accounts ...string) (string, error) {
	var b strings.Builder
	b.WriteString("D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)")
	seen := map[string]bool{}
	for _, a := range accounts {
		sid, err := lookupSID(l, a)
		if err != nil {
			return "", fmt.Errorf("ipc: pipe account %q: %w", a, err)
		}
		if seen[sid] {
			continue
		}
		seen[sid] = true
		fmt.Fprintf(&b, "(A;;%s;;;%s)", pipeClientRights, sid)
	}
	return b.String(), nil
}

// lookupSID resolves an account or passes a SID string through, and
// checks the result looks like a SID: it is spliced into SDDL, where a
// string such as "BA)(A;;GA;;;WD" would grant Everyone full control.
func lookupSID(l SIDLookup, account string) (string, error) {
	sid := strings.ToUpper(account)
	if !strings.HasPrefix(sid, "S-1-") {
		var err error
		if sid, err = l.LookupSID(account); err != nil {
			return "", err
		}
	}
	if !sidRE.MatchString(sid) {
		return "", fmt.Errorf("%q is not a SID", sid)
	}
	return sid, nil
}
