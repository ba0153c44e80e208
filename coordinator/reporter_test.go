package coordinator

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// fakeHealthSource is a monitor whose changes and snapshot the test sets.
type fakeHealthSource struct {
	changes chan health.Change
	mu      sync.Mutex
	status  map[string]health.NodeStatus
}

func newFakeHealthSource() *fakeHealthSource {
	return &fakeHealthSource{changes: make(chan health.Change), status: map[string]health.NodeStatus{}}
}

func (f *fakeHealthSource) Changes() <-chan health.Change { return f.changes }

func (f *fakeHealthSource) Snapshot() map[string]health.NodeStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.status)
}

func (f *fakeHealthSource) set(name string, s health.NodeStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status[name] = s
}

// recordingProposer hands every ReportHealth to the test; the first `fail` calls fail.
type recordingProposer struct {
	mu      sync.Mutex
	fail    int
	calls   int
	block   bool // Propose waits for ctx
	reports chan clusterstate.ReportHealth
}

func (p *recordingProposer) Propose(ctx context.Context, data []byte) ([]byte, error) {
	p.mu.Lock()
	p.calls++
	failing := p.calls <= p.fail
	block := p.block
	p.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if failing {
		return nil, consensus.ErrNoLeader
	}
	cmd, err := clusterstate.Decode(data)
	if err != nil {
		return nil, err
	}
	select {
	case p.reports <- *cmd.ReportHealth:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return []byte(`{"code":"applied","epoch":1}`), nil
}

// startReporter runs a reporter for proxy 7 until the test ends.
func startReporter(t *testing.T, src *fakeHealthSource, p *recordingProposer, refresh time.Duration) {
	t.Helper()
	r := &HealthReporter{Raft: p, Proxy: 7, Health: src, Refresh: refresh, Logger: testLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

func nextReport(t *testing.T, p *recordingProposer) clusterstate.ReportHealth {
	t.Helper()
	select {
	case r := <-p.reports:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no health report proposed")
		return clusterstate.ReportHealth{}
	}
}

func TestReporterProposesChangesButNotUnknownNodes(t *testing.T) {
	src := newFakeHealthSource()
	p := &recordingProposer{reports: make(chan clusterstate.ReportHealth, 16)}
	startReporter(t, src, p, time.Hour)
	good := primaryProbe("pg1", "ANY 1 (pg2, pg3)")
	src.set("pg1", downStatus(good))
	src.changes <- health.Change{Node: "pg2", To: health.NodeState{Health: health.HealthUnknown}}
	src.changes <- health.Change{Node: "pg1", To: health.NodeState{Health: health.HealthDown, Timeline: 1},
		Probe: health.Probe{Node: "pg1", Err: "connection refused"}}
	r := nextReport(t, p)
	if r.Node != "pg1" || r.Observation.Proxy != 7 || r.Observation.Up || r.Observation.InRecovery ||
		r.Observation.Timeline != 1 || r.Observation.ReceiveLSN != uint64(good.CurrentLSN) || r.Observation.At.IsZero() {
		t.Fatalf("report %+v", r)
	}
	select {
	case extra := <-p.reports:
		t.Fatalf("unexpected report %+v (an unknown node must not be reported)", extra)
	default:
	}
}

func TestReporterRefreshesKnownNodesWithGrowingTimestamps(t *testing.T) {
	src := newFakeHealthSource()
	p := &recordingProposer{reports: make(chan clusterstate.ReportHealth, 16)}
	standby := health.Probe{Node: "pg2", Reachable: true, InRecovery: true, Timeline: 1, ReceiveLSN: 0x3000060, ReplayLSN: 0x3000000}
	src.set("pg2", upStatus(standby))
	src.set("pg3", health.NodeStatus{}) // unknown: never probed successfully
	startReporter(t, src, p, 20*time.Millisecond)
	first := nextReport(t, p)
	second := nextReport(t, p)
	for _, r := range []clusterstate.ReportHealth{first, second} {
		o := r.Observation
		if r.Node != "pg2" || !o.Up || !o.InRecovery || o.ReceiveLSN != 0x3000060 || o.ReplayLSN != 0x3000000 {
			t.Fatalf("refresh report %+v", r)
		}
	}
	if !second.Observation.At.After(first.Observation.At) {
		t.Errorf("refresh At %v is not after %v", second.Observation.At, first.Observation.At)
	}
}

func TestReporterRetriesWhenNoLeaderIsKnown(t *testing.T) {
	src := newFakeHealthSource()
	p := &recordingProposer{fail: 2, reports: make(chan clusterstate.ReportHealth, 16)}
	startReporter(t, src, p, time.Hour)
	src.changes <- health.Change{Node: "pg1", To: health.NodeState{Health: health.HealthDown}}
	if r := nextReport(t, p); r.Node != "pg1" || r.Observation.Up {
		t.Fatalf("report %+v", r)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calls != 3 {
		t.Errorf("%d proposals, want 2 failed and 1 successful", p.calls)
	}
}

func TestReporterStopsWhileAProposalHangs(t *testing.T) {
	src := newFakeHealthSource()
	p := &recordingProposer{block: true}
	r := &HealthReporter{Raft: p, Proxy: 7, Health: src, ProposeTimeout: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	src.changes <- health.Change{Node: "pg1", To: health.NodeState{Health: health.HealthDown}}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel while a proposal hung")
	}
}

func TestReporterEndsWhenTheMonitorStops(t *testing.T) {
	src := newFakeHealthSource()
	r := &HealthReporter{Raft: &recordingProposer{}, Proxy: 7, Health: src}
	done := make(chan error, 1)
	go func() { done <- r.Run(context.Background()) }()
	close(src.changes)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when Changes closed")
	}
}
