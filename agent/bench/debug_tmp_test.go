package bench

import (
	"os"
	"testing"
	"time"
	"slices"
)

func TestDebugDrain(t *testing.T) {
	exe, _ := os.Executable()
	h := newTestHarness(t)
	p := plan{idle: time.Second, backlog: 3000, drain: 4 * time.Second, command: []string{exe, "run"}}
	origDrainHook = func(arr []time.Time, t0 time.Time) {
		slices.SortFunc(arr, time.Time.Compare)
		counts := map[time.Duration]int{}
		for _, a := range arr { counts[a.Sub(t0)/time.Second]++ }
		t.Logf("per second: %v", counts)
		for i := 0; i < 40 && i < len(arr); i++ { t.Logf("%d %v", i, arr[i].Sub(t0)) }
		c100 := map[time.Duration]int{}
		for _, a := range arr { c100[a.Sub(t0)/(100*time.Millisecond)]++ }
		t.Logf("per 100ms: %v", c100)
	}
	b, err := runBacklog(t.Context(), h, p)
	t.Logf("%+v %v", b, err)
}
