package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// FailoverRecord is one entry of the replicated failover history
// (clusterstate.HistoryEntry), as the failover counters need it.
type FailoverRecord struct {
	Epoch   uint64 // the failover's epoch: one failover, one epoch
	Kind    string // clusterstate.FailoverKind: automatic, manual, switchover
	Outcome string // clusterstate.Outcome: completed, blocked, aborted
}

var (
	failoversDesc = desc("failovers_total",
		"Failovers and switchovers that ended, by kind and final outcome (completed, aborted), counted from the replicated history: every proxy counts the same ones (those of the history it has seen since it started, the history holding the last 100).",
		"kind", "outcome")
	failoversBlockedDesc = desc("failovers_blocked_total",
		"Failovers that were blocked at least once (too few standbys reachable), by kind, from the replicated history; a failover blocked and then completed counts here once and in pgquorum_failovers_total once.",
		"kind")
)

// finalOutcomes are the outcomes that end a failover.
var finalOutcomes = []string{"completed", "aborted"}

// failoverCounter counts failovers from the replicated history on every
// scrape. The history is a window (its oldest entries drop out), so the
// counter remembers which failovers it counted, by epoch, and only ever goes
// up. A failover is counted once by its final outcome; a blocked one once in
// failovers_blocked_total, however often it was blocked.
//
// Owner: its mutex (scrapes may run concurrently).
type failoverCounter struct {
	source func() []FailoverRecord

	mu      sync.Mutex
	final   map[uint64]bool // epochs counted in finals
	blocked map[uint64]bool // epochs counted in blockedN
	finals  map[[2]string]float64
	blocks  map[string]float64
}

func newFailoverCounter(source func() []FailoverRecord) *failoverCounter {
	return &failoverCounter{source: source, final: map[uint64]bool{}, blocked: map[uint64]bool{},
		finals: map[[2]string]float64{}, blocks: map[string]float64{}}
}

func (c *failoverCounter) Describe(ch chan<- *prometheus.Desc) {
	ch <- failoversDesc
	ch <- failoversBlockedDesc
}

func (c *failoverCounter) Collect(ch chan<- prometheus.Metric) {
	history := c.source()
	c.mu.Lock()
	defer c.mu.Unlock()
	oldest := ^uint64(0)
	for _, r := range history {
		oldest = min(oldest, r.Epoch)
		kind := oneOf(r.Kind, failoverKinds)
		switch {
		case r.Outcome == "blocked" && !c.blocked[r.Epoch]:
			c.blocked[r.Epoch] = true
			c.blocks[kind]++
		case (r.Outcome == "completed" || r.Outcome == "aborted") && !c.final[r.Epoch]:
			c.final[r.Epoch] = true
			c.finals[[2]string{kind, r.Outcome}]++
		}
	}
	// Epochs older than the history's window can never come back: forget
	// them, so the sets stay as small as the history.
	for epoch := range c.final {
		if epoch < oldest {
			delete(c.final, epoch)
		}
	}
	for epoch := range c.blocked {
		if epoch < oldest {
			delete(c.blocked, epoch)
		}
	}
	for _, kind := range append(failoverKinds, "unknown") {
		for _, outcome := range finalOutcomes {
			if v, ok := c.finals[[2]string{kind, outcome}]; ok || kind != "unknown" {
				counter(ch, failoversDesc, v, kind, outcome)
			}
		}
		if v, ok := c.blocks[kind]; ok || kind != "unknown" {
			counter(ch, failoversBlockedDesc, v, kind)
		}
	}
}
