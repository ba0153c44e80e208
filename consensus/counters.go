package consensus

import "sync/atomic"

// Counters are counts of this node's Raft events since it started
// (pgquorum_raft_*_total). They only go up.
type Counters struct {
	// LeaderChanges counts the times this node learned of a new leader
	// (the first one after start included; "no leader" is not counted).
	LeaderChanges uint64
	// LeaseExpiries counts the times this node's routing lease ran out
	// without a renewal: it was cut off from the quorum (or the quorum was
	// lost) for longer than the lease, and the proxy stopped forwarding.
	LeaseExpiries uint64
	// ProposalFailures counts Propose calls that returned an error: not
	// proposed (no leader, dropped, too large, stopped), outcome unknown
	// (the caller's context ended first), or refused by the state machine.
	ProposalFailures uint64
	// PeerRefusals counts, by RefusalReason, the connections, frames and
	// messages from peers that this node refused.
	PeerRefusals [numRefusalReasons]uint64
}

// counters are the live Counters. Owner: written by the Raft loop (leader
// changes, lease expiries) and by Propose's callers; read by anyone.
type counters struct {
	leaderChanges, leaseExpiries, proposalFailures atomic.Uint64
	refusals                                       PeerRefusals
}

// Counters returns the counts so far. Safe for concurrent use.
func (n *Node) Counters() Counters {
	return Counters{
		LeaderChanges:    n.counts.leaderChanges.Load(),
		LeaseExpiries:    n.counts.leaseExpiries.Load(),
		ProposalFailures: n.counts.proposalFailures.Load(),
		PeerRefusals:     n.counts.refusals.Snapshot(),
	}
}
