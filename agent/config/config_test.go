package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGoodConfig(t *testing.T) {
	c, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Responders) != 2 || len(c.Registrations) != 3 {
		t.Fatalf("got %d responders, %d registrations", len(c.Responders), len(c.Registrations))
	}
	tests := []struct{ name, got, want string }{
		{"default scope", c.Responders[1].Scope, DefaultScope},
		{"default alg", c.Registrations[0].Alg, "ES384"},
		{"default tls", c.Responders[1].TLS.MinVersion, "1.2"},
		{"explicit alg", c.Registrations[1].Alg, "RS384"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if got := c.Responders[0].Timeout.D(DefaultTimeout); got != 20*time.Second {
		t.Errorf("timeout = %v", got)
	}
	if got := c.Registrations[0].AssertionLifetime.D(DefaultAssertionLifetime); got != 4*time.Minute {
		t.Errorf("default assertion lifetime = %v", got)
	}
}

// TestBadConfigs runs every testdata/bad-*.yaml; its first line says
// "# want: LINE:COL message" (or "# want: message" when no position fits).
func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad-*.yaml")
	if len(files) < 15 {
		t.Fatalf("only %d bad-config fixtures", len(files))
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want := strings.TrimSpace(strings.TrimPrefix(first, "# want:"))
			_, err = Parse(f, data)
			if err == nil {
				t.Fatal("accepted")
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %T is not config.Errors", err)
			}
			got := errs[0].Error()
			if !strings.HasPrefix(got, f+":") {
				t.Errorf("error %q does not start with the file name", got)
			}
			if !strings.Contains(got, want) {
				t.Errorf("error\n  %s\nwant it to contain\n  %s", got, want)
			}
		})
	}
}

func TestEmptyFile(t *testing.T) {
	_, err := Parse("empty.yaml", nil)
	if err == nil || !strings.Contains(err.Error(), "at least one registration") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/good.yaml", "testdata/bad-syntax.yaml", "testdata/bad-unknown-field.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("fuzz.yaml", b)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c != nil, err)
		}
	})
}
