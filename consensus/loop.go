package consensus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// run is the Raft loop: the one goroutine that owns the RawNode. It ticks,
// steps what arrives, and handles every Ready, until ctx is cancelled, this
// node is removed, or storage fails.
func (n *Node) run(ctx context.Context) {
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	n.shutdown(n.loopUntilStopped(ctx, ticker.C))
}

// loopUntilStopped runs the loop and turns a panic inside raft (a broken
// invariant, such as a follower whose log was lost behind raft's back) into
// an error: the node stops, fails closed (no lease) and reports it through
// Done/Err instead of taking the whole process down.
func (n *Node) loopUntilStopped(ctx context.Context, tick <-chan time.Time) (err error) {
	defer func() {
		if r := recover(); r != nil {
			n.log.Error("raft loop panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("consensus: raft invariant broken: %v", r)
			if strings.Contains(fmt.Sprint(r), "corrupted, truncated, or lost") {
				err = fmt.Errorf("%w: raft: %v; %s", ErrLogLost, r, n.lostLogProcedure())
			}
		}
	}()
	return n.loop(ctx, tick)
}

func (n *Node) loop(ctx context.Context, tick <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return ErrStopped
		case now := <-tick:
			n.tick(now)
		case in := <-n.incoming:
			n.step(in)
			n.stepQueued() // one Ready (and one fsync) for a burst of messages
		case r := <-n.reports:
			n.handleReport(r)
		case in := <-n.joins:
			n.handleJoin(in.from, in.req)
		case p := <-n.proposals:
			n.propose(p)
		case c := <-n.confChanges:
			n.enqueueConfChange(c)
		case t := <-n.transfers:
			n.startTransfer(t)
		case f := <-n.fences:
			n.addFence(f, time.Now())
		case <-n.confirmations:
			n.onConfirmations(time.Now())
		}
		if n.fatal != nil {
			return n.fatal
		}
		for n.rn.HasReady() {
			if err := n.handleReady(); err != nil {
				return err
			}
		}
		if n.removed {
			return ErrRemoved
		}
		now := time.Now()
		n.driveConfChanges(now)
		n.checkFences(now)
		n.publish()
	}
}

// handleReady persists, sends, applies and advances one Ready, in that order
// (see the package doc).
func (n *Node) handleReady() error {
	rd := n.rn.Ready()
	if err := n.storage.save(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
		return err
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		if err := n.installSnapshot(rd.Snapshot); err != nil {
			return err
		}
	}
	if len(rd.Messages) > 0 {
		n.transport.Send(rd.Messages)
	}
	if err := n.applyEntries(rd.CommittedEntries); err != nil {
		return err
	}
	for _, rs := range rd.ReadStates {
		n.lease.answer(rs.RequestCtx, rs.Index, n.applied)
		n.answerPeerReads(rs.RequestCtx, rs.Index)
	}
	if rd.SoftState != nil {
		n.onSoftState(rd.SoftState)
	}
	n.rn.Advance(rd)
	return n.maybeSnapshot()
}

// onSoftState logs leadership changes.
func (n *Node) onSoftState(ss *raft.SoftState) {
	if ss.Lead != n.lead {
		n.log.Info("raft leader changed", "leader", ss.Lead, "previous", n.lead, "state", ss.RaftState.String())
		if ss.Lead != 0 {
			n.counts.leaderChanges.Add(1)
		}
		n.lead = ss.Lead
		n.membersDirty = true
		n.leadershipChanged(time.Now())
	}
}

// tick advances raft's clock and runs the periodic duties: lease renewal
// (and batched ReadIndex on the leader), joining, and expiring abandoned
// waiters.
func (n *Node) tick(now time.Time) {
	n.ticks++
	n.rn.Tick()
	n.renewReads(now)
	n.lease.prune(now)
	if valid := n.lease.valid(now); valid != n.leaseWasValid {
		if !valid {
			n.counts.leaseExpiries.Add(1)
		}
		n.leaseWasValid = valid
	}
	// A learner joins until it is a member; one that knows no leader (it
	// restarted) joins too: a member's join is a no-op for the voters, and a
	// learner removed while it was down learns it this way (the voters answer
	// a removed id's join with a removal notice), since no leader talks to it.
	if !n.cfg.Voter && (!isMember(n.confState, n.cfg.NodeID) || n.lead == 0) && (n.ticks-1)%joinEveryTicks == 0 {
		n.sendJoins()
	}
	for seq, w := range n.waiters {
		if w.ctx.Err() != nil {
			delete(n.waiters, seq)
		}
	}
	if n.ticks%membersRefreshTicks == 0 {
		n.membersDirty = true // Member.Reachable ages with time
	}
}

// step hands a peer's message to raft, if its sender may send it (see
// peerauth.go).
func (n *Node) step(in inboundMessage) {
	if n.fatal != nil {
		return // the loop stops after this batch
	}
	m := in.m
	from := m.GetFrom()
	if m.GetTo() != n.cfg.NodeID {
		n.log.Debug("dropping message for another node", "to", m.GetTo(), "from", from)
		return
	}
	if err := n.admit(in); err != nil {
		n.refuse("raft message", in.from, err, "type", m.GetType().String())
		return
	}
	if n.book.isRemoved(from) {
		n.tellRemoved(from)
		return
	}
	n.lastHeard[from] = time.Now()
	n.peerRoles[from] = in.from.Role
	if err := n.checkLogNotLost(m); err != nil {
		n.fatal = err
		return
	}
	if m.GetType() == raftpb.MsgReadIndex && n.lead == n.cfg.NodeID {
		n.queuePeerRead(m, time.Now()) // answered in batches, see reads.go
		return
	}
	if err := n.rn.Step(m); err != nil {
		n.log.Debug("raft rejected message", "from", from, "type", m.GetType().String(), "err", err)
	}
}

// admit applies the rules of peerauth.go to one message.
func (n *Node) admit(in inboundMessage) error {
	if err := admitMessage(in.from, in.m, n.confState); err != nil {
		return err
	}
	if in.m.GetType() == raftpb.MsgProp {
		for _, e := range in.m.GetEntries() {
			if err := admitLearnerProposal(in.from, e, n.cfg.LearnerProposals); err != nil {
				return fmt.Errorf("learner proposal refused: %w", err)
			}
		}
	}
	return nil
}

// refuse logs (rate-limited per sender and kind) that something a peer sent
// was not admitted.
func (n *Node) refuse(what string, from Sender, err error, args ...any) {
	n.counts.refusals.add(RefusedNotAllowed)
	if !n.refusals.allow(fmt.Sprintf("%s %d", what, from.ID)) {
		return
	}
	n.log.Warn("refusing "+what+" from peer", append([]any{"peer", from.ID, "role", from.Role.String(), "reason", err.Error()}, args...)...)
}

// checkLogNotLost stops the node before raft panics on a leader's heartbeat
// that commits beyond the end of this node's log: the leader knows this node
// acknowledged entries it no longer has, so its log was lost (ErrLogLost).
func (n *Node) checkLogNotLost(m *raftpb.Message) error {
	if m.GetType() != raftpb.MsgHeartbeat || m.GetTerm() < n.rn.BasicStatus().GetTerm() {
		return nil
	}
	last, err := n.storage.mem.LastIndex()
	if err != nil || m.GetCommit() <= last {
		return nil
	}
	return fmt.Errorf("%w: the log in %s ends at index %d, but the leader (node %d) says this node acknowledged entries up to %d; %s",
		ErrLogLost, n.cfg.DataDir, last, m.GetFrom(), m.GetCommit(), n.lostLogProcedure())
}

// lostLogProcedure tells the operator what to do with a node whose log was lost.
func (n *Node) lostLogProcedure() string {
	return fmt.Sprintf("its data directory was lost, emptied or restored from an old copy, and it must never rejoin "+
		"as node %d (it could vote twice in a term and forget committed entries). Replace it: on a running node "+
		"`pgquorum members remove %d`, then start this proxy with a new node.id, a voter certificate for it, an empty data_dir and "+
		"node.voter: false, and add it with `pgquorum members add NEWID ADDR` (docs/operations.md, \"A proxy lost its data directory\")",
		n.cfg.NodeID, n.cfg.NodeID)
}

// stepQueued steps the messages already waiting, up to a bound, without
// blocking.
func (n *Node) stepQueued() {
	for range maxStepBatch {
		select {
		case in := <-n.incoming:
			n.step(in)
		default:
			return
		}
	}
}

// tellRemoved tells a removed node, at most once a second, that it is out.
func (n *Node) tellRemoved(id uint64) {
	now := time.Now()
	if last, ok := n.removalNotices[id]; ok && now.Sub(last) < time.Second {
		return
	}
	n.removalNotices[id] = now
	n.log.Info("telling removed node it is no longer a member", "peer", id)
	n.transport.SendRemoved(id)
}

func (n *Node) handleReport(r transportReport) {
	switch r.kind {
	case reportUnreachable:
		n.rn.ReportUnreachable(r.id)
	case reportSnapshot:
		status := raft.SnapshotFinish
		if !r.ok {
			status = raft.SnapshotFailure
		}
		n.rn.ReportSnapshot(r.id, status)
	case reportRemoved:
		n.removalNotice(Sender{ID: r.id, Role: r.role})
	}
}

// removalNotice handles a peer's word that this node was removed. It is
// believed only from the leader or a majority of the voters (peerauth.go
// removalConfirmed), never from a learner certificate.
func (n *Node) removalNotice(from Sender) {
	if from.Role == PeerLearner {
		n.refuse("removal notice", from, errors.New("a learner certificate cannot remove anyone"))
		return
	}
	now := time.Now()
	n.removalClaims[from.ID] = now
	if !removalConfirmed(n.removalClaims, n.confState.GetVoters(), n.lead, now) {
		n.refuse("removal notice", from, errors.New("only the leader or a majority of the voters can say this node was removed; waiting for the committed log"))
		return
	}
	n.log.Warn("the leader or a majority of the voters report that this node was removed from the cluster", "peer", from.ID)
	n.removed = true
}

// propose hands one proposal to raft and registers its waiter.
func (n *Node) propose(p *proposeRequest) {
	if p.ctx.Err() != nil {
		p.result <- proposeResult{err: fmt.Errorf("consensus: propose: %w", p.ctx.Err())}
		return
	}
	if n.lead == 0 {
		p.result <- proposeResult{err: ErrNoLeader}
		return
	}
	n.nextSeq++
	seq := n.nextSeq
	if err := n.rn.Propose(encodeEnvelope(proposalID{Proposer: n.cfg.NodeID, Seq: seq}, p.data)); err != nil {
		p.result <- proposeResult{err: fmt.Errorf("%w: %v", ErrProposalDropped, err)}
		return
	}
	n.waiters[seq] = p
}

// publish stores the status and members other goroutines read, and signals
// status changes.
func (n *Node) publish() {
	st := n.buildStatus()
	n.status.Store(&st)
	now := time.Now()
	wasValid := n.LeaseValid(now)
	if until := st.LeaseValidUntil; until.IsZero() {
		n.leaseUntil.Store(0)
	} else {
		n.leaseUntil.Store(int64(until.Sub(n.startedAt)))
	}
	if !wasValid && n.LeaseValid(now) {
		n.leaseSignal.notify()
	}
	withoutLease := st
	withoutLease.LeaseValidUntil = time.Time{}
	if withoutLease != n.lastStatus {
		n.lastStatus = withoutLease
		n.statusSignal.notify()
	}
	if n.membersDirty {
		n.membersDirty = false
		members := n.buildMembers()
		n.members.Store(&members)
	}
}

func (n *Node) buildStatus() Status {
	bs := n.rn.BasicStatus()
	self := n.cfg.NodeID
	return Status{
		ID:              self,
		Leader:          bs.Lead,
		Term:            bs.GetTerm(),
		Commit:          bs.GetCommit(),
		Applied:         n.applied,
		SnapshotIndex:   n.snapshotIndex,
		IsLeader:        bs.RaftState == raft.StateLeader,
		Member:          isMember(n.confState, self),
		Voter:           isVoter(n.confState, self),
		TransferringTo:  bs.LeadTransferee,
		LeaseValidUntil: n.lease.validUntil,
	}
}

func (n *Node) buildMembers() []Member {
	now := time.Now()
	recent := n.cfg.electionTimeout()
	var members []Member
	add := func(id uint64, voter bool) {
		heard, ok := n.lastHeard[id]
		members = append(members, Member{
			ID:        id,
			Addr:      n.book.addr(id),
			Voter:     voter,
			Reachable: id == n.cfg.NodeID || (ok && now.Sub(heard) < recent),
			LastHeard: heard,
		})
	}
	for _, id := range n.confState.GetVoters() {
		add(id, true)
	}
	for _, id := range n.confState.GetLearners() {
		add(id, false)
	}
	slices.SortFunc(members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return members
}

func isVoter(cs *raftpb.ConfState, id uint64) bool {
	return slices.Contains(cs.GetVoters(), id) || slices.Contains(cs.GetVotersOutgoing(), id)
}

func isMember(cs *raftpb.ConfState, id uint64) bool {
	return isVoter(cs, id) || slices.Contains(cs.GetLearners(), id) || slices.Contains(cs.GetLearnersNext(), id)
}
