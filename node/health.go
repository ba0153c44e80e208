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
