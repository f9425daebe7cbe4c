package queue

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fill inserts n jobs straight into the file in transactions of 10,000, as
// a backlog would look, without paying one fsync per job. The jobs were
// submitted a millisecond apart, are due at once, oldest first, and are
// spread over three responders; shape may adjust each record before it is
// stored.
func fill(tb testing.TB, q *Queue, n int, body []byte, shape func(i int, r *record)) {
	tb.Helper()
	const perTx = 10000
	now := q.now()
	start := now.Add(-time.Duration(n) * time.Millisecond)
	for from := 0; from < n; from += perTx {
		var changes []change
		err := q.db.Update(func(tx *bolt.Tx) error {
			for i := from; i < min(n, from+perTx); i++ {
				at := start.Add(time.Duration(i) * time.Millisecond)
				ns := at.UnixNano()
				r := record{
					ID:        newID(at),
					Responder: fmt.Sprintf("state-%d", i%3),
					RequestID: randomHex(16),
					Labels:    map[string]string{"registration": "clinic-1", "operation": "lookup"},
					State:     Queued,
					Created:   ns, Updated: ns, Next: ns, Since: ns,
				}
				if shape != nil {
					shape(i, &r)
				}
				if r.IdemKey != "" {
					if err := tx.Bucket(bucketIdem).Put([]byte(r.IdemKey), []byte(r.ID)); err != nil {
						return err
					}
				}
				if err := tx.Bucket(bucketBodies).Put([]byte(r.ID), q.seal(kindRequest, r.ID, body)); err != nil {
					return err
				}
				if err := q.put(tx, nil, &r); err != nil {
					return err
				}
				changes = append(changes, change{id: r.ID, responder: r.Responder, to: r.State})
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
		q.commit(changes)
	}
}

// benchBody is a request body of typical size: a FHIR Parameters resource
// with demographics is about a kilobyte.
var benchBody = make([]byte, 1024)

// BenchmarkSubmit measures durable submissions (fsync on, on the real disk
// under the test's temp dir) with 1, 16 and 64 concurrent submitters.
func BenchmarkSubmit(b *testing.B) {
	for _, submitters := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("submitters=%d", submitters), func(b *testing.B) {
			q, _ := openTest(b, Options{DataKey: testKey, Logger: quietLogger()})
			ctx := context.Background()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range submitters {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if _, _, err := q.Submit(ctx, Request{Responder: "state-a", Body: benchBody}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "submits/s")
		})
	}
}

// BenchmarkPick measures choosing the next due jobs with 0, 10k and 100k
// jobs queued: one seek per responder, whatever the backlog.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{0, 10_000, 100_000} {
		b.Run(fmt.Sprintf("queued=%d", n), func(b *testing.B) {
			q, _ := openTest(b, Options{DataKey: testKey, Logger: quietLogger()})
			fill(b, q, n, benchBody, nil)
			r := &runner{q: q, responders: map[string]*responder{}}
			now := q.now()
			b.ResetTimer()
			for b.Loop() {
				cands, _, err := r.pick(now)
				if err != nil || (n > 0 && len(cands) == 0) {
					b.Fatal(len(cands), err)
				}
			}
		})
	}
}

const (
	footprintEnv = "PDMP_QUEUE_FOOTPRINT_DB"
	footprintN   = 100_000
)

// BenchmarkFootprint100k reports the file size of 100k queued jobs and the
// resident memory of a fresh process that opened it and picked due jobs.
func BenchmarkFootprint100k(b *testing.B) {
	path := filled100k(b)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	var anon, file, heap float64
	for b.Loop() {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFootprintChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), footprintEnv+"="+path)
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("child: %v\n%s", err, out)
		}
		if _, err := fmt.Sscanf(string(out), "RSS-ANON %g RSS-FILE %g HEAP %g", &anon, &file, &heap); err != nil {
			b.Fatalf("child said %q: %v", out, err)
		}
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "file-MiB")
	b.ReportMetric(anon/(1<<20), "rss-anon-MiB")
	b.ReportMetric(file/(1<<20), "rss-file-MiB")
	b.ReportMetric(heap/(1<<20), "heap-MiB")
}

// TestFootprintChild is the child side of BenchmarkFootprint100k.
func TestFootprintChild(t *testing.T) {
	path := os.Getenv(footprintEnv)
	if path == "" {
		t.Skip("helper process for BenchmarkFootprint100k")
	}
	q, err := Open(path, Options{DataKey: testKey, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	r := &runner{q: q, responders: map[string]*responder{}}
	if cands, _, err := r.pick(q.now()); err != nil || len(cands) == 0 {
		t.Fatal(len(cands), err)
	}
	if stats, err := q.Stats(context.Background()); err != nil || stats[Queued] != footprintN {
		t.Fatal(stats, err)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("RSS-ANON %d RSS-FILE %d HEAP %d\n", procStatus(t, "RssAnon"), procStatus(t, "RssFile"), ms.HeapInuse)
}

// BenchmarkOpen100k measures restart-to-ready: Open (which checks every
// record and rebuilds the counters) of a file with 100k queued jobs.
func BenchmarkOpen100k(b *testing.B) {
	path := filled100k(b)
	for b.Loop() {
		q, err := Open(path, Options{DataKey: testKey, Logger: quietLogger()})
		if err != nil {
			b.Fatal(err)
		}
		q.Close()
	}
}

// filled100k returns a closed queue file holding 100k queued jobs.
func filled100k(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "queue.db")
	q, err := Open(path, Options{DataKey: testKey, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	fill(b, q, footprintN, benchBody, nil)
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	b.Logf("filled %d jobs in %v", footprintN, time.Since(start))
	return path
}

// procStatus returns a memory figure of this process from
// /proc/self/status in bytes: RssAnon is the process's own memory, RssFile
// the pages of mapped files (the bbolt file) it has touched, which the
// kernel can drop and reload at will.
func procStatus(t *testing.T, field string) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc: resident size unknown on this system")
	}
	for line := range strings.Lines(string(data)) {
		if kb, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
