package health

import (
	"reflect"
	"strings"
	"testing"
)

var backends = []string{"pg1", "pg2", "pg3"}

func TestQuorumFor(t *testing.T) {
	tests := []struct {
		name     string
		spec     string
		primary  string
		standbys []string
		k        int
		required int
	}{
		{"the demo cluster", "ANY 1 (pg2, pg3)", "pg1", []string{"pg2", "pg3"}, 1, 2},
		{"the primary's own name is not a standby", "ANY 1 (pg1, pg2, pg3)", "pg1", []string{"pg2", "pg3"}, 1, 2},
		{"after failover to pg2", "ANY 1 (pg1, pg3)", "pg2", []string{"pg1", "pg3"}, 1, 2},
		{"ANY 2 of 2 needs one", "ANY 2 (pg2, pg3)", "pg1", []string{"pg2", "pg3"}, 2, 1},
		{"FIRST uses the same bound", "FIRST 1 (pg2, pg3)", "pg1", []string{"pg2", "pg3"}, 1, 2},
		{"plain list", "pg2, pg3", "pg1", []string{"pg2", "pg3"}, 1, 2},
		{"duplicates count once, ignoring case", "ANY 1 (pg2, PG2, pg3)", "pg1", []string{"pg2", "pg3"}, 1, 2},
		{"wildcard means the configured backends", "ANY 1 (*)", "pg1", []string{"pg2", "pg3"}, 1, 2},
		{"wildcard plus an unknown name", "ANY 1 (*, far)", "pg1", []string{"pg2", "pg3", "far"}, 1, 3},
		{"an unconfigured name stays in N", "ANY 1 (pg2, pg3, pg4)", "pg1", []string{"pg2", "pg3", "pg4"}, 1, 3},
		{"k above |N| still needs one", "ANY 3 (pg2, pg3)", "pg1", []string{"pg2", "pg3"}, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := ParseSyncStandbyNames(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			q, err := QuorumFor(spec, backends, tt.primary)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(q.Standbys, tt.standbys) || q.K != tt.k {
				t.Errorf("N = %v, k = %d; want %v, %d", q.Standbys, q.K, tt.standbys, tt.k)
			}
			if got := q.RequiredReachable(); got != tt.required {
				t.Errorf("RequiredReachable() = %d, want %d", got, tt.required)
			}
		})
	}
}

func TestQuorumForRefusesNoSyncReplication(t *testing.T) {
	if _, err := QuorumFor(SyncSpec{Method: SyncOff}, backends, "pg1"); err == nil || !strings.Contains(err.Error(), "off") {
		t.Fatalf("err = %v, want synchronous replication is off", err)
	}
	if _, err := QuorumFor(AnyOf(0, "pg2"), backends, "pg1"); err == nil {
		t.Fatal("an invalid spec was accepted")
	}
}

func TestCheckReachable(t *testing.T) {
	tests := []struct {
		name       string
		spec       SyncSpec
		reachable  []string
		enough     bool
		reason     string
		reachableN []string
	}{
		{"both standbys of ANY 1", AnyOf(1, "pg2", "pg3"), []string{"pg2", "pg3"}, true, "", []string{"pg2", "pg3"}},
		{"one standby of ANY 1", AnyOf(1, "pg2", "pg3"), []string{"pg2"}, false,
			"1 of 2 standbys reachable, need 2 (unreachable: pg3)", []string{"pg2"}},
		{"none", AnyOf(1, "pg2", "pg3"), nil, false,
			"0 of 2 standbys reachable, need 2 (unreachable: pg2, pg3)", nil},
		{"one standby of ANY 2", AnyOf(2, "pg2", "pg3"), []string{"pg3"}, true, "", []string{"pg3"}},
		{"names compare without case", AnyOf(1, "pg2", "pg3"), []string{"PG2", "Pg3"}, true, "", []string{"pg2", "pg3"}},
		{"unknown names do not count", AnyOf(1, "pg2", "pg3"), []string{"pg2", "pg9", "pg1"}, false,
			"1 of 2 standbys reachable, need 2 (unreachable: pg3)", []string{"pg2"}},
		{"two of three with ANY 2", AnyOf(2, "pg2", "pg3", "pg4"), []string{"pg2", "pg4"}, true, "", []string{"pg2", "pg4"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := QuorumFor(tt.spec, []string{"pg1", "pg2", "pg3", "pg4"}, "pg1")
			if err != nil {
				t.Fatal(err)
			}
			v := q.CheckReachable(tt.reachable)
			if v.Enough != tt.enough || v.Reason != tt.reason || !reflect.DeepEqual(v.Reachable, tt.reachableN) {
				t.Errorf("CheckReachable(%v) = %+v; want enough %v, reason %q, reachable %v", tt.reachable, v, tt.enough, tt.reason, tt.reachableN)
			}
			if v.Required != q.RequiredReachable() || len(v.Reachable)+len(v.Unreachable) != len(q.Standbys) {
				t.Errorf("inconsistent verdict %+v for %+v", v, q)
			}
		})
	}
}

func TestFailoverHazards(t *testing.T) {
	healthy := Probe{
		Node: "pg1", Reachable: true, Timeline: 1,
		SyncStandbyNames: "ANY 1 (pg2, pg3)", SyncSpec: AnyOf(1, "pg2", "pg3"), SynchronousCommit: "on",
		Replication: []Replica{
			{ApplicationName: "pg2", ClientAddr: "127.0.0.1", State: "streaming", SyncState: "quorum"},
			{ApplicationName: "pg3", ClientAddr: "127.0.0.1", State: "streaming", SyncState: "quorum"},
			{ApplicationName: "pg_basebackup", ClientAddr: "10.0.0.9", State: "backup", SyncState: "async"},
		},
	}
	with := func(change func(*Probe)) Probe {
		p := healthy
		p.Replication = append([]Replica(nil), healthy.Replication...)
		change(&p)
		return p
	}
	tests := []struct {
		name    string
		primary Probe
		want    []string // substrings, one per hazard
	}{
		{"healthy quorum cluster", healthy, nil},
		{"remote_apply is fine", with(func(p *Probe) { p.SynchronousCommit = "remote_apply" }), nil},
		{"no probe", Probe{Node: "pg1", Err: "refused"}, []string{"no successful probe"}},
		{"a standby is not a primary", with(func(p *Probe) { p.InRecovery = true }), []string{"in recovery"}},
		{"sync replication off", with(func(p *Probe) { p.SyncStandbyNames, p.SyncSpec = "", SyncSpec{} }), []string{"synchronous replication is off"}},
		{"unparsable names", with(func(p *Probe) { p.SyncSpec, p.SyncStandbyNamesErr = SyncSpec{}, "syntax error" }), []string{"cannot be parsed"}},
		{"synchronous_commit off", with(func(p *Probe) { p.SynchronousCommit = "off" }), []string{`"off"`}},
		{"synchronous_commit local", with(func(p *Probe) { p.SynchronousCommit = "local" }), []string{`"local"`}},
		{"synchronous_commit remote_write", with(func(p *Probe) { p.SynchronousCommit = "remote_write" }), []string{"remote_write"}},
		{"wildcard with configured walsenders only", with(func(p *Probe) { p.SyncSpec = AnyOf(1, "*") }),
			[]string{`walsender "pg_basebackup"`}},
		{"wildcard with a stranger", with(func(p *Probe) {
			p.SyncSpec = AnyOf(1, "*")
			p.Replication = p.Replication[:2]
			p.Replication = append(p.Replication, Replica{ApplicationName: "walreceiver", ClientAddr: "10.0.0.7", SyncState: "quorum"})
		}), []string{`walsender "walreceiver" (client 10.0.0.7, sync_state quorum)`}},
		{"wildcard, walsenders all configured", with(func(p *Probe) {
			p.SyncSpec = AnyOf(1, "*")
			p.Replication = p.Replication[:2]
		}), nil},
		{"a listed name that is not a backend", with(func(p *Probe) {
			p.SyncSpec = AnyOf(1, "pg2", "pg3", "dr1")
			p.Replication = append(p.Replication, Replica{ApplicationName: "DR1", ClientAddr: "10.0.0.8", SyncState: "quorum"})
		}), []string{`walsender "DR1"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := FailoverHazards(tt.primary, backends)
			if len(got) != len(tt.want) {
				t.Fatalf("FailoverHazards = %q, want %d hazards like %q", got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tt.want[i]) {
					t.Errorf("hazard %d = %q, want it to contain %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}
