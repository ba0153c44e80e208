package health

import (
	"strings"
	"testing"
)

func TestCommitsWait(t *testing.T) {
	primary := func(names string, commit string, replicas ...Replica) Probe {
		spec, err := ParseSyncStandbyNames(names)
		if err != nil {
			t.Fatal(err)
		}
		return Probe{Node: "pg3", Reachable: true, SyncStandbyNames: names, SyncSpec: spec, SynchronousCommit: commit, Replication: replicas}
	}
	streaming := func(name string) Replica {
		return Replica{ApplicationName: name, State: "streaming", SyncState: "quorum"}
	}
	tests := []struct {
		name   string
		probe  Probe
		wait   bool
		reason string
	}{
		{"a quorum standby streams", primary(`ANY 1 ("pg1", "pg2")`, "on", streaming("pg1")), false, ""},
		{"no standby left: writes wait", primary(`ANY 1 ("pg1", "pg2")`, "on"), true, "writes wait: no synchronous standby is streaming"},
		{"a standby still catching up does not confirm", primary(`ANY 1 ("pg1", "pg2")`, "on",
			Replica{ApplicationName: "pg1", State: "catchup"}), true, "writes wait: no synchronous standby"},
		{"a walsender the setting does not name does not count", primary(`ANY 1 (pg1)`, "on", streaming("backup")), true, "no synchronous standby"},
		{"fewer than k", primary(`ANY 2 (pg1, pg2, pg4)`, "remote_apply", streaming("pg2")), true, "only 1 of the 2"},
		{"synchronous replication off", primary(``, "on"), false, ""},
		{"synchronous_commit local does not wait", primary(`ANY 1 (pg1)`, "local"), false, ""},
		{"a standby is not asked", Probe{Reachable: true, InRecovery: true}, false, ""},
		{"an unreachable node is not judged", Probe{}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wait, reason := CommitsWait(tt.probe)
			if wait != tt.wait || !strings.Contains(reason, tt.reason) || (!wait && reason != "") {
				t.Fatalf("CommitsWait = %v, %q; want %v, containing %q", wait, reason, tt.wait, tt.reason)
			}
		})
	}
}
