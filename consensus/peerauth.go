package consensus

import (
	"errors"
	"fmt"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// The rules in this file decide what an authenticated peer may do. They are
// pure functions of the sender (as the transport authenticated it), the
// message and the applied configuration, so they are tested without sockets.
//
// The transport authenticates the sender: over mutual TLS its node id and role
// come from its certificate (package pki); over a plaintext transport
// (security.insecure, loopback only) the id is whatever the peer claimed and
// the role is PeerUnverified, which these rules treat like a voter. Raft
// itself trusts voters (it is not Byzantine fault tolerant), so the rules do
// not second-guess voters; they keep learners to what a learner does.

// PeerRole is what a peer's certificate lets it do.
type PeerRole uint8

const (
	// PeerUnverified: a plaintext transport; the peer's claimed id is taken
	// as is and it may do what a voter may.
	PeerUnverified PeerRole = iota
	// PeerVoter: a voter certificate.
	PeerVoter
	// PeerLearner: a learner certificate: it may follow the log, renew its
	// lease, propose what Config.LearnerProposals admits and ask to join.
	PeerLearner
)

func (r PeerRole) String() string {
	switch r {
	case PeerVoter:
		return "voter"
	case PeerLearner:
		return "learner"
	default:
		return "unverified"
	}
}

// Sender is who sent a frame, as the transport authenticated it.
type Sender struct {
	ID   uint64
	Role PeerRole
}

// learnerMessages are the only Raft messages a learner certificate may send:
// a follower's answers, the lease's ReadIndex and proposals. Everything else
// (votes, appends, heartbeats, snapshots, leadership transfer) is what voters
// and leaders send.
var learnerMessages = map[raftpb.MessageType]bool{
	raftpb.MsgAppResp:       true,
	raftpb.MsgHeartbeatResp: true,
	raftpb.MsgReadIndex:     true,
	raftpb.MsgProp:          true,
}

// admitMessage decides whether a Raft message from sender may reach raft.
// cs is this node's applied configuration.
func admitMessage(from Sender, m *raftpb.Message, cs *raftpb.ConfState) error {
	if m.GetFrom() != from.ID {
		return fmt.Errorf("message claims to come from %d", m.GetFrom())
	}
	if from.Role != PeerLearner {
		return nil
	}
	if isVoter(cs, from.ID) {
		return fmt.Errorf("a learner certificate speaks for voter %d", from.ID)
	}
	if !learnerMessages[m.GetType()] {
		return fmt.Errorf("a learner certificate may not send %s", m.GetType())
	}
	for _, e := range m.GetEntries() {
		if m.GetType() == raftpb.MsgProp && e.GetType() != raftpb.EntryNormal {
			return errors.New("a learner certificate may not propose a membership change")
		}
	}
	return nil
}

// admitLearnerProposal checks one entry of a learner's MsgProp: it must be
// this package's envelope, proposed by the learner itself, and its payload
// must pass filter (Config.LearnerProposals; nil admits every payload).
func admitLearnerProposal(from Sender, e *raftpb.Entry, filter func(learner uint64, payload []byte) error) error {
	if from.Role != PeerLearner || len(e.GetData()) == 0 {
		return nil
	}
	id, payload, err := decodeEnvelope(e.GetData())
	if err != nil {
		return err
	}
	if id.Proposer != from.ID {
		return fmt.Errorf("proposal names proposer %d", id.Proposer)
	}
	if filter == nil {
		return nil
	}
	return filter(from.ID, payload)
}

// admitJoin decides whether a join request may be acted on. A learner asks
// for itself, with a learner certificate; a voter that already checked the
// learner forwards it once (Forwarded).
func admitJoin(from Sender, req JoinRequest, cs *raftpb.ConfState) error {
	if req.Forwarded {
		if from.Role == PeerLearner {
			return errors.New("a learner certificate may not forward join requests")
		}
		if !isVoter(cs, from.ID) {
			return fmt.Errorf("forwarded by %d, which is not a voter", from.ID)
		}
		return nil
	}
	if req.NodeID != from.ID {
		return fmt.Errorf("sender %d asks to add node %d", from.ID, req.NodeID)
	}
	if from.Role == PeerVoter {
		return errors.New("joins need a learner certificate; add a voter with `pgquorum members add`")
	}
	return nil
}

// removalNoticeTTL is how long a removal notice counts towards a majority.
const removalNoticeTTL = 30 * time.Second

// removalConfirmed decides whether this node must believe it was removed
// from the cluster, given the removal notices it received (sender -> when),
// the voters of its applied configuration, and the leader it knows. It
// believes the leader, or a majority of its voters; never a single other peer
// (its own removal in the committed log stops it anyway, see applyConfChange).
func removalConfirmed(notices map[uint64]time.Time, voters []uint64, leader uint64, now time.Time) bool {
	if at, ok := notices[leader]; ok && leader != 0 && now.Sub(at) < removalNoticeTTL {
		return true
	}
	count := 0
	for _, v := range voters {
		if at, ok := notices[v]; ok && now.Sub(at) < removalNoticeTTL {
			count++
		}
	}
	return len(voters) > 0 && count > len(voters)/2
}
