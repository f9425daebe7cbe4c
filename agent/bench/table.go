package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// writeTable prints the report as one table, under a line describing the
// machine.
func writeTable(w io.Writer, r *Report) error {
	kind := "full run"
	if r.Quick {
		kind = "quick run"
	}
	m := r.Machine
	fmt.Fprintf(w, "pdmp-agent bench (%s, %.0f s) on %s; %d cores (GOMAXPROCS %d); %s; %s\n\n",
		kind, r.ElapsedS, m.CPU, m.Cores, m.GOMAXPROCS, m.Go, m.OS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(cols ...string) { fmt.Fprintln(tw, strings.Join(cols, "\t")) }
	row("SECTION", "CASE", "RESULT", "CHECK")

	for _, o := range r.Overhead {
		res := latency(o.Cell)
		if o.Path != "direct" {
			res += fmt.Sprintf("; adds %s to p50, %s to p99", msText(o.DeltaP50MS), msText(o.DeltaP99MS))
		}
		row("overhead", fmt.Sprintf("%s, %s", o.Path, plural(o.Callers, "caller")), res, errorsText(o.Cell))
	}
	for _, a := range r.Acceptance {
		row("durable acceptance", plural(a.Callers, "async submitter")+", fsync on", latency(a), errorsText(a))
	}
	if t := r.Tokens; t != nil {
		var counts []string
		for _, id := range slices.Sorted(maps.Keys(t.TokenRequests)) {
			counts = append(counts, fmt.Sprintf("%s %d", id, t.TokenRequests[id]))
		}
		res := fmt.Sprintf("token requests per registration: %s; %d/%d answered in %.1f s",
			strings.Join(counts, ", "), t.Answered, t.Queries, t.Seconds)
		if t.FirstError != "" {
			res += "; first error: " + t.FirstError
		}
		row("token economy", fmt.Sprintf("%d concurrent queries, cold cache", t.Queries), res, verdict(t.Pass, "1 per registration"))
	}
	for _, f := range r.Faults {
		res := fmt.Sprintf("EHR %d %s; %s; %s", f.EHRStatus, f.EHRState, plural(f.Attempts, "attempt"), plural(f.TokenRequests, "token request"))
		if f.RetryGapMS > 0 {
			res += fmt.Sprintf("; retried after %.2f s", f.RetryGapMS/1000)
		}
		check := "PASS: " + f.Designed
		if !f.Pass {
			check = fmt.Sprintf("FAIL: %s (designed: %s)", f.Why, f.Designed)
		}
		row("fault matrix", f.Fault, res, check)
	}
	if i := r.Idle; i != nil {
		row("idle footprint", fmt.Sprintf("%.0f s, after one query", i.WindowS),
			fmt.Sprintf("RSS %s → %s, peak %.1f MiB; CPU %.2f s (%.2f %% of a core)", rss(i.RSSStart), rss(i.RSSEnd), i.PeakMB, i.CPUSeconds, i.CPUPercent), "")
	}
	if b := r.Backlog; b != nil {
		row("backlog", fmt.Sprintf("enqueue %d, responder down", b.Jobs),
			fmt.Sprintf("%.0f/s (%.1f s); %.0f/s into an empty queue, %.0f/s into %d; queue file %.0f MiB",
				b.FillPerSec, b.FillS, b.EmptyPerSec, b.BacklogPerSec, b.Jobs-b.Jobs/10, b.QueueFileMB), "")
		row("backlog", "restart",
			fmt.Sprintf("ready in %s, RSS %s; empty state: %s, %s",
				msText(b.ReadyBacklogMS), rss(b.RSSBacklog), msText(b.ReadyEmptyMS), rss(b.RSSEmpty)), "")
		eta := time.Duration(float64(b.Jobs-b.Drained) / b.DrainPerSec * float64(time.Second)).Round(time.Second)
		row("backlog", fmt.Sprintf("drain, limit %.0f/s burst %d", b.RateLimit, b.Burst),
			fmt.Sprintf("%.0f/s over %.0f s (rest: ~%v); peak RSS %.1f MiB", b.DrainPerSec, b.DrainWindowS, eta, b.PeakMB), "")
		row("backlog", "requests/s at the responder",
			fmt.Sprintf("%s (busiest sliding 1 s: %d)", ints(b.PerSecond), b.MaxSliding1s),
			verdict(b.RateRespected, fmt.Sprintf("over %d/s", int(b.RateLimit)+b.Burst)))
	}
	for _, e := range r.Errors {
		name, msg, _ := strings.Cut(e, ": ")
		first, _, _ := strings.Cut(msg, "\n")
		row(name, "could not run", first, "ERROR")
	}
	return tw.Flush()
}

func latency(c Cell) string {
	return fmt.Sprintf("p50 %s, p99 %s, %.0f/s", msText(c.P50MS), msText(c.P99MS), c.PerSec)
}

func errorsText(c Cell) string {
	if c.Errors == 0 {
		return ""
	}
	return fmt.Sprintf("%s (first: %s)", plural(c.Errors, "error"), c.FirstError)
}

// rss prints total and anonymous RSS.
func rss(r RSS) string { return fmt.Sprintf("%.1f MiB (anon %.1f)", r.TotalMB, r.AnonMB) }

func verdict(pass bool, why string) string {
	if pass {
		return "PASS"
	}
	return "FAIL: " + why
}

// msText prints milliseconds with about three significant digits.
func msText(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case a >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func ints(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
