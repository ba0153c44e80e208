package consensus

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestVoterWithALostLogStopsWithAClearError empties a follower's data
// directory and restarts it as the same voter: instead of a raft panic (or
// silently voting again with a lost log) it stops with ErrLogLost and a message
// that says what to do; the others go on.
func TestVoterWithALostLogStopsWithAClearError(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	want := values("a", 5)
	for _, kv := range want {
		c.propose(leader, kv)
	}
	c.waitValues(want)
	victim := without(c.running(), leader)[0]
	dir := c.get(victim).cfg.DataDir
	c.crash(victim)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	n := c.start(victim, true).node
	select {
	case <-n.Done():
	case <-time.After(testWait):
		t.Fatal("a voter with a lost log kept running")
	}
	err := n.Err()
	if !errors.Is(err, ErrLogLost) {
		t.Fatalf("node stopped with %v, want ErrLogLost", err)
	}
	for _, part := range []string{"members remove", "new node.id", "must never rejoin"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not say %q", err, part)
		}
	}
	t.Logf("stopped with: %v", err)
	c.mu.Lock()
	delete(c.nodes, victim)
	c.mu.Unlock()
	c.propose(leader, "b=1")
	c.waitValues(append(want, "b=1"))
}

// TestForceNewClusterAfterLosingAMajority loses two of three voters for good,
// recovers the survivor as a one-voter cluster and checks that it keeps every
// entry, commits again, and that a lost voter coming back with its old log is
// told it was removed.
func TestForceNewClusterAfterLosingAMajority(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, nil)
	leader := c.waitLeader()
	want := values("v", 8)
	for _, kv := range want {
		c.propose(leader, kv)
	}
	c.waitValues(want)
	for _, id := range c.running() {
		c.crash(id)
	}
	survivor := c.config(1, true)

	// Inspecting changes nothing; it reports the log.
	info, err := InspectLog(RecoverOptions{ClusterName: survivor.ClusterName, NodeID: 1, DataDir: survivor.DataDir, StateMachine: &kvMachine{}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.Voters, []uint64{1, 2, 3}) || info.LastIndex < uint64(len(want)) {
		t.Fatalf("log info %+v", info)
	}
	sm := &kvMachine{}
	before, err := ForceNewCluster(RecoverOptions{ClusterName: survivor.ClusterName, NodeID: 1, DataDir: survivor.DataDir, StateMachine: sm})
	if err != nil {
		t.Fatal(err)
	}
	if before.LastIndex != info.LastIndex || !slices.Equal(sm.snapshotValues(), want) {
		t.Fatalf("recovered %+v with values %v, want the log %+v and values %v", before, sm.snapshotValues(), info, want)
	}
	after, err := InspectLog(RecoverOptions{ClusterName: survivor.ClusterName, NodeID: 1, DataDir: survivor.DataDir, StateMachine: &kvMachine{}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(after.Voters, []uint64{1}) || !slices.Equal(after.Removed, []uint64{2, 3}) || after.LastIndex != info.LastIndex {
		t.Fatalf("after recovery: %+v; want voter 1 alone, 2 and 3 removed, the same last index", after)
	}

	c.start(1, true)
	c.waitLeader(1)
	c.waitValues(want, 1)
	c.propose(1, "w=1")
	want = append(want, "w=1")
	c.waitValues(want, 1)

	// A new member catches up from a snapshot of the recovered log, which
	// must list it (raft ignores a snapshot whose configuration does not).
	c.start(4, false)
	c.waitValues(want, 4)

	// A lost voter that comes back with its old log gets nowhere: the survivor
	// refuses everything it sends (it is removed in the survivor's address
	// book), so it never has a leader nor a lease. It keeps trying: a removal
	// notice from one peer that is not its leader is not believed (peerauth.go),
	// which is why the procedure says never to start it again.
	back := c.start(2, true).node
	c.propose(1, "x=1")
	watchUntil := time.Now().Add(3 * testElectionTicks * testTick)
	for time.Now().Before(watchUntil) { // a window to watch that nothing happens; no event to await
		if st := back.Status(); st.Leader == 1 || st.IsLeader || back.LeaseValid(time.Now()) {
			t.Fatalf("a removed voter that came back got a leader or a lease: %+v", st)
		}
		time.Sleep(testTick)
	}
	if got := c.get(1).sm.snapshotValues(); !slices.Contains(got, "x=1") {
		t.Fatalf("the recovered node stopped committing while a removed voter was back: %v", got)
	}
	c.crash(2)
}

func TestRecoverRefusesWhatItCannotRecover(t *testing.T) {
	dir := t.TempDir()
	_, err := ForceNewCluster(RecoverOptions{ClusterName: "test", NodeID: 1, DataDir: dir, StateMachine: &kvMachine{}})
	if !errors.Is(err, ErrNoLog) {
		t.Fatalf("empty data dir: %v, want ErrNoLog", err)
	}
	if _, err := os.Stat(dir + "/" + storageFileName); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("recovery created a log in an empty directory: %v", err)
	}

	c := newTestCluster(t, 1, nil)
	c.waitLeader()
	c.propose(1, "a=1")
	running := c.get(1).cfg
	_, err = ForceNewCluster(RecoverOptions{ClusterName: "test", NodeID: 1, DataDir: running.DataDir, StateMachine: &kvMachine{}})
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("recovering the log of a running node: %v, want a refusal", err)
	}
	c.crash(1)
	_, err = ForceNewCluster(RecoverOptions{ClusterName: "other", NodeID: 1, DataDir: running.DataDir, StateMachine: &kvMachine{}})
	if err == nil || !strings.Contains(err.Error(), "belongs to cluster") {
		t.Fatalf("recovering another cluster's log: %v, want a refusal", err)
	}
}
