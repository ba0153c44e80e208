package coordinator

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// choice is the outcome of SPEC §4 steps 4 and 5 for one LSN table: a candidate,
// or the reason the failover must not promote anyone now.
type choice struct {
	Candidate string
	Block     string // non-empty: do not promote; for humans ("1 of 2 standbys reachable, need 2")
	Why       string // how the candidate was picked, for the step's Detail and logs
}

// position is how far a standby's WAL goes: (timeline, received LSN). A standby
// that has not received anything by streaming since it started reports no receive
// LSN; what it replayed is then what it has.
type position struct {
	Timeline uint32
	LSN      uint64
}

func rowPosition(r clusterstate.LSNRow) position {
	return position{Timeline: r.Timeline, LSN: max(r.ReceiveLSN, r.ReplayLSN)}
}

func comparePositions(a, b position) int {
	if c := cmp.Compare(a.Timeline, b.Timeline); c != 0 {
		return c
	}
	return cmp.Compare(a.LSN, b.LSN)
}

func (p position) String() string {
	return fmt.Sprintf("timeline %d, %s", p.Timeline, health.LSN(p.LSN))
}

// chooseCandidate checks the failover in st against q and picks its candidate from
// the recorded LSN table (FailoverProgress.LSNTable). Pure.
//
// R is the set of frozen standbys: only a standby whose WAL receiver is confirmed
// stopped can no longer acknowledge commits of an old primary that might still be
// alive. Unless the failover is forced:
//   - a hazard of q blocks (an automatic failover would be unsafe);
//   - |R| >= |N| - k + 1 must hold (a switchover is exempt: its demote step made
//     sure the target has the old primary's final LSN);
//   - the candidate must be at the highest position in R, or some acknowledged
//     commit might exist only on a standby that is not promoted;
//   - fenced nodes are not candidates.
//
// Among the eligible standbys the highest (timeline, received LSN) wins, then the
// higher configured priority, then the smaller name. An operator's target replaces
// the ranking but not the checks.
func chooseCandidate(st clusterstate.State, q quorumView) choice {
	f := st.Failover
	if f == nil {
		return choice{Block: "no failover in progress"}
	}
	var frozen []clusterstate.LSNRow
	for _, r := range f.LSNTable {
		if r.Reachable && r.Frozen && r.Node != f.OldPrimary {
			frozen = append(frozen, r)
		}
	}
	names := make([]string, len(frozen))
	for i, r := range frozen {
		names[i] = r.Node
	}
	guarded := !f.Forced
	if guarded && f.Kind != clusterstate.KindSwitchover {
		if len(q.Hazards) > 0 {
			return choice{Block: "automatic failover is unsafe: " + strings.Join(q.Hazards, "; ")}
		}
		if reach := q.Quorum.CheckReachable(names); !reach.Enough {
			return choice{Block: reach.Reason}
		}
	}
	if len(frozen) == 0 {
		return choice{Block: "no standby is reachable and frozen"}
	}

	priority := func(name string) int {
		n, _ := st.Node(name)
		return n.Priority
	}
	eligible := slices.DeleteFunc(slices.Clone(frozen), func(r clusterstate.LSNRow) bool {
		return guarded && st.IsFenced(r.Node)
	})
	slices.SortFunc(eligible, func(a, b clusterstate.LSNRow) int {
		if c := comparePositions(rowPosition(b), rowPosition(a)); c != 0 {
			return c
		}
		if c := cmp.Compare(priority(b.Node), priority(a.Node)); c != 0 {
			return c
		}
		return strings.Compare(a.Node, b.Node)
	})
	mostAdvanced := slices.MaxFunc(frozen, func(a, b clusterstate.LSNRow) int {
		return comparePositions(rowPosition(a), rowPosition(b))
	})

	var picked clusterstate.LSNRow
	var why string
	if f.Target != "" {
		i := slices.IndexFunc(eligible, func(r clusterstate.LSNRow) bool { return r.Node == f.Target })
		if i < 0 {
			return choice{Block: fmt.Sprintf("target %s is not reachable and frozen", f.Target)}
		}
		picked = eligible[i]
		why = fmt.Sprintf("%s requested by the operator (%s)", picked.Node, rowPosition(picked))
	} else {
		if len(eligible) == 0 {
			return choice{Block: "every reachable standby is fenced"}
		}
		picked = eligible[0]
		why = fmt.Sprintf("%s has the highest position (%s), priority %d", picked.Node, rowPosition(picked), priority(picked.Node))
	}
	if guarded && comparePositions(rowPosition(picked), rowPosition(mostAdvanced)) < 0 {
		return choice{Block: fmt.Sprintf("%s (%s) is behind %s (%s): promoting it could lose acknowledged commits",
			picked.Node, rowPosition(picked), mostAdvanced.Node, rowPosition(mostAdvanced))}
	}
	return choice{Candidate: picked.Node, Why: why}
}

// formatLSNTable renders an LSN table for logs: "pg2 frozen tl 1 recv 0/3000060 replay 0/3000060; pg3 unreachable".
func formatLSNTable(rows []clusterstate.LSNRow) string {
	parts := make([]string, 0, len(rows))
	for _, r := range rows {
		switch {
		case !r.Reachable:
			parts = append(parts, r.Node+" unreachable")
		default:
			state := "frozen"
			if !r.Frozen {
				state = "not frozen"
			}
			parts = append(parts, fmt.Sprintf("%s %s tl %d recv %s replay %s", r.Node, state, r.Timeline,
				health.LSN(r.ReceiveLSN), health.LSN(r.ReplayLSN)))
		}
	}
	return strings.Join(parts, "; ")
}
