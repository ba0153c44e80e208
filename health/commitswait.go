package health

import (
	"fmt"
	"strings"
)

// CommitsWait says whether commits on primary wait for synchronous standbys that
// are not there: synchronous_standby_names asks for k confirmations and fewer
// than k of the walsenders it names are streaming. Such commits (and every
// write, which commits) are held by PostgreSQL until a standby streams again;
// reads are not affected. It is what a failover leaves behind when no standby
// remains (SPEC §4: synchronous replication is never switched off), and what a
// primary that lost its standbys looks like. Pure: it reads the probe only.
//
// reason is "" when commits do not wait; otherwise it starts with "writes wait:
// no synchronous standby" (or "writes wait: only n of the k synchronous standbys
// needed are streaming") and names the setting.
func CommitsWait(primary Probe) (wait bool, reason string) {
	if !primary.Reachable || primary.InRecovery || primary.SyncStandbyNamesErr != "" {
		return false, ""
	}
	spec := primary.SyncSpec
	if spec.Method == SyncOff {
		return false, ""
	}
	switch primary.SynchronousCommit {
	case "local", "off":
		return false, "" // the server's default commits do not wait for standbys
	}
	var streaming []string
	for _, r := range primary.Replication {
		if r.State == "streaming" && spec.Matches(r.ApplicationName) {
			streaming = append(streaming, r.ApplicationName)
		}
	}
	if len(streaming) >= spec.Num {
		return false, ""
	}
	setting := fmt.Sprintf("synchronous_standby_names = '%s' on %s", primary.SyncStandbyNames, primary.Node)
	if len(streaming) == 0 {
		return true, fmt.Sprintf("writes wait: no synchronous standby is streaming (%s); commits are held until a standby rejoins", setting)
	}
	return true, fmt.Sprintf("writes wait: only %d of the %d synchronous standbys needed are streaming (%s: %s)",
		len(streaming), spec.Num, setting, strings.Join(streaming, ", "))
}
