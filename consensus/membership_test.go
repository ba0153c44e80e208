package consensus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestLearnerJoinsThroughJoinAndCatchesUp(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	before := values("pre", 5)
	for _, kv := range before {
		c.propose(leader, kv)
	}

	// The learner only knows a follower: the follower forwards its Join to
	// the leader.
	follower := without(c.running(), leader)[0]
	c.tweakCfg = func(cfg *Config) {
		if cfg.NodeID == 10 {
			cfg.Peers = []Peer{{ID: follower, Addr: fmt.Sprintf("mem-%d", follower)}}
		}
	}
	learner := c.start(10, false)
	waitFor(t, testWait, func() bool { return learner.node.Status().Member }, "learner to be added")
	c.waitValues(before, 10)
	if st := learner.node.Status(); st.Voter {
		t.Fatalf("learner reports itself as a voter: %+v", st)
	}
	members := c.get(leader).node.Members()
	i := slices.IndexFunc(members, func(m Member) bool { return m.ID == 10 })
	if i < 0 || members[i].Voter || members[i].Addr != "mem-10" {
		t.Fatalf("leader's members %+v: want learner 10 at mem-10", members)
	}

	// A learner's proposal is forwarded to the leader, and it gets a lease
	// through the leader's ReadIndex.
	c.propose(10, "from-learner=1")
	c.waitValues(append(slices.Clone(before), "from-learner=1"))
	waitFor(t, testWait, func() bool { return learner.node.LeaseValid(time.Now()) }, "learner lease")

	// Promotion: AddMember of an existing learner as a voter.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if err := c.get(leader).node.AddMember(ctx, 10, "", false); err != nil {
		t.Fatalf("promote learner: %v", err)
	}
	waitFor(t, testWait, func() bool { return learner.node.Status().Voter }, "learner to become a voter")
}

func TestTwentyLearnersJoinAndSeeTheSameValue(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	c.propose(leader, "epoch=1")
	var learners []uint64
	for id := uint64(100); id < 120; id++ {
		c.start(id, false)
		learners = append(learners, id)
	}
	c.propose(leader, "epoch=2")
	c.waitValues([]string{"epoch=1", "epoch=2"})
	for _, id := range learners {
		waitFor(t, testWait, func() bool { return c.get(id).node.Status().Member }, "learner %d to be a member", id)
	}
	members := c.get(leader).node.Members()
	if len(members) != 23 {
		t.Fatalf("leader sees %d members, want 23: %+v", len(members), members)
	}
	for _, id := range learners {
		waitFor(t, testWait, func() bool { return c.get(id).node.LeaseValid(time.Now()) }, "lease on learner %d", id)
	}

	// The leader batches the members' lease ReadIndex requests: about one
	// heartbeat broadcast per tick for them, on top of the regular one, not
	// one broadcast per request (22 requesters every 2 ticks would be ~12
	// broadcasts per tick).
	// Counted over all nodes, in case leadership moves meanwhile.
	heartbeats := func() (sum int) {
		for _, id := range c.running() {
			sum += c.net.sentBy(id, raftpb.MsgHeartbeat)
		}
		return sum
	}
	start, before := time.Now(), heartbeats()
	time.Sleep(25 * testTick) // a rate needs a window
	ticks := float64(time.Since(start)) / float64(testTick)
	perTick := float64(heartbeats()-before) / ticks / 22
	t.Logf("leader sent %.1f heartbeat broadcasts per tick with 22 followers and learners renewing leases", perTick)
	if perTick > 3 {
		t.Fatalf("leader sent %.1f heartbeat broadcasts per tick; ReadIndex requests are not batched", perTick)
	}
}

func TestRemovedFollowerStopsAndCannotRejoin(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	victim := without(c.running(), leader)[0]
	c.propose(leader, "before=1")

	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if err := c.get(leader).node.RemoveMember(ctx, victim); err != nil {
		t.Fatalf("remove %d: %v", victim, err)
	}
	victimNode := c.get(victim).node
	select {
	case <-victimNode.Done():
	case <-time.After(testWait):
		t.Fatalf("removed node %d did not stop", victim)
	}
	if !errors.Is(victimNode.Err(), ErrRemoved) {
		t.Fatalf("removed node stopped with %v, want ErrRemoved", victimNode.Err())
	}
	if victimNode.LeaseValid(time.Now()) {
		t.Fatal("removed node still holds a lease")
	}
	c.stop(victim)

	remaining := c.running()
	c.propose(remaining[0], "after=1")
	c.waitValues([]string{"before=1", "after=1"}, remaining...)
	for _, m := range c.get(leader).node.Members() {
		if m.ID == victim {
			t.Fatalf("removed member still listed: %+v", m)
		}
	}
	if err := c.get(leader).node.AddMember(ctx, victim, "mem-again", true); !errors.Is(err, ErrMemberRemoved) {
		t.Fatalf("re-adding a removed id: got %v, want ErrMemberRemoved", err)
	}
	if err := c.get(leader).node.RemoveMember(ctx, 77); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("removing an unknown id: got %v, want ErrUnknownMember", err)
	}
}

func TestRemovingTheLeaderElectsAnother(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if err := c.get(leader).node.RemoveMember(ctx, leader); err != nil {
		t.Fatalf("remove the leader: %v", err)
	}
	<-c.get(leader).node.Done()
	c.stop(leader)
	remaining := c.running()
	newLeader := waitNewLeader(t, c, leader, remaining)
	c.propose(newLeader, "after=1")
	c.waitValues([]string{"after=1"})
}

func TestTransferLeadershipAndCloseHandOver(t *testing.T) {
	t.Parallel()
	// A long election timeout: without a transfer, a new leader could not
	// appear in less than a second.
	const electionTicks = 50
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.ElectionTicks = electionTicks })
	first := c.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if err := c.get(first).node.TransferLeadership(ctx); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	second := waitNewLeader(t, c, first, c.running())
	// Not the leader: a no-op.
	if err := c.get(first).node.TransferLeadership(ctx); err != nil {
		t.Fatalf("transfer on a follower: %v", err)
	}

	start := time.Now()
	c.stop(second) // Close transfers first
	third := waitNewLeader(t, c, second, c.running())
	if took := time.Since(start); took >= electionTicks*testTick {
		t.Fatalf("new leader %d after %v: Close did not hand leadership over", third, took)
	}
	c.propose(third, "after=1")
	c.waitValues([]string{"after=1"})
}

func TestAddMemberValidation(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 1, nil)
	c.waitLeader()
	n := c.get(1).node
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	cases := []struct {
		name string
		do   func() error
		want string
	}{
		{"zero id", func() error { return n.AddMember(ctx, 0, "x", true) }, "non-zero"},
		{"new member without address", func() error { return n.AddMember(ctx, 5, "", true) }, "needs an address"},
		{"demote a voter", func() error { return n.AddMember(ctx, 1, "mem-1", true) }, "demotion"},
		{"remove the last voter", func() error { return n.RemoveMember(ctx, 1) }, "last voter"},
		{"add an existing voter again", func() error { return n.AddMember(ctx, 1, "mem-1", false) }, ""},
	}
	for _, tc := range cases {
		err := tc.do()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLeaseIsLostByAPartitionedNodeAndKeptByTheMajority(t *testing.T) {
	t.Parallel()
	// A longer election timeout and lease than the other tests, so a busy
	// machine does not starve the majority's lease renewals (every 2 ticks).
	const (
		electionTicks = 25
		lease         = 400 * time.Millisecond
	)
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.ElectionTicks = electionTicks
		cfg.LeaseDuration = lease
	})
	leader := c.waitLeader()
	for _, id := range c.running() {
		waitFor(t, testWait, func() bool { return c.get(id).node.LeaseValid(time.Now()) }, "lease on node %d", id)
	}
	victim := without(c.running(), leader)[0]
	majority := without(c.running(), victim)

	cutAt := time.Now()
	c.net.isolate(victim)
	var lostAfter time.Duration
	for time.Since(cutAt) < lease+5*testTick {
		now := time.Now()
		if lostAfter == 0 && !c.get(victim).node.LeaseValid(now) {
			lostAfter = now.Sub(cutAt)
		}
		for _, id := range majority {
			if !c.get(id).node.LeaseValid(now) {
				t.Errorf("node %d on the majority side lost its lease %v after the cut", id, now.Sub(cutAt))
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("partitioned node lost its lease %v after the cut (lease %v)", lostAfter, lease)
	st := c.get(victim).node.Status()
	if st.LeaseValidUntil.After(cutAt.Add(lease)) {
		t.Fatalf("partitioned node's lease runs until %v after the cut, more than the lease %v",
			st.LeaseValidUntil.Sub(cutAt), lease)
	}
	if c.get(victim).node.LeaseValid(cutAt.Add(lease + testTick)) {
		t.Fatal("partitioned node still has a lease one tick after LeaseDuration")
	}
	if lostAfter == 0 {
		t.Fatal("partitioned node never lost its lease")
	}
	if expiry := c.get(victim).node.LeaseExpiry(); !expiry.Equal(st.LeaseValidUntil) {
		t.Fatalf("LeaseExpiry %v, status says %v", expiry, st.LeaseValidUntil)
	}
	// The expiry is counted once, on the victim only (pgquorum_raft_lease_expiries_total),
	// and a proposal the cut-off node cannot make is counted as failed.
	waitFor(t, testWait, func() bool { return c.get(victim).node.Counters().LeaseExpiries == 1 }, "the expiry counted on node %d", victim)
	for _, id := range majority {
		if got := c.get(id).node.Counters(); got.LeaseExpiries != 0 || got.LeaderChanges == 0 {
			t.Errorf("node %d on the majority side: %+v, want no lease expiry and at least one leader", id, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*testTick)
	_, err := c.get(victim).node.Propose(ctx, []byte("cut=off"))
	cancel()
	if err == nil || c.get(victim).node.Counters().ProposalFailures != 1 {
		t.Errorf("a proposal of the cut-off node: %v, counted %d failures, want 1", err, c.get(victim).node.Counters().ProposalFailures)
	}

	// Healing restores it, and says so: a reader that waits for the lease
	// needs no poll.
	gained := c.get(victim).node.LeaseGained()
	c.net.heal()
	select {
	case <-gained:
	case <-time.After(testWait):
		t.Fatal("the regained lease was never signalled")
	}
	if !c.get(victim).node.LeaseValid(time.Now()) {
		t.Fatal("lease signalled as gained but not valid")
	}
	if got := c.get(victim).node.Counters().LeaseExpiries; got != 1 {
		t.Errorf("lease expiries after the heal: %d, want 1", got)
	}
}

// A learner that joins a quiet cluster whose log was compacted long ago
// installs a snapshot that lists it (taken after its addition): it catches up
// at once, and the leader sends it one snapshot, not one after another.
func TestLearnerJoinsAfterTheLogWasCompacted(t *testing.T) {
	t.Parallel()
	const every = 10
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.SnapshotEvery = every })
	leader := c.waitLeader()
	// Enough entries to compact the log, and a few more: the learner's
	// addition must not land where a periodic snapshot is due anyway.
	var want []string
	for i := 0; ; i++ {
		st := c.get(leader).node.Status()
		if since := st.Applied - st.SnapshotIndex; i >= 3*every && since > 0 && since < every-3 {
			break
		}
		kv := fmt.Sprintf("old%d=%d", i, i)
		c.propose(leader, kv)
		want = append(want, kv)
	}
	c.waitValues(want)
	for _, id := range c.running() {
		waitFor(t, testWait, func() bool {
			first, err := c.get(id).node.storage.mem.FirstIndex()
			return err == nil && first > every
		}, "the log of node %d to be compacted", id)
	}

	learner := c.start(10, false)
	waitFor(t, testWait, func() bool { return learner.node.Status().Member }, "learner to be added")
	c.waitValues(want, 10)
	waitFor(t, testWait, func() bool { return learner.node.LeaseValid(time.Now()) }, "learner lease")
	sent := c.net.snapshotsTo(10)
	if sent == 0 {
		t.Fatal("the learner caught up without a snapshot; the log was not compacted")
	}
	// A quiet cluster: the learner must not be sent snapshot after snapshot.
	time.Sleep(25 * testTick)
	again := c.net.snapshotsTo(10)
	t.Logf("snapshots sent to the learner: %d to join, %d in all", sent, again)
	if again > 2 {
		t.Fatalf("the leader sent the learner %d snapshots; it needs one", again)
	}
	c.propose(leader, "new=1")
	c.waitValues(append(slices.Clone(want), "new=1"), 10)
}

// Learners that ask to join while a membership change is in flight are added
// together, in one change, once BatchLearners allows it; every member learns
// each one's address from that change.
func TestLearnersThatAskTogetherJoinInOneChange(t *testing.T) {
	t.Parallel()
	batch := func(cfg *Config) { cfg.BatchLearners = func() bool { return true } }
	c := newTestCluster(t, 3, batch)
	leader := c.waitLeader()
	c.propose(leader, "before=1")
	// The learners' own Join requests go to a peer that does not exist; the
	// test hands the leader all of them at once instead.
	c.tweakCfg = func(cfg *Config) {
		batch(cfg)
		if !cfg.Voter {
			cfg.Peers = []Peer{{ID: 99, Addr: "mem-99"}}
		}
	}
	var learners []uint64
	for id := uint64(10); id < 18; id++ {
		c.start(id, false)
		learners = append(learners, id)
	}
	for _, id := range learners {
		c.get(leader).node.joins <- inboundJoin{from: Sender{ID: id, Role: PeerLearner}, req: JoinRequest{NodeID: id, Addr: fmt.Sprintf("mem-%d", id)}}
	}
	for _, id := range learners {
		waitFor(t, testWait, func() bool { return c.get(id).node.Status().Member }, "learner %d to be added", id)
	}
	c.propose(leader, "after=1")
	c.waitValues([]string{"before=1", "after=1"})
	for _, id := range learners {
		waitFor(t, testWait, func() bool { return c.get(id).node.LeaseValid(time.Now()) }, "lease on learner %d", id)
	}
	for _, voter := range []uint64{1, 2, 3} {
		members := c.get(voter).node.Members()
		for _, id := range learners {
			i := slices.IndexFunc(members, func(m Member) bool { return m.ID == id })
			if i < 0 || members[i].Voter || members[i].Addr != fmt.Sprintf("mem-%d", id) {
				t.Fatalf("voter %d's members %+v: want learner %d at mem-%d", voter, members, id, id)
			}
		}
	}

	// The leader's log: fewer changes than learners, one of them adding several.
	changes, largest := learnerAdditions(t, c.get(leader).node)
	t.Logf("%d learners added by %d membership changes (largest: %d learners)", len(learners), changes, largest)
	if changes >= len(learners) || largest < 2 {
		t.Fatalf("%d learners added by %d changes, at most %d at once: joins were not batched", len(learners), changes, largest)
	}
}

// learnerAdditions counts the conf change entries in n's log that add
// learners, and the most learners one of them adds.
func learnerAdditions(t *testing.T, n *Node) (changes, largest int) {
	t.Helper()
	first, _ := n.storage.mem.FirstIndex()
	last, _ := n.storage.mem.LastIndex()
	entries, err := n.storage.mem.Entries(first, last+1, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var cc raftpb.ConfChangeI
		switch e.GetType() {
		case raftpb.EntryConfChange:
			v1 := &raftpb.ConfChange{}
			if err := proto.Unmarshal(e.GetData(), v1); err != nil {
				t.Fatal(err)
			}
			cc = v1
		case raftpb.EntryConfChangeV2:
			v2 := &raftpb.ConfChangeV2{}
			if err := proto.Unmarshal(e.GetData(), v2); err != nil {
				t.Fatal(err)
			}
			cc = v2
		default:
			continue
		}
		added := 0
		for _, ch := range cc.AsV2().GetChanges() {
			if ch.GetType() == raftpb.ConfChangeAddLearnerNode {
				added++
			}
		}
		if added > 0 {
			changes++
			largest = max(largest, added)
		}
	}
	return changes, largest
}
