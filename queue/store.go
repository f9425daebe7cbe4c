package queue

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// File layout. Every bucket is top level except the per-responder buckets
// nested in "due".
//
//	jobs        id → record (clear metadata + CRC32C)
//	bodies      id → sealed request body
//	results     id → sealed result body
//	due         responder → { nextAttempt (8 bytes BE unix ns) ‖ id → nil } for queued jobs
//	ended       endedAt (8 bytes BE unix ns) ‖ id → state, for terminal jobs
//	idem        idempotency key → id
//	quarantine  id → quarantine entry (the corrupt bytes, reason, time)
//	meta        "version", "keycheck"
//
// Records and quarantine entries end in a CRC32C; sealed bodies are
// authenticated by their GCM tag. Index entries (due, ended, idem) carry no
// checksum of their own: every use checks them against the record they
// name, and a stale or malformed one is dropped.
//
// Ids begin with a big-endian millisecond timestamp, so "jobs" iterates in
// submission order and inserts append at the end of the B+tree.
var (
	bucketJobs       = []byte("jobs")
	bucketBodies     = []byte("bodies")
	bucketResults    = []byte("results")
	bucketDue        = []byte("due")
	bucketEnded      = []byte("ended")
	bucketIdem       = []byte("idem")
	bucketQuarantine = []byte("quarantine")
	bucketMeta       = []byte("meta")

	allBuckets = [][]byte{bucketJobs, bucketBodies, bucketResults, bucketDue,
		bucketEnded, bucketIdem, bucketQuarantine, bucketMeta}

	keyVersion  = []byte("version")
	keyKeyCheck = []byte("keycheck")
)

const (
	schemaVersion = 1
	recordVersion = 1
	// maxErrLen bounds the error text kept per job.
	maxErrLen = 1024
	// maxMetaLen bounds each clear-text string of a request, keeping
	// records small and the responder usable as a bucket name.
	maxMetaLen = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// newAEAD derives the queue's own key from the data key, so the queue's
// ciphertexts can never be confused with anything else the agent encrypts
// under the same data key, and returns AES-256-GCM with random nonces.
func newAEAD(dataKey []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, dataKey, nil, "pdmp-agent queue v1 body encryption", 32)
	if err != nil {
		return nil, fmt.Errorf("queue: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return aead, nil
}

// Body kinds, bound into the AAD with the job id so a sealed body cannot be
// moved to another job, nor a result passed off as a request.
const (
	kindRequest = "request"
	kindResult  = "result"
)

func aad(kind, id string) []byte {
	return []byte("pdmp-agent/queue/v1/" + kind + "/" + id)
}

// seal encrypts a body. The GCM tag doubles as the sealed value's checksum:
// any corruption makes unseal fail.
func (q *Queue) seal(kind, id string, plain []byte) []byte {
	return q.aead.Seal(nil, nil, plain, aad(kind, id))
}

func (q *Queue) unseal(kind, id string, sealed []byte) ([]byte, error) {
	if sealed == nil {
		return nil, errCorrupt{kind + " body missing"}
	}
	plain, err := q.aead.Open(nil, nil, sealed, aad(kind, id))
	if err != nil {
		return nil, errCorrupt{kind + " body fails authentication"}
	}
	return plain, nil
}

// record is a job's clear-text metadata as stored in the jobs bucket.
type record struct {
	ID        string
	Responder string
	IdemKey   string
	RequestID string
	Labels    map[string]string
	State     State
	Policy    ResultPolicy
	Attempts  int
	Status    int
	Err       string
	// Times in unix nanoseconds. Since starts the retry budget (MaxAge);
	// it is reset by Retry. Ended is when the job became terminal and keys
	// the ended index.
	Created, Updated, Next, Since, Ended int64
	Delivered                            bool
	// CancelReq records a Cancel of an in-flight job, so the job ends
	// cancelled even if the process dies before its handler returns.
	CancelReq bool
}

func (r *record) job() Job {
	j := Job{
		ID:             r.ID,
		Responder:      r.Responder,
		IdempotencyKey: r.IdemKey,
		RequestID:      r.RequestID,
		State:          r.State,
		Attempts:       r.Attempts,
		Created:        time.Unix(0, r.Created),
		Updated:        time.Unix(0, r.Updated),
		NextAttempt:    time.Unix(0, r.Next),
		Error:          r.Err,
		Status:         r.Status,
		Delivered:      r.Delivered,
		ResultPolicy:   r.Policy,
	}
	if len(r.Labels) > 0 {
		j.Labels = maps.Clone(r.Labels)
	}
	return j
}

var stateCodes = []State{Queued, Inflight, Done, Failed, Dead, Cancelled}

const (
	flagDelivered = 1 << iota
	flagCancelReq
)

// marshal encodes r as: version, state, policy, flags, then the strings and
// integers below as varints, then a big-endian CRC32C of all of it.
func (r *record) marshal() []byte {
	b := make([]byte, 0, 160+len(r.Err))
	var flags byte
	if r.Delivered {
		flags |= flagDelivered
	}
	if r.CancelReq {
		flags |= flagCancelReq
	}
	b = append(b, recordVersion, byte(slices.Index(stateCodes, r.State)), byte(r.Policy), flags)
	for _, s := range []string{r.ID, r.Responder, r.IdemKey, r.RequestID, r.Err} {
		b = appendString(b, s)
	}
	for _, n := range []int64{int64(r.Attempts), int64(r.Status), r.Created, r.Updated, r.Next, r.Since, r.Ended} {
		b = binary.AppendVarint(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Labels)))
	for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
		b = appendString(b, k)
		b = appendString(b, r.Labels[k])
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// errCorrupt marks a record that fails its checksum or does not decode.
// Its message is safe to log: it never quotes the record.
type errCorrupt struct{ reason string }

func (e errCorrupt) Error() string { return e.reason }

// checksummed verifies and strips the trailing CRC32C of v.
func checksummed(v []byte) ([]byte, error) {
	if len(v) < 4 {
		return nil, errCorrupt{"record too short"}
	}
	body, sum := v[:len(v)-4], binary.BigEndian.Uint32(v[len(v)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, errCorrupt{"record checksum mismatch"}
	}
	return body, nil
}

// decodeRecord decodes the record stored under key id.
func decodeRecord(id, v []byte) (record, error) {
	body, err := checksummed(v)
	if err != nil {
		return record{}, err
	}
	d := decoder{b: body}
	if v := d.byte(); v != recordVersion {
		return record{}, errCorrupt{fmt.Sprintf("unknown record version %d", v)}
	}
	var r record
	state := int(d.byte())
	if state >= len(stateCodes) {
		return record{}, errCorrupt{"unknown state"}
	}
	r.State = stateCodes[state]
	r.Policy = ResultPolicy(d.byte())
	flags := d.byte()
	r.Delivered = flags&flagDelivered != 0
	r.CancelReq = flags&flagCancelReq != 0
	for _, s := range []*string{&r.ID, &r.Responder, &r.IdemKey, &r.RequestID, &r.Err} {
		*s = d.string()
	}
	var attempts, status int64
	for _, n := range []*int64{&attempts, &status, &r.Created, &r.Updated, &r.Next, &r.Since, &r.Ended} {
		*n = d.varint()
	}
	r.Attempts, r.Status = int(attempts), int(status)
	if n := d.uvarint(); n > 0 && d.err == nil {
		if n > uint64(len(d.b)) {
			return record{}, errCorrupt{"record label count out of range"}
		}
		r.Labels = make(map[string]string, n)
		for range n {
			k := d.string()
			r.Labels[k] = d.string()
		}
	}
	if d.err != nil {
		return record{}, d.err
	}
	if len(d.b) != 0 {
		return record{}, errCorrupt{"trailing bytes after record"}
	}
	if r.ID != string(id) {
		return record{}, errCorrupt{"record id does not match its key"}
	}
	return r, nil
}

// decoder reads the varint encoding of marshal, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err, d.b = errCorrupt{"record truncated or malformed"}, nil }

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	n, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *decoder) varint() int64 {
	n, k := binary.Varint(d.b)
	if k <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// quarantineEntry is what is kept of a corrupt job: its raw stored bytes
// (metadata and still-sealed bodies, so no clear PHI) for later forensics.
type quarantineEntry struct {
	Reason             string
	Time               int64
	Meta, Body, Result []byte
}

func (e *quarantineEntry) marshal() []byte {
	b := []byte{recordVersion}
	b = appendString(b, e.Reason)
	b = binary.AppendVarint(b, e.Time)
	for _, v := range [][]byte{e.Meta, e.Body, e.Result} {
		b = appendString(b, string(v))
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeQuarantine(v []byte) (quarantineEntry, error) {
	body, err := checksummed(v)
	if err != nil {
		return quarantineEntry{}, err
	}
	d := decoder{b: body}
	if d.byte() != recordVersion {
		return quarantineEntry{}, errCorrupt{"unknown quarantine entry version"}
	}
	e := quarantineEntry{Reason: d.string(), Time: d.varint()}
	for _, p := range []*[]byte{&e.Meta, &e.Body, &e.Result} {
		*p = []byte(d.string())
	}
	return e, d.err
}

// newID returns a 32-hex-digit id: a 48-bit millisecond timestamp then 80
// random bits.
func newID(now time.Time) string {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	rand.Read(b[6:])
	return hex.EncodeToString(b[:])
}

// randomHex returns n random bytes, hex encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// timeKey is an 8-byte big-endian unix-nanosecond time followed by id, so
// keys sort by time and then id. Times before 1970 clamp to zero.
func timeKey(ns int64, id string) []byte {
	k := make([]byte, 8, 8+len(id))
	binary.BigEndian.PutUint64(k, uint64(max(ns, 0)))
	return append(k, id...)
}

// splitTimeKey undoes timeKey; ok is false for a malformed key.
func splitTimeKey(k []byte) (ns int64, id string, ok bool) {
	if len(k) <= 8 {
		return 0, "", false
	}
	return int64(binary.BigEndian.Uint64(k)), string(k[8:]), true
}

// errString is the error text kept for a job, bounded so that a handler
// cannot bloat the clear metadata.
func errString(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) <= maxErrLen {
		return s
	}
	cut := maxErrLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// setup creates the buckets of a new file and checks the data key of an
// existing one.
func (q *Queue) setup(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyVersion); v == nil {
		if err := meta.Put(keyVersion, []byte{schemaVersion}); err != nil {
			return err
		}
	} else if !bytes.Equal(v, []byte{schemaVersion}) {
		return fmt.Errorf("unsupported schema version %v", v)
	}
	if meta.Get(keyKeyCheck) == nil {
		return meta.Put(keyKeyCheck, q.seal("keycheck", "", nil))
	}
	return q.checkKey(tx)
}

func (q *Queue) checkKey(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return errors.New("not a queue file")
	}
	if _, err := q.unseal("keycheck", "", meta.Get(keyKeyCheck)); err != nil {
		return ErrDataKey
	}
	return nil
}

// init prepares a freshly opened file: it checks every record's checksum
// (quarantining failures), rebuilds the in-memory counters, and settles jobs
// left in flight by a previous process.
func (q *Queue) init() error {
	var err error
	if q.db.IsReadOnly() {
		err = q.db.View(q.checkKey)
	} else {
		err = q.db.Update(q.setup)
	}
	if err != nil {
		return dbErr("open", err)
	}

	type bad struct{ id, reason string }
	var inflight []string
	var corrupt []bad
	err = q.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketJobs).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(k, v)
			if err != nil {
				corrupt = append(corrupt, bad{string(k), err.Error()})
				return nil
			}
			q.counts[r.State]++
			if r.State == Inflight {
				inflight = append(inflight, r.ID)
			}
			return nil
		})
		q.counts[StateQuarantined] = tx.Bucket(bucketQuarantine).Stats().KeyN
		return err
	})
	if err != nil {
		return dbErr("open", err)
	}
	if q.db.IsReadOnly() || len(inflight)+len(corrupt) == 0 {
		return nil
	}

	now := q.now().UnixNano()
	var changes []change
	err = q.db.Update(func(tx *bolt.Tx) error {
		for _, b := range corrupt {
			c, err := q.quarantine(tx, b.id, nil, b.reason, now)
			if err != nil {
				return err
			}
			changes = append(changes, c)
		}
		for _, id := range inflight {
			r, err := load(tx, id)
			if err != nil {
				return err
			}
			old := r
			switch {
			case r.CancelReq:
				r.State, r.Ended = Cancelled, now
			case r.Attempts >= q.opts.Retry.MaxAttempts:
				// A job whose attempts keep taking the process down
				// must not crash it forever.
				r.State, r.Ended = Dead, now
				r.Err = "process stopped during the last allowed attempt"
			default:
				r.State, r.Next = Queued, now
			}
			r.Updated = now
			if err := q.put(tx, &old, &r); err != nil {
				return err
			}
			changes = append(changes, change{id: id, responder: r.Responder, from: Inflight, to: r.State})
		}
		return nil
	})
	if err != nil {
		return dbErr("open", err)
	}
	q.commit(changes)
	if len(inflight) > 0 {
		q.log.Info("queue: settled jobs interrupted by the previous process", "jobs", len(inflight))
	}
	return nil
}

// load reads and decodes a job's record.
func load(tx *bolt.Tx, id string) (record, error) {
	v := tx.Bucket(bucketJobs).Get([]byte(id))
	if v == nil {
		if tx.Bucket(bucketQuarantine).Get([]byte(id)) != nil {
			return record{}, ErrQuarantined
		}
		return record{}, ErrNotFound
	}
	return decodeRecord([]byte(id), v)
}

// put stores r and keeps the indexes in step with its state: queued jobs
// are in their responder's due bucket under their next attempt, terminal
// ones in the ended bucket. old is the stored version, or nil for a new job.
func (q *Queue) put(tx *bolt.Tx, old, r *record) error {
	// Ids and end times grow with time, so these buckets are mostly
	// appended to, and bbolt's default of splitting pages half full would
	// leave most of their pages half empty. The setting lasts for the
	// transaction, whose commit is when pages split.
	for _, b := range [][]byte{bucketJobs, bucketBodies, bucketResults, bucketEnded} {
		tx.Bucket(b).FillPercent = 0.9
	}
	if old != nil {
		if err := unindex(tx, old); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketJobs).Put([]byte(r.ID), r.marshal()); err != nil {
		return err
	}
	switch {
	case r.State == Queued:
		due, err := tx.Bucket(bucketDue).CreateBucketIfNotExists([]byte(r.Responder))
		if err != nil {
			return err
		}
		return due.Put(timeKey(r.Next, r.ID), nil)
	case r.State.Terminal():
		// The state lets a ghost be settled from a stale entry.
		return tx.Bucket(bucketEnded).Put(timeKey(r.Ended, r.ID), []byte(r.State))
	}
	return nil
}

// unindex removes r's entries from the due and ended indexes.
func unindex(tx *bolt.Tx, r *record) error {
	switch {
	case r.State == Queued:
		if due := tx.Bucket(bucketDue).Bucket([]byte(r.Responder)); due != nil {
			return due.Delete(timeKey(r.Next, r.ID))
		}
	case r.State.Terminal():
		return tx.Bucket(bucketEnded).Delete(timeKey(r.Ended, r.ID))
	}
	return nil
}

// remove deletes every trace of a job: record, bodies, index entries and
// its idempotency entry if that still points at it.
func remove(tx *bolt.Tx, r *record) error {
	id := []byte(r.ID)
	if err := unindex(tx, r); err != nil {
		return err
	}
	if r.IdemKey != "" {
		idem := tx.Bucket(bucketIdem)
		if bytes.Equal(idem.Get([]byte(r.IdemKey)), id) {
			if err := idem.Delete([]byte(r.IdemKey)); err != nil {
				return err
			}
		}
	}
	for _, b := range [][]byte{bucketJobs, bucketBodies, bucketResults} {
		if err := tx.Bucket(b).Delete(id); err != nil {
			return err
		}
	}
	return nil
}

// quarantine moves a job's stored bytes to the quarantine bucket. r is its
// decoded record if that much was readable (so its index entries can go
// too); otherwise stale index entries are dropped when next met.
func (q *Queue) quarantine(tx *bolt.Tx, id string, r *record, reason string, now int64) (change, error) {
	key := []byte(id)
	e := quarantineEntry{
		Reason: reason,
		Time:   now,
		Meta:   tx.Bucket(bucketJobs).Get(key),
		Body:   tx.Bucket(bucketBodies).Get(key),
		Result: tx.Bucket(bucketResults).Get(key),
	}
	// marshal copies the values out of the mmap before remove frees them.
	if err := tx.Bucket(bucketQuarantine).Put(key, e.marshal()); err != nil {
		return change{}, err
	}
	c := change{id: id, to: StateQuarantined, reason: reason}
	if r != nil {
		c.from, c.responder = r.State, r.Responder
		return c, remove(tx, r)
	}
	for _, b := range [][]byte{bucketJobs, bucketBodies, bucketResults} {
		if err := tx.Bucket(b).Delete(key); err != nil {
			return change{}, err
		}
	}
	return c, nil
}

// quarantineLater quarantines a job found corrupt in a read-only
// transaction, if it is still there.
func (q *Queue) quarantineLater(id, reason string) {
	var c change
	err := q.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketJobs).Get([]byte(id))
		if v == nil {
			return nil
		}
		var rp *record
		if r, err := decodeRecord([]byte(id), v); err == nil {
			rp = &r
		}
		var err error
		c, err = q.quarantine(tx, id, rp, reason, q.now().UnixNano())
		// Open counted it under a state we can no longer read.
		c.ghost = rp == nil
		return err
	})
	if err != nil {
		q.log.Error("queue: cannot quarantine corrupt record", "job", id, "reason", reason, "err", err)
		return
	}
	if c.id != "" {
		q.commit([]change{c})
	}
}
