package consensus

import (
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

func TestAdmitMessage(t *testing.T) {
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{7}}
	voter2 := Sender{ID: 2, Role: PeerVoter}
	learner7 := Sender{ID: 7, Role: PeerLearner}
	msg := func(typ raftpb.MessageType, from uint64, entries ...*raftpb.Entry) *raftpb.Message {
		return &raftpb.Message{Type: typ.Enum(), From: new(from), To: new(uint64(1)), Entries: entries}
	}
	confChange := &raftpb.Entry{Type: raftpb.EntryConfChange.Enum()}
	normal := &raftpb.Entry{Type: raftpb.EntryNormal.Enum()}
	tests := []struct {
		name string
		from Sender
		m    *raftpb.Message
		want string // "" = admitted
	}{
		{"voter appends", voter2, msg(raftpb.MsgApp, 2), ""},
		{"voter votes", voter2, msg(raftpb.MsgVote, 2), ""},
		{"voter proposes a membership change", voter2, msg(raftpb.MsgProp, 2, confChange), ""},
		{"unverified peer (insecure) votes", Sender{ID: 2}, msg(raftpb.MsgVote, 2), ""},
		{"sender claims another id", voter2, msg(raftpb.MsgApp, 3), "claims to come from 3"},
		{"learner acknowledges", learner7, msg(raftpb.MsgAppResp, 7), ""},
		{"learner answers a heartbeat", learner7, msg(raftpb.MsgHeartbeatResp, 7), ""},
		{"learner renews its lease", learner7, msg(raftpb.MsgReadIndex, 7), ""},
		{"learner proposes", learner7, msg(raftpb.MsgProp, 7, normal), ""},
		{"learner votes", learner7, msg(raftpb.MsgVote, 7), "may not send MsgVote"},
		{"learner pre-votes", learner7, msg(raftpb.MsgPreVote, 7), "may not send MsgPreVote"},
		{"learner answers a vote", learner7, msg(raftpb.MsgVoteResp, 7), "may not send MsgVoteResp"},
		{"learner appends as a leader", learner7, msg(raftpb.MsgApp, 7), "may not send MsgApp"},
		{"learner sends a snapshot", learner7, msg(raftpb.MsgSnap, 7), "may not send MsgSnap"},
		{"learner asks for leadership", learner7, msg(raftpb.MsgTransferLeader, 7), "may not send"},
		{"learner proposes a membership change", learner7, msg(raftpb.MsgProp, 7, normal, confChange), "membership change"},
		{"learner certificate for a voter id", Sender{ID: 2, Role: PeerLearner}, msg(raftpb.MsgAppResp, 2), "speaks for voter 2"},
	}
	for _, tc := range tests {
		err := admitMessage(tc.from, tc.m, cs)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestAdmitLearnerProposal(t *testing.T) {
	learner7 := Sender{ID: 7, Role: PeerLearner}
	entry := func(proposer uint64, payload string) *raftpb.Entry {
		return &raftpb.Entry{Type: raftpb.EntryNormal.Enum(), Data: encodeEnvelope(proposalID{Proposer: proposer, Seq: 1}, []byte(payload))}
	}
	onlyReports := func(learner uint64, payload []byte) error {
		if string(payload) != "report" {
			return errors.New("learners only report")
		}
		return nil
	}
	if err := admitLearnerProposal(learner7, entry(7, "report"), onlyReports); err != nil {
		t.Errorf("the learner's own report: %v", err)
	}
	if err := admitLearnerProposal(learner7, entry(7, "begin_failover"), onlyReports); err == nil {
		t.Error("a learner's failover proposal was admitted")
	}
	if err := admitLearnerProposal(learner7, entry(2, "report"), onlyReports); err == nil {
		t.Error("a learner's proposal in the name of node 2 was admitted")
	}
	if err := admitLearnerProposal(learner7, &raftpb.Entry{Data: []byte{9}}, nil); err == nil {
		t.Error("an entry that is not an envelope was admitted")
	}
	if err := admitLearnerProposal(Sender{ID: 2, Role: PeerVoter}, entry(2, "begin_failover"), onlyReports); err != nil {
		t.Errorf("a voter's proposal: %v", err)
	}
}

func TestAdmitJoin(t *testing.T) {
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}}
	tests := []struct {
		name string
		from Sender
		req  JoinRequest
		want string
	}{
		{"learner asks for itself", Sender{ID: 9, Role: PeerLearner}, JoinRequest{NodeID: 9, Addr: "a:1"}, ""},
		{"insecure peer asks for itself", Sender{ID: 9}, JoinRequest{NodeID: 9, Addr: "a:1"}, ""},
		{"learner asks for another id", Sender{ID: 9, Role: PeerLearner}, JoinRequest{NodeID: 10, Addr: "a:1"}, "asks to add node 10"},
		{"voter certificate asks to join", Sender{ID: 9, Role: PeerVoter}, JoinRequest{NodeID: 9, Addr: "a:1"}, "need a learner certificate"},
		{"voter forwards", Sender{ID: 2, Role: PeerVoter}, JoinRequest{NodeID: 9, Addr: "a:1", Forwarded: true}, ""},
		{"learner forwards", Sender{ID: 8, Role: PeerLearner}, JoinRequest{NodeID: 9, Addr: "a:1", Forwarded: true}, "may not forward"},
		{"non-member voter certificate forwards", Sender{ID: 5, Role: PeerVoter}, JoinRequest{NodeID: 9, Addr: "a:1", Forwarded: true}, "not a voter"},
	}
	for _, tc := range tests {
		err := admitJoin(tc.from, tc.req, cs)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestRemovalConfirmed(t *testing.T) {
	now := time.Now()
	recent, old := now.Add(-time.Second), now.Add(-removalNoticeTTL-time.Second)
	voters := []uint64{1, 2, 3}
	tests := []struct {
		name    string
		notices map[uint64]time.Time
		leader  uint64
		want    bool
	}{
		{"one follower says so", map[uint64]time.Time{2: recent}, 3, false},
		{"the leader says so", map[uint64]time.Time{3: recent}, 3, true},
		{"no leader known, one voter", map[uint64]time.Time{2: recent}, 0, false},
		{"a majority of the voters", map[uint64]time.Time{2: recent, 3: recent}, 0, true},
		{"a majority, one notice expired", map[uint64]time.Time{2: recent, 3: old}, 0, false},
		{"the leader's notice expired", map[uint64]time.Time{3: old}, 3, false},
		{"strangers do not count", map[uint64]time.Time{8: recent, 9: recent}, 0, false},
	}
	for _, tc := range tests {
		if got := removalConfirmed(tc.notices, voters, tc.leader, now); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if removalConfirmed(map[uint64]time.Time{2: recent}, nil, 0, now) {
		t.Error("a node without voters believed a removal notice")
	}
}
