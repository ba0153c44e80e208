package health

import "testing"

func TestRedundancy(t *testing.T) {
	backends := []string{"pg1", "pg2", "pg3"}
	streaming := func(names ...string) []Replica {
		var out []Replica
		for _, n := range names {
			out = append(out, Replica{ApplicationName: n, State: "streaming", SyncState: "quorum"})
		}
		return out
	}
	probe := func(names string, replicas []Replica) Probe {
		spec, err := ParseSyncStandbyNames(names)
		if err != nil {
			t.Fatal(err)
		}
		return Probe{Node: "pg1", Reachable: true, SyncStandbyNames: names, SyncSpec: spec, SynchronousCommit: "on", Replication: replicas}
	}
	tests := []struct {
		name   string
		probe  Probe
		state  string
		status string
	}{
		{"both stream", probe("ANY 1 (pg2, pg3)", streaming("pg2", "pg3")), RedundancyOK, "ok: 2 of 2 standbys"},
		{"one stopped", probe("ANY 1 (pg2, pg3)", streaming("pg2")), RedundancyDegraded, "degraded: 1 of 2 standbys (missing: pg3)"},
		{"one catching up", probe("ANY 1 (pg2, pg3)", append(streaming("pg3"), Replica{ApplicationName: "pg2", State: "catchup"})),
			RedundancyDegraded, "degraded: 1 of 2 standbys (missing: pg2)"},
		{"none", probe("ANY 1 (pg2, pg3)", nil), RedundancyWritesWait, "writes wait: no synchronous standby (commits need 1; missing: pg2, pg3)"},
		{"fewer than k", probe("ANY 2 (pg2, pg3)", streaming("pg3")), RedundancyWritesWait, "writes wait: 1 of the 2 synchronous standbys needed (missing: pg2)"},
		{"wildcard, a stranger streams", probe("ANY 1 (*)", streaming("pg2", "app9")), RedundancyDegraded, "degraded: 1 of 2 standbys (missing: pg3)"},
		{"FIRST, case-insensitive", probe("FIRST 1 (PG2, pg3)", streaming("pg2", "pg3")), RedundancyOK, "ok: 2 of 2 standbys"},
		{"off", probe("", streaming("pg2")), RedundancyAsynchronous, "asynchronous: synchronous_standby_names is empty, commits are acknowledged by the primary alone"},
		{"after a failover: the old primary fenced, named or not", probe("ANY 1 (pg3)", streaming("pg3")), RedundancyDegraded, "degraded: 1 of 2 standbys (missing: pg2)"},
		{"a streaming standby left out of the setting does not count", probe("ANY 1 (pg3)", streaming("pg2", "pg3")), RedundancyDegraded, "degraded: 1 of 2 standbys (missing: pg2)"},
	}
	for _, tt := range tests {
		r, err := RedundancyOf(tt.probe, backends)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if r.State() != tt.state || r.Status() != tt.status {
			t.Errorf("%s: %s / %q, want %s / %q", tt.name, r.State(), r.Status(), tt.state, tt.status)
		}
	}
	local := probe("ANY 1 (pg2, pg3)", nil)
	local.SynchronousCommit = "local"
	if r, _ := RedundancyOf(local, backends); r.State() != RedundancyAsynchronous {
		t.Errorf("synchronous_commit = local: %s", r.Status())
	}
	if _, err := RedundancyOf(Probe{Node: "pg1", Err: "connection refused"}, backends); err == nil {
		t.Error("a probe that did not answer has no redundancy")
	}
}
