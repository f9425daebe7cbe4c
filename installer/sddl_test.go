package installer

import (
	"strings"
	"testing"
)

func TestServiceSID(t *testing.T) {
	// The well-known SID of NT SERVICE\TrustedInstaller; case does not
	// matter.
	const want = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
	for _, name := range []string{"TrustedInstaller", "trustedinstaller"} {
		if got := serviceSID(name); got != want {
			t.Errorf("serviceSID(%q) = %s, want %s", name, got, want)
		}
	}
}

func TestSecurityDescriptors(t *testing.T) {
	const svc, group = "S-1-5-80-1", "S-1-5-21-9-1001"
	configDir, config, state := securityDescriptors(svc, group)
	for _, sd := range []string{configDir, config, state} {
		// Owned by Administrators, protected, SYSTEM and Administrators
		// in full control.
		if !strings.HasPrefix(sd, "O:BAD:PAI(A;") || !strings.Contains(sd, "FA;;;SY)") || !strings.Contains(sd, "FA;;;BA)") {
			t.Errorf("%s: not protected, owned and administered as intended", sd)
		}
	}
	checks := []struct {
		sd, want string
		has      bool
	}{
		{configDir, "(A;OICI;FR;;;" + svc + ")", true},
		{configDir, group, false}, // callers read the file, not the directory's other files
		{config, "(A;;FR;;;" + svc + ")", true},
		{config, "(A;;FR;;;" + group + ")", true},
		{state, "(A;OICI;0x1301bf;;;" + svc + ")", true},
		{state, group, false},
	}
	for _, c := range checks {
		if strings.Contains(c.sd, c.want) != c.has {
			t.Errorf("%s: contains %s = %v, want %v", c.sd, c.want, !c.has, c.has)
		}
	}
}
