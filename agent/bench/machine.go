package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where the bench ran.
type Machine struct {
	CPU        string `json:"cpu"`   // model name from /proc/cpuinfo
	Cores      int    `json:"cores"` // usable by this process
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	OS         string `json:"os"` // distribution, kernel, GOOS/GOARCH
}

func describeMachine() Machine {
	m := Machine{CPU: "unknown", Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if v, ok := field(b, "model name", ':'); ok {
			m.CPU = v
		}
	}
	var parts []string
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		if v, ok := field(b, "PRETTY_NAME", '='); ok {
			parts = append(parts, strings.Trim(v, `"`))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		parts = append(parts, "kernel "+strings.TrimSpace(string(b)))
	}
	m.OS = strings.Join(append(parts, runtime.GOOS+"/"+runtime.GOARCH), ", ")
	return m
}

// field returns the value of the first "key<sep>value" line of b.
func field(b []byte, key string, sep byte) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), string(sep))
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// RSS is a process's resident memory in MiB: in all, and its anonymous
// part (heap, stacks). The rest is mostly the queue file, which bbolt maps
// into memory and the kernel can drop and read again.
type RSS struct {
	TotalMB float64 `json:"total_mib"`
	AnonMB  float64 `json:"anon_mib"`
}

// procSample is a process's memory and CPU time at one moment.
type procSample struct {
	rss    RSS
	peakMB float64 // VmHWM: the most RSS since the process started
	cpu    time.Duration
}

// userHZ is the unit of the times in /proc/<pid>/stat: USER_HZ, which
// Linux fixes at 100 for user space whatever the kernel's own tick.
const userHZ = 100

// readProc samples pid from /proc/<pid>/status and /proc/<pid>/stat.
func readProc(pid int) (procSample, error) {
	var s procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, f := range []struct {
		key string
		mb  *float64
	}{{"VmRSS", &s.rss.TotalMB}, {"RssAnon", &s.rss.AnonMB}, {"VmHWM", &s.peakMB}} {
		v, ok := field(status, f.key, ':')
		if !ok {
			return s, fmt.Errorf("/proc/%d/status has no %s", pid, f.key)
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/status %s: %w", pid, f.key, err)
		}
		*f.mb = float64(kib) / 1024
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name, field 2, is in parentheses and may hold spaces;
	// utime and stime are fields 14 and 15, the 12th and 13th after it.
	i := bytes.LastIndexByte(stat, ')')
	fs := strings.Fields(string(stat[i+1:]))
	if i < 0 || len(fs) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, f := range fs[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	s.cpu = time.Duration(ticks) * time.Second / userHZ
	return s, nil
}
