package consensus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// confChangeRetryTicks is how long a proposed conf change may stay unapplied
// before it is proposed again: raft silently drops a conf change while another
// one is pending (a new leader refuses them until it applied its whole log),
// and forwarded proposals can be lost. Proposing one twice is harmless: the
// second one changes nothing, or raft drops it.
const confChangeRetryTicks = 3

// maxLearnersPerChange bounds how many learners one membership change adds.
const maxLearnersPerChange = 256

// joinTimeout bounds how long the leader keeps a learner's join queued.
const joinTimeout = 30 * time.Second

// confChangeRequest is one membership change waiting in the loop's queue.
// Changes are proposed one at a time, in order, and retried until applied.
// Owner: the Raft loop.
type confChangeRequest struct {
	ctx        context.Context // nil for internal requests (joins)
	deadline   time.Time       // for internal requests
	changeType raftpb.ConfChangeType
	nodeID     uint64
	addr       string
	result     chan error // buffered 1; nil for internal requests

	seq        uint64
	proposedAt time.Time // zero = not proposed yet
}

func (c *confChangeRequest) expired(now time.Time) error {
	if c.ctx != nil && c.ctx.Err() != nil {
		return c.ctx.Err()
	}
	if !c.deadline.IsZero() && now.After(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *confChangeRequest) finish(err error) {
	if c.result != nil {
		c.result <- err
	}
}

// AddMember adds a learner (learner=true) or a voter. Adding a voter that is
// already a learner promotes it (the safe way to grow the voters: let the new
// node join as a learner, wait until it caught up, then promote it). Adding an
// existing member with the same role is a no-op. A node added here that has
// not started yet must start with Voter=false (an empty log); it learns its
// role from the log. Works on any member (raft forwards the proposal to the
// leader); returns once the change is applied on this node.
func (n *Node) AddMember(ctx context.Context, id uint64, addr string, learner bool) error {
	if id == 0 {
		return errors.New("consensus: add member: id must be non-zero")
	}
	t := raftpb.ConfChangeAddNode
	if learner {
		t = raftpb.ConfChangeAddLearnerNode
	}
	return n.changeMembership(ctx, &confChangeRequest{changeType: t, nodeID: id, addr: addr})
}

// RemoveMember removes a member. A removed node stops (ErrRemoved) and its
// id can never join again. Returns once the change is applied on this node.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	return n.changeMembership(ctx, &confChangeRequest{changeType: raftpb.ConfChangeRemoveNode, nodeID: id})
}

func (n *Node) changeMembership(ctx context.Context, c *confChangeRequest) error {
	c.ctx = ctx
	c.result = make(chan error, 1)
	select {
	case n.confChanges <- c:
	case <-ctx.Done():
		return fmt.Errorf("consensus: membership change: %w", ctx.Err())
	case <-n.done:
		return n.Err()
	}
	select {
	case err := <-c.result:
		if err != nil {
			return fmt.Errorf("consensus: %s %d: %w", c.changeType, c.nodeID, err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("consensus: membership change outcome unknown: %w", ctx.Err())
	case <-n.done:
		select {
		case err := <-c.result:
			return err
		default:
			return n.Err()
		}
	}
}

// enqueueConfChange validates a change against the applied configuration
// and queues it. Runs on the Raft loop.
func (n *Node) enqueueConfChange(c *confChangeRequest) {
	id := c.nodeID
	switch c.changeType {
	case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
		if n.book.isRemoved(id) {
			c.finish(ErrMemberRemoved)
			return
		}
		voter := isVoter(n.confState, id)
		switch {
		case c.changeType == raftpb.ConfChangeAddNode && n.peerRoles[id] == PeerLearner:
			c.finish(fmt.Errorf("member %d presents a learner certificate and cannot vote: give it a voter certificate "+
				"(pgquorum cert node --id %d), reload it there (SIGHUP), then promote it", id, id))
			return
		case voter && c.changeType == raftpb.ConfChangeAddNode:
			c.finish(nil)
			return
		case voter:
			c.finish(fmt.Errorf("member %d is a voter; demotion to learner is not supported", id))
			return
		case isMember(n.confState, id) && c.changeType == raftpb.ConfChangeAddLearnerNode:
			c.finish(nil)
			return
		case c.addr == "" && n.book.addr(id) == "":
			c.finish(fmt.Errorf("member %d needs an address", id))
			return
		}
	case raftpb.ConfChangeRemoveNode:
		if n.book.isRemoved(id) {
			c.finish(nil)
			return
		}
		if !isMember(n.confState, id) {
			c.finish(ErrUnknownMember)
			return
		}
		if voters := n.confState.GetVoters(); len(voters) == 1 && voters[0] == id {
			c.finish(fmt.Errorf("member %d is the last voter", id))
			return
		}
	}
	n.nextSeq++
	c.seq = n.nextSeq
	n.confQueue = append(n.confQueue, c)
}

// driveConfChanges drops expired requests and proposes the head of the queue
// if it was not proposed yet or its last proposal is overdue. The head and the
// learner additions queued right behind it go in one change when
// Config.BatchLearners allows it. Runs on the Raft loop.
func (n *Node) driveConfChanges(now time.Time) {
	if len(n.confQueue) == 0 {
		return
	}
	kept := n.confQueue[:0]
	for _, c := range n.confQueue {
		if err := c.expired(now); err != nil {
			c.finish(err)
			continue
		}
		kept = append(kept, c)
	}
	clear(n.confQueue[len(kept):])
	n.confQueue = kept
	if len(n.confQueue) == 0 || n.lead == 0 || isJoint(n.confState) {
		return // raft refuses every change until it left a joint configuration
	}
	head := n.confQueue[0]
	if !head.proposedAt.IsZero() && now.Sub(head.proposedAt) < confChangeRetryTicks*n.cfg.TickInterval {
		return
	}
	batch := n.confQueue[:1]
	if head.changeType == raftpb.ConfChangeAddLearnerNode && n.cfg.BatchLearners != nil && n.cfg.BatchLearners() {
		end := 1
		for end < len(n.confQueue) && end < maxLearnersPerChange && n.confQueue[end].changeType == raftpb.ConfChangeAddLearnerNode {
			end++
		}
		batch = n.confQueue[:end]
	}
	for _, c := range batch {
		c.proposedAt = now
	}
	if err := n.rn.ProposeConfChange(n.confChangeOf(batch)); err != nil {
		n.log.Debug("conf change not proposed yet", "change", head.changeType.String(), "member", head.nodeID, "members", len(batch), "err", err)
	}
}

// confChangeOf is the conf change that makes the changes of batch: a
// ConfChange for one, a ConfChangeV2 (raft enters and leaves a joint
// configuration by itself) for several learners.
func (n *Node) confChangeOf(batch []*confChangeRequest) raftpb.ConfChangeI {
	if len(batch) == 1 {
		c := batch[0]
		return &raftpb.ConfChange{
			Type:    c.changeType.Enum(),
			NodeId:  new(c.nodeID),
			Context: encodeConfChangeContext(confChangeContext{Addr: c.addr, Proposer: n.cfg.NodeID, Seq: c.seq}),
		}
	}
	ctx := confChangeContext{Proposer: n.cfg.NodeID}
	cc := &raftpb.ConfChangeV2{}
	for _, c := range batch {
		cc.Changes = append(cc.Changes, &raftpb.ConfChangeSingle{Type: c.changeType.Enum(), NodeId: new(c.nodeID)})
		ctx.Added = append(ctx.Added, addedMember{Addr: c.addr, Seq: c.seq})
	}
	cc.Context = encodeConfChangeContext(ctx)
	return cc
}

// isJoint reports whether cs is a joint configuration (a change of several
// members is half done).
func isJoint(cs *raftpb.ConfState) bool { return len(cs.GetVotersOutgoing()) > 0 }

// sendJoins asks every configured peer to add this learner. The leader acts
// on it; a follower forwards it to the leader it knows.
func (n *Node) sendJoins() {
	req := JoinRequest{NodeID: n.cfg.NodeID, Addr: n.selfAddr}
	for _, p := range n.cfg.Peers {
		if p.ID != n.cfg.NodeID {
			n.transport.SendJoin(p.ID, req)
		}
	}
}

// handleJoin queues ConfChangeAddLearnerNode for a learner that asked to
// join, when this node leads. Runs on the Raft loop.
func (n *Node) handleJoin(from Sender, req JoinRequest) {
	id := req.NodeID
	if id == 0 || id == n.cfg.NodeID {
		return
	}
	if err := admitJoin(from, req, n.confState); err != nil {
		n.refuse("join request", from, err, "member", id, "addr", req.Addr)
		return
	}
	if n.book.isRemoved(id) {
		if req.Addr != "" && n.book.addr(id) == "" {
			n.transport.SetPeer(id, req.Addr)
		}
		n.tellRemoved(id)
		return
	}
	if isMember(n.confState, id) || req.Addr == "" {
		return
	}
	if n.lead != n.cfg.NodeID {
		// The learner may not know the leader (its Peers can be out of date):
		// pass the request on once.
		if n.lead != 0 && !req.Forwarded {
			req.Forwarded = true
			n.transport.SendJoin(n.lead, req)
		}
		return
	}
	for _, c := range n.confQueue {
		if c.nodeID == id {
			return
		}
	}
	n.log.Info("learner asks to join", "member", id, "addr", req.Addr)
	n.enqueueConfChange(&confChangeRequest{
		deadline:   time.Now().Add(joinTimeout),
		changeType: raftpb.ConfChangeAddLearnerNode,
		nodeID:     id,
		addr:       req.Addr,
	})
}

// errNoTransferTarget: no other voter is recently active.
var errNoTransferTarget = errors.New("consensus: no active voter to transfer leadership to")

// transferRequest asks the loop to start a leadership transfer.
type transferRequest struct {
	result chan transferStarted // buffered 1
}

type transferStarted struct {
	target uint64 // 0 = nothing to do (not the leader)
	err    error
}

// TransferLeadership hands leadership to the most up-to-date other voter
// that is recently active, and waits until this node is no longer the leader.
// No-op if this node is not the leader or the only voter.
func (n *Node) TransferLeadership(ctx context.Context) error {
	req := &transferRequest{result: make(chan transferStarted, 1)}
	select {
	case n.transfers <- req:
	case <-ctx.Done():
		return fmt.Errorf("consensus: transfer leadership: %w", ctx.Err())
	case <-n.done:
		return n.Err()
	}
	var started transferStarted
	select {
	case started = <-req.result:
	case <-n.done:
		return n.Err()
	}
	if started.err != nil || started.target == 0 {
		return started.err
	}
	for {
		changed := n.statusSignal.wait()
		st := n.Status()
		switch {
		case st.Stopped:
			return n.waitStopped()
		case !st.IsLeader:
			return nil
		case st.TransferringTo == 0:
			return fmt.Errorf("consensus: leadership transfer to %d aborted", started.target)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("consensus: transfer leadership to %d: %w", started.target, ctx.Err())
		}
	}
}

// startTransfer picks the target and tells raft. It publishes the status
// before answering, so the caller sees TransferringTo. Runs on the Raft loop.
func (n *Node) startTransfer(req *transferRequest) {
	if n.lead != n.cfg.NodeID {
		req.result <- transferStarted{}
		return
	}
	st := n.rn.Status()
	voters := st.Config.Voters.IDs()
	if _, self := voters[n.cfg.NodeID]; len(voters) == 1 && self {
		req.result <- transferStarted{} // a one-voter cluster: nobody to hand over to
		return
	}
	var target, bestMatch uint64
	for id, pr := range st.Progress {
		if _, voter := voters[id]; !voter || id == n.cfg.NodeID || pr.IsLearner || !pr.RecentActive {
			continue
		}
		if target == 0 || pr.Match > bestMatch || (pr.Match == bestMatch && id < target) {
			target, bestMatch = id, pr.Match
		}
	}
	if target == 0 {
		req.result <- transferStarted{err: errNoTransferTarget}
		return
	}
	n.log.Info("transferring leadership", "to", target)
	n.rn.TransferLeader(target) // sets TransferringTo at once; messages go out with the next Ready
	n.publish()
	req.result <- transferStarted{target: target}
}
