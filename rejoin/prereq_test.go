package rejoin

import (
	"errors"
	"strings"
	"testing"
)

func TestPrerequisiteProblems(t *testing.T) {
	good := func() prereqFacts {
		return prereqFacts{
			Local:              map[string]string{"wal_log_hints": "on", "wal_keep_size": "256MB"},
			Control:            &controlData{State: controlProduction, WalLogHints: true},
			Primary:            &primaryPrereq{Name: "pg2", WalKeepSize: "256MB"},
			ReplicationChecked: true,
		}
	}
	tests := []struct {
		name   string
		change func(f *prereqFacts)
		want   []string // substrings, one per expected problem
	}{
		{"all in place", func(*prereqFacts) {}, nil},
		{"no wal_log_hints, no checksums", func(f *prereqFacts) {
			f.Local["wal_log_hints"] = "off"
			f.Control.WalLogHints = false
		}, []string{"neither wal_log_hints = on nor data checksums"}},
		{"checksums instead of wal_log_hints", func(f *prereqFacts) {
			delete(f.Local, "wal_log_hints")
			f.Control.WalLogHints, f.Control.Checksums = false, true
		}, nil},
		{"configured but not restarted", func(f *prereqFacts) { f.Control.WalLogHints = false }, []string{"not been restarted"}},
		{"on now, off after a restart", func(f *prereqFacts) { f.Local["wal_log_hints"] = "off" }, []string{"after the next restart"}},
		{"a re-clone needs no wal_log_hints", func(f *prereqFacts) {
			f.Local["wal_log_hints"] = "off"
			f.Control.WalLogHints = false
			f.RecloneOnly = true
		}, nil},
		{"no WAL kept here nor on the primary", func(f *prereqFacts) {
			f.Local["wal_keep_size"] = "0"
			f.Primary.WalKeepSize = "0"
		}, []string{"this node keeps no WAL", "the primary pg2 keeps no WAL"}},
		{"a slot on the primary instead", func(f *prereqFacts) {
			f.Local["wal_keep_size"], f.Local["primary_slot_name"] = "0", "pg1"
			f.Primary.WalKeepSize, f.Primary.SlotExists = "0", true
		}, nil},
		{"a slot named but missing on the primary", func(f *prereqFacts) {
			f.Local["primary_slot_name"] = "pg1"
			f.Primary.WalKeepSize = "0"
		}, []string{`no replication slot "pg1"`}},
		{"an archive instead", func(f *prereqFacts) {
			f.Local["wal_keep_size"], f.Local["restore_command"] = "0", "cp /archive/%f %p"
			f.Primary.WalKeepSize = "0"
		}, nil},
		{"replication refused", func(f *prereqFacts) {
			f.Replication = &replicationError{Primary: "pg2", Conninfo: "user=replicator", Err: errors.New("no pg_hba.conf entry")}
		}, []string{"no pg_hba.conf entry (the role needs the REPLICATION attribute"}},
		{"everything missing, every problem listed", func(f *prereqFacts) {
			f.Local = map[string]string{}
			f.Control.WalLogHints = false
			f.Primary.WalKeepSize = "0"
			f.Replication = errors.New("no replication credentials known")
		}, []string{"wal_log_hints", "this node keeps no WAL", "the primary pg2", "no replication credentials"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := good()
			tt.change(&f)
			got := prerequisiteProblems(f)
			if len(got) != len(tt.want) {
				t.Fatalf("problems %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d %q lacks %q", i, got[i], w)
				}
			}
			err := prerequisitesError(got)
			if (err == nil) != (len(got) == 0) || (err != nil && !errors.Is(err, ErrPrerequisites)) {
				t.Errorf("prerequisitesError = %v", err)
			}
		})
	}
}

func TestWalKept(t *testing.T) {
	for value, want := range map[string]bool{"256MB": true, "1GB": true, "1024": true, "0": false, "": false, "0MB": false, " 64MB ": true} {
		if got := walKept(value); got != want {
			t.Errorf("walKept(%q) = %v, want %v", value, got, want)
		}
	}
}

func TestConninfoTarget(t *testing.T) {
	for s, want := range map[string]string{
		"host=127.0.0.1 port=5433 user=replicator application_name=pg1": "127.0.0.1:5433",
		"host=pg-0.pg.svc user=replicator":                              "pg-0.pg.svc:5432",
		"hostaddr=::1 port=5433":                                        "[::1]:5433",
		"":                                                              "",
		"user=replicator":                                               "",
		"postgresql://replicator@10.0.0.2:5433/postgres": "10.0.0.2:5433",
	} {
		if got := conninfoTarget(s); got != want {
			t.Errorf("conninfoTarget(%q) = %q, want %q", s, got, want)
		}
	}
}
