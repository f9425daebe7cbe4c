package ipc

import (
	"errors"
	"strings"
	"testing"
)

// fakeSIDs is a SIDLookup over a map, standing in for LookupAccountName.
type fakeSIDs map[string]string

func (f fakeSIDs) LookupSID(account string) (string, error) {
	if sid, ok := f[strings.ToLower(account)]; ok {
		return sid, nil
	}
	return "", errors.New("no such account")
}

func TestPipeSDDL(t *testing.T) {
	sids := fakeSIDs{
		"pdmp-agent-users": "S-1-5-21-1004336348-1177238915-682003330-1013",
		"ehr":              "S-1-5-21-1004336348-1177238915-682003330-1014",
		"evil":             "BA)(A;;GA;;;WD",
	}
	const base = "D:P(D;;GA;;;NU)(A;;GA;;;SY)(A;;GA;;;BA)"
	for _, c := range []struct {
		accounts []string
		want     string
	}{
		{nil, base},
		{[]string{DefaultPipeGroup}, base + "(A;;0x12019b;;;S-1-5-21-1004336348-1177238915-682003330-1013)"},
		{[]string{"pdmp-agent-users", "ehr", "PDMP-AGENT-USERS"}, base +
			"(A;;0x12019b;;;S-1-5-21-1004336348-1177238915-682003330-1013)(A;;0x12019b;;;S-1-5-21-1004336348-1177238915-682003330-1014)"},
		{[]string{"s-1-5-32-545"}, base + "(A;;0x12019b;;;S-1-5-32-545)"},
	} {
		got, err := PipeSDDL(sids, c.accounts...)
		if err != nil {
			t.Fatalf("%q: %v", c.accounts, err)
		}
		if got != c.want {
			t.Errorf("PipeSDDL(%q)\n got %s\nwant %s", c.accounts, got, c.want)
		}
		// The deny ACE must come first to take effect.
		if !strings.HasPrefix(got, "D:P(D;;GA;;;NU)") {
			t.Errorf("%s: NETWORK deny is not first", got)
		}
		// GENERIC_WRITE (GW, GA) would include FILE_CREATE_PIPE_INSTANCE.
		if strings.Count(got, "GA") != 3 || strings.Contains(got, "GW") {
			t.Errorf("%s: callers may create pipe instances", got)
		}
	}
	for _, bad := range []string{"nobody", "evil", "S-1-5-32-545)(A;;GA;;;WD", "S-1-"} {
		if got, err := PipeSDDL(sids, bad); err == nil {
			t.Errorf("PipeSDDL(%q) = %s, want an error", bad, got)
		}
	}
}

func TestCheckPipeName(t *testing.T) {
	for name, ok := range map[string]bool{
		DefaultPipeName: true,
		`\\.\pipe\protectedprefix\administrators\pdmp-agent\api`:              true, // case-insensitive
		`\\.\pipe\ProtectedPrefix\Administrators\x`:                           true,
		`\\.\pipe\pdmp-agent\api`:                                             false, // squattable
		`\\.\pipe\ProtectedPrefix\LocalService\pdmp-agent`:                    false,
		`\\server\pipe\ProtectedPrefix\Administrators\x`:                      false,
		`\\.\pipe\ProtectedPrefix\Administrators\`:                            false,
		`\\.\pipe\ProtectedPrefix\Administrators\x\`:                          false,
		`\\.\pipe\ProtectedPrefix\Administrators\a\\b`:                        false,
		`\\.\pipe\ProtectedPrefix\Administrators\a/b`:                         false,
		`\\.\pipe\ProtectedPrefix\Administrators\` + strings.Repeat("x", 250): false,
		"": false,
	} {
		if err := CheckPipeName(name); (err == nil) != ok {
			t.Errorf("CheckPipeName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}
