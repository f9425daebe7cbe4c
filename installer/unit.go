package installer

import (
	"fmt"
	"path"
	"strings"
)

// SystemdUnit renders the systemd unit Install writes to
// /etc/systemd/system/<Name>.service. Everything the service does not need
// is taken away; `systemd-analyze security` rates the result 1.2 ("OK")
// and 1.4 with AllowDevices. What is left exposed is on purpose: the
// network (PDMPs are on the internet), AF_UNIX (the local API and pcscd),
// the host's users (see PrivateUsers below) and group-readable files
// (UMask 0027, so operators in the service's group can read its state).
func SystemdUnit(o Options) string {
	o = o.withDefaults()
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }

	line("# %s service, written by %q.", o.Name, o.Name+" install")
	line("# Installing again rewrites this file: put local changes in a drop-in")
	line("# (systemctl edit %s).", o.Name)
	line("[Unit]")
	line("Description=%s", unitEscape(o.Description))
	line("After=network-online.target")
	line("Wants=network-online.target")
	line("")
	line("[Service]")
	// The agent tells systemd (READY=1) once its API is listening, so
	// units ordered after it start against a working socket.
	line("Type=notify")
	line("NotifyAccess=main")
	// systemd expands $VARIABLES in the arguments, not in the command.
	line("ExecStart=%s run --config %s", unitWord(o.Executable, false), unitWord(o.ConfigPath, true))
	line("ExecReload=/bin/kill -HUP $MAINPID")
	// A service has no session bus. Without this, the keychain library's
	// D-Bus client would run dbus-launch (where dbus-x11 is installed) and
	// leave a stray session daemon behind; keys then use the file keyring
	// or PKCS#11.
	line("Environment=DBUS_SESSION_BUS_ADDRESS=disabled:")
	line("Restart=on-failure")
	line("RestartSec=5s")
	line("User=%s", o.User)
	line("Group=%s", o.Group)
	line("UMask=0027")
	line("# The local API's Unix socket lives here; systemd creates it for each run.")
	line("RuntimeDirectory=%s", o.Name)
	line("RuntimeDirectoryMode=0750")
	if rel, ok := strings.CutPrefix(path.Clean(o.StateDir), "/var/lib/"); ok {
		line("StateDirectory=%s", unitWord(rel, false))
		line("StateDirectoryMode=0750")
	} else {
		line("ReadWritePaths=%s", unitWord(o.StateDir, false))
	}
	line("# No ConfigurationDirectory=: install creates %s 0750", path.Dir(o.ConfigPath))
	line("# root:%s, and the service only reads it (ProtectSystem=strict).", o.Group)
	line("")
	line("NoNewPrivileges=yes")
	line("CapabilityBoundingSet=")
	line("AmbientCapabilities=")
	line("ProtectSystem=strict")
	line("ProtectHome=yes")
	line("PrivateTmp=yes")
	if o.AllowDevices {
		line("# Installed with --allow-devices: a PKCS#11 module that opens its token")
		line("# directly (libusb, hidraw) needs these devices; nothing else is allowed.")
		line("PrivateDevices=no")
		line("DevicePolicy=closed")
		line("DeviceAllow=char-usb_device rw")
		line("DeviceAllow=char-hidraw rw")
	} else {
		line("# A minimal /dev. Smart cards and most USB tokens are reached through")
		line("# pcscd's socket and work; a PKCS#11 module that opens a USB or hidraw")
		line("# device itself needs \"%s install --allow-devices\".", o.Name)
		line("PrivateDevices=yes")
	}
	line("PrivateMounts=yes")
	line("PrivateIPC=yes")
	line("# Not PrivateUsers=yes: inside a user namespace SO_PEERCRED reports every")
	line("# caller of the local API as \"nobody\", and callers are authorized by uid.")
	line("ProtectKernelTunables=yes")
	line("ProtectKernelModules=yes")
	line("ProtectKernelLogs=yes")
	line("ProtectControlGroups=yes")
	line("ProtectClock=yes")
	line("ProtectHostname=yes")
	line("# Hides other users' processes: a caller check that reads /proc/<pid> of")
	line("# the caller (start time, executable) would need ProtectProc=default.")
	line("ProtectProc=invisible")
	line("ProcSubset=pid")
	line("RestrictNamespaces=yes")
	line("RestrictRealtime=yes")
	line("RestrictSUIDSGID=yes")
	line("LockPersonality=yes")
	line("MemoryDenyWriteExecute=yes")
	line("RemoveIPC=yes")
	line("# The agent must reach state PDMPs anywhere on the internet, so there is")
	line("# no IPAddressDeny=; not even link-local, where some clouds put their DNS.")
	line("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6")
	line("SystemCallArchitectures=native")
	line("SystemCallFilter=@system-service")
	line("SystemCallFilter=~@privileged @resources")
	line("# EPERM rather than SIGSYS: Go tolerates a refused setrlimit at start-up.")
	line("SystemCallErrorNumber=EPERM")
	line("")
	line("[Install]")
	line("WantedBy=multi-user.target")
	return b.String()
}

// unitWord makes s one word of a unit file setting: systemd splits on
// white space and quotes, and expands %-specifiers and, in the arguments of
// Exec lines (args), $VARIABLES.
func unitWord(s string, args bool) string {
	s = unitEscape(s)
	if args {
		s = strings.ReplaceAll(s, "$", "$$")
	}
	if !strings.ContainsAny(s, " \t\"'\\;") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// unitEscape escapes systemd's specifiers in free text and keeps it on one
// line.
func unitEscape(s string) string {
	return strings.NewReplacer("%", "%%", "\n", " ").Replace(s)
}
