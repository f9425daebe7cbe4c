package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The crash test runs this test binary again as a child that works a queue
// until it is SIGKILLed. The environment tells the child where the file is.
const (
	crashDBEnv    = "PDMP_QUEUE_CRASH_DB"
	crashCycleEnv = "PDMP_QUEUE_CRASH_CYCLE"
)

func crashOptions() Options {
	return Options{
		DataKey: testKey,
		Logger:  quietLogger(),
		Retry:   RetryPolicy{Base: time.Millisecond, Cap: 10 * time.Millisecond, MaxAttempts: 1000},
	}
}

func crashResult(j Job) []byte { return append([]byte("result for "), j.Body...) }

// TestCrashChild is the child side of TestCrashRecovery; it does nothing
// when run directly.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashDBEnv)
	if path == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	cycle := os.Getenv(crashCycleEnv)
	// One write(2) per line: pipe writes this short are atomic, so the
	// parent never sees half a line, even when the kill lands mid-print.
	say := func(format string, args ...any) { os.Stdout.WriteString(fmt.Sprintf(format, args...) + "\n") }

	q, err := Open(path, crashOptions())
	if err != nil {
		say("OPEN-ERROR %v", err)
		os.Exit(3)
	}
	ctx := context.Background()
	go q.Run(ctx, func(ctx context.Context, j Job) Outcome {
		say("HANDLED %s", j.ID)
		time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
		if rand.IntN(10) == 0 {
			return Outcome{Err: errors.New("flaky"), Status: 503}
		}
		return Outcome{Result: crashResult(j), Status: 200}
	})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				var key string
				switch n := rand.IntN(10); {
				case n < 4: // shared across submitters and cycles
					key = fmt.Sprintf("shared-%d", rand.IntN(50))
				case n < 7:
					key = fmt.Sprintf("c%s-w%d-%d", cycle, w, i)
				}
				j, _, err := q.Submit(ctx, Request{
					Responder:      fmt.Sprintf("state-%d", rand.IntN(3)),
					IdempotencyKey: key,
					Body:           []byte(fmt.Sprintf("c%s-w%d-%d", cycle, w, i)),
				})
				if err != nil {
					say("SUBMIT-ERROR %v", err)
					continue
				}
				if key == "" {
					key = "-"
				}
				say("ACCEPTED %s %s", j.ID, key)
			}
		})
	}
	wg.Wait()
}

// TestCrashRecovery SIGKILLs a child that submits and works jobs
// concurrently, at a random moment, many times over the same file, and
// checks after each crash that the file is consistent, every accepted job
// is there, no idempotency key maps to two jobs, and no job that was done
// runs again.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	const cycles = 25
	path := filepath.Join(t.TempDir(), "crash.db")
	accepted := map[string]string{} // id → idempotency key
	keyToID := map[string]string{}
	done := map[string]bool{} // done as of the end of an earlier cycle
	handledTotal := 0

	for cycle := range cycles {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDBEnv+"="+path, fmt.Sprintf("%s=%d", crashCycleEnv, cycle))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		linesc := make(chan []string)
		go func() {
			var lines []string
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
			linesc <- lines
		}()
		time.Sleep(time.Duration(100+rand.IntN(200)) * time.Millisecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		lines := <-linesc
		cmd.Wait()

		newAccepted := 0
		for _, line := range lines {
			f := strings.Fields(line)
			switch {
			case len(f) == 3 && f[0] == "ACCEPTED":
				id, key := f[1], f[2]
				if _, ok := accepted[id]; !ok {
					newAccepted++
				}
				accepted[id] = key
				if key == "-" {
					continue
				}
				if prev, ok := keyToID[key]; ok && prev != id {
					t.Fatalf("cycle %d: idempotency key %s accepted as %s and %s", cycle, key, prev, id)
				}
				keyToID[key] = id
			case len(f) == 2 && f[0] == "HANDLED":
				handledTotal++
				if done[f[1]] {
					t.Fatalf("cycle %d: job %s was done but ran again", cycle, f[1])
				}
			case strings.HasSuffix(line, "ERROR") || strings.Contains(line, "-ERROR "):
				t.Fatalf("cycle %d: child: %s", cycle, line)
			}
		}

		checkBolt(t, path)
		q, err := Open(path, crashOptions())
		if err != nil {
			t.Fatalf("cycle %d: reopen: %v", cycle, err)
		}
		ctx := context.Background()
		for id := range accepted {
			j, err := q.Get(ctx, id)
			if err != nil {
				t.Fatalf("cycle %d: accepted job %s: %v", cycle, id, err)
			}
			switch j.State {
			case Queued:
			case Done:
				if string(j.Result) != string(crashResult(j)) {
					t.Fatalf("cycle %d: job %s has result %q", cycle, id, j.Result)
				}
				done[id] = true
			default:
				t.Fatalf("cycle %d: job %s is %s after restart", cycle, id, j.State)
			}
		}
		jobs, err := q.List(ctx, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		byKey := map[string]string{}
		for _, j := range jobs {
			if j.IdempotencyKey == "" {
				continue
			}
			if prev, ok := byKey[j.IdempotencyKey]; ok {
				t.Fatalf("cycle %d: idempotency key %s has jobs %s and %s", cycle, j.IdempotencyKey, prev, j.ID)
			}
			byKey[j.IdempotencyKey] = j.ID
		}
		stats, _ := q.Stats(ctx)
		if stats[Inflight] != 0 || stats[StateQuarantined] != 0 || stats[Queued]+stats[Done] != len(jobs) {
			t.Fatalf("cycle %d: stats %v for %d jobs", cycle, stats, len(jobs))
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("cycle %d: %d lines, %d new accepted, %d jobs, %d done", cycle, len(lines), newAccepted, len(jobs), stats[Done])
	}
	if len(accepted) == 0 || len(done) == 0 {
		t.Fatalf("the child accepted %d and completed %d jobs: the test tested nothing", len(accepted), len(done))
	}
	t.Logf("%d cycles: %d jobs accepted, %d done, %d handler calls", cycles, len(accepted), len(done), handledTotal)
}

// checkBolt runs bbolt's consistency check on the file as the crash left it.
func checkBolt(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("bbolt open: %v", err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("bbolt check: %v", err)
	}
}
