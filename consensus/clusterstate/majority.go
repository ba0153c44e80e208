package clusterstate

import (
	"slices"
	"time"
)

// The rule for deciding "a majority of voting proxies observe the node down"
// (SPEC §4 step 1), shared by MajorityDown, MajorityDownSince and DownVotes:
//
//   - Each proxy contributes only its latest observation of the node. The state keeps
//     exactly one observation per (proxy, node): ReportHealth replaces it only with a
//     strictly later one (by the proxy's own At), so a delayed older report never
//     overwrites a newer one.
//   - Only proxies listed in voters count; observations by learners or by removed
//     members are ignored. Duplicate voter IDs count once.
//   - A voter's observation is "down" when Up is false. A voter with no (fresh)
//     observation counts as not observing the node down.
//   - Majority means strictly more than half of the distinct voters: 2 of 3, 3 of 5,
//     3 of 4. A tie (2 of 4) is not a majority. No voters means no majority.
//   - MajorityDownSince also ignores observations taken before notBefore, so the last
//     "down" report of a proxy that has since crashed stops counting. The caller
//     supplies notBefore from its own clock (for example now minus three probe
//     intervals); the state machine never reads a clock. Because At is the proxy's
//     clock and notBefore the caller's, the proxies' clocks must be roughly in sync
//     (NTP); skew widens or narrows the window by the skew.

// MajorityDown reports whether more than half of the distinct voters' latest
// observations of node say it is down. See the rule above; observations of any age count.
func (s State) MajorityDown(node string, voters []uint64) bool {
	return s.MajorityDownSince(node, voters, time.Time{})
}

// MajorityDownSince is MajorityDown counting only observations with At not before notBefore.
func (s State) MajorityDownSince(node string, voters []uint64, notBefore time.Time) bool {
	down, voting := s.DownVotes(node, voters, notBefore)
	return voting > 0 && 2*down > voting
}

// DownVotes counts, for the rule above, the distinct voters whose latest observation of
// node (taken at or after notBefore) says it is down, and the number of distinct
// voters. It lets callers explain a decision ("1 of 3 voting proxies observe pg1 down").
// An unknown node has no down votes.
func (s State) DownVotes(node string, voters []uint64, notBefore time.Time) (down, voting int) {
	distinct := slices.Clone(voters)
	slices.Sort(distinct)
	distinct = slices.Compact(distinct)
	n, known := s.Node(node)
	for _, proxy := range distinct {
		if !known {
			continue
		}
		obs, ok := n.Observation(proxy)
		if ok && !obs.At.Before(notBefore) && !obs.Up {
			down++
		}
	}
	return down, len(distinct)
}
