package consensus

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestEntryOfAnUnknownVersionStopsTheNode: an entry the state machine cannot
// apply (it needs a newer version) is not skipped: the node stops applying
// and fails closed, and the entries before it stay applied.
func TestEntryOfAnUnknownVersionStopsTheNode(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	c.propose(leader, "before=1")
	c.waitValues([]string{"before=1"})

	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	defer cancel()
	if _, err := c.get(leader).node.Propose(ctx, []byte("needs-version:2")); !errors.Is(err, ErrCannotApply) {
		t.Fatalf("proposal of an entry nobody here can apply: %v, want ErrCannotApply", err)
	}
	for _, id := range []uint64{1, 2, 3} {
		n := c.get(id)
		select {
		case <-n.node.Done():
		case <-time.After(testWait):
			t.Fatalf("node %d kept running past an entry it cannot apply", id)
		}
		if !errors.Is(n.node.Err(), ErrCannotApply) {
			t.Fatalf("node %d stopped with %v, want ErrCannotApply", id, n.node.Err())
		}
		if n.node.LeaseValid(time.Now()) {
			t.Fatalf("node %d still holds a routing lease", id)
		}
		if got := n.sm.snapshotValues(); len(got) != 1 || got[0] != "before=1" {
			t.Fatalf("node %d applied %v", id, got)
		}
	}
}
