package main

import (
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// TestNodeRowsAreHonest: what `pgquorum list` says of each node in the
// states of issue 13.
func TestNodeRowsAreHonest(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	obs := func(o clusterstate.Observation) []clusterstate.Observation {
		if o.At.IsZero() {
			o.At = now.Add(-2 * time.Second)
		}
		o.Proxy = 1
		return []clusterstate.Observation{o}
	}
	primaryUp := obs(clusterstate.Observation{Up: true, Timeline: 3, ReceiveLSN: 0x5000400})
	streaming := &admin.WalSenderView{State: "streaming", SyncState: "quorum"}
	probed := &admin.PrimaryProbeView{At: now, Reachable: true}
	tests := []struct {
		name string
		view admin.ClusterView
		want map[string]nodeRow // by node; only the fields set are compared
	}{
		{"a standby stopped: the primary has no walsender for it", admin.ClusterView{Primary: "pg1", PrimaryProbe: probed, Nodes: []admin.NodeView{
			{Name: "pg1", Role: "primary", Observations: primaryUp},
			{Name: "pg2", Role: "standby", WalSender: streaming, Observations: obs(clusterstate.Observation{Up: true, InRecovery: true, Timeline: 3, ReceiveLSN: 0x5000000})},
			{Name: "pg3", Role: "standby", Observations: obs(clusterstate.Observation{Up: false})},
		}}, map[string]nodeRow{
			"pg1": {state: "running", timeline: "3", lsn: "0/5000400", lag: "-"},
			"pg2": {state: "streaming", lag: "1.0 KiB", sync: "quorum"},
			"pg3": {state: "down", timeline: "-", lsn: "-", lag: "-", sync: "-"},
		}},
		{"a standby up but not streaming", admin.ClusterView{Primary: "pg1", PrimaryProbe: probed, Nodes: []admin.NodeView{
			{Name: "pg1", Role: "primary", Observations: primaryUp},
			{Name: "pg2", Role: "standby", Observations: obs(clusterstate.Observation{Up: true, InRecovery: true, Timeline: 3, ReceiveLSN: 0x4000000})},
		}}, map[string]nodeRow{"pg2": {state: "in recovery, not streaming"}}},
		{"the primary killed, failover in progress", admin.ClusterView{Failover: &clusterstate.FailoverProgress{OldPrimary: "pg1"}, Nodes: []admin.NodeView{
			{Name: "pg1", Role: "standby", Observations: obs(clusterstate.Observation{Up: false})},
			{Name: "pg2", Role: "standby", Observations: obs(clusterstate.Observation{Up: true, InRecovery: true, Timeline: 3, ReceiveLSN: 0x5000000})},
		}}, map[string]nodeRow{
			"pg1": {state: "down, was primary"},
			"pg2": {state: "in recovery", lag: "-"}, // no primary to measure against, no probe to tell streaming
		}},
		{"after the failover: the old primary fenced and down, no lag", admin.ClusterView{Primary: "pg2", PrimaryProbe: probed, Nodes: []admin.NodeView{
			{Name: "pg1", Role: "fenced", Observations: obs(clusterstate.Observation{Up: false})},
			{Name: "pg2", Role: "primary", Observations: primaryUp},
		}}, map[string]nodeRow{"pg1": {state: "down, was primary", timeline: "-", lsn: "-", lag: "-"}}},
		{"a fenced old primary back up: no lag (diverged timeline)", admin.ClusterView{Primary: "pg2", PrimaryProbe: probed, Nodes: []admin.NodeView{
			{Name: "pg1", Role: "fenced", Observations: obs(clusterstate.Observation{Up: true, Timeline: 2, ReceiveLSN: 0x4000000})},
			{Name: "pg2", Role: "primary", Observations: primaryUp},
		}}, map[string]nodeRow{"pg1": {state: "running as a primary, fenced (never routed to)", timeline: "2", lag: "-"}}},
		{"the agreed primary down, before a failover", admin.ClusterView{Primary: "pg1", PrimaryProbe: &admin.PrimaryProbeView{At: now, Err: "refused"}, Nodes: []admin.NodeView{
			{Name: "pg1", Role: "primary", Observations: obs(clusterstate.Observation{Up: false})},
		}}, map[string]nodeRow{"pg1": {state: "down (the agreed primary)"}}},
		{"nobody has read a node for minutes: no stale figures", admin.ClusterView{Primary: "pg1", Nodes: []admin.NodeView{
			{Name: "pg1", Role: "primary", Observations: primaryUp},
			{Name: "pg3", Role: "standby", Observations: obs(clusterstate.Observation{Up: true, InRecovery: true, Timeline: 3, ReceiveLSN: 0x5000000, At: now.Add(-3 * time.Minute)})},
			{Name: "pg4", Role: "standby"},
		}}, map[string]nodeRow{
			"pg3": {state: "unknown (last observed 3m ago)", timeline: "-", lsn: "-", lag: "-"},
			"pg4": {state: "unknown (never observed)"},
		}},
	}
	for _, tt := range tests {
		rows := map[string]nodeRow{}
		for _, r := range nodeRows(tt.view, now) {
			rows[r.name] = r
		}
		for node, want := range tt.want {
			got := rows[node]
			check := func(field, got, want string) {
				if want != "" && got != want {
					t.Errorf("%s: %s %s = %q, want %q", tt.name, node, field, got, want)
				}
			}
			check("state", got.state, want.state)
			check("timeline", got.timeline, want.timeline)
			check("lsn", got.lsn, want.lsn)
			check("lag", got.lag, want.lag)
			check("sync", got.sync, want.sync)
		}
	}
}

func TestHumanAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		80 * time.Millisecond: "80ms", 12 * time.Second: "12s", 3*time.Minute + 20*time.Second: "3m20s",
		3 * time.Minute: "3m", 2*time.Hour + 5*time.Minute: "2h5m",
	} {
		if got := humanAge(d); got != want {
			t.Errorf("humanAge(%v) = %q, want %q", d, got, want)
		}
	}
}
