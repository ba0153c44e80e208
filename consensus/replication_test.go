package consensus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestProposalsApplyInTheSameOrderOnEveryNode(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	c.waitLeader()

	// Sequential proposals through every node (followers forward to the
	// leader); each proposer gets its own Apply result back.
	want := values("seq", 12)
	for i, kv := range want {
		id := uint64(i%3 + 1)
		if res := c.propose(id, kv); string(res) != strconv.Itoa(i+1) {
			t.Fatalf("proposal %d via node %d returned %q, want %d", i, id, res, i+1)
		}
	}
	c.waitValues(want)

	// Concurrent proposals: any order, but the same order everywhere.
	var wg sync.WaitGroup
	for id := uint64(1); id <= 3; id++ {
		wg.Go(func() {
			for i := range 8 {
				c.propose(id, fmt.Sprintf("n%d-%d=x", id, i))
			}
		})
	}
	wg.Wait()
	ref := c.get(1).sm
	waitFor(t, testWait, func() bool { return len(ref.snapshotValues()) == len(want)+24 }, "24 concurrent values on node 1")
	c.waitValues(ref.snapshotValues())

	// A payload the state machine rejects is committed, skipped alike on
	// every node, and its error reaches the proposer.
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	_, err := c.get(2).node.Propose(ctx, []byte("not a key value"))
	if err == nil || !strings.Contains(err.Error(), "rejected by the state machine") {
		t.Fatalf("bad payload: got err %v, want a state machine rejection", err)
	}
	final := append(ref.snapshotValues(), "after=bad")
	c.propose(3, "after=bad")
	c.waitValues(final)
}

func TestMinorityCannotCommitButMajorityCan(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	oldLeader := c.waitLeader()
	c.propose(oldLeader, "before=1")
	c.waitValues([]string{"before=1"})

	c.net.isolate(oldLeader)
	majority := without(c.running(), oldLeader)

	// The isolated leader accepts the proposal into its log but can never
	// commit it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*testTick*testElectionTicks/2)
	_, err := c.get(oldLeader).node.Propose(ctx, []byte("minority=1"))
	cancel()
	if err == nil {
		t.Fatal("isolated leader committed a proposal")
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("isolated leader: unexpected error %v", err)
	}

	newLeader := waitNewLeader(t, c, oldLeader, majority)
	c.propose(newLeader, "majority=1")
	c.waitValues([]string{"before=1", "majority=1"}, majority...)

	// CheckQuorum made the isolated node step down; it knows no leader.
	waitFor(t, testWait, func() bool { return c.get(oldLeader).node.Status().Leader == 0 }, "isolated node to step down")
	if _, err := c.get(oldLeader).node.Propose(context.Background(), []byte("minority=2")); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("propose on a node without leader: got %v, want ErrNoLeader", err)
	}

	c.net.heal()
	c.waitLeader()
	c.propose(oldLeader, "healed=1")
	c.waitValues([]string{"before=1", "majority=1", "healed=1"})
}

func TestOneWayPartitionOfTheLeader(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	oldLeader := c.waitLeader()
	c.propose(oldLeader, "before=1")
	others := without(c.running(), oldLeader)
	// The leader still hears everyone but nobody hears it.
	for _, id := range others {
		c.net.cutOneWay(oldLeader, id)
	}
	newLeader := waitNewLeader(t, c, oldLeader, others)
	c.propose(newLeader, "during=1")
	c.waitValues([]string{"before=1", "during=1"}, others...)
	// The old leader hears the new term and follows the new leader.
	waitFor(t, testWait, func() bool { return c.get(oldLeader).node.Status().Leader == newLeader },
		"old leader to follow %d", newLeader)

	c.net.heal()
	c.propose(oldLeader, "after=1")
	c.waitValues([]string{"before=1", "during=1", "after=1"})
}

func TestRandomMessageLossStillConverges(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	c.net.setDropRate(0.2) // fixed seed: the same drop pattern for the same message sequence
	c.net.setDelay(time.Millisecond)
	leader := c.waitLeader()
	want := values("lossy", 20)
	for _, kv := range want {
		c.propose(leader, kv)
	}
	c.net.setDropRate(0)
	c.waitValues(want)
}

func TestLeaderCrashRestartsFromDiskAndRejoins(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	oldLeader := c.waitLeader()
	first := values("a", 10)
	for _, kv := range first {
		c.propose(oldLeader, kv)
	}
	c.waitValues(first)

	crashedAt := time.Now()
	c.crash(oldLeader)
	survivors := c.running()
	newLeader := waitNewLeader(t, c, oldLeader, survivors)
	t.Logf("election after leader kill: %v (tick %v, election timeout %d-%d ticks)",
		time.Since(crashedAt).Round(time.Millisecond), testTick, testElectionTicks, 2*testElectionTicks-1)

	second := values("b", 10)
	for _, kv := range second {
		c.propose(newLeader, kv)
	}

	// Restart isolated, with a different Peers list that would make a
	// one-node cluster if it were used: the state must come from disk alone,
	// and Peers must be ignored.
	c.net.isolate(oldLeader)
	c.tweakCfg = func(cfg *Config) {
		if cfg.NodeID == oldLeader {
			cfg.Peers = []Peer{{ID: oldLeader, Addr: "mem-self"}}
		}
	}
	restarted := c.start(oldLeader, true)
	c.waitValues(first, oldLeader)
	if st := restarted.node.Status(); st.Applied == 0 || !st.Voter {
		t.Fatalf("restarted node status %+v: want applied > 0 and voter", st)
	}
	time.Sleep(3 * testElectionTicks * testTick) // long enough for a bogus one-node cluster to elect itself
	if st := restarted.node.Status(); st.Leader != 0 {
		t.Fatalf("isolated restarted node sees leader %d; Peers were not ignored", st.Leader)
	}

	c.net.heal()
	c.waitValues(append(slices.Clone(first), second...))
	c.waitLeader()
	c.propose(oldLeader, "c=1")
	c.waitValues(append(append(slices.Clone(first), second...), "c=1"))
}

func TestLaggingFollowerCatchesUpFromASnapshot(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.SnapshotEvery = 5 })
	leader := c.waitLeader()
	lagger := without(c.running(), leader)[0]
	c.net.isolate(lagger)
	want := values("snap", 40)
	for _, kv := range want {
		c.propose(leader, kv)
	}
	c.waitValues(want, without(c.running(), lagger)...)
	if st := c.get(leader).node.Status(); st.SnapshotIndex == 0 {
		t.Fatalf("leader took no snapshot: %+v", st)
	}
	c.net.heal()
	c.waitValues(want)
	if c.net.snapshotsTo(lagger) == 0 {
		t.Fatal("the lagging follower caught up without a snapshot; the log was not compacted")
	}

	// Restart from disk (snapshot + log suffix), isolated.
	c.crash(lagger)
	c.net.isolate(lagger)
	c.start(lagger, true)
	c.waitValues(want, lagger)
	c.net.heal()
	c.propose(lagger, "after=1")
	c.waitValues(append(slices.Clone(want), "after=1"))
}

// waitNewLeader waits until every node in ids agrees on a leader other than
// old, and returns it.
func waitNewLeader(t *testing.T, c *testCluster, old uint64, ids []uint64) uint64 {
	t.Helper()
	var leader uint64
	waitFor(t, testWait, func() bool {
		leader = 0
		for _, id := range ids {
			l := c.get(id).node.Status().Leader
			if l == 0 || l == old || (leader != 0 && l != leader) {
				return false
			}
			leader = l
		}
		return true
	}, "nodes %v to elect a leader other than %d", ids, old)
	return leader
}

func without(ids []uint64, drop uint64) []uint64 {
	return slices.DeleteFunc(slices.Clone(ids), func(id uint64) bool { return id == drop })
}

func TestSingleVoterClusterCommitsHoldsALeaseAndRestarts(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 1, nil)
	c.waitLeader()
	c.propose(1, "only=1")
	waitFor(t, testWait, func() bool { return c.get(1).node.LeaseValid(time.Now()) }, "lease on the only voter")

	start := time.Now()
	c.stop(1) // Close has nobody to hand leadership to
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close of a one-voter cluster took %v", took)
	}
	c.start(1, true)
	c.waitValues([]string{"only=1"})
	c.waitLeader()
	c.propose(1, "only=2")
	c.waitValues([]string{"only=1", "only=2"})
}
