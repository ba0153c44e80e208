package health

import (
	"fmt"
	"strings"
)

// Quorum is the SPEC §4 view of synchronous replication on one primary: N,
// the standbys that can have confirmed a commit, and k, how many of them
// confirmed every acknowledged commit.
//
// Every acknowledged commit was flushed by at least k members of N, so a set
// R of reachable members of N is guaranteed to hold every acknowledged commit
// only if |R| ≥ |N| − k + 1. The same bound holds for FIRST k: whichever k
// standbys were the synchronous ones at the time, at least one of them is in
// any |N| − k + 1 members of N.
type Quorum struct {
	Method   SyncMethod
	K        int
	Standbys []string // N: distinct (case-insensitively), in the order listed, the primary excluded
}

// QuorumFor returns N and k for a primary named primary whose
// synchronous_standby_names is spec, in a cluster whose configured PostgreSQL
// nodes are backends (the primary may be among them).
//
// N is every name listed in spec, except the primary itself (a node never
// confirms its own commits) and duplicates. When spec lists "*", N also
// contains every configured backend except the primary; a walsender that is
// not a configured backend is a hazard reported by FailoverHazards, not a
// member of N. A name listed in spec that is not a configured backend stays
// in N: pgquorum cannot reach it, so it can never count as reachable, which
// is the safe answer because it may have confirmed commits.
//
// It fails when spec is SyncOff: without synchronous replication no standby
// is guaranteed to have any acknowledged commit.
func QuorumFor(spec SyncSpec, backends []string, primary string) (Quorum, error) {
	if err := spec.Validate(); err != nil {
		return Quorum{}, err
	}
	if spec.Method == SyncOff {
		return Quorum{}, fmt.Errorf("synchronous replication is off (synchronous_standby_names is empty): commits are acknowledged by the primary alone")
	}
	q := Quorum{Method: spec.Method, K: spec.Num}
	add := func(name string) {
		if equalFoldASCII(name, primary) {
			return
		}
		for _, have := range q.Standbys {
			if equalFoldASCII(have, name) {
				return
			}
		}
		q.Standbys = append(q.Standbys, name)
	}
	for _, name := range spec.Names {
		if name == Wildcard {
			for _, backend := range backends {
				add(backend)
			}
			continue
		}
		add(name)
	}
	return q, nil
}

// RequiredReachable returns |N| − k + 1: how many members of N must be
// reachable before a failover is guaranteed to lose no acknowledged commit.
// It is at least 1 (with k > |N| no commit could ever be acknowledged, but a
// new primary still needs one standby).
func (q Quorum) RequiredReachable() int {
	required := len(q.Standbys) - q.K + 1
	if required < 1 {
		return 1
	}
	return required
}

// Reachability is the verdict of Quorum.CheckReachable.
type Reachability struct {
	Enough      bool     // |R| ≥ RequiredReachable
	Reachable   []string // R: members of N found in the reachable set, in N's order
	Unreachable []string // members of N not in the reachable set, in N's order
	Required    int      // RequiredReachable
	Reason      string   // empty when Enough, else for example "1 of 2 standbys reachable, need 2 (unreachable: pg3)"
}

// CheckReachable applies the SPEC §4 rule to the standby names the caller
// could reach (for the coordinator: the standbys it has frozen). Names are
// compared case-insensitively, as PostgreSQL compares application names;
// reachable names that are not in N are ignored.
func (q Quorum) CheckReachable(reachable []string) Reachability {
	v := Reachability{Required: q.RequiredReachable()}
	for _, standby := range q.Standbys {
		found := false
		for _, name := range reachable {
			if equalFoldASCII(name, standby) {
				found = true
				break
			}
		}
		if found {
			v.Reachable = append(v.Reachable, standby)
		} else {
			v.Unreachable = append(v.Unreachable, standby)
		}
	}
	v.Enough = len(v.Reachable) >= v.Required
	if !v.Enough {
		v.Reason = fmt.Sprintf("%d of %d standbys reachable, need %d", len(v.Reachable), len(q.Standbys), v.Required)
		if len(v.Unreachable) > 0 {
			v.Reason += " (unreachable: " + strings.Join(v.Unreachable, ", ") + ")"
		}
	}
	return v
}

// FailoverHazards lists the reasons why an automatic failover away from this
// primary could lose an acknowledged commit, judged from primary, the last
// successful probe of the primary, and backends, the configured PostgreSQL
// node names. An empty result means none is known; it does not replace the
// reachability rule, which the coordinator checks at failover time.
//
// Hazards:
//   - the probe is missing, failed, or is not of a primary;
//   - synchronous_standby_names cannot be parsed or is empty;
//   - synchronous_commit is off, local or remote_write (commits are
//     acknowledged before a standby has flushed them);
//   - a walsender that can confirm commits (its application_name matches
//     the spec, for instance through "*") is not a configured backend: the
//     commits it confirmed may exist nowhere pgquorum can reach.
//
// synchronous_commit is the probe session's value, which is the server's
// unless the probing role or database overrides it. A client can still turn
// it off for its own transactions; such commits are not covered by SPEC §4.
func FailoverHazards(primary Probe, backends []string) []string {
	if !primary.Reachable {
		return []string{"no successful probe of the primary"}
	}
	if primary.InRecovery {
		return []string{fmt.Sprintf("node %s is in recovery, not a primary", primary.Node)}
	}
	var hazards []string
	if primary.SyncStandbyNamesErr != "" {
		hazards = append(hazards, "synchronous_standby_names cannot be parsed: "+primary.SyncStandbyNamesErr)
	} else if primary.SyncSpec.Method == SyncOff {
		hazards = append(hazards, "synchronous replication is off (synchronous_standby_names is empty): commits are acknowledged by the primary alone")
	}
	switch primary.SynchronousCommit {
	case "on", "remote_apply":
	case "remote_write":
		hazards = append(hazards, "synchronous_commit is remote_write: standbys confirm commits before flushing them")
	default:
		hazards = append(hazards, fmt.Sprintf("synchronous_commit is %q: commits are acknowledged before a standby has them", primary.SynchronousCommit))
	}
	for _, walsender := range primary.Replication {
		if !primary.SyncSpec.Matches(walsender.ApplicationName) || isConfiguredBackend(walsender.ApplicationName, backends) {
			continue
		}
		hazards = append(hazards, fmt.Sprintf("walsender %q (client %s, sync_state %s) can confirm commits but is not a configured backend",
			walsender.ApplicationName, walsender.ClientAddr, walsender.SyncState))
	}
	return hazards
}

func isConfiguredBackend(name string, backends []string) bool {
	for _, backend := range backends {
		if equalFoldASCII(backend, name) {
			return true
		}
	}
	return false
}
