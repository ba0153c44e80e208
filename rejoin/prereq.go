package rejoin

import (
	"fmt"
	"strconv"
	"strings"
)

// This file checks, before anything is stopped, that PostgreSQL is set up so
// that a node can be rewound and then follow a new primary. Each missing piece
// is named with the setting that provides it (docs/operations.md, "PostgreSQL
// prerequisites"):
//
//   - pg_rewind needs wal_log_hints = on or data checksums on the node it
//     rewinds, in effect while it ran as a primary;
//   - the WAL between the last common checkpoint and now must still exist when
//     the rewind runs and when the standby starts streaming: wal_keep_size
//     (or a replication slot, or a WAL archive with restore_command) on every
//     node, because every node may become the primary or the rewound one;
//   - a replication role the standby can stream as (checked by connecting).

// prereqFacts are the observations the check works on. A zero pointer field
// means "not observed" (e.g. the primary could not be asked), and is not a problem.
type prereqFacts struct {
	// Local are the settings of the local configuration files.
	Local map[string]string
	// Control is the local pg_controldata, nil when the data directory has none.
	Control *controlData
	// Primary is what the agreed primary said, nil when it was not asked.
	Primary *primaryPrereq
	// Replication is the result of the replication check; nil = passed or not
	// run (ReplicationChecked says which).
	Replication        error
	ReplicationChecked bool
	// RecloneOnly: the node is copied, never rewound (rejoin --reclone), so the
	// rewind prerequisites do not apply.
	RecloneOnly bool
}

// primaryPrereq is what the primary said.
type primaryPrereq struct {
	Name        string
	WalKeepSize string // SHOW wal_keep_size
	// SlotExists: a replication slot named like the local primary_slot_name exists there.
	SlotExists bool
}

// prerequisiteProblems returns every missing prerequisite, one sentence each.
func prerequisiteProblems(f prereqFacts) []string {
	var problems []string
	if !f.RecloneOnly && f.Control != nil && !f.Control.Checksums {
		configured := isOn(f.Local["wal_log_hints"])
		switch {
		case !configured && !f.Control.WalLogHints:
			problems = append(problems, "neither wal_log_hints = on nor data checksums: pg_rewind cannot rewind this node after it was a primary. "+
				"Set wal_log_hints = on in postgresql.conf on every node and restart it (or re-clone instead: --reclone / --reclone-fallback)")
		case !configured:
			problems = append(problems, "wal_log_hints is on in the running server but not in the configuration files: it will be off after the next restart. "+
				"Set wal_log_hints = on in postgresql.conf")
		case !f.Control.WalLogHints && !wasStandby(f.Control.State):
			problems = append(problems, "wal_log_hints = on is configured but the server has not been restarted since: until it is, pg_rewind cannot rewind it. Restart it")
		}
	}
	slot := strings.TrimSpace(f.Local["primary_slot_name"])
	archive := strings.TrimSpace(f.Local["restore_command"]) != ""
	if !walKept(f.Local["wal_keep_size"]) && slot == "" && !archive {
		problems = append(problems, "this node keeps no WAL for standbys and rewinds (wal_keep_size is 0, no primary_slot_name, no restore_command): "+
			"after a failover, pg_rewind and the restarted standby need the WAL since the last common checkpoint. "+
			"Set wal_keep_size (e.g. '1GB', more than the WAL written during a failover and a rewind) on every node")
	}
	if p := f.Primary; p != nil && !walKept(p.WalKeepSize) && !archive && !(slot != "" && p.SlotExists) {
		what := "no replication slot"
		if slot != "" {
			what = fmt.Sprintf("no replication slot %q", slot)
		}
		problems = append(problems, fmt.Sprintf("the primary %s keeps no WAL for this standby (wal_keep_size = %s, %s, and no restore_command here): "+
			"it may recycle the WAL the rewound node needs. Set wal_keep_size on every node", p.Name, orUnknown(p.WalKeepSize), what))
	}
	if f.ReplicationChecked && f.Replication != nil {
		problems = append(problems, f.Replication.Error())
	}
	return problems
}

// prerequisitesError joins the problems into one error wrapping ErrPrerequisites.
func prerequisitesError(problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	var b strings.Builder
	for i, p := range problems {
		fmt.Fprintf(&b, "\n  %d. %s", i+1, p)
	}
	return fmt.Errorf("%w:%s", ErrPrerequisites, b.String())
}

// walKept reports whether a wal_keep_size value keeps any WAL ("256MB", "1GB",
// "1024" = MB; "0" and "" do not).
func walKept(value string) bool {
	v := strings.TrimSpace(value)
	end := 0
	for end < len(v) && (v[end] >= '0' && v[end] <= '9') {
		end++
	}
	n, err := strconv.ParseInt(v[:end], 10, 64)
	return err == nil && n > 0
}

// isOn reports whether a boolean setting is on (PostgreSQL accepts on, true,
// yes, 1 and unambiguous prefixes).
func isOn(value string) bool {
	switch strings.ToLower(strings.TrimSpace(value)) {
	case "on", "true", "yes", "1", "t", "tr", "tru", "y", "ye":
		return true
	}
	return false
}
