//go:build linux

package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const diskFullEnv = "PDMP_QUEUE_DISKFULL_DB"

// TestDiskFullChild is the child side of TestDiskFull: it fills the queue
// under a file size limit (RLIMIT_FSIZE, which makes the kernel fail
// writes past it with EFBIG, as a full disk fails them with ENOSPC) until
// Submit fails, and reports what happened.
func TestDiskFullChild(t *testing.T) {
	path := os.Getenv(diskFullEnv)
	if path == "" {
		t.Skip("helper process for TestDiskFull")
	}
	say := func(format string, args ...any) { os.Stdout.WriteString(fmt.Sprintf(format, args...) + "\n") }
	q, err := Open(path, crashOptions())
	if err != nil {
		say("OPEN-ERROR %v", err)
		os.Exit(3)
	}
	ctx := context.Background()
	var ids []string
	for i := range 20 {
		j, _, err := q.Submit(ctx, Request{Responder: "a", Body: []byte(fmt.Sprintf("small-%d", i))})
		if err != nil {
			say("SUBMIT-ERROR %v", err)
			os.Exit(3)
		}
		ids = append(ids, j.ID)
		say("ACCEPTED %s small-%d", j.ID, i)
	}
	fi, err := os.Stat(path)
	if err != nil {
		say("STAT-ERROR %v", err)
		os.Exit(3)
	}
	// The limit is the file's current size: what fits in its free pages
	// may still be accepted, anything needing growth must fail.
	lim := syscall.Rlimit{Cur: uint64(fi.Size()), Max: ^uint64(0)}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		say("RLIMIT-ERROR %v", err)
		os.Exit(3)
	}
	big := bytes.Repeat([]byte("B"), 256<<10)
	for i := range 100 {
		j, _, err := q.Submit(ctx, Request{Responder: "a", Body: big})
		if err != nil {
			if errors.Is(err, ErrStorage) {
				say("STORAGE %v", err)
			} else {
				say("OTHER %v", err)
			}
			break
		}
		ids = append(ids, j.ID)
		say("ACCEPTED %s big-%d", j.ID, i)
	}
	for _, id := range ids {
		if _, err := q.Get(ctx, id); err != nil {
			say("LOST %s %v", id, err)
		}
	}
	q.Close()
	say("END")
}

// TestDiskFull checks that Submit on a full disk fails with ErrStorage and
// that everything accepted before stays intact.
func TestDiskFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "full.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestDiskFullChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), diskFullEnv+"="+path)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	accepted := map[string]string{}
	var storageErr string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.SplitN(line, " ", 3)
		switch f[0] {
		case "ACCEPTED":
			accepted[f[1]] = f[2]
		case "STORAGE":
			storageErr = line
		case "OTHER", "LOST":
			t.Errorf("child: %s", line)
		}
	}
	if storageErr == "" || !strings.Contains(string(out), "END") {
		t.Fatalf("child never hit ErrStorage:\n%s", out)
	}
	t.Logf("%d accepted, then %s", len(accepted), storageErr)

	checkBolt(t, path)
	q, err := Open(path, crashOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	for id, what := range accepted {
		j, err := q.Get(ctx, id)
		if err != nil {
			t.Fatalf("accepted job %s (%s): %v", id, what, err)
		}
		if strings.HasPrefix(what, "small") && string(j.Body) != what {
			t.Fatalf("job %s body %q, want %q", id, j.Body, what)
		}
	}
	stats, _ := q.Stats(ctx)
	if stats[Queued] != len(accepted) {
		t.Fatalf("stats %v, want %d queued", stats, len(accepted))
	}
	// With space back, the queue accepts again.
	submit(t, q, Request{Body: bytes.Repeat([]byte("B"), 256<<10)})
}
