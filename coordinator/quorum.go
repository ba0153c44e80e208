package coordinator

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/health"
)

// quorumView is N and k of SPEC §4 for a failover away from one primary, where
// they came from, and the hazards that make a failover without --force unsafe.
type quorumView struct {
	Quorum  health.Quorum
	Source  string   // for logs and step details
	Hazards []string // non-empty: an unforced failover must not promote anyone
}

// quorumFor derives N and k for a failover away from oldPrimary.
//
// The source is last, the latest successful probe of oldPrimary (ok false when
// there is none): its synchronous_standby_names gives N and k, and
// health.FailoverHazards says what makes it unsafe (a walsender that is not a
// configured backend under "*", synchronous replication off, synchronous_commit
// below on). Without a usable probe (none, or the node was not a primary when last
// probed), N is every configured backend except oldPrimary and k is 1, the most
// demanding assumption: it can only make the rule stricter than the truth.
func quorumFor(oldPrimary string, last health.Probe, ok bool, backends []string) quorumView {
	fallback := func(why string) quorumView {
		var standbys []string
		for _, b := range backends {
			if b != oldPrimary {
				standbys = append(standbys, b)
			}
		}
		return quorumView{
			Quorum: health.Quorum{Method: health.SyncAny, K: 1, Standbys: standbys},
			Source: fmt.Sprintf("%s; assumed ANY 1 over every other configured backend (%s)", why, strings.Join(standbys, ", ")),
		}
	}
	if !ok || !last.Reachable {
		return fallback(fmt.Sprintf("no successful probe of %s", oldPrimary))
	}
	if last.InRecovery {
		return fallback(fmt.Sprintf("%s was a standby when last probed", oldPrimary))
	}
	view := quorumView{
		Source: fmt.Sprintf("synchronous_standby_names of %s probed at %s: %q", oldPrimary,
			last.At.UTC().Format(time.RFC3339), last.SyncStandbyNames),
		Hazards: health.FailoverHazards(last, backends),
	}
	q, err := health.QuorumFor(last.SyncSpec, backends, oldPrimary)
	if err != nil {
		if len(view.Hazards) == 0 {
			view.Hazards = []string{err.Error()}
		}
		// Keep a quorum that makes CheckReachable demand every standby.
		view.Quorum = fallback("").Quorum
		return view
	}
	view.Quorum = q
	return view
}

// newSyncStandbyNames is synchronous_standby_names for a new primary: ANY k over
// remaining (the standbys that stay in the cluster), names always double-quoted,
// with k the old quorum capped at the number of remaining standbys. It is "" when
// none remains: the new primary then acknowledges commits alone, which the caller
// logs loudly.
func newSyncStandbyNames(oldK int, remaining []string) string {
	if len(remaining) == 0 {
		return ""
	}
	k := min(max(oldK, 1), len(remaining))
	quoted := make([]string, len(remaining))
	for i, name := range remaining {
		quoted[i] = `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	}
	return fmt.Sprintf("ANY %d (%s)", k, strings.Join(quoted, ", "))
}
