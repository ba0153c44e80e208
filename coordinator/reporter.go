package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// Defaults of HealthReporter.
const (
	DefaultRefresh              = 5 * time.Second
	DefaultReportProposeTimeout = 2 * time.Second
)

// Proposer is what the HealthReporter needs from the local Raft member
// (*consensus.Node): proposals are forwarded to the leader.
type Proposer interface {
	Propose(ctx context.Context, data []byte) ([]byte, error)
}

// HealthSource is the local health monitor (*health.Monitor) as the reporter sees it.
type HealthSource interface {
	// Changes is the monitor's coalescing stream of state changes; it is
	// closed when the monitor stops.
	Changes() <-chan health.Change
	Snapshot() map[string]health.NodeStatus
}

// HealthReporter publishes this proxy's view of the PostgreSQL nodes in the
// replicated state. It is the one part of this package that runs on EVERY proxy,
// voters and learners alike (only the voters' observations decide a failover, but
// every observation shows in /cluster).
//
// It proposes ReportHealth for a node when the monitor reports a change of
// up/down, role or timeline, and refreshes every node's observation every Refresh
// so observations carry recent LSNs and timestamps and a crashed proxy's last
// word ages out. Nodes the monitor does not know yet (HealthUnknown) are not
// reported: a proxy that just started must not count as seeing the primary down.
//
// Run's goroutine owns everything: it reads the Changes channel (the monitor
// never waits for it), keeps at most one unreported observation per node (a newer
// one replaces it), and proposes them one by one, each bounded by ProposeTimeout;
// a failed proposal is retried with a growing delay (at most Refresh).
type HealthReporter struct {
	Raft   Proposer
	Proxy  uint64 // this proxy's Raft node id
	Health HealthSource
	// Refresh is the period of the slow refresh; zero means 5s. Negative turns
	// the refresh off (only changes are reported): a choice for learners, whose
	// observations never decide a failover, when there are many of them.
	Refresh time.Duration
	// ProposeTimeout bounds one proposal; zero means 2s.
	ProposeTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// pendingReport is an observation waiting to be proposed.
type pendingReport struct {
	obs    clusterstate.Observation
	urgent bool // from a change: proposed before refreshes
}

// reporterState is Run's memory.
type reporterState struct {
	pending    map[string]pendingReport
	lastAt     map[string]time.Time // the last At proposed per node; At must grow strictly
	retryDelay time.Duration
}

// Run reports until ctx ends or the monitor's Changes channel closes.
func (r *HealthReporter) Run(ctx context.Context) error {
	if r.Raft == nil || r.Health == nil || r.Proxy == 0 {
		return errors.New("coordinator: health reporter needs Raft, Health and a non-zero Proxy id")
	}
	var refresh <-chan time.Time
	if r.Refresh >= 0 {
		ticker := time.NewTicker(orDefault(r.Refresh, DefaultRefresh))
		defer ticker.Stop()
		refresh = ticker.C
	}
	s := &reporterState{pending: map[string]pendingReport{}, lastAt: map[string]time.Time{}}
	changes := r.Health.Changes()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case change, ok := <-changes:
			if !ok {
				return nil
			}
			r.noteChange(s, change)
		case <-refresh:
			r.noteRefresh(s)
		case <-retry:
			retry = nil
		}
		if retry != nil {
			continue // a retry is scheduled; keep collecting until then
		}
		if !r.flush(ctx, s, changes) {
			retry = time.After(s.retryDelay)
		}
	}
}

// noteChange queues the observation a change implies.
func (r *HealthReporter) noteChange(s *reporterState, change health.Change) {
	if change.To.Health == health.HealthUnknown {
		return
	}
	lsnSource := change.Probe
	if !lsnSource.Reachable {
		if status, ok := r.Health.Snapshot()[change.Node]; ok {
			lsnSource = status.LastGood
		}
	}
	s.pending[change.Node] = pendingReport{obs: observation(r.Proxy, change.To, lsnSource), urgent: true}
}

// noteRefresh queues every known node's current observation, keeping urgent ones.
func (r *HealthReporter) noteRefresh(s *reporterState) {
	for node, status := range r.Health.Snapshot() {
		if status.State.Health == health.HealthUnknown {
			continue
		}
		urgent := s.pending[node].urgent
		s.pending[node] = pendingReport{obs: observation(r.Proxy, status.State, status.LastGood), urgent: urgent}
	}
}

// observation builds what this proxy reports about a node in state, with the LSNs
// of its latest successful probe.
func observation(proxy uint64, state health.NodeState, good health.Probe) clusterstate.Observation {
	obs := clusterstate.Observation{
		Proxy:      proxy,
		Up:         state.Health == health.HealthUp,
		InRecovery: state.InRecovery,
		Timeline:   state.Timeline,
	}
	if good.Reachable {
		obs.ReceiveLSN = uint64(good.CurrentLSN)
		if good.InRecovery {
			obs.ReceiveLSN = uint64(good.ReceiveLSN)
		}
		obs.ReplayLSN = uint64(good.ReplayLSN)
	}
	return obs
}

// flush proposes the pending observations, urgent ones first, and reports whether
// all went through. Between proposals it takes new changes without waiting, so a
// newer observation replaces one not yet proposed.
func (r *HealthReporter) flush(ctx context.Context, s *reporterState, changes <-chan health.Change) bool {
	for len(s.pending) > 0 {
		node := nextPending(s.pending)
		report := s.pending[node]
		obs := report.obs
		at := r.now().UTC()
		if last, ok := s.lastAt[node]; ok && !at.After(last) {
			at = last.Add(time.Nanosecond)
		}
		obs.At = at
		if err := r.propose(ctx, node, obs); err != nil {
			if ctx.Err() != nil {
				return true
			}
			s.retryDelay = min(max(2*s.retryDelay, 100*time.Millisecond), DefaultRefresh)
			r.logger().Debug("cannot report health; retrying", "node", node, "retry_in", s.retryDelay, "err", err)
			return false
		}
		s.retryDelay = 0
		s.lastAt[node] = at
		if s.pending[node] == report {
			delete(s.pending, node)
		}
		for drained := false; !drained; {
			select {
			case change, ok := <-changes:
				if !ok {
					return true
				}
				r.noteChange(s, change)
			default:
				drained = true
			}
		}
	}
	return true
}

// nextPending picks the next node to report: urgent first, then by name.
func nextPending(pending map[string]pendingReport) string {
	nodes := slices.Sorted(maps.Keys(pending))
	for _, node := range nodes {
		if pending[node].urgent {
			return node
		}
	}
	return nodes[0]
}

// propose sends one ReportHealth. A result that did not apply (Stale, or Rejected
// before the bootstrap) is not retried: the next refresh reports again.
func (r *HealthReporter) propose(ctx context.Context, node string, obs clusterstate.Observation) error {
	data, err := clusterstate.Encode(clusterstate.Command{ReportHealth: &clusterstate.ReportHealth{Node: node, Observation: obs}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(r.ProposeTimeout, DefaultReportProposeTimeout))
	defer cancel()
	out, err := r.Raft.Propose(ctx, data)
	if err != nil {
		return fmt.Errorf("propose health of %s: %w", node, err)
	}
	if res, err := clusterstate.DecodeResult(out); err == nil && !res.OK() {
		r.logger().Debug("health report not applied", "node", node, "result", res.String())
	}
	return nil
}

func (r *HealthReporter) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *HealthReporter) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
