// Package audit is the agent's HIPAA audit trail: an append-only log of
// JSON lines, one record per PDMP lookup and per security-relevant event,
// that lets a clinic show who looked up whom and when.
//
// The log holds no PHI. A patient appears only as [PatientRef], a keyed
// hash: the file alone discloses nothing, yet whoever holds the key (kept in
// the vault) can find a patient's lookups with [Search].
//
// Records are hash-chained: each carries the hash of the one before it, so
// [Verify] detects a record altered, deleted, inserted or moved, and a file
// removed from the middle. The chain cannot show that records were cut
// from the very end of the newest file; for that, keep the head reported by
// Verify (or [Log.Head]) somewhere else, such as a SIEM, and compare.
//
// # Files
//
// The log is a directory of files named audit-<UTC timestamp>.jsonl, in
// time order. Each starts with a header line that is not a record,
//
//	{"audit":"pdmp-agent/1","prev_file":"audit-20250101T000000.000000000Z.jsonl","prev_seq":41,"prev":"<hash of record 41>"}
//
// which names the file before it, so a deleted file is reported by name.
// Every further line is a [Record]; its hash is
//
//	hex(SHA-256(prev ‖ JSON of the record without "hash"))
//
// where the JSON is exactly the line as written minus the trailing hash
// member (encoding/json field order, sorted map keys), and prev is the hash
// of the record before it, or 64 zeros for the first record ever.
package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"
)

// Type says what a record is about.
type Type string

const (
	TypeLookup   Type = "lookup"   // a PDMP history request, whatever its outcome
	TypeSecurity Type = "security" // a refused or suspicious action (Record.Event says which)
	TypeConfig   Type = "config"   // configuration applied or refused
	TypeKey      Type = "key"      // key generated, rotated, published or retired
)

// Record is one audit entry. Append fills in Seq, Time, Prev and Hash; the
// caller fills in the rest. No field may hold PHI: the patient goes in
// Patient as a PatientRef, and Detail must be a short fixed phrase or a
// message known to be free of patient data (Append cuts it at MaxDetail
// bytes but cannot check what it says).
type Record struct {
	Seq          uint64    `json:"seq"`
	Time         time.Time `json:"time"` // UTC; JSON renders it RFC 3339 with nanoseconds
	Type         Type      `json:"type"`
	Caller       string    `json:"caller,omitempty"` // local identity: "uid:1000", "sid:S-1-5-…", "tcp-credential"
	Registration string    `json:"registration,omitempty"`
	Responder    string    `json:"responder,omitempty"`
	RequestID    string    `json:"request_id,omitempty"` // X-Request-ID sent to the responder
	JobID        string    `json:"job_id,omitempty"`
	// Outcome is a short status. ExportAuditEvents maps ok, done and success
	// to FHIR outcome 0; failed, refused, denied, cancelled, rejected and
	// not-found to 4; error, dead, timeout and unavailable to 8; crash and
	// panic to 12; anything else by HTTPStatus (2xx 0, 4xx 4, other 8),
	// and a record with neither to 0.
	Outcome    string         `json:"outcome,omitempty"`
	HTTPStatus int            `json:"http_status,omitempty"`
	Counts     map[string]int `json:"counts,omitempty"` // resource type → how many the answer held
	DurationMS int64          `json:"duration_ms,omitempty"`
	Patient    string         `json:"patient,omitempty"` // PatientRef, never the identity itself
	Event      string         `json:"event,omitempty"`   // for security, config and key records: "origin-refused", "key-rotated", …
	Detail     string         `json:"detail,omitempty"`
	Prev       string         `json:"prev"`
	Hash       string         `json:"hash,omitempty"`
}

// MaxDetail bounds Record.Detail, so that a careless caller cannot pour a
// response body into the log.
const MaxDetail = 256

// genesis is the prev of the first record ever written.
var genesis = strings.Repeat("0", 64)

// PatientRef is the keyed hash that stands for a patient in the log:
// hex(HMAC-SHA256(key, family|given|birthDate)), each part trimmed, inner
// runs of white space collapsed to one space, and lowercased, so "DOE " and
// "doe" give the same reference. key must be 32 bytes, from the vault;
// PatientRef panics otherwise, because a short or empty key would let
// anyone recompute references from a list of names and birth dates.
func PatientRef(key []byte, family, given, birthDate string) string {
	if len(key) != KeySize {
		panic(fmt.Sprintf("audit: patient key must be %d bytes, got %d", KeySize, len(key)))
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(normalise(family) + "|" + normalise(given) + "|" + normalise(birthDate)))
	return hex.EncodeToString(m.Sum(nil))
}

// KeySize is the length of the key PatientRef takes.
const KeySize = 32

func normalise(s string) string { return strings.ToLower(strings.Join(strings.Fields(s), " ")) }

// isRef reports whether s has the shape of a PatientRef. Append insists on
// it so that a name passed by mistake never reaches the file.
func isRef(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// canonical is the record's JSON without its hash: the bytes the hash covers.
func canonical(r Record) ([]byte, error) {
	r.Hash = ""
	return json.Marshal(r)
}

func chainHash(prev string, canon []byte) string {
	h := sha256.New()
	h.Write([]byte(prev))
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil))
}

// header is the first line of every file.
type header struct {
	Audit    string `json:"audit"`
	PrevFile string `json:"prev_file"`
	PrevSeq  uint64 `json:"prev_seq"`
	Prev     string `json:"prev"`
}

const formatID = "pdmp-agent/1"

// File names carry the creation time at nanosecond precision, fixed width,
// so that name order is time order.
const (
	filePrefix = "audit-"
	fileSuffix = ".jsonl"
	fileTime   = "20060102T150405.000000000Z"
)

func fileName(t time.Time) string { return filePrefix + t.UTC().Format(fileTime) + fileSuffix }

// fileCreated parses the time out of a file name; ok is false for files
// that are not audit files.
func fileCreated(name string) (t time.Time, ok bool) {
	s, ok := strings.CutPrefix(name, filePrefix)
	if s, ok2 := strings.CutSuffix(s, fileSuffix); ok && ok2 {
		t, err := time.Parse(fileTime, s)
		return t, err == nil
	}
	return time.Time{}, false
}

// logFiles lists the audit files in dir, oldest first.
func logFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir) // sorted by name, hence by time
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if _, ok := fileCreated(e.Name()); ok && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// Options tunes rotation. Zero values take the defaults.
type Options struct {
	// MaxSize starts a new file when the next record would take the
	// current one past this many bytes (default DefaultMaxSize).
	MaxSize int64
	// MaxAge starts a new file once the current one is this old (default
	// DefaultMaxAge), so that files map to days for retention and review.
	MaxAge time.Duration
}

// Rotation defaults: daily files of at most 64 MiB.
const (
	DefaultMaxSize = 64 << 20
	DefaultMaxAge  = 24 * time.Hour
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("audit: log closed")

// Log appends records to an audit directory. Its methods are safe for
// concurrent use; appends are serialised. Only one Log (in one process)
// may write to a directory at a time, or the chain forks.
type Log struct {
	dir  string
	opts Options
	// sem is a one-slot lock that, unlike a mutex, lets a waiting Append
	// give up when its context ends.
	sem chan struct{}

	// Guarded by sem.
	f       *os.File // nil: the next Append starts a new file
	name    string   // current (or last) file
	created time.Time
	size    int64
	records int // in the current file
	seq     uint64
	prev    string
	closed  bool
}

// Open opens the audit log in dir, creating the directory (0750) if
// needed, and continues the chain from its newest file. If that file does
// not end in a whole record (the process died mid-write, or someone cut
// it), Open leaves it as it is, continues the chain from the last intact
// record in a new file, and records a security event saying so; Verify
// will still report the damage.
func Open(dir string, opts Options) (*Log, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{dir: dir, opts: opts, sem: make(chan struct{}, 1), prev: genesis}
	files, err := logFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if len(files) == 0 {
		return l, nil
	}
	damage, err := l.resume(files)
	if err != nil {
		return nil, err
	}
	if damage != "" {
		err := l.Append(context.Background(), Record{Type: TypeSecurity, Event: "audit-log-damaged", Outcome: "error", Detail: damage})
		if err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// resume picks up the chain head from the newest file that has one, and
// reopens the newest file for appending if it ends cleanly. Otherwise it
// says what is wrong, and the next Append starts a new file.
func (l *Log) resume(files []string) (damage string, err error) {
	l.name = files[len(files)-1]
	l.created, _ = fileCreated(l.name)
	damage = fmt.Sprintf("%s does not end in a whole record", l.name)
	for i := len(files) - 1; i >= 0; i-- {
		path := filepath.Join(l.dir, files[i])
		t, err := readTail(path)
		if err != nil {
			return "", fmt.Errorf("audit: %w", err)
		}
		if !t.found {
			continue // not even a header (a crash while rotating): look further back
		}
		l.seq, l.prev = t.seq, t.prev
		if i < len(files)-1 || !t.clean {
			return fmt.Sprintf("%s; chain continues from seq %d in a new file", damage, l.seq), nil
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return "", fmt.Errorf("audit: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return "", fmt.Errorf("audit: %w", err)
		}
		l.f, l.size, l.records = f, fi.Size(), t.records
		return "", nil
	}
	if len(files) > 1 {
		// Starting a new chain here would hide whatever happened.
		return "", fmt.Errorf("audit: no readable record in %s; run verify", l.dir)
	}
	return damage + "; chain starts afresh", nil
}

// fileTail is what Open needs to know about a file.
type fileTail struct {
	found   bool // a header or record gave seq and prev
	seq     uint64
	prev    string
	records int
	clean   bool // the file ends in a whole, readable line
}

func readTail(path string) (fileTail, error) {
	var t fileTail
	err := scanFile(path, func(n int, line []byte, whole bool) error {
		t.clean = false
		if !whole {
			return nil
		}
		if n == 1 {
			var h header
			if json.Unmarshal(line, &h) == nil && h.Audit == formatID {
				t.found, t.clean, t.seq, t.prev = true, true, h.PrevSeq, h.Prev
			}
			return nil
		}
		var r Record
		if json.Unmarshal(line, &r) == nil && r.Hash != "" {
			t.found, t.clean, t.seq, t.prev = true, true, r.Seq, r.Hash
			t.records++
		}
		return nil
	})
	return t, err
}

// Append stamps r with the next seq, the current time and the chain
// hashes, writes it and syncs it to disk before returning. An error means
// the record may not be on disk: the caller should treat the lookup as not
// audited. ctx bounds only the wait for other appends; once writing has
// begun it completes.
func (l *Log) Append(ctx context.Context, r Record) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case l.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.sem }()
	if l.closed {
		return ErrClosed
	}
	switch r.Type {
	case TypeLookup, TypeSecurity, TypeConfig, TypeKey:
	default:
		return fmt.Errorf("audit: unknown record type %q", r.Type)
	}
	if r.Patient != "" && !isRef(r.Patient) {
		// Deliberately not quoting the value: it may be a name.
		return errors.New("audit: Record.Patient must be a PatientRef")
	}
	r.Detail = truncate(r.Detail, MaxDetail)
	now := time.Now().UTC()
	r.Seq, r.Time, r.Prev, r.Hash = l.seq+1, now, l.prev, ""
	canon, err := canonical(r)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	r.Hash = chainHash(r.Prev, canon)
	line, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	line = append(line, '\n')

	if l.f == nil || now.Sub(l.created) >= l.opts.MaxAge ||
		(l.records > 0 && l.size+int64(len(line)) > l.opts.MaxSize) {
		if err := l.rotate(now); err != nil {
			return err
		}
	}
	if err := l.write(line); err != nil {
		// The file may now end in part of this record. Start afresh in a
		// new file next time rather than append after the fragment; the
		// chain continues from the last record known to be written.
		l.f.Close()
		l.f = nil
		return fmt.Errorf("audit: %w", err)
	}
	l.size += int64(len(line))
	l.records++
	l.seq, l.prev = r.Seq, r.Hash
	return nil
}

func (l *Log) write(b []byte) error {
	if _, err := l.f.Write(b); err != nil {
		return err
	}
	return l.f.Sync()
}

// rotate closes the current file and starts a new one whose header links
// it to the last record written.
func (l *Log) rotate(now time.Time) error {
	if l.f != nil {
		if err := l.f.Close(); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		l.f = nil
	}
	// The clock may stand still or step back; names must still sort in
	// creation order.
	t := now
	if !t.After(l.created) {
		t = l.created.Add(time.Nanosecond)
	}
	name := fileName(t)
	f, err := os.OpenFile(filepath.Join(l.dir, name), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	h, err := json.Marshal(header{Audit: formatID, PrevFile: l.name, PrevSeq: l.seq, Prev: l.prev})
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	h = append(h, '\n')
	l.f, l.name, l.created, l.size, l.records = f, name, t, 0, 0
	if err := l.write(h); err != nil {
		f.Close()
		l.f = nil
		return fmt.Errorf("audit: %w", err)
	}
	l.size = int64(len(h))
	// Make the new directory entry durable too, or a crash could lose the
	// whole file. Windows cannot sync a directory and does not need to.
	if runtime.GOOS != "windows" {
		d, err := os.Open(l.dir)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		defer d.Close()
		if err := d.Sync(); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	return nil
}

// Head returns the seq and hash of the last record written, for anchoring
// the chain outside the log (see the package comment).
func (l *Log) Head() (seq uint64, hash string) {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	return l.seq, l.prev
}

// Close closes the current file. Appends after Close fail with ErrClosed.
func (l *Log) Close() error {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
