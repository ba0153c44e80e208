package node

import (
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/health"
	"github.com/pgquorum/pgquorum/metrics"
)

// metricsSources builds the read-only views /metrics reads on every scrape.
// Each reads what its component already published; none does I/O.
func (n *Node) metricsSources(monitor *health.Monitor) metrics.Sources {
	return metrics.Sources{
		Proxy: func() metrics.ProxyStats { return metrics.ProxyStats(n.proxy.Stats()) },
		Raft: func() metrics.RaftStatus {
			st := n.raft.Status()
			counts := n.raft.Counters()
			out := metrics.RaftStatus{Term: st.Term, Leader: st.Leader, IsLeader: st.IsLeader, Voter: st.Voter,
				Commit: st.Commit, Applied: st.Applied, LeaseValid: n.raft.LeaseValid(time.Now()),
				LeaderChanges: counts.LeaderChanges, LeaseExpiries: counts.LeaseExpiries, ProposalFailures: counts.ProposalFailures,
				PeerRefusals: map[string]uint64{}}
			for _, reason := range consensus.RefusalReasons() {
				out.PeerRefusals[reason.String()] = counts.PeerRefusals[reason]
			}
			for _, m := range n.raft.Members() {
				out.Members = append(out.Members, metrics.RaftMember{ID: m.ID, Voter: m.Voter, Reachable: m.Reachable})
			}
			return out
		},
		Cluster: func() metrics.ClusterState {
			st := n.machine.State()
			out := metrics.ClusterState{Epoch: st.Epoch, Primary: st.Primary, Paused: st.Paused, Fenced: st.Fenced,
				FailoverInProgress: st.Failover != nil}
			if st.Failover != nil {
				out.FailoverBlocked = st.Failover.Blocked
			}
			for _, ns := range st.Nodes {
				out.Nodes = append(out.Nodes, ns.Name)
			}
			return out
		},
		Backends: func() metrics.BackendsView {
			view := metrics.BackendsView{Primary: n.router.Current().Target.Name}
			snapshot := monitor.Snapshot()
			for _, b := range n.cfg.Backends {
				s, ok := snapshot[b.Name]
				if !ok || s.Latest.At.IsZero() {
					continue // not probed yet; a learner never probes
				}
				view.Nodes = append(view.Nodes, metrics.BackendStatus{
					Name:              b.Name,
					Up:                s.State.Health == health.HealthUp,
					InRecovery:        s.State.InRecovery,
					Timeline:          s.State.Timeline,
					LastProbeOK:       s.Latest.Reachable,
					LastProbeDuration: s.Latest.Duration,
					CurrentLSN:        uint64(s.Latest.CurrentLSN),
					ReceiveLSN:        uint64(s.Latest.ReceiveLSN),
					ReplayLSN:         uint64(s.Latest.ReplayLSN),
				})
			}
			return view
		},
		Routing: func() metrics.RoutingStatus {
			v := n.router.Current()
			return metrics.RoutingStatus{Routing: v.Routing, Target: v.Target.Name}
		},
		WritesWait: func() metrics.WritesWait {
			primary := n.machine.State().Primary
			probe, ok := monitor.Latest()[primary]
			if primary == "" || !ok {
				return metrics.WritesWait{}
			}
			waiting, _ := health.CommitsWait(probe)
			return metrics.WritesWait{Waiting: waiting}
		},
		Redundancy: func() metrics.Redundancy {
			primary := n.machine.State().Primary
			probe, ok := monitor.Latest()[primary]
			if primary == "" || !ok {
				return metrics.Redundancy{}
			}
			r, err := health.RedundancyOf(probe, n.backendNames())
			if err != nil {
				return metrics.Redundancy{}
			}
			return metrics.Redundancy{Known: true, InEffect: len(r.Streaming), Configured: len(r.Standbys), Required: r.Required}
		},
		History: func() []metrics.FailoverRecord {
			history := n.machine.State().History
			out := make([]metrics.FailoverRecord, len(history))
			for i, h := range history {
				out[i] = metrics.FailoverRecord{Epoch: h.Epoch, Kind: string(h.Kind), Outcome: string(h.Outcome)}
			}
			return out
		},
		FailoverSafety: func() metrics.FailoverSafety {
			s := n.coordinator.Safety()
			return metrics.FailoverSafety{Safe: s.Safe}
		},
	}
}

// backendNames are the configured PostgreSQL node names.
func (n *Node) backendNames() []string {
	names := make([]string, len(n.cfg.Backends))
	for i, b := range n.cfg.Backends {
		names[i] = b.Name
	}
	return names
}
