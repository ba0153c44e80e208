package consensus

import (
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// Every member renews its lease with a ReadIndex every two ticks. Raft
// answers each ReadIndex that reaches the leader with its own heartbeat
// broadcast to every member, so with many learners the leader would send
// members² heartbeats per renewal period. Instead the leader batches the
// ReadIndex requests that followers and learners forward to it: it queues
// them, and once per tick issues a single ReadIndex of its own; when that one
// is confirmed, it answers every queued request with the confirmed index,
// exactly as raft would have (a MsgReadIndexResp carrying the request's
// context). This is as safe as raft's own answer: the leader's request was
// issued after each queued request arrived, so the quorum confirmation and the
// commit index it returns are both later than the requester's send time.

// maxQueuedPeerReads bounds the requests waiting for the next batch.
const maxQueuedPeerReads = 4096

// peerReadBatch is the requests answered by one of the leader's ReadIndex.
type peerReadBatch struct {
	sentAt   time.Time
	requests []*raftpb.Message
}

// queuePeerRead takes a MsgReadIndex addressed to this leader, unless the
// fence tracker withholds the renewal (see fence.go). Runs on the Raft loop.
func (n *Node) queuePeerRead(m *raftpb.Message, now time.Time) {
	if len(m.GetEntries()) != 1 || len(n.queuedPeerReads) >= maxQueuedPeerReads {
		return // raft would reject a malformed one; a full queue is retried by the requester
	}
	if !n.fence.renewal(m.GetFrom(), confirmedIn(m.GetEntries()[0].GetData()), now) {
		n.log.Debug("lease renewal withheld until the member confirms the routing fence",
			"member", m.GetFrom(), "fence", n.fence.target)
		return
	}
	n.queuedPeerReads = append(n.queuedPeerReads, m)
}

// renewReads issues this node's ReadIndex when its lease renewal is due or,
// on the leader, when forwarded requests are waiting. Runs on the Raft loop,
// once per tick.
func (n *Node) renewReads(now time.Time) {
	leader := n.lead == n.cfg.NodeID
	if !leader {
		n.queuedPeerReads = nil // their senders retry with the new leader
	}
	for ctx, b := range n.peerReadBatches {
		if !b.sentAt.Add(n.cfg.LeaseDuration).After(now) {
			delete(n.peerReadBatches, ctx) // lost with a leadership change; too old to help anyway
		}
	}
	if n.ticks%leaseRenewTicks == 0 || (leader && len(n.queuedPeerReads) > 0) {
		n.issueRead(now)
	}
}

// issueRead sends one ReadIndex: this node's lease renewal, carrying the
// routing index it confirmed, and on the leader the batch of forwarded
// requests. The leader's own renewal obeys the fence like anyone else's.
// Runs on the Raft loop.
func (n *Node) issueRead(now time.Time) {
	if n.lead == 0 || !isMember(n.confState, n.cfg.NodeID) {
		return
	}
	leader := n.lead == n.cfg.NodeID
	batch := leader && len(n.queuedPeerReads) > 0
	renew := !leader || n.fence.renewal(n.cfg.NodeID, n.confirmed, now)
	var ctx []byte
	switch {
	case renew:
		ctx = n.lease.request(now, n.confirmed)
	case batch:
		ctx = n.lease.token(n.confirmed)
	default:
		return
	}
	if batch {
		n.peerReadBatches[string(ctx)] = peerReadBatch{sentAt: now, requests: n.queuedPeerReads}
		n.queuedPeerReads = nil
	}
	n.confirmSent = n.confirmed
	n.rn.ReadIndex(ctx)
}

// answerPeerReads answers the requests batched under a confirmed ReadIndex.
// Runs on the Raft loop.
func (n *Node) answerPeerReads(ctx []byte, index uint64) {
	b, ok := n.peerReadBatches[string(ctx)]
	if !ok {
		return
	}
	delete(n.peerReadBatches, string(ctx))
	term := n.rn.BasicStatus().GetTerm()
	msgs := make([]*raftpb.Message, 0, len(b.requests))
	for _, req := range b.requests {
		msgs = append(msgs, &raftpb.Message{
			Type:    raftpb.MsgReadIndexResp.Enum(),
			To:      new(req.GetFrom()),
			From:    new(n.cfg.NodeID),
			Term:    new(term),
			Index:   new(index),
			Entries: req.GetEntries(),
		})
	}
	n.transport.Send(msgs)
}
