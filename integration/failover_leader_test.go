package integration

import (
	"context"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
)

// TestFailoverSurvivesRaftLeaderDeath kills -9 the Raft leader in the middle of a
// failover. The failover is recorded step by step in the Raft log, so the new
// leader resumes it and finishes it exactly once: one new primary, one epoch,
// agreed by every proxy, including the killed one when it restarts.
//
// To hold the old leader inside the failover long enough to kill it there, pg3 is
// frozen (SIGSTOP) before the primary is killed: the leader's freeze step then
// waits for pg3 until its action timeout (2 s). pg3 is thawed right after the
// leader dies, so the new leader finds both standbys and completes.
func TestFailoverSurvivesRaftLeaderDeath(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := startFailoverProxies(t, pg, failoverProxyOptions())
	ctx, cancel := context.WithTimeout(t.Context(), failoverStepTimeout)
	defer cancel()
	old, slow := pg.Node("pg1"), pg.Node("pg3")
	writeLoadTable(ctx, t, old, "leader_dies")
	load := startWriteLoad(t, "leader_dies", proxies.Proxies, loadOptions{Writers: 2 * len(proxies.Proxies), Pace: writePace})
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}
	leaderID, err := leaderOf(ctx, proxies.Proxies)
	if err != nil {
		t.Fatal(err)
	}
	leader := proxyByID(proxies, leaderID)
	var survivors []*ProxyProcess
	for _, p := range proxies.Proxies {
		if p != leader {
			survivors = append(survivors, p)
		}
	}

	if err := slow.Freeze(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = slow.Thaw() })
	killedAt := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	v, err := pollCluster(ctx, leader, "a failover in progress on the leader", func(v admin.ClusterView) (bool, error) {
		return v.Failover != nil, failIfEpochPast(v, 2)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Raft.IsLeader {
		t.Fatalf("proxy %d lost the Raft leadership before the failover began (leader now %d)", leaderID, v.Raft.Leader)
	}
	leader.Kill()
	leaderKilledAt := time.Now()
	if err := slow.Thaw(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Raft leader (proxy %d) killed %v after pg1, with the failover at %s",
		leaderID, leaderKilledAt.Sub(killedAt).Round(time.Millisecond), describeFailover(v.Failover))

	newName := waitNewPrimary(ctx, t, survivors, "pg1", 2)
	promoted := pg.Node(newName)
	t.Logf("%s agreed by the survivors at epoch 2, %v after the leader died", newName, time.Since(leaderKilledAt).Round(time.Millisecond))
	newLeader, err := leaderOf(ctx, survivors)
	if err != nil {
		t.Fatal(err)
	}
	if newLeader == leaderID {
		t.Fatalf("the survivors name the killed proxy %d as leader", leaderID)
	}

	// The killed proxy restarts from its Raft log and agrees.
	if err := proxies.Start(leader); err != nil {
		t.Fatal(err)
	}
	if got := waitNewPrimary(ctx, t, []*ProxyProcess{leader}, "pg1", 2); got != newName {
		t.Fatalf("restarted proxy %d agrees on %s, the others on %s", leader.ID, got, newName)
	}

	if _, err := load.WaitAck(ctx, leaderKilledAt, promoted.Port); err != nil {
		t.Fatal(err)
	}
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}
	load.Stop()
	t.Logf("write load: %s", load.Summary())
	verifyAcked(ctx, t, promoted, "leader_dies", load.Acks())
	checkOnlyPrimary(ctx, t, pg, newName, "pg1")
	checkQuorumStandby(ctx, t, promoted, otherStandby(pg, "pg1", newName))

	// Exactly one failover happened: one completed entry, for epoch 2, finished
	// after the old leader was dead.
	history, err := survivors[0].Client().History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	completed := 0
	for _, h := range history {
		if h.Outcome == clusterstate.OutcomeCompleted {
			completed++
			if h.Epoch != 2 || h.NewPrimary != newName {
				t.Errorf("history entry epoch %d -> %s, want epoch 2 -> %s", h.Epoch, h.NewPrimary, newName)
			}
			if !h.At.After(leaderKilledAt) {
				t.Errorf("the failover completed at %s, before the leader was killed at %s", h.At, leaderKilledAt)
			}
			logSteps(t, h, leaderKilledAt, "leader's death")
		}
	}
	if completed != 1 {
		t.Errorf("%d completed failovers in /history, want 1: %+v", completed, history)
	}
}
