package metrics

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestSourceStates scrapes the source families in the states a cluster goes
// through and checks the series each state produces. Only the families with
// the case's prefix are compared.
func TestSourceStates(t *testing.T) {
	cases := []struct {
		name    string
		sources Sources
		prefix  string
		want    string
	}{
		{
			name: "before bootstrap: epoch 0, no primary series",
			sources: Sources{Cluster: func() ClusterState {
				return ClusterState{}
			}},
			prefix: "pgquorum_cluster_",
			want: `
pgquorum_cluster_epoch 0
pgquorum_cluster_paused 0
pgquorum_cluster_failover_in_progress 0
pgquorum_cluster_failover_blocked 0
`,
		},
		{
			name: "failover blocked: no primary, the reason as a label",
			sources: Sources{Cluster: func() ClusterState {
				return ClusterState{
					Epoch: 8, Nodes: []string{"pg1", "pg2", "pg3"}, Paused: true,
					FailoverInProgress: true, FailoverBlocked: true, Fenced: []string{"pg1"},
				}
			}},
			prefix: "pgquorum_cluster_",
			want: `
pgquorum_cluster_epoch 8
pgquorum_cluster_paused 1
pgquorum_cluster_failover_in_progress 1
pgquorum_cluster_failover_blocked 1
pgquorum_cluster_primary{node="pg1"} 0
pgquorum_cluster_primary{node="pg2"} 0
pgquorum_cluster_primary{node="pg3"} 0
pgquorum_cluster_fenced{node="pg1"} 1
pgquorum_cluster_fenced{node="pg2"} 0
pgquorum_cluster_fenced{node="pg3"} 0
`,
		},
		{
			name: "a stale block reason is not shown once the block clears",
			sources: Sources{Cluster: func() ClusterState {
				return ClusterState{Epoch: 9, Primary: "pg2", Nodes: []string{"pg2"}}
			}},
			prefix: "pgquorum_cluster_failover_blocked",
			want:   `pgquorum_cluster_failover_blocked 0`,
		},
		{
			name: "a primary missing from Nodes still gets its series",
			sources: Sources{Cluster: func() ClusterState {
				return ClusterState{Epoch: 3, Primary: "pg9", Nodes: []string{"pg1"}}
			}},
			prefix: "pgquorum_cluster_primary",
			want: `
pgquorum_cluster_primary{node="pg1"} 0
pgquorum_cluster_primary{node="pg9"} 1
`,
		},
		{
			name: "no agreed primary: LSNs but no lag",
			sources: Sources{Backends: func() BackendsView {
				return BackendsView{Primary: "", Nodes: []BackendStatus{
					{Name: "pg1", Up: true, Timeline: 1, LastProbeOK: true, CurrentLSN: 500},
					{Name: "pg2", Up: true, InRecovery: true, Timeline: 1, LastProbeOK: true, ReceiveLSN: 400, ReplayLSN: 300},
				}}
			}},
			prefix: "pgquorum_backend_",
			want: `
pgquorum_backend_up{node="pg1"} 1
pgquorum_backend_in_recovery{node="pg1"} 0
pgquorum_backend_timeline{node="pg1"} 1
pgquorum_backend_last_probe_success{node="pg1"} 1
pgquorum_backend_last_probe_duration_seconds{node="pg1"} 0
pgquorum_backend_current_lsn_bytes{node="pg1"} 500
pgquorum_backend_up{node="pg2"} 1
pgquorum_backend_in_recovery{node="pg2"} 1
pgquorum_backend_timeline{node="pg2"} 1
pgquorum_backend_last_probe_success{node="pg2"} 1
pgquorum_backend_last_probe_duration_seconds{node="pg2"} 0
pgquorum_backend_receive_lsn_bytes{node="pg2"} 400
pgquorum_backend_replay_lsn_bytes{node="pg2"} 300
`,
		},
		{
			name: "primary's probe failed: no lag from its stale LSN",
			sources: Sources{Backends: func() BackendsView {
				return BackendsView{Primary: "pg1", Nodes: []BackendStatus{
					{Name: "pg1", Up: true, Timeline: 1, LastProbeOK: false, CurrentLSN: 500},
					{Name: "pg2", Up: true, InRecovery: true, Timeline: 1, LastProbeOK: true, ReceiveLSN: 400},
				}}
			}},
			prefix: "pgquorum_backend_receive_lag",
			want:   ``,
		},
		{
			name: "standby probed after the primary reads ahead of it: lag 0, not negative",
			sources: Sources{Backends: func() BackendsView {
				return BackendsView{Primary: "pg1", Nodes: []BackendStatus{
					{Name: "pg1", Up: true, Timeline: 1, LastProbeOK: true, CurrentLSN: 500},
					{Name: "pg2", Up: true, InRecovery: true, Timeline: 1, LastProbeOK: true, ReceiveLSN: 600, ReplayLSN: 499},
				}}
			}},
			prefix: "pgquorum_backend_re",
			want: `
pgquorum_backend_receive_lsn_bytes{node="pg2"} 600
pgquorum_backend_replay_lsn_bytes{node="pg2"} 499
pgquorum_backend_receive_lag_bytes{node="pg2"} 0
pgquorum_backend_replay_lag_bytes{node="pg2"} 1
`,
		},
		{
			name: "duplicate and empty backend names are reported once and not at all",
			sources: Sources{Backends: func() BackendsView {
				return BackendsView{Nodes: []BackendStatus{{Name: "pg1", Up: true}, {Name: "pg1", Up: false}, {Name: ""}}}
			}},
			prefix: "pgquorum_backend_up",
			want:   `pgquorum_backend_up{node="pg1"} 1`,
		},
		{
			name:    "not routing: no target series",
			sources: Sources{Routing: func() RoutingStatus { return RoutingStatus{Routing: false, Target: "pg1"} }},
			prefix:  "pgquorum_routing_",
			want:    `pgquorum_routing_ready 0`,
		},
		{
			name:    "failover safe: empty reason even if one is given",
			sources: Sources{FailoverSafety: func() FailoverSafety { return FailoverSafety{Safe: true} }},
			prefix:  "pgquorum_failover_safe",
			want:    `pgquorum_failover_safe 1`,
		},
		{
			name: "writes wait: the reason says why",
			sources: Sources{WritesWait: func() WritesWait {
				return WritesWait{Waiting: true}
			}},
			prefix: "pgquorum_writes_wait_for_standby",
			want:   `pgquorum_writes_wait_for_standby 1`,
		},
		{
			name:    "writes flow: no reason",
			sources: Sources{WritesWait: func() WritesWait { return WritesWait{} }},
			prefix:  "pgquorum_writes_wait_for_standby",
			want:    `pgquorum_writes_wait_for_standby 0`,
		},
		{
			name: "a leader without members reports zero of each role",
			sources: Sources{Raft: func() RaftStatus {
				return RaftStatus{Term: 1, Leader: 1, IsLeader: true, Voter: true}
			}},
			prefix: "pgquorum_raft_",
			want: `
pgquorum_raft_term 1
pgquorum_raft_leader_id 1
pgquorum_raft_is_leader 1
pgquorum_raft_is_voter 1
pgquorum_raft_commit_index 0
pgquorum_raft_applied_index 0
pgquorum_raft_lease_valid 0
pgquorum_raft_leader_changes_total 0
pgquorum_raft_lease_expiries_total 0
pgquorum_raft_proposal_failures_total 0
pgquorum_raft_members{role="voter"} 0
pgquorum_raft_members{role="learner"} 0
pgquorum_raft_reachable_members{role="voter"} 0
pgquorum_raft_reachable_members{role="learner"} 0
`,
		},
		{
			name: "a reason, however long or invalid, never becomes a label value",
			sources: Sources{FailoverSafety: func() FailoverSafety {
				return FailoverSafety{Safe: false}
			}},
			prefix: "pgquorum_failover_safe",
			want:   `pgquorum_failover_safe 0`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestMetrics(t)
			if err := m.AddSources(tc.sources); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range sampleLines(pgquorumFamilies(scrape(t, m))) {
				if strings.HasPrefix(l, tc.prefix) {
					got = append(got, l)
				}
			}
			checkLines(t, parseLines(tc.want), got)
		})
	}
}

// TestAddSourcesIncrementally registers sources one component at a time, as
// the wiring does while a node starts, and refuses a source kind twice.
func TestAddSourcesIncrementally(t *testing.T) {
	m := newTestMetrics(t)
	all := healthySources()
	if err := m.AddSources(Sources{}); err != nil {
		t.Fatalf("empty Sources: %v", err)
	}
	if err := m.AddSources(Sources{Raft: all.Raft, Cluster: all.Cluster}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddSources(Sources{Proxy: all.Proxy}); err != nil {
		t.Fatal(err)
	}
	if err := m.AddSources(Sources{Proxy: all.Proxy}); err == nil {
		t.Fatal("adding the proxy source twice: no error")
	}
	if err := m.AddSources(Sources{Routing: all.Routing, Cluster: all.Cluster}); err == nil {
		t.Fatal("adding the cluster source twice (with a new one): no error")
	}
	families := pgquorumFamilies(scrape(t, m))
	for _, name := range []string{"pgquorum_raft_term", "pgquorum_cluster_epoch", "pgquorum_proxy_sessions_active"} {
		if _, ok := families[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	if _, ok := families["pgquorum_routing_ready"]; ok {
		t.Error("pgquorum_routing_ready present although its AddSources call failed")
	}
	if _, ok := families["pgquorum_backend_up"]; ok {
		t.Error("pgquorum_backend_up present without a Backends source")
	}
}

func TestLabelValue(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain", "plain"},
		{"bad \xff byte", "bad \uFFFD byte"},
		{strings.Repeat("a", MaxLabelValueBytes), strings.Repeat("a", MaxLabelValueBytes)},
		{strings.Repeat("a", MaxLabelValueBytes+1), strings.Repeat("a", MaxLabelValueBytes)},
		// A 3-byte rune straddling the limit is dropped whole.
		{strings.Repeat("a", MaxLabelValueBytes-1) + "€", strings.Repeat("a", MaxLabelValueBytes-1)},
	}
	for _, tc := range cases {
		got := labelValue(tc.in)
		if got != tc.want {
			t.Errorf("labelValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !utf8.ValidString(got) || len(got) > MaxLabelValueBytes {
			t.Errorf("labelValue(%q) = %q: not a bounded valid label value", tc.in, got)
		}
	}
}

func TestSQLSTATELabel(t *testing.T) {
	cases := []struct{ in, want string }{
		{"57P03", "57P03"},
		{"40001", "40001"},
		{"08007", "08007"},
		{"57p03", "invalid"},
		{"5703", "invalid"},
		{"570033", "invalid"},
		{"", "invalid"},
		{"57P0\xff", "invalid"},
		{`57"03`, "invalid"},
	}
	for _, tc := range cases {
		if got := sqlstateLabel(tc.in); got != tc.want {
			t.Errorf("sqlstateLabel(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
