package consensus

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// applyEntries applies committed entries in order. Runs on the Raft loop.
func (n *Node) applyEntries(entries []*raftpb.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	for _, e := range entries {
		if e.GetIndex() <= n.applied {
			continue // already part of the installed snapshot
		}
		switch e.GetType() {
		case raftpb.EntryNormal:
			if err := n.applyNormal(e); err != nil {
				return err
			}
		case raftpb.EntryConfChange:
			cc := &raftpb.ConfChange{}
			if err := proto.Unmarshal(e.GetData(), cc); err != nil {
				return fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
			}
			n.applyConfChange(e.GetIndex(), cc)
		case raftpb.EntryConfChangeV2:
			cc := &raftpb.ConfChangeV2{}
			if err := proto.Unmarshal(e.GetData(), cc); err != nil {
				return fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
			}
			n.applyConfChange(e.GetIndex(), cc)
		}
		n.applied = e.GetIndex()
	}
	n.lease.applied(n.applied)
	if !n.cfg.RoutingConfirmation {
		n.ConfirmRouting(n.applied) // nothing routes by this node's state but the state itself
	}
	n.appliedSignal.notify()
	return nil
}

// haltingError is a StateMachine.Apply error that must stop the node instead
// of skipping the entry: the entry is valid for the other nodes (it needs a
// newer version, say), so applying anything after it here would diverge.
type haltingError interface {
	HaltApply() bool
}

// applyNormal hands one normal entry to the state machine and its result to
// the local proposer, if it is waiting. It returns an error only when the
// state machine cannot apply the entry and the node must stop.
func (n *Node) applyNormal(e *raftpb.Entry) error {
	if len(e.GetData()) == 0 {
		return nil // the empty entry a new leader appends
	}
	id, payload, err := decodeEnvelope(e.GetData())
	if err != nil {
		n.log.Warn("skipping undecodable entry", "index", e.GetIndex(), "err", err)
		return nil
	}
	result, applyErr := n.sm.Apply(e.GetIndex(), payload)
	var halt haltingError
	if errors.As(applyErr, &halt) && halt.HaltApply() {
		n.log.Error("cannot apply a committed entry: stopping (this node no longer routes)", "index", e.GetIndex(), "err", applyErr)
		return fmt.Errorf("%w: entry %d: %w", ErrCannotApply, e.GetIndex(), applyErr)
	}
	if applyErr != nil {
		n.log.Warn("state machine rejected entry", "index", e.GetIndex(), "err", applyErr)
		applyErr = fmt.Errorf("consensus: entry %d rejected by the state machine: %w", e.GetIndex(), applyErr)
	}
	if id.Proposer != n.cfg.NodeID {
		return nil
	}
	if w, ok := n.waiters[id.Seq]; ok {
		delete(n.waiters, id.Seq)
		w.result <- proposeResult{data: result, err: applyErr}
	}
	return nil
}

// applyConfChange applies a membership change to raft and the address book.
// Re-adding a removed id is refused on every node alike (the book is
// replicated state), so ids are never reused.
func (n *Node) applyConfChange(index uint64, cc raftpb.ConfChangeI) {
	v2 := cc.AsV2()
	ctx, err := decodeConfChangeContext(v2.GetContext())
	if err != nil {
		n.log.Warn("conf change with undecodable context", "index", index, "err", err)
	}
	changes := v2.GetChanges()
	var readded []uint64
	for _, ch := range changes {
		t := ch.GetType()
		if (t == raftpb.ConfChangeAddNode || t == raftpb.ConfChangeAddLearnerNode) && n.book.isRemoved(ch.GetNodeId()) {
			readded = append(readded, ch.GetNodeId())
		}
	}
	if len(readded) > 0 {
		n.log.Warn("refusing to re-add a removed member", "index", index, "members", readded)
		n.refuseConfChange(ctx, changes)
		return
	}
	n.confState = n.rn.ApplyConfChange(cc)
	for i, ch := range changes {
		id := ch.GetNodeId()
		switch ch.GetType() {
		case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
			n.book.set(id, ctx.addr(i, len(changes)))
			if addr := n.book.addr(id); addr != "" && id != n.cfg.NodeID {
				n.transport.SetPeer(id, addr)
			}
		case raftpb.ConfChangeRemoveNode:
			n.book.markRemoved(id)
			if id == n.cfg.NodeID {
				n.removed = true
			}
		}
	}
	n.membersDirty = true
	// A member that joins may need a snapshot to catch up, and raft only
	// installs a snapshot whose configuration lists the receiver: take one
	// that does now, instead of up to SnapshotEvery entries later. Only a
	// voter can lead and send snapshots; a learner need not.
	if isVoter(n.confState, n.cfg.NodeID) {
		n.snapshotSoon = true
	}
	n.log.Info("membership changed", "index", index, "change", describeConfChange(v2),
		"voters", n.confState.GetVoters(), "learners", len(n.confState.GetLearners()))
	for _, seq := range ctx.seqs() {
		n.finishConfChange(ctx.Proposer, seq, nil)
	}
}

// refuseConfChange answers the local waiters of a change that re-added a
// removed member: that member's with ErrMemberRemoved; the other learners of
// a batch are proposed again.
func (n *Node) refuseConfChange(ctx confChangeContext, changes []*raftpb.ConfChangeSingle) {
	if ctx.Proposer != n.cfg.NodeID {
		return
	}
	for i, seq := range ctx.seqs() {
		if i < len(changes) && !n.book.isRemoved(changes[i].GetNodeId()) {
			for _, c := range n.confQueue {
				if c.seq == seq {
					c.proposedAt = time.Time{}
				}
			}
			continue
		}
		n.finishConfChange(ctx.Proposer, seq, ErrMemberRemoved)
	}
}

// finishConfChange answers the local AddMember/RemoveMember/Join waiting for
// the change proposer's seq, if it is this node's, and lets the next queued
// change go.
func (n *Node) finishConfChange(proposer, seq uint64, err error) {
	if proposer != n.cfg.NodeID || seq == 0 {
		return
	}
	for i, c := range n.confQueue {
		if c.seq == seq {
			c.finish(err)
			n.confQueue = slices.Delete(n.confQueue, i, i+1)
			return
		}
	}
}

func describeConfChange(cc *raftpb.ConfChangeV2) string {
	return raftpb.ConfChangesToString(cc.GetChanges())
}

// installSnapshot replaces the state machine and the address book with a
// snapshot the leader sent (already persisted).
func (n *Node) installSnapshot(snap *raftpb.Snapshot) error {
	index := snap.GetMetadata().GetIndex()
	state, book, err := decodeSnapshotPayload(snap.GetData())
	if err != nil {
		return fmt.Errorf("install snapshot %d: %w", index, err)
	}
	if err := n.sm.Restore(state); err != nil {
		return fmt.Errorf("install snapshot %d: restore state machine: %w", index, err)
	}
	for _, p := range n.cfg.Peers {
		book.setIfMissing(p.ID, p.Addr)
	}
	n.book = book
	n.confState = raftpb.EnsureConfState(proto.Clone(snap.GetMetadata().GetConfState()).(*raftpb.ConfState))
	n.applied = index
	n.snapshotIndex = index
	for id, addr := range book.addrs {
		if id != n.cfg.NodeID {
			n.transport.SetPeer(id, addr)
		}
	}
	if book.isRemoved(n.cfg.NodeID) {
		n.removed = true
	}
	n.membersDirty = true
	n.lease.applied(n.applied)
	if !n.cfg.RoutingConfirmation {
		n.ConfirmRouting(n.applied) // nothing routes by this node's state but the state itself
	}
	n.appliedSignal.notify()
	n.log.Info("installed snapshot from leader", "index", index, "term", snap.GetMetadata().GetTerm())
	return nil
}

// maybeSnapshot snapshots the state machine and the address book every
// SnapshotEvery applied entries and compacts the log, keeping SnapshotEvery
// entries behind the snapshot for followers that lag a little.
func (n *Node) maybeSnapshot() error {
	every := n.cfg.SnapshotEvery
	due := n.applied-n.snapshotIndex >= every || n.snapshotSoon && n.applied > n.snapshotIndex
	if !due || n.applied < n.snapshotRetryAt {
		return nil
	}
	n.snapshotSoon = false
	state, err := n.sm.Snapshot()
	if err != nil {
		// Not fatal: the log still has everything; try again SnapshotEvery
		// entries later.
		n.log.Error("state machine snapshot failed", "applied", n.applied, "err", err)
		n.snapshotRetryAt = n.applied + every
		return nil
	}
	data, err := encodeSnapshotPayload(state, n.book)
	if err != nil {
		return err
	}
	var compactIndex uint64
	if n.applied > every {
		compactIndex = n.applied - every
	}
	if err := n.storage.createSnapshot(n.applied, n.confState, data, compactIndex); err != nil {
		return err
	}
	n.snapshotIndex = n.applied
	n.log.Debug("snapshot taken", "index", n.applied, "compacted_through", compactIndex, "bytes", len(data))
	return nil
}
