package consensus

import "errors"

// Errors returned by Node methods. Each says whether the request may have
// taken effect: all of them except a context error from Propose mean it did
// not, so a retry is safe.
var (
	// ErrStopped means the node was closed (or stopped after a storage
	// failure); the request was not proposed.
	ErrStopped = errors.New("consensus: node stopped")
	// ErrRemoved means this node was removed from the cluster and stopped.
	ErrRemoved = errors.New("consensus: node was removed from the cluster")
	// ErrNoLeader means no leader is known right now (an election is running or
	// this node is cut off); the request was not proposed.
	ErrNoLeader = errors.New("consensus: no leader known")
	// ErrNotLeader means the operation needs this node to be the leader.
	ErrNotLeader = errors.New("consensus: this node is not the leader")
	// ErrProposalDropped means raft refused the proposal (for example during a
	// leadership transfer, or too much uncommitted data); it was not proposed.
	ErrProposalDropped = errors.New("consensus: proposal dropped by raft")
	// ErrTooLarge means the proposal exceeds the maximum proposal size.
	ErrTooLarge = errors.New("consensus: proposal too large")
	// ErrUnknownMember means the member id is not part of the cluster.
	ErrUnknownMember = errors.New("consensus: unknown member")
	// ErrCannotApply means the node stopped because the state machine cannot
	// apply a committed entry that the other nodes apply (it needs a newer
	// version): the node fails closed rather than diverge.
	ErrCannotApply = errors.New("consensus: cannot apply a committed entry")
	// ErrMemberRemoved means the id was removed before; ids are never reused.
	ErrMemberRemoved = errors.New("consensus: member id was removed and cannot be reused")
	// ErrLogLost stops a node whose Raft log is shorter than what it already
	// acknowledged to the leader: its data directory was lost, emptied or
	// restored from an old copy. Such a node must not take part again under
	// its id (it could vote twice in a term and forget committed entries):
	// remove it and add a replacement with a new id.
	ErrLogLost = errors.New("consensus: this node's Raft log was lost")
)
