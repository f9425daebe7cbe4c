package agent

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestImportDirection keeps the house's arrows: cmd → agent/installer →
// ipc, queue, vault; those three never import agent or each other; vault
// imports nothing of ours; and only the demo and the benchmark use the
// sandbox outside tests.
func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "github.com/pdmp-agent/pdmp-agent/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/pdmp-agent/pdmp-agent/"
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		seen++
		pkg := strings.TrimPrefix(p.ImportPath, mod)
		top, _, _ := strings.Cut(pkg, "/")
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, mod) {
				continue
			}
			dep := strings.TrimPrefix(imp, mod)
			depTop, _, _ := strings.Cut(dep, "/")
			switch {
			case top == "vault" && depTop != "vault":
				t.Errorf("%s imports %s: vault imports nothing of ours", pkg, dep)
			case (top == "queue" || top == "ipc") && depTop != top:
				t.Errorf("%s imports %s: %s must not import other packages of ours", pkg, dep, top)
			case top == "installer" && depTop != "installer":
				t.Errorf("%s imports %s: the installer runs what it is given", pkg, dep)
			case dep == "agent/pdmptest" && pkg != "agent/cli" && pkg != "agent/bench":
				t.Errorf("%s imports the sandbox; only the demo and the benchmark may", pkg)
			case depTop == "agent" && top != "agent" && top != "cmd":
				t.Errorf("%s imports %s: nothing below agent may", pkg, dep)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list found only %d packages", seen)
	}
}
