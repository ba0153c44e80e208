package metrics

import (
	"strings"
	"sync"
	"testing"
)

// TestFailoverCountsComeFromTheHistory: the counters follow the replicated
// history — a blocked-then-completed failover counts once, a scrape never
// counts twice, and failovers that leave the history's window stay counted
// (a counter never goes down).
func TestFailoverCountsComeFromTheHistory(t *testing.T) {
	var mu sync.Mutex
	var history []FailoverRecord
	set := func(h ...FailoverRecord) {
		mu.Lock()
		defer mu.Unlock()
		history = h
	}
	m := newTestMetrics(t)
	if err := m.AddSources(Sources{History: func() []FailoverRecord {
		mu.Lock()
		defer mu.Unlock()
		return append([]FailoverRecord(nil), history...)
	}}); err != nil {
		t.Fatal(err)
	}
	count := func(want ...string) {
		t.Helper()
		lines := sampleLines(pgquorumFamilies(scrape(t, m)))
		for _, w := range want {
			found := false
			for _, l := range lines {
				found = found || l == w
			}
			if !found {
				t.Errorf("missing %q in:\n%s", w, strings.Join(lines, "\n"))
			}
		}
	}
	set(FailoverRecord{Epoch: 2, Kind: "automatic", Outcome: "blocked"})
	count(`pgquorum_failovers_blocked_total{kind="automatic"} 1`, `pgquorum_failovers_total{kind="automatic",outcome="completed"} 0`)
	set(FailoverRecord{Epoch: 2, Kind: "automatic", Outcome: "blocked"}, FailoverRecord{Epoch: 2, Kind: "automatic", Outcome: "completed"})
	count(`pgquorum_failovers_blocked_total{kind="automatic"} 1`, `pgquorum_failovers_total{kind="automatic",outcome="completed"} 1`)
	count(`pgquorum_failovers_total{kind="automatic",outcome="completed"} 1`) // scraped again: not counted again
	// The history moves on: epoch 2 leaves the window.
	set(FailoverRecord{Epoch: 4, Kind: "switchover", Outcome: "completed"}, FailoverRecord{Epoch: 6, Kind: "sideways", Outcome: "completed"})
	count(`pgquorum_failovers_total{kind="automatic",outcome="completed"} 1`,
		`pgquorum_failovers_total{kind="switchover",outcome="completed"} 1`,
		`pgquorum_failovers_total{kind="unknown",outcome="completed"} 1`)
}
