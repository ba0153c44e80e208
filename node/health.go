package node

import (
	"context"

	"github.com/pgquorum/pgquorum/consensus"
)

// Only voters observe PostgreSQL. Their observations are the ones a failover
// counts (a majority of the voting proxies must see the primary down), so a
// learner's probes would only add connections and load to every PostgreSQL
// node — a hundred sidecars, three hundred probe sessions — and its reports
// would only add Raft proposals in front of a failover's own. A learner learns
// health and routing from the replicated state, and its proxy notices its own
// backend sessions failing (routing.ConsensusRouter.BackendFailed). A learner
// promoted to a voter starts probing when the promotion is applied.

// waitVoter blocks until this node is a voter in the applied configuration.
// It returns false when ctx ends or the Raft member stops first.
func waitVoter(ctx context.Context, raft *consensus.Node) bool {
	for {
		changed := raft.StatusChanged()
		st := raft.Status()
		if st.Voter {
			return true
		}
		if st.Stopped {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// asVoter runs run once this node is a voter. If the Raft member stops
// first, it returns once the member is done, so that the node's failure is
// the member's (fail names the Raft error), not this component's.
func (n *Node) asVoter(run func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		if waitVoter(ctx, n.raft) {
			return run(ctx)
		}
		select {
		case <-ctx.Done():
		case <-n.raft.Done():
		}
		return nil
	}
}
