package rejoin

import (
	"strings"
	"testing"
)

// pg_controldata of PostgreSQL 15, trimmed.
const controlDataOutput = `pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7715105113741272300
Database cluster state:               in archive recovery
pg_control last modified:             Thu Dec  3 15:48:10 2026
Latest checkpoint location:           0/1511A88
Latest checkpoint's REDO location:    0/1511A88
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   1
wal_level setting:                    replica
wal_log_hints setting:                on
Data page checksum version:           0
`

func TestParseControlData(t *testing.T) {
	cd, err := parseControlData(controlDataOutput)
	if err != nil {
		t.Fatal(err)
	}
	want := controlData{State: controlArchiveRecovery, Timeline: 2, WalLogHints: true, SystemID: "7715105113741272300"}
	if cd != want {
		t.Fatalf("parseControlData = %+v, want %+v", cd, want)
	}
	if !wasStandby(cd.State) || cleanlyStopped(cd.State) {
		t.Fatalf("%q: wasStandby %v, cleanlyStopped %v", cd.State, wasStandby(cd.State), cleanlyStopped(cd.State))
	}
	checksums := strings.Replace(controlDataOutput, "Data page checksum version:           0", "Data page checksum version:           1", 1)
	if cd, err := parseControlData(checksums); err != nil || !cd.Checksums {
		t.Fatalf("checksums: %+v, %v", cd, err)
	}
	if _, err := parseControlData("pg_controldata: error: could not open file"); err == nil || !strings.Contains(err.Error(), "Database cluster state") {
		t.Fatalf("an error output: got %v", err)
	}
}
