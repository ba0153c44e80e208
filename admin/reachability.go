package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
)

// MembersService is the peer-call service through which a proxy asks the
// Raft leader how it sees the members: only the leader hears from every
// member, a follower mostly hears from the leader alone, so GET /cluster and
// GET /members on a follower show the leader's view of who is reachable.
const MembersService = "admin.members"

// leaderViewTimeout bounds the call to the leader.
const leaderViewTimeout = time.Second

// PeerCaller calls a service on another member (*consensus.Node).
type PeerCaller interface {
	Call(ctx context.Context, to uint64, service string, payload []byte) ([]byte, error)
}

// memberReach is one member as the answering member (the leader) sees it.
type memberReach struct {
	ID        uint64 `json:"id"`
	Reachable bool   `json:"reachable"`
	// LastContactMS is how long ago the leader last heard from the member,
	// in milliseconds; -1 when never (since it became leader or started).
	LastContactMS int64 `json:"last_contact_ms"`
}

// MembersCallHandler answers MembersService with raft's view of the members
// (package node registers it on every member).
func MembersCallHandler(raft interface{ Members() []consensus.Member }) consensus.CallHandler {
	return func(_ context.Context, _ consensus.Sender, _ []byte) ([]byte, error) {
		return json.Marshal(reachOf(raft.Members(), time.Now()))
	}
}

func reachOf(members []consensus.Member, now time.Time) []memberReach {
	out := make([]memberReach, 0, len(members))
	for _, m := range members {
		r := memberReach{ID: m.ID, Reachable: m.Reachable, LastContactMS: -1}
		if !m.LastHeard.IsZero() {
			r.LastContactMS = now.Sub(m.LastHeard).Milliseconds()
		}
		out = append(out, r)
	}
	return out
}

// memberViews lists the members with their reachability as the Raft leader
// sees it: this node's own view when it leads, else the leader's, asked
// through MembersService. seenBy is the proxy whose view it is (this one when
// the leader could not be asked; note says why).
func (s *Server) memberViews(ctx context.Context) (members []MemberView, seenBy uint64, note string) {
	status := s.Raft.Status()
	st := s.State.State()
	own := reachOf(s.Raft.Members(), time.Now())
	reach, seenBy := own, s.NodeID
	if !status.IsLeader {
		leaderView, err := s.askLeader(ctx, status.Leader)
		if err != nil {
			note = fmt.Sprintf("reachability as proxy %d sees it (a follower hears mostly from the leader): %v", s.NodeID, err)
		} else {
			reach, seenBy = leaderView, status.Leader
		}
	}
	byID := map[uint64]memberReach{}
	for _, r := range reach {
		byID[r.ID] = r
	}
	for _, m := range s.Raft.Members() {
		v := MemberView{ID: m.ID, Addr: m.Addr, Voter: m.Voter, Leader: m.ID == status.Leader,
			MaxVersion: st.ReportedVersion(m.ID), LastContactMS: -1}
		if r, ok := byID[m.ID]; ok {
			v.Reachable, v.LastContactMS = r.Reachable, r.LastContactMS
		}
		if m.ID == seenBy {
			v.Reachable, v.LastContactMS = true, 0
		}
		members = append(members, v)
	}
	return members, seenBy, note
}

// askLeader asks the leader for its view of the members.
func (s *Server) askLeader(ctx context.Context, leader uint64) ([]memberReach, error) {
	caller, ok := s.Raft.(PeerCaller)
	switch {
	case leader == 0:
		return nil, fmt.Errorf("no Raft leader is known")
	case !ok:
		return nil, fmt.Errorf("this node cannot call the leader")
	}
	ctx, cancel := context.WithTimeout(ctx, leaderViewTimeout)
	defer cancel()
	data, err := caller.Call(ctx, leader, MembersService, nil)
	if err != nil {
		return nil, fmt.Errorf("the leader, proxy %d, did not answer: %w", leader, err)
	}
	var reach []memberReach
	if err := json.Unmarshal(data, &reach); err != nil {
		return nil, fmt.Errorf("the leader's answer: %w", err)
	}
	return reach, nil
}
