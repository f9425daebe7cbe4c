package installer

import (
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf16"
)

// Windows security descriptors for what Install lays down, in SDDL. Each
// is protected ("P": nothing inherited from C:\ProgramData, whose ACL lets
// every user read and create) and owned by Administrators. SYSTEM and
// Administrators have full control everywhere; the service account reads
// the configuration directory and modifies the state directory; the API
// callers' group reads the configuration file and nothing else. Built
// here, apart from the Windows calls, so tests on any OS can read them.
const (
	// Inherited by the directory's files (OICI), so a passphrase file an
	// operator adds is readable by the service and no one else.
	sddlConfigDir = "O:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FR;;;%[1]s)"
	sddlConfig    = "O:BAD:PAI(A;;FA;;;SY)(A;;FA;;;BA)(A;;FR;;;%[1]s)(A;;FR;;;%[2]s)"
	// 0x1301bf is "Modify": read, write, execute and delete, but not
	// change permissions or take ownership.
	sddlStateDir = "O:BAD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1301bf;;;%[1]s)"
)

// securityDescriptors returns the SDDL for the configuration directory,
// the configuration file and the state directory, given the SIDs of the
// service account and the API callers' group.
func securityDescriptors(serviceSID, groupSID string) (configDir, config, stateDir string) {
	return fmt.Sprintf(sddlConfigDir, serviceSID),
		fmt.Sprintf(sddlConfig, serviceSID, groupSID),
		fmt.Sprintf(sddlStateDir, serviceSID)
}

// serviceSID computes the SID of the virtual account NT SERVICE\<name>:
// S-1-5-80 followed by the SHA-1 of the upper-cased name in UTF-16LE, read
// as five little-endian 32-bit sub-authorities. It is computed rather than
// looked up so that it is known before the service exists.
func serviceSID(name string) string {
	u := utf16.Encode([]rune(strings.ToUpper(name)))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	sum := sha1.Sum(b)
	var s strings.Builder
	s.WriteString("S-1-5-80")
	for i := 0; i < len(sum); i += 4 {
		fmt.Fprintf(&s, "-%d", binary.LittleEndian.Uint32(sum[i:]))
	}
	return s.String()
}
