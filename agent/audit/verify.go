package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// Break is the first point where the chain does not hold. It is also the
// error Verify returns in that case.
type Break struct {
	File string // base name of the file
	Line int    // 1-based; line 1 is the file's header
	// Seq is the seq of the record found on that line or, when the line
	// cannot be read or the break is in the header, the seq expected there.
	Seq    uint64
	Reason string
}

func (b *Break) Error() string {
	return fmt.Sprintf("audit chain broken at %s line %d (seq %d): %s", b.File, b.Line, b.Seq, b.Reason)
}

// Report is the result of Verify.
type Report struct {
	Dir     string
	Files   int    // files read, up to the break if there is one
	Records int    // records that verified
	Seq     uint64 // seq of the last record that verified
	Head    string // hash of the last record that verified
	Break   *Break // nil if the whole chain verified
}

// String is a one-paragraph summary for the operator.
func (r Report) String() string {
	if r.Break == nil {
		return fmt.Sprintf("audit log %s: OK, %d records in %d files; head seq %d hash %s\n"+
			"(records removed from the end cannot be detected from the log alone: compare the head with a copy kept elsewhere)",
			r.Dir, r.Records, r.Files, r.Seq, r.Head)
	}
	return fmt.Sprintf("audit log %s: BROKEN at %s line %d (seq %d): %s\n"+
		"%d records verified before it (%d files read); last good seq %d hash %s",
		r.Dir, r.Break.File, r.Break.Line, r.Break.Seq, r.Break.Reason, r.Records, r.Files, r.Seq, r.Head)
}

// errStop ends a scanFile walk early without an error.
var errStop = errors.New("stop")

// scanFile calls fn for each line of the file, numbered from 1, without
// its newline; whole is false for a last line that has no newline.
func scanFile(path string, fn func(n int, line []byte, whole bool) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			whole := line[len(line)-1] == '\n'
			if ferr := fn(n, bytes.TrimSuffix(line, []byte("\n")), whole); ferr != nil {
				if ferr == errStop {
					return nil
				}
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// parseRecord decodes a line strictly: unknown members are an error, and
// the line must be exactly what Append would write for the decoded record,
// so that nothing outside the hashed bytes (a duplicate member, white
// space, another spelling of a value) can change what a reader sees.
func parseRecord(line []byte) (Record, error) {
	var r Record
	d := json.NewDecoder(bytes.NewReader(line))
	d.DisallowUnknownFields()
	if err := d.Decode(&r); err != nil {
		return r, err
	}
	if d.More() {
		return r, errors.New("trailing data")
	}
	again, err := json.Marshal(r)
	if err != nil {
		return r, err
	}
	if !bytes.Equal(again, line) {
		return r, errors.New("not in canonical form")
	}
	return r, nil
}

// Verify walks every file in dir in order and recomputes the chain. If it
// does not hold, the Report names the first bad line and Verify returns
// the *Break as its error; other errors mean the log could not be read.
func Verify(dir string) (Report, error) {
	rep := Report{Dir: dir, Head: genesis}
	files, err := logFiles(dir)
	if err != nil {
		return rep, fmt.Errorf("audit: %w", err)
	}
	if len(files) == 0 {
		return rep, fmt.Errorf("audit: no audit files in %s", dir)
	}
	v := verifier{rep: &rep, files: files}
	for i := range files {
		rep.Files++
		if err := v.file(i); err != nil {
			return rep, err
		}
		if rep.Break != nil {
			return rep, rep.Break
		}
	}
	return rep, nil
}

type verifier struct {
	rep   *Report
	files []string
}

// fail records the break and stops the walk of the file.
func (v *verifier) fail(file string, line int, seq uint64, format string, args ...any) error {
	v.rep.Break = &Break{File: file, Line: line, Seq: seq, Reason: fmt.Sprintf(format, args...)}
	return errStop
}

func (v *verifier) file(i int) error {
	name := v.files[i]
	prevFile := ""
	if i > 0 {
		prevFile = v.files[i-1]
	}
	rep := v.rep
	// pending is a record whose seq ran ahead of the chain; the next line
	// tells whether records were deleted or reordered.
	var pending *Break
	seen := 0
	err := scanFile(filepath.Join(rep.Dir, name), func(n int, line []byte, whole bool) error {
		seen = n
		next := rep.Seq + 1
		if pending != nil {
			if r, err := parseRecord(line); err == nil && r.Seq == next {
				pending.Reason = fmt.Sprintf("seq %d comes before seq %d: records reordered", pending.Seq, next)
			}
			rep.Break = pending
			return errStop
		}
		if !whole {
			return v.fail(name, n, next, "incomplete last line: file truncated")
		}
		if n == 1 {
			return v.header(name, prevFile, line)
		}
		r, err := parseRecord(line)
		if err != nil {
			return v.fail(name, n, next, "unreadable record (%v): altered", err)
		}
		canon, err := canonical(r)
		if err != nil {
			return err
		}
		if sum := chainHash(r.Prev, canon); !hmac.Equal([]byte(sum), []byte(r.Hash)) {
			return v.fail(name, n, r.Seq, "hash mismatch: record altered")
		}
		switch {
		case r.Seq > next:
			pending = &Break{File: name, Line: n, Seq: r.Seq,
				Reason: fmt.Sprintf("seq gap: expected %d, found %d: records deleted", next, r.Seq)}
			return nil
		case r.Seq < next:
			return v.fail(name, n, r.Seq, "seq %d again after seq %d: records reordered or duplicated", r.Seq, rep.Seq)
		case r.Prev != rep.Head:
			return v.fail(name, n, r.Seq, "prev is not the hash of seq %d: that record was replaced, or the chain spliced", rep.Seq)
		}
		rep.Records++
		rep.Seq, rep.Head = r.Seq, r.Hash
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if pending != nil && rep.Break == nil {
		rep.Break = pending // the gap was on the file's last line
	}
	if seen == 0 && rep.Break == nil {
		v.fail(name, 1, rep.Seq+1, "empty file: header missing")
	}
	return nil
}

// header checks that a file's first line links it to the file before it.
func (v *verifier) header(name, prevFile string, line []byte) error {
	rep := v.rep
	next := rep.Seq + 1
	var h header
	if err := json.Unmarshal(line, &h); err != nil || h.Audit != formatID {
		return v.fail(name, 1, next, "not an audit file header: altered")
	}
	switch {
	case h.PrevFile != prevFile && h.PrevFile != "" && !slices.Contains(v.files, h.PrevFile):
		return v.fail(name, 1, next, "previous file %s is missing: deleted (records %d to %d lost)", h.PrevFile, next, h.PrevSeq)
	case h.PrevFile != prevFile:
		return v.fail(name, 1, next, "header names previous file %q but the file before it is %q: files deleted, renamed or reordered",
			h.PrevFile, prevFile)
	case h.PrevSeq != rep.Seq || h.Prev != rep.Head:
		return v.fail(name, 1, next, "header continues from seq %d, but %s ends at seq %d: records deleted from the end of %s",
			h.PrevSeq, orFirst(prevFile), rep.Seq, orFirst(prevFile))
	}
	return nil
}

func orFirst(file string) string {
	if file == "" {
		return "(start of log)"
	}
	return file
}

// eachRecord calls fn for every readable record in dir, in order. It does
// not check the chain: that is Verify's job.
func eachRecord(dir string, fn func(Record) error) error {
	files, err := logFiles(dir)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	for _, name := range files {
		err := scanFile(filepath.Join(dir, name), func(n int, line []byte, whole bool) error {
			if n == 1 || !whole {
				return nil
			}
			var r Record
			if json.Unmarshal(line, &r) != nil || r.Seq == 0 {
				return nil
			}
			return fn(r)
		})
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	return nil
}

// Search returns every record about the patient (lookups, and security
// events tied to one), oldest first. It needs the key the log was written
// with: with another key it finds nothing. It reads records as they are,
// skipping lines it cannot parse; run Verify to know they are genuine.
func Search(dir string, key []byte, family, given, birthDate string) ([]Record, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("audit: patient key must be %d bytes", KeySize)
	}
	ref := PatientRef(key, family, given, birthDate)
	var out []Record
	err := eachRecord(dir, func(r Record) error {
		if r.Patient == ref {
			out = append(out, r)
		}
		return nil
	})
	return out, err
}
