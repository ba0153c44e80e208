package rejoin

import (
	"fmt"
	"strconv"
	"strings"
)

// This file reads pg_controldata's report: the state the server left its data
// directory in. It is how the agent tells, without a file of its own, what the
// data directory went through last (see decide.go):
//
//	in production, shut down,             a primary (running or killed, or stopped
//	in crash recovery, shutting down      cleanly): it must be rewound before it
//	                                      can follow another primary
//	in archive recovery,                  a standby (running or killed, or stopped
//	shut down in recovery                 cleanly), or a data directory pg_rewind
//	                                      finished: pg_rewind's last act is to
//	                                      write the primary's control file with
//	                                      this state, so it is the commit point of
//	                                      a rewind.

// Database cluster states as pg_controldata prints them (LC_ALL=C).
const (
	controlShutDown           = "shut down"
	controlShutDownInRecovery = "shut down in recovery"
	controlShuttingDown       = "shutting down"
	controlCrashRecovery      = "in crash recovery"
	controlArchiveRecovery    = "in archive recovery"
	controlProduction         = "in production"
)

// controlData is what rejoin needs from pg_controldata.
type controlData struct {
	State       string // "Database cluster state"
	Timeline    uint32 // "Latest checkpoint's TimeLineID"
	Checksums   bool   // "Data page checksum version" is not 0
	WalLogHints bool   // "wal_log_hints setting" (as of the last checkpoint)
	SystemID    string // "Database system identifier"
}

// parseControlData parses the output of pg_controldata run with LC_ALL=C.
func parseControlData(output string) (controlData, error) {
	var c controlData
	seen := map[string]bool{}
	for _, line := range strings.Split(output, "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch key {
		case "Database cluster state":
			c.State = value
		case "Latest checkpoint's TimeLineID":
			tli, err := strconv.ParseUint(value, 10, 32)
			if err != nil {
				return c, fmt.Errorf("pg_controldata: timeline %q: %w", value, err)
			}
			c.Timeline = uint32(tli)
		case "Data page checksum version":
			c.Checksums = value != "0"
		case "wal_log_hints setting":
			c.WalLogHints = value == "on"
		case "Database system identifier":
			c.SystemID = value
		default:
			continue
		}
		seen[key] = true
	}
	for _, key := range []string{"Database cluster state", "Latest checkpoint's TimeLineID", "Data page checksum version"} {
		if !seen[key] {
			return c, fmt.Errorf("pg_controldata printed no %q (not a data directory, or an unknown version?)", key)
		}
	}
	return c, nil
}

// wasStandby reports whether a control file state belongs to a standby, or to a
// data directory that pg_rewind finished.
func wasStandby(state string) bool {
	return state == controlArchiveRecovery || state == controlShutDownInRecovery
}

// cleanlyStopped reports whether pg_rewind accepts the state as it is (it runs
// single-user crash recovery first otherwise, which a standby cannot do).
func cleanlyStopped(state string) bool {
	return state == controlShutDown || state == controlShutDownInRecovery
}
