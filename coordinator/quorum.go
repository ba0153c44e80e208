package coordinator

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
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
// names (the standbys it should have), names always double-quoted, with k the
// old quorum capped at the number of names. It is "" only for no names.
func newSyncStandbyNames(oldK int, names []string) string {
	if len(names) == 0 {
		return ""
	}
	k := min(max(oldK, 1), len(names))
	quoted := make([]string, len(names))
	for i, name := range names {
		quoted[i] = `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
	}
	return fmt.Sprintf("ANY %d (%s)", k, strings.Join(quoted, ", "))
}

// syncChoice is the synchronous_standby_names a failover gives its new primary.
type syncChoice struct {
	Names string
	// Warning, when set, says that no standby remains and what that means; it
	// is logged and recorded in the promote step (and so in the history).
	Warning string
}

// syncStandbysFor decides synchronous_standby_names for candidate, the new
// primary of the failover in st. Pure.
//
// Normally they are the remaining standbys: every agreed node except the
// candidate, the old primary and fenced nodes. When none remains, pgquorum never
// switches synchronous replication off on its own (SPEC §4): the names are every
// other agreed node, the old primary and fenced ones included, so commits wait
// until one of them rejoins and streams again; clients see held writes while
// reads keep working. Only allowAsync (failover.allow_async) sets "" then.
func syncStandbysFor(st clusterstate.State, candidate string, oldK int, allowAsync bool) syncChoice {
	if remaining := remainingStandbys(st, candidate); len(remaining) > 0 {
		return syncChoice{Names: newSyncStandbyNames(oldK, remaining)}
	}
	if allowAsync {
		return syncChoice{Warning: "no standby remains and failover.allow_async is set: synchronous replication is OFF, " +
			"the new primary acknowledges commits alone (a commit can be lost with it) until a standby rejoins"}
	}
	var lost []string
	for _, n := range st.Nodes {
		if n.Name != candidate {
			lost = append(lost, n.Name)
		}
	}
	names := newSyncStandbyNames(oldK, lost)
	return syncChoice{Names: names, Warning: "no standby remains: writes wait (no synchronous standby) until one of " +
		strings.Join(lost, ", ") + " rejoins and streams; reads keep working"}
}
