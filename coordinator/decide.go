package coordinator

import (
	"fmt"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// decisionInput is everything the automatic failover decision depends on. The
// decision is a pure function of it, so it is tested without clocks or sockets.
type decisionInput struct {
	State  clusterstate.State
	Voters []uint64 // Raft ids of the voting proxies
	Now    time.Time
	// ObservationMaxAge: observations older than this do not count (a proxy
	// that crashed after reporting "down" stops counting).
	ObservationMaxAge time.Duration
	// MinInterval is the flap guard: the least time between the completion of
	// one automatic failover and the beginning of the next.
	MinInterval time.Duration
}

// decision says whether to begin an automatic failover, and why (or why not).
type decision struct {
	Begin bool
	// HeldBack: the primary is down by the majority rule, but pause or the flap
	// guard prevents the failover (worth a warning).
	HeldBack bool
	Reason   string
}

// decideAutomaticFailover applies SPEC §4 step 1: begin only when more than half of
// the voting proxies' fresh observations say the primary is down, automatic failover
// is not paused and the flap guard has passed.
//
// The flap guard is measured from the last completed automatic failover in History
// (its At): operator failovers, switchovers, blocked and aborted attempts changed
// nothing automatically and must not delay a failover of a primary that just died.
func decideAutomaticFailover(in decisionInput) decision {
	st := in.State
	switch {
	case !st.Bootstrapped():
		return decision{Reason: "the cluster is not bootstrapped"}
	case st.Failover != nil:
		return decision{Reason: fmt.Sprintf("a %s failover is in progress", st.Failover.Kind)}
	case st.Primary == "":
		return decision{Reason: "no primary is agreed"}
	}
	notBefore := in.Now.Add(-in.ObservationMaxAge)
	down, voting := st.DownVotes(st.Primary, in.Voters, notBefore)
	votes := fmt.Sprintf("%d of %d voting proxies observe %s down", down, voting, st.Primary)
	if voting == 0 {
		return decision{Reason: "no voting proxies are known"}
	}
	if 2*down <= voting {
		return decision{Reason: votes}
	}
	if st.Paused {
		return decision{HeldBack: true, Reason: votes + ", but automatic failover is paused"}
	}
	if last, ok := lastAutomaticFailover(st.History); ok {
		allowed := last.At.Add(in.MinInterval)
		if in.Now.Before(allowed) {
			return decision{HeldBack: true, Reason: fmt.Sprintf("%s, but the flap guard holds automatic failover until %s (last one completed at %s)",
				votes, allowed.UTC().Format(time.RFC3339), last.At.UTC().Format(time.RFC3339))}
		}
	}
	return decision{Begin: true, Reason: votes}
}

// lastAutomaticFailover returns the newest completed automatic failover in history.
func lastAutomaticFailover(history []clusterstate.HistoryEntry) (clusterstate.HistoryEntry, bool) {
	for i := len(history) - 1; i >= 0; i-- {
		h := history[i]
		if h.Kind == clusterstate.KindAutomatic && h.Outcome == clusterstate.OutcomeCompleted {
			return h, true
		}
	}
	return clusterstate.HistoryEntry{}, false
}
