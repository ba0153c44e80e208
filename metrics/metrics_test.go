package metrics

import (
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The LSNs of the scenarios: the primary at 0/3000060, one standby 1000 bytes
// behind in receive and 5000 in replay.
const (
	primaryLSN = 0x3000060
	standbyRx  = primaryLSN - 1000
	standbyRp  = primaryLSN - 5000
)

// healthySources is a running cluster: pg1 primary, pg2 streaming, pg3 down
// (its last probe failed, so its stale LSNs must not show), a fenced pg0.
func healthySources() Sources {
	return Sources{
		Proxy: func() ProxyStats {
			return ProxyStats{
				ClientConnections: 7, TotalClientConnections: 42, Sessions: 5, TotalSessions: 40,
				StartupFailures: 2, CancelRequests: 3, CancelUnknown: 2, CancelRefused: 1, CancelForwarded: 4, BytesFromClients: 1000, BytesToClients: 5000,
				StartupConnections: 1, RefusedConnections: 9, NamedPortals: 4,
			}
		},
		Raft: func() RaftStatus {
			return RaftStatus{
				Term: 4, Leader: 2, IsLeader: false, Voter: true, Commit: 120, Applied: 119, LeaseValid: true,
				LeaderChanges: 3, LeaseExpiries: 1, ProposalFailures: 2,
				PeerRefusals: map[string]uint64{"forged_sender": 1, "tls_handshake": 4},
				Members: []RaftMember{
					{ID: 1, Voter: true, Reachable: true},
					{ID: 2, Voter: true, Reachable: true},
					{ID: 3, Voter: true, Reachable: false},
					{ID: 101, Voter: false, Reachable: true},
					{ID: 101, Voter: false, Reachable: true}, // a duplicate is counted once
					{ID: 102, Voter: false, Reachable: false},
				},
			}
		},
		Cluster: func() ClusterState {
			return ClusterState{
				Epoch: 7, Primary: "pg1", Nodes: []string{"pg0", "pg1", "pg2", "pg3"},
				Fenced: []string{"pg0"},
			}
		},
		Backends: func() BackendsView {
			return BackendsView{Primary: "pg1", Nodes: []BackendStatus{
				{Name: "pg0", Up: false},
				{Name: "pg1", Up: true, Timeline: 2, LastProbeOK: true, LastProbeDuration: 3 * time.Millisecond,
					CurrentLSN: primaryLSN},
				{Name: "pg2", Up: true, InRecovery: true, Timeline: 2, LastProbeOK: true,
					LastProbeDuration: 1500 * time.Microsecond, ReceiveLSN: standbyRx, ReplayLSN: standbyRp},
				{Name: "pg3", Up: false, InRecovery: true, Timeline: 2, LastProbeOK: false,
					LastProbeDuration: time.Second, ReceiveLSN: 1, ReplayLSN: 1},
			}}
		},
		Routing: func() RoutingStatus { return RoutingStatus{Routing: true, Target: "pg1"} },
		FailoverSafety: func() FailoverSafety {
			return FailoverSafety{Safe: false}
		},
		WritesWait: func() WritesWait {
			return WritesWait{Waiting: true}
		},
		History: func() []FailoverRecord {
			return []FailoverRecord{
				{Epoch: 3, Kind: "automatic", Outcome: "blocked"},
				{Epoch: 3, Kind: "automatic", Outcome: "blocked"}, // blocked again: one failover
				{Epoch: 3, Kind: "automatic", Outcome: "completed"},
				{Epoch: 5, Kind: "switchover", Outcome: "completed"},
				{Epoch: 7, Kind: "manual", Outcome: "aborted"},
			}
		},
		// pg3 is down: one of two standbys in effect.
		Redundancy: func() Redundancy { return Redundancy{Known: true, InEffect: 1, Configured: 2, Required: 1} },
	}
}

// wantTypes is every family pgquorum exposes, with its type. The scrape tests
// check that exactly these families appear.
var wantTypes = map[string]dto.MetricType{
	"pgquorum_build_info":                              dto.MetricType_GAUGE,
	"pgquorum_writes_wait_for_standby":                 dto.MetricType_GAUGE,
	"pgquorum_node_info":                               dto.MetricType_GAUGE,
	"pgquorum_proxy_client_connections_open":           dto.MetricType_GAUGE,
	"pgquorum_proxy_client_connections_accepted_total": dto.MetricType_COUNTER,
	"pgquorum_proxy_sessions_active":                   dto.MetricType_GAUGE,
	"pgquorum_proxy_sessions_started_total":            dto.MetricType_COUNTER,
	"pgquorum_proxy_startup_failures_total":            dto.MetricType_COUNTER,
	"pgquorum_proxy_cancel_requests_total":             dto.MetricType_COUNTER,
	"pgquorum_proxy_cancel_requests_unknown_total":     dto.MetricType_COUNTER,
	"pgquorum_proxy_cancel_requests_refused_total":     dto.MetricType_COUNTER,
	"pgquorum_proxy_cancel_requests_forwarded_total":   dto.MetricType_COUNTER,
	"pgquorum_proxy_client_received_bytes_total":       dto.MetricType_COUNTER,
	"pgquorum_proxy_client_sent_bytes_total":           dto.MetricType_COUNTER,
	"pgquorum_proxy_client_connections_starting":       dto.MetricType_GAUGE,
	"pgquorum_proxy_client_connections_refused_total":  dto.MetricType_COUNTER,
	"pgquorum_proxy_named_portals":                     dto.MetricType_GAUGE,
	"pgquorum_proxy_queries_total":                     dto.MetricType_COUNTER,
	"pgquorum_proxy_transactions_total":                dto.MetricType_COUNTER,
	"pgquorum_client_errors_total":                     dto.MetricType_COUNTER,
	"pgquorum_proxy_held_requests":                     dto.MetricType_GAUGE,
	"pgquorum_proxy_hold_duration_seconds":             dto.MetricType_HISTOGRAM,
	"pgquorum_proxy_sessions_moved_total":              dto.MetricType_COUNTER,
	"pgquorum_proxy_async_commit_sessions_total":       dto.MetricType_COUNTER,
	"pgquorum_proxy_async_commit_refused_total":        dto.MetricType_COUNTER,
	"pgquorum_failovers_total":                         dto.MetricType_COUNTER,
	"pgquorum_failovers_blocked_total":                 dto.MetricType_COUNTER,
	"pgquorum_admin_refused_requests_total":            dto.MetricType_COUNTER,
	"pgquorum_learners_removed_total":                  dto.MetricType_COUNTER,
	"pgquorum_proxy_backend_sessions":                  dto.MetricType_GAUGE,
	"pgquorum_proxy_backend_connect_errors_total":      dto.MetricType_COUNTER,
	"pgquorum_proxy_backend_connect_duration_seconds":  dto.MetricType_HISTOGRAM,
	"pgquorum_proxy_query_duration_seconds":            dto.MetricType_HISTOGRAM,
	"pgquorum_proxy_auth_failures_total":               dto.MetricType_COUNTER,
	"pgquorum_proxy_held_requests_limit":               dto.MetricType_GAUGE,
	"pgquorum_synchronous_standbys_in_effect":          dto.MetricType_GAUGE,
	"pgquorum_synchronous_standbys_configured":         dto.MetricType_GAUGE,
	"pgquorum_synchronous_standbys_required":           dto.MetricType_GAUGE,
	"pgquorum_failover_phase_duration_seconds":         dto.MetricType_HISTOGRAM,
	"pgquorum_raft_term":                               dto.MetricType_GAUGE,
	"pgquorum_raft_leader_id":                          dto.MetricType_GAUGE,
	"pgquorum_raft_is_leader":                          dto.MetricType_GAUGE,
	"pgquorum_raft_is_voter":                           dto.MetricType_GAUGE,
	"pgquorum_raft_commit_index":                       dto.MetricType_GAUGE,
	"pgquorum_raft_applied_index":                      dto.MetricType_GAUGE,
	"pgquorum_raft_members":                            dto.MetricType_GAUGE,
	"pgquorum_raft_reachable_members":                  dto.MetricType_GAUGE,
	"pgquorum_raft_lease_valid":                        dto.MetricType_GAUGE,
	"pgquorum_raft_leader_changes_total":               dto.MetricType_COUNTER,
	"pgquorum_raft_lease_expiries_total":               dto.MetricType_COUNTER,
	"pgquorum_raft_proposal_failures_total":            dto.MetricType_COUNTER,
	"pgquorum_raft_peer_refusals_total":                dto.MetricType_COUNTER,
	"pgquorum_cluster_epoch":                           dto.MetricType_GAUGE,
	"pgquorum_cluster_primary":                         dto.MetricType_GAUGE,
	"pgquorum_cluster_paused":                          dto.MetricType_GAUGE,
	"pgquorum_cluster_failover_in_progress":            dto.MetricType_GAUGE,
	"pgquorum_cluster_failover_blocked":                dto.MetricType_GAUGE,
	"pgquorum_cluster_fenced":                          dto.MetricType_GAUGE,
	"pgquorum_backend_up":                              dto.MetricType_GAUGE,
	"pgquorum_backend_in_recovery":                     dto.MetricType_GAUGE,
	"pgquorum_backend_timeline":                        dto.MetricType_GAUGE,
	"pgquorum_backend_last_probe_success":              dto.MetricType_GAUGE,
	"pgquorum_backend_last_probe_duration_seconds":     dto.MetricType_GAUGE,
	"pgquorum_backend_current_lsn_bytes":               dto.MetricType_GAUGE,
	"pgquorum_backend_receive_lsn_bytes":               dto.MetricType_GAUGE,
	"pgquorum_backend_replay_lsn_bytes":                dto.MetricType_GAUGE,
	"pgquorum_backend_receive_lag_bytes":               dto.MetricType_GAUGE,
	"pgquorum_backend_replay_lag_bytes":                dto.MetricType_GAUGE,
	"pgquorum_routing_ready":                           dto.MetricType_GAUGE,
	"pgquorum_routing_target":                          dto.MetricType_GAUGE,
	"pgquorum_failover_safe":                           dto.MetricType_GAUGE,
}

// backendEventsAtZero are the proxy's backend families before any event, on
// a node configured without backends (only "other").
const backendEventsAtZero = `
pgquorum_proxy_backend_connect_errors_total{node="other",reason="refused"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="timeout"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="auth"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="not_accepting"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="too_many"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="protocol"} 0
pgquorum_proxy_backend_connect_errors_total{node="other",reason="other"} 0
pgquorum_proxy_backend_sessions{node="other"} 0
pgquorum_proxy_backend_connect_duration_seconds_count{node="other"} 0
pgquorum_proxy_backend_connect_duration_seconds_sum{node="other"} 0
pgquorum_proxy_query_duration_seconds_count 0
pgquorum_proxy_query_duration_seconds_sum 0
pgquorum_proxy_auth_failures_total{reason="bad_password"} 0
pgquorum_proxy_auth_failures_total{reason="no_verifier"} 0
pgquorum_proxy_auth_failures_total{reason="timeout"} 0
pgquorum_proxy_auth_failures_total{reason="protocol"} 0
pgquorum_proxy_auth_failures_total{reason="tls_required"} 0
pgquorum_proxy_auth_failures_total{reason="lookup"} 0
pgquorum_proxy_auth_failures_total{reason="other"} 0
`

// The event families before any event: the pre-created series at zero.
const eventsAtZero = `
pgquorum_proxy_queries_total 0
pgquorum_proxy_transactions_total 0
pgquorum_proxy_held_requests_limit 10000
pgquorum_proxy_held_requests 0
pgquorum_proxy_sessions_moved_total 0
pgquorum_proxy_async_commit_sessions_total 0
pgquorum_proxy_async_commit_refused_total 0
pgquorum_proxy_hold_duration_seconds_count{outcome="canceled"} 0
pgquorum_proxy_hold_duration_seconds_sum{outcome="canceled"} 0
pgquorum_proxy_hold_duration_seconds_count{outcome="routed"} 0
pgquorum_proxy_hold_duration_seconds_sum{outcome="routed"} 0
pgquorum_proxy_hold_duration_seconds_count{outcome="timeout"} 0
pgquorum_proxy_hold_duration_seconds_sum{outcome="timeout"} 0
pgquorum_failover_phase_duration_seconds_count{phase="decide"} 0
pgquorum_failover_phase_duration_seconds_sum{phase="decide"} 0
pgquorum_failover_phase_duration_seconds_count{phase="detect"} 0
pgquorum_failover_phase_duration_seconds_sum{phase="detect"} 0
pgquorum_failover_phase_duration_seconds_count{phase="freeze"} 0
pgquorum_failover_phase_duration_seconds_sum{phase="freeze"} 0
pgquorum_failover_phase_duration_seconds_count{phase="promote"} 0
pgquorum_failover_phase_duration_seconds_sum{phase="promote"} 0
pgquorum_failover_phase_duration_seconds_count{phase="reroute"} 0
pgquorum_failover_phase_duration_seconds_sum{phase="reroute"} 0
`

// The info families of newTestMetrics.
const infoLines = `
pgquorum_build_info{go_version="GOVERSION",version="1.2.3"} 1
pgquorum_node_info{cluster_name="demo",node_id="1"} 1
`

func newTestMetrics(t *testing.T) *Metrics {
	t.Helper()
	return New(Options{ClusterName: "demo", NodeID: 1, Version: "1.2.3", NoRuntimeMetrics: true, MaxHeld: 10000})
}

// TestScrapeShowsEverySource scrapes a node whose sources describe a healthy
// cluster and checks every family: its type, help, labels and values.
func TestScrapeShowsEverySource(t *testing.T) {
	m := newTestMetrics(t)
	if err := m.AddSources(healthySources()); err != nil {
		t.Fatal(err)
	}
	// One of each event, so that the vectors without pre-created series
	// (client errors) appear too.
	m.ClientError("57P03")

	families := pgquorumFamilies(scrape(t, m))
	for name, f := range families {
		want, ok := wantTypes[name]
		if !ok {
			t.Errorf("unexpected family %s", name)
			continue
		}
		if f.GetType() != want {
			t.Errorf("%s: type %s, want %s", name, f.GetType(), want)
		}
		if strings.TrimSpace(f.GetHelp()) == "" {
			t.Errorf("%s: no help text", name)
		}
	}
	for name := range wantTypes {
		if _, ok := families[name]; !ok {
			t.Errorf("family %s missing from /metrics", name)
		}
	}

	want := parseLines(infoLines + eventsAtZero + `
pgquorum_client_errors_total{sqlstate="57P03"} 1

pgquorum_proxy_client_connections_open 7
pgquorum_proxy_client_connections_accepted_total 42
pgquorum_proxy_sessions_active 5
pgquorum_proxy_sessions_started_total 40
pgquorum_proxy_startup_failures_total 2
pgquorum_proxy_cancel_requests_total 3
pgquorum_proxy_cancel_requests_unknown_total 2
pgquorum_proxy_cancel_requests_refused_total 1
pgquorum_proxy_cancel_requests_forwarded_total 4
pgquorum_proxy_client_received_bytes_total 1000
pgquorum_proxy_client_sent_bytes_total 5000
pgquorum_proxy_client_connections_starting 1
pgquorum_proxy_client_connections_refused_total 9
pgquorum_proxy_named_portals 4

pgquorum_raft_term 4
pgquorum_raft_leader_id 2
pgquorum_raft_is_leader 0
pgquorum_raft_is_voter 1
pgquorum_raft_commit_index 120
pgquorum_raft_applied_index 119
pgquorum_raft_lease_valid 1
pgquorum_raft_leader_changes_total 3
pgquorum_raft_lease_expiries_total 1
pgquorum_raft_proposal_failures_total 2
pgquorum_raft_peer_refusals_total{reason="forged_sender"} 1
pgquorum_raft_peer_refusals_total{reason="tls_handshake"} 4
pgquorum_raft_members{role="voter"} 3
pgquorum_raft_members{role="learner"} 2
pgquorum_raft_reachable_members{role="voter"} 2
pgquorum_raft_reachable_members{role="learner"} 1

pgquorum_cluster_epoch 7
pgquorum_cluster_paused 0
pgquorum_cluster_failover_in_progress 0
pgquorum_cluster_failover_blocked 0
pgquorum_cluster_primary{node="pg0"} 0
pgquorum_cluster_primary{node="pg1"} 1
pgquorum_cluster_primary{node="pg2"} 0
pgquorum_cluster_primary{node="pg3"} 0
pgquorum_cluster_fenced{node="pg0"} 1
pgquorum_cluster_fenced{node="pg1"} 0
pgquorum_cluster_fenced{node="pg2"} 0
pgquorum_cluster_fenced{node="pg3"} 0

# pg0: never probed successfully: no role, timeline or LSNs.
pgquorum_backend_up{node="pg0"} 0
pgquorum_backend_last_probe_success{node="pg0"} 0
pgquorum_backend_last_probe_duration_seconds{node="pg0"} 0
# pg1: the primary; lag is measured against its current LSN.
pgquorum_backend_up{node="pg1"} 1
pgquorum_backend_in_recovery{node="pg1"} 0
pgquorum_backend_timeline{node="pg1"} 2
pgquorum_backend_last_probe_success{node="pg1"} 1
pgquorum_backend_last_probe_duration_seconds{node="pg1"} 0.003
pgquorum_backend_current_lsn_bytes{node="pg1"} 50331744
# pg2: a streaming standby.
pgquorum_backend_up{node="pg2"} 1
pgquorum_backend_in_recovery{node="pg2"} 1
pgquorum_backend_timeline{node="pg2"} 2
pgquorum_backend_last_probe_success{node="pg2"} 1
pgquorum_backend_last_probe_duration_seconds{node="pg2"} 0.0015
pgquorum_backend_receive_lsn_bytes{node="pg2"} 50330744
pgquorum_backend_replay_lsn_bytes{node="pg2"} 50326744
pgquorum_backend_receive_lag_bytes{node="pg2"} 1000
pgquorum_backend_replay_lag_bytes{node="pg2"} 5000
# pg3: down; its last probe failed, so no LSNs and no lag.
pgquorum_backend_up{node="pg3"} 0
pgquorum_backend_in_recovery{node="pg3"} 1
pgquorum_backend_timeline{node="pg3"} 2
pgquorum_backend_last_probe_success{node="pg3"} 0
pgquorum_backend_last_probe_duration_seconds{node="pg3"} 1

pgquorum_routing_ready 1
pgquorum_routing_target{node="pg1"} 1

pgquorum_synchronous_standbys_in_effect 1
pgquorum_synchronous_standbys_configured 2
pgquorum_synchronous_standbys_required 1

pgquorum_failovers_total{kind="automatic",outcome="completed"} 1
pgquorum_failovers_total{kind="automatic",outcome="aborted"} 0
pgquorum_failovers_total{kind="manual",outcome="completed"} 0
pgquorum_failovers_total{kind="manual",outcome="aborted"} 1
pgquorum_failovers_total{kind="switchover",outcome="completed"} 1
pgquorum_failovers_total{kind="switchover",outcome="aborted"} 0
pgquorum_failovers_blocked_total{kind="automatic"} 1
pgquorum_failovers_blocked_total{kind="manual"} 0
pgquorum_failovers_blocked_total{kind="switchover"} 0

pgquorum_failover_safe 0
pgquorum_writes_wait_for_standby 1

pgquorum_admin_refused_requests_total{reason="unauthorized"} 0
pgquorum_admin_refused_requests_total{reason="unsupported_media_type"} 0
pgquorum_learners_removed_total 0
` + backendEventsAtZero)
	checkLines(t, want, sampleLines(families))
}

// checkLines compares sample lines, with GOVERSION standing for the Go
// version label.
func checkLines(t *testing.T, want, got []string) {
	t.Helper()
	for i, g := range got {
		if strings.HasPrefix(g, "pgquorum_build_info{") {
			got[i] = goVersionPattern.ReplaceAllString(g, `go_version="GOVERSION"`)
		}
	}
	missing, extra := diffLines(want, got)
	for _, l := range missing {
		t.Errorf("missing: %s", l)
	}
	for _, l := range extra {
		t.Errorf("unexpected: %s", l)
	}
}

var goVersionPattern = regexp.MustCompile(`go_version="[^"]*"`)
