package consensus

import (
	"slices"
	"testing"
	"time"
)

// TestConfirmedSinceCoversEarlierCommits: once a member reports ConfirmedSince(t), it has
// applied every entry the cluster committed before t, even one proposed through another member.
func TestConfirmedSinceCoversEarlierCommits(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	var follower uint64
	for _, id := range c.running() {
		if id != leader {
			follower = id
			break
		}
	}
	n := c.get(follower).node
	if n.ConfirmedSince(time.Now().Add(time.Hour)) {
		t.Fatal("confirmed a moment in the future")
	}
	c.propose(leader, "fresh=1")
	committed := time.Now()
	waitFor(t, testWait, func() bool { return n.ConfirmedSince(committed) }, "node %d to confirm a renewal sent after the commit", follower)
	if got := c.get(follower).sm.snapshotValues(); !slices.Contains(got, "fresh=1") {
		t.Fatalf("node %d confirmed a moment after the commit but applied only %v", follower, got)
	}
}
