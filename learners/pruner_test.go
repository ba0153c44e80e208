package learners

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	after := 10 * time.Minute
	members := []consensus.Member{
		{ID: 1, Voter: true}, // self, the leader
		{ID: 2, Voter: true, LastHeard: t0.Add(-time.Hour)}, // a voter gone for an hour: never removed
		{ID: 1001, LastHeard: t0.Add(-11 * time.Minute)},    // gone
		{ID: 1002, LastHeard: t0.Add(-time.Minute)},         // alive
		{ID: 1003}, // never heard since this leader started
		{ID: 1000, LastHeard: t0.Add(-10 * time.Minute)}, // exactly removeAfter
		{ID: 1004, LastHeard: t0.Add(-9*time.Minute - 59*time.Second)},
	}
	tests := []struct {
		name        string
		leaderSince time.Time
		after       time.Duration
		want        []uint64
	}{
		{"leader for long", t0.Add(-time.Hour), after, []uint64{1000, 1001, 1003}},
		{"new leader: its clock starts at its election", t0.Add(-5 * time.Minute), after, nil},
		{"new leader, long enough ago", t0.Add(-10 * time.Minute), after, []uint64{1000, 1001, 1003}},
		{"off", t0.Add(-time.Hour), 0, nil},
	}
	for _, tt := range tests {
		got := Decide(t0, tt.leaderSince, 1, members, tt.after)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: Decide = %v, want %v", tt.name, got, tt.want)
		}
	}
	var many []consensus.Member
	for id := uint64(2000); id < 2100; id++ {
		many = append(many, consensus.Member{ID: id})
	}
	if got := Decide(t0, t0.Add(-time.Hour), 1, many, after); len(got) != maxRemovalsPerRound || got[0] != 2000 {
		t.Errorf("a round removes %d learners starting at %v, want %d from 2000", len(got), got, maxRemovalsPerRound)
	}
}

// fakeRaft is a Raft member whose learners never answer.
type fakeRaft struct {
	mu       sync.Mutex
	leader   bool
	members  []consensus.Member
	removed  []uint64
	proposed []clusterstate.Command
}

func (f *fakeRaft) Status() consensus.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return consensus.Status{ID: 1, IsLeader: f.leader}
}

func (f *fakeRaft) Members() []consensus.Member {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.members)
}

func (f *fakeRaft) RemoveMember(_ context.Context, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.members = slices.DeleteFunc(f.members, func(m consensus.Member) bool { return m.ID == id })
	f.removed = append(f.removed, id)
	return nil
}

func (f *fakeRaft) Propose(_ context.Context, data []byte) ([]byte, error) {
	cmd, err := clusterstate.Decode(data)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.proposed = append(f.proposed, cmd)
	return nil, nil
}

func (f *fakeRaft) set(leader bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leader = leader
}

func (f *fakeRaft) removedIDs() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.removed)
}

// TestPrunerRemovesOnlyOnTheLeader runs the loop on a fake clock: a follower
// removes nothing; a leader removes a silent learner RemoveAfter after its own
// election, never a voter, and forgets the learner's observations.
func TestPrunerRemovesOnlyOnTheLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		raft := &fakeRaft{members: []consensus.Member{{ID: 1, Voter: true}, {ID: 2, Voter: true}, {ID: 1001}}}
		var counted []uint64
		p := &Pruner{Raft: raft, RemoveAfter: time.Minute, Every: time.Second, Removed: func(id uint64) { counted = append(counted, id) }}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()

		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if got := raft.removedIDs(); len(got) != 0 {
			t.Fatalf("a follower removed %v", got)
		}
		raft.set(true)
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if got := raft.removedIDs(); len(got) != 0 {
			t.Fatalf("removed %v before RemoveAfter had passed since the election", got)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := raft.removedIDs(); !slices.Equal(got, []uint64{1001}) {
			t.Fatalf("removed %v, want [1001]", got)
		}
		if len(raft.proposed) != 1 || raft.proposed[0].ForgetProxy == nil || raft.proposed[0].ForgetProxy.Proxy != 1001 {
			t.Fatalf("proposed %+v, want forget_proxy 1001", raft.proposed)
		}
		if !slices.Equal(counted, []uint64{1001}) {
			t.Fatalf("counted %v", counted)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
