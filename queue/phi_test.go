package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestNoPHIAtRest runs jobs whose requests and results carry recognizable
// patient data through every way a body is stored (done, delivered once,
// failed, dead, retried), then searches the raw file for that data.
func TestNoPHIAtRest(t *testing.T) {
	phi := []string{"Fakename Hollowell", "1987-03-14", "Quillon Abernathy-Voss", "1954-11-02", "MRN-99812377"}
	// A clear-text label the agent needs: it must be found, which proves
	// the search would see clear text were it there.
	const marker = "registration-marker-5ce1"

	opts := testOptions()
	var logs logBuffer
	opts.Logger = logs.logger()
	q, path := openTest(t, opts)
	ctx := context.Background()
	run(t, q, func(ctx context.Context, j Job) Outcome {
		result := []byte(fmt.Sprintf(`{"resourceType":"Bundle","patient":%q,"dispensed":["oxycodone"]}`, j.Body))
		switch j.Labels["mode"] {
		case "fail":
			return Outcome{Err: errors.New("rejected"), Permanent: true, Status: 422, Result: result}
		case "dead":
			return Outcome{Err: errors.New("unavailable"), Status: 503, Result: result}
		}
		return Outcome{Result: result, Status: 200}
	})

	var ids []string
	for i, mode := range []string{"ok", "ok", "fail", "dead", "once"} {
		body := fmt.Sprintf(`{"name":%q,"birthDate":%q,"identifier":%q,"other":%q}`,
			phi[0], phi[1], phi[4], phi[2]+" "+phi[3])
		r := Request{
			Responder:      "state-a",
			IdempotencyKey: fmt.Sprintf("req-%d", i),
			Body:           []byte(body),
			Labels:         map[string]string{"registration": marker, "mode": mode},
		}
		if mode == "once" {
			r.ResultPolicy = DeliverOnce
		}
		ids = append(ids, submit(t, q, r).ID)
	}
	for _, id := range ids {
		j := wait(t, q, id)
		if !bytes.Contains(j.Result, []byte(phi[0])) {
			t.Fatalf("job %s (%s) result lacks the test data", id, j.State)
		}
	}
	if _, err := q.Deliver(ctx, ids[4], nil); err != nil {
		t.Fatal(err)
	}
	// A retried dead job goes through its sealed body again.
	if err := q.Retry(ctx, ids[3]); err != nil {
		t.Fatal(err)
	}
	wait(t, q, ids[3])
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(marker)) {
		t.Fatal("the clear-text marker is not in the file: the search is broken")
	}
	for _, s := range phi {
		for _, v := range []string{s, strings.ToUpper(s), strings.ToLower(s)} {
			if i := bytes.Index(raw, []byte(v)); i >= 0 {
				t.Errorf("%q found in the file at offset %d", v, i)
			}
		}
	}
	// Nor in the logs, which saw every transition at debug level.
	if !strings.Contains(logs.String(), "job dead-lettered") {
		t.Fatalf("expected transitions in the log, got:\n%s", logs.String())
	}
	for _, s := range phi {
		if strings.Contains(logs.String(), s) {
			t.Errorf("%q found in the log", s)
		}
	}
	// Nor in clear-text fragments a JSON body would leave.
	for _, s := range []string{"birthDate", "resourceType", "oxycodone"} {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("body fragment %q found in the file", s)
		}
	}
}
