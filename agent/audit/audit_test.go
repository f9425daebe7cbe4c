package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// The test patients. Their names and birth dates must never reach a file.
type patient struct{ family, given, birthDate string }

var (
	quixote = patient{"Quixote", "Dulcinea", "1961-07-23"}
	panza   = patient{"Panza", "Sancho", "1955-02-11"}
)

func (p patient) ref() string { return PatientRef(testKey, p.family, p.given, p.birthDate) }

func openLog(t *testing.T, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// fill appends n records: mostly lookups alternating between the two
// patients, with a security event every fifth. It returns the seqs of
// each patient's lookups.
func fill(t *testing.T, l *Log, n int) map[patient][]uint64 {
	t.Helper()
	seqs := map[patient][]uint64{}
	for i := range n {
		r := Record{Type: TypeLookup, Caller: "uid:1000", Registration: "dr-adams", Responder: "state-a",
			RequestID: fmt.Sprintf("%032x", i), JobID: fmt.Sprintf("job-%d", i), Outcome: "ok", HTTPStatus: 200,
			Counts: map[string]int{"MedicationDispense": i % 4, "Patient": 1}, DurationMS: int64(100 + i)}
		p := []patient{quixote, panza}[i%2]
		if i%5 == 4 {
			r = Record{Type: TypeSecurity, Caller: "tcp-credential", Event: "origin-refused", Outcome: "refused", Detail: "token not sent: wrong origin"}
		} else {
			r.Patient = p.ref()
		}
		if err := l.Append(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		if r.Patient != "" {
			seqs[p] = append(seqs[p], uint64(i+1))
		}
	}
	return seqs
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	names, err := logFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestAppendRotateVerify(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{MaxSize: 2048})
	fill(t, l, 60)
	names := files(t, dir)
	if len(names) < 4 {
		t.Fatalf("want rotation into several files, got %d", len(names))
	}
	for i, name := range names {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 2048 {
			t.Errorf("%s is %d bytes, over MaxSize", name, fi.Size())
		}
		if runtime.GOOS != "windows" && fi.Mode().Perm()&^0o640 != 0 {
			t.Errorf("%s has mode %v, more open than 0640", name, fi.Mode().Perm())
		}
		var h header
		first, _, _ := strings.Cut(read(t, dir, name), "\n")
		if err := json.Unmarshal([]byte(first), &h); err != nil {
			t.Fatal(err)
		}
		want := ""
		if i > 0 {
			want = names[i-1]
		}
		if h.PrevFile != want {
			t.Errorf("%s header names %q as previous file, want %q", name, h.PrevFile, want)
		}
	}
	rep, err := Verify(dir)
	if err != nil || rep.Records != 60 || rep.Seq != 60 || rep.Files != len(names) {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
	if !strings.Contains(rep.String(), "OK, 60 records") {
		t.Errorf("Report.String() = %q", rep.String())
	}
	if seq, head := l.Head(); seq != rep.Seq || head != rep.Head {
		t.Errorf("Head() = %d %s, Verify head %d %s", seq, head, rep.Seq, rep.Head)
	}

	// A new Log continues the chain in the same file.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, Options{MaxSize: 2048})
	fill(t, l, 10)
	if rep, err := Verify(dir); err != nil || rep.Seq != 70 {
		t.Fatalf("after reopening: Verify = %+v, %v", rep, err)
	}
}

func TestAgeRotation(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{MaxAge: time.Nanosecond})
	fill(t, l, 3)
	if n := len(files(t, dir)); n != 3 {
		t.Errorf("%d files, want one per record", n)
	}
	if _, err := Verify(dir); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lines splits a file into lines without their newlines.
func lines(t *testing.T, dir, name string) []string {
	return strings.Split(strings.TrimSuffix(read(t, dir, name), "\n"), "\n")
}

func writeLines(t *testing.T, dir, name string, ls []string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(ls, "\n")+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
}

func seqOf(t *testing.T, line string) uint64 {
	t.Helper()
	var r Record
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatal(err)
	}
	return r.Seq
}

func TestVerifyDetectsTampering(t *testing.T) {
	pristine := t.TempDir()
	l := openLog(t, pristine, Options{MaxSize: 2048})
	fill(t, l, 40)
	l.Close()
	names := files(t, pristine)
	if len(names) < 3 {
		t.Fatalf("need at least 3 files, got %d", len(names))
	}
	mid, last := names[1], names[len(names)-1]

	// Each tamper changes dir and returns where Verify must report the
	// first bad record.
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string) Break
		reason string
	}{
		{"alter a field", func(t *testing.T, dir string) Break {
			ls := lines(t, dir, mid)
			var r Record
			json.Unmarshal([]byte(ls[2]), &r)
			r.Outcome = "tampered"
			b, _ := json.Marshal(r)
			ls[2] = string(b)
			writeLines(t, dir, mid, ls)
			return Break{File: mid, Line: 3, Seq: r.Seq}
		}, "record altered"},
		{"alter a field and recompute its hash", func(t *testing.T, dir string) Break {
			ls := lines(t, dir, mid)
			var r Record
			json.Unmarshal([]byte(ls[2]), &r)
			r.Caller = "uid:0"
			canon, _ := canonical(r)
			r.Hash = chainHash(r.Prev, canon)
			b, _ := json.Marshal(r)
			ls[2] = string(b)
			writeLines(t, dir, mid, ls)
			return Break{File: mid, Line: 4, Seq: seqOf(t, ls[3])}
		}, "replaced"},
		{"alter the JSON without changing values", func(t *testing.T, dir string) Break {
			ls := lines(t, dir, mid)
			ls[2] = strings.Replace(ls[2], `"seq":`, `"seq": `, 1)
			writeLines(t, dir, mid, ls)
			return Break{File: mid, Line: 3, Seq: seqOf(t, ls[1]) + 1}
		}, "canonical"},
		{"delete a record", func(t *testing.T, dir string) Break {
			ls := lines(t, dir, mid)
			seq := seqOf(t, ls[3])
			writeLines(t, dir, mid, slices.Delete(ls, 2, 3))
			return Break{File: mid, Line: 3, Seq: seq}
		}, "deleted"},
		{"reorder two records", func(t *testing.T, dir string) Break {
			ls := lines(t, dir, mid)
			ls[2], ls[3] = ls[3], ls[2]
			writeLines(t, dir, mid, ls)
			return Break{File: mid, Line: 3, Seq: seqOf(t, ls[2])}
		}, "reordered"},
		{"replay a record", func(t *testing.T, dir string) Break {
			ls := lines(t, dir, mid)
			seq := seqOf(t, ls[2])
			writeLines(t, dir, mid, slices.Insert(ls, 3, ls[2]))
			return Break{File: mid, Line: 4, Seq: seq}
		}, "duplicated"},
		{"delete the last record of a file", func(t *testing.T, dir string) Break {
			ls := lines(t, dir, mid)
			seq := seqOf(t, ls[len(ls)-1])
			writeLines(t, dir, mid, ls[:len(ls)-1])
			return Break{File: names[2], Line: 1, Seq: seq}
		}, "deleted from the end of " + mid},
		{"delete a middle file", func(t *testing.T, dir string) Break {
			first := seqOf(t, lines(t, dir, mid)[1])
			os.Remove(filepath.Join(dir, mid))
			return Break{File: names[2], Line: 1, Seq: first}
		}, mid + " is missing"},
		{"delete the first file", func(t *testing.T, dir string) Break {
			os.Remove(filepath.Join(dir, names[0]))
			return Break{File: mid, Line: 1, Seq: 1}
		}, names[0] + " is missing"},
		{"truncate the last line", func(t *testing.T, dir string) Break {
			b := read(t, dir, last)
			ls := lines(t, dir, last)
			os.WriteFile(filepath.Join(dir, last), []byte(b[:len(b)-30]), 0o640)
			return Break{File: last, Line: len(ls), Seq: seqOf(t, ls[len(ls)-1])}
		}, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS(pristine)); err != nil {
				t.Fatal(err)
			}
			want := tt.tamper(t, dir)
			rep, err := Verify(dir)
			var b *Break
			if !errors.As(err, &b) {
				t.Fatalf("Verify error = %v, want a *Break", err)
			}
			if b != rep.Break || b.File != want.File || b.Line != want.Line || b.Seq != want.Seq {
				t.Errorf("break at %s line %d seq %d, want %s line %d seq %d", b.File, b.Line, b.Seq, want.File, want.Line, want.Seq)
			}
			if !strings.Contains(b.Reason, tt.reason) {
				t.Errorf("reason %q does not say %q", b.Reason, tt.reason)
			}
			if s := rep.String(); !strings.Contains(s, "BROKEN at "+want.File) {
				t.Errorf("Report.String() = %q", s)
			}
		})
	}
}

func TestOpenAfterDamage(t *testing.T) {
	t.Run("torn last line", func(t *testing.T) {
		dir := t.TempDir()
		l := openLog(t, dir, Options{})
		fill(t, l, 5)
		l.Close()
		name := files(t, dir)[0]
		b := read(t, dir, name)
		os.WriteFile(filepath.Join(dir, name), []byte(b[:len(b)-10]), 0o640)

		l = openLog(t, dir, Options{})
		if err := l.Append(context.Background(), Record{Type: TypeConfig, Event: "config-applied"}); err != nil {
			t.Fatal(err)
		}
		names := files(t, dir)
		if len(names) != 2 {
			t.Fatalf("want a new file after the torn one, got %v", names)
		}
		ls := lines(t, dir, names[1])
		var r Record
		json.Unmarshal([]byte(ls[1]), &r)
		if r.Type != TypeSecurity || r.Event != "audit-log-damaged" || r.Seq != 5 {
			t.Errorf("first record after the damage = %+v", r)
		}
		_, err := Verify(dir)
		var br *Break
		if !errors.As(err, &br) || br.File != name || br.Line != 6 || !strings.Contains(br.Reason, "truncated") {
			t.Errorf("Verify = %v, want the torn line reported", err)
		}
	})
	t.Run("empty newest file", func(t *testing.T) {
		dir := t.TempDir()
		l := openLog(t, dir, Options{})
		fill(t, l, 3)
		l.Close()
		empty := fileName(time.Now().Add(time.Hour))
		os.WriteFile(filepath.Join(dir, empty), nil, 0o640)

		l = openLog(t, dir, Options{})
		fill(t, l, 1)
		if seq, _ := l.Head(); seq != 5 {
			t.Errorf("head seq %d, want 5 (3 records, the damage event, 1 more)", seq)
		}
		_, err := Verify(dir)
		var br *Break
		if !errors.As(err, &br) || br.File != empty || br.Line != 1 {
			t.Errorf("Verify = %v, want the empty file reported", err)
		}
	})
}

func TestSearch(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{MaxSize: 4096})
	want := fill(t, l, 30)

	got, err := Search(dir, testKey, "  QUIXOTE ", "dulcinea", " 1961-07-23")
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, r := range got {
		seqs = append(seqs, r.Seq)
	}
	if !slices.Equal(seqs, want[quixote]) {
		t.Errorf("Search found seqs %v, want %v", seqs, want[quixote])
	}

	wrongKey := bytes.Repeat([]byte{1}, KeySize)
	if got, err := Search(dir, wrongKey, quixote.family, quixote.given, quixote.birthDate); err != nil || len(got) != 0 {
		t.Errorf("Search with the wrong key = %d records, %v", len(got), err)
	}
	if got, _ := Search(dir, testKey, "Quixote", "Dulcinea", "1961-07-24"); len(got) != 0 {
		t.Errorf("Search for another birth date found %d records", len(got))
	}
	if _, err := Search(dir, testKey[:16], "a", "b", "c"); err == nil {
		t.Error("Search accepted a 16-byte key")
	}

	// Nothing in the directory discloses who was looked up.
	for _, name := range files(t, dir) {
		content := strings.ToLower(read(t, dir, name))
		for _, p := range []patient{quixote, panza} {
			for _, s := range []string{p.family, p.given, p.birthDate, strings.ReplaceAll(p.birthDate, "-", "")} {
				if strings.Contains(content, strings.ToLower(s)) {
					t.Errorf("%s contains %q", name, s)
				}
			}
		}
	}
}

func TestPatientRef(t *testing.T) {
	a := PatientRef(testKey, "Doe", "John", "1970-01-01")
	if b := PatientRef(testKey, " DOE", "john\t", "1970-01-01 "); a != b {
		t.Error("normalisation: case and surrounding space change the reference")
	}
	if b := PatientRef(testKey, "Doe", "John  Paul", "1970-01-01"); b != PatientRef(testKey, "doe", "john paul", "1970-01-01") {
		t.Error("normalisation: inner white space changes the reference")
	}
	if b := PatientRef(bytes.Repeat([]byte{9}, 32), "Doe", "John", "1970-01-01"); a == b {
		t.Error("the key does not change the reference")
	}
	if !isRef(a) {
		t.Errorf("PatientRef = %q, not 64 lowercase hex digits", a)
	}
	defer func() {
		if recover() == nil {
			t.Error("PatientRef accepted an empty key")
		}
	}()
	PatientRef(nil, "Doe", "John", "1970-01-01")
}

func TestAppendRejects(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{})
	ctx := context.Background()
	if err := l.Append(ctx, Record{Type: "lookups"}); err == nil {
		t.Error("unknown type accepted")
	}
	err := l.Append(ctx, Record{Type: TypeLookup, Patient: "Quixote|Dulcinea|1961-07-23"})
	if err == nil || strings.Contains(err.Error(), "Quixote") {
		t.Errorf("a patient identity in Patient: err = %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Append(cancelled, Record{Type: TypeConfig}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v", err)
	}
	if err := l.Append(ctx, Record{Type: TypeConfig, Detail: strings.Repeat("é", MaxDetail)}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := l.Append(ctx, Record{Type: TypeConfig}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: err = %v", err)
	}
	var r Record
	json.Unmarshal([]byte(lines(t, dir, files(t, dir)[0])[1]), &r)
	if r.Seq != 1 || len(r.Detail) > MaxDetail || !strings.HasPrefix(r.Detail, "éé") || strings.ContainsRune(r.Detail, '\uFFFD') {
		t.Errorf("stored record %d, detail %d bytes %q", r.Seq, len(r.Detail), r.Detail)
	}
}

func TestConcurrentAppend(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{MaxSize: 4096})
	const writers, each = 8, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				err := l.Append(context.Background(), Record{Type: TypeLookup, Caller: fmt.Sprintf("uid:%d", 1000+w),
					JobID: fmt.Sprintf("%d-%d", w, i), Patient: quixote.ref(), Outcome: "ok"})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	rep, err := Verify(dir)
	if err != nil || rep.Records != writers*each {
		t.Fatalf("Verify = %+v, %v", rep, err)
	}
}

func TestExportAuditEvents(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{})
	ctx := context.Background()
	recs := []Record{
		{Type: TypeLookup, Caller: "uid:1000", Registration: "dr-adams", Responder: "state-a", RequestID: "4f1c",
			JobID: "j-1", Outcome: "done", HTTPStatus: 200, Counts: map[string]int{"MedicationDispense": 3}, DurationMS: 1500,
			Patient: quixote.ref()},
		{Type: TypeSecurity, Caller: "sid:S-1-5-21-1", Event: "origin-refused", Outcome: "refused"},
		{Type: TypeLookup, Caller: "uid:1000", Responder: "state-a", Outcome: "error", HTTPStatus: 503, Patient: panza.ref()},
		{Type: TypeKey, Event: "key-rotated"},
	}
	for _, r := range recs {
		if err := l.Append(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := ExportAuditEvents(dir, &buf); err != nil {
		t.Fatal(err)
	}
	if s := strings.ToLower(buf.String()); strings.Contains(s, "quixote") || strings.Contains(s, "1961") {
		t.Error("export discloses the patient")
	}
	out := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(out) != len(recs) {
		t.Fatalf("%d events, want %d", len(out), len(recs))
	}
	var events []auditEvent
	for _, line := range out {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %v: %s", err, line)
		}
		for _, k := range []string{"resourceType", "id", "type", "action", "recorded", "outcome", "agent", "source"} {
			if _, ok := m[k]; !ok {
				t.Errorf("event lacks %s: %s", k, line)
			}
		}
		var e auditEvent
		json.Unmarshal([]byte(line), &e)
		events = append(events, e)
	}

	e := events[0]
	if e.ResourceType != "AuditEvent" || e.Type.Code != "rest" || e.Type.System != sysEventType || e.Action != "E" || e.Outcome != "0" {
		t.Errorf("lookup event = %+v", e)
	}
	if !slices.ContainsFunc(e.Subtype, func(c coding) bool { return c.Code == "pdmp-history" }) {
		t.Errorf("lookup subtype = %+v", e.Subtype)
	}
	if _, err := time.Parse(time.RFC3339Nano, e.Recorded); err != nil || e.Period == nil {
		t.Errorf("recorded %q (%v), period %+v", e.Recorded, err, e.Period)
	}
	if a := e.Agent[0]; !a.Requestor || a.Who.Identifier.Value != "uid:1000" {
		t.Errorf("requesting agent = %+v", a)
	}
	if e.Source.Observer.Display != "pdmp-agent" {
		t.Errorf("source = %+v", e.Source)
	}
	if p := e.Entity[0]; p.What.Identifier.System != SysPatientRef || p.What.Identifier.Value != quixote.ref() || p.Role.Code != "1" {
		t.Errorf("patient entity = %+v", p)
	}
	if q := e.Entity[1]; q.What.Identifier.Value != "4f1c" || !slices.Contains(q.Detail, entityDetail{"count:MedicationDispense", "3"}) {
		t.Errorf("query entity = %+v", q)
	}
	for i, want := range []struct{ typ, outcome string }{{"rest", "0"}, {"110113", "4"}, {"rest", "8"}, {"110113", "0"}} {
		if events[i].Type.Code != want.typ || events[i].Outcome != want.outcome {
			t.Errorf("event %d: type %s outcome %s, want %s %s", i, events[i].Type.Code, events[i].Outcome, want.typ, want.outcome)
		}
	}
}

// BenchmarkAppend measures one durable append (an fsync per record).
func BenchmarkAppend(b *testing.B) {
	l, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	r := Record{Type: TypeLookup, Caller: "uid:1000", Registration: "dr-adams", Responder: "state-a",
		RequestID: "4bf92f3577b34da6a3ce929d0e0e4736", Outcome: "ok", HTTPStatus: 200,
		Counts: map[string]int{"MedicationDispense": 3}, DurationMS: 840, Patient: quixote.ref()}
	for b.Loop() {
		if err := l.Append(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}
