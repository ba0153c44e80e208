package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
)

// TestFailoverBlockedWithoutEnoughStandbys kills the primary and one standby
// together. With 'ANY 1 (pg2, pg3)' an acknowledged commit may exist only on the
// dead standby, so the surviving one must not be promoted: the failover blocks,
// says why in /cluster and /history, and holds traffic. When the dead standby
// starts again the failover completes and no acknowledged insert is lost.
//
// The test makes the danger real: pg2 is stopped while pg1 and pg3 acknowledge a
// batch of inserts, so those exist on pg3 only when pg1 and pg3 die; then pg2
// starts again. Promoting pg2 would lose them; the only correct new primary is pg3.
// (Freezing pg2 would not do: the WAL sent to it waits in its socket buffer and is
// read after the thaw.)
func TestFailoverBlockedWithoutEnoughStandbys(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := startFailoverProxies(t, pg, failoverProxyOptions())
	ctx, cancel := context.WithTimeout(t.Context(), failoverStepTimeout)
	defer cancel()
	primary, survivor, dead := pg.Node("pg1"), pg.Node("pg2"), pg.Node("pg3")
	writeLoadTable(ctx, t, primary, "blocked")
	load := startWriteLoad(t, "blocked", proxies.Proxies, loadOptions{Writers: 2 * len(proxies.Proxies), Pace: writePace})
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}

	// Inserts acknowledged while pg2 is down exist on pg1 and pg3 only.
	if err := survivor.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := load.WaitAcks(ctx, 50); err != nil {
		t.Fatal(err)
	}
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := dead.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	if err := survivor.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// The failover begins and blocks, on every proxy's view, with the reason.
	for _, p := range proxies.Proxies {
		// (It may block first with both standbys unreachable, until pg2 is up.)
		v, err := pollCluster(ctx, p, "a failover blocked by pg3 alone", func(v admin.ClusterView) (bool, error) {
			f := v.Failover
			if v.Epoch == 2 && v.Primary != "" {
				return false, fmt.Errorf("%s was promoted although pg3, which may hold acknowledged commits, is down", v.Primary)
			}
			return f != nil && f.Blocked && strings.Contains(f.BlockedReason, "pg3") && !strings.Contains(f.BlockedReason, "pg2"),
				failIfEpochPast(v, 2)
		})
		if err != nil {
			t.Fatal(err)
		}
		f := v.Failover
		if v.Epoch != 2 || v.Primary != "" || v.Routing.Routing || f.OldPrimary != "pg1" || f.Candidate != "" {
			t.Errorf("proxy %d: epoch %d primary %q routing %v failover %s; want epoch 2, no primary, not routing, no candidate",
				p.ID, v.Epoch, v.Primary, v.Routing.Routing, describeFailover(f))
		}
		if !strings.Contains(f.BlockedReason, "reachable") {
			t.Errorf("proxy %d: blocked reason %q should say that too few standbys are reachable (pg3)", p.ID, f.BlockedReason)
		}
		if p == proxies.Proxies[0] {
			t.Logf("failover blocked %v after the kills: %s", time.Since(killedAt).Round(time.Millisecond), f.BlockedReason)
		}
	}
	blockedSeenAt := time.Now()
	history, err := proxies.Proxies[0].Client().History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(history) == 0 || history[len(history)-1].Outcome != clusterstate.OutcomeBlocked || history[len(history)-1].Epoch != 2 {
		t.Errorf("/history should end with the blocked failover of epoch 2: %+v", history)
	}

	// It stays blocked over several re-checks, and pg2 is not promoted.
	until := time.Now().Add(quietPeriod)
	for time.Now().Before(until) {
		v, err := proxies.Proxies[1].Cluster(ctx)
		if err == nil && (v.Failover == nil || !v.Failover.Blocked || v.Epoch != 2) {
			t.Fatalf("the failover did not stay blocked with pg3 down: epoch %d primary %q failover %s", v.Epoch, v.Primary, describeFailover(v.Failover))
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	inRecovery, err := survivor.IsInRecovery(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !inRecovery {
		t.Fatalf("pg2 was promoted although pg3, which may hold acknowledged commits, is down")
	}
	// (The killed postmaster's children may still answer for a few milliseconds
	// after the kill, so only inserts sent once every proxy saw the block count.)
	for _, a := range load.Acks() {
		if a.SentAt.After(blockedSeenAt) {
			t.Fatalf("insert %d sent %v after every proxy saw the blocked failover was acknowledged (port %d) while no primary was agreed",
				a.ID, a.SentAt.Sub(blockedSeenAt), a.Port)
		}
	}

	// The standby comes back: the failover proceeds within the same epoch.
	startedAt := time.Now()
	if err := dead.Start(ctx); err != nil {
		t.Fatal(err)
	}
	newName := waitNewPrimary(ctx, t, proxies.Proxies, "pg1", 2)
	if newName != "pg3" {
		t.Errorf("%s was promoted; only pg3 has every acknowledged commit", newName)
	}
	promoted := pg.Node(newName)
	first, err := load.WaitAck(ctx, startedAt, promoted.Port)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pg3 started again: %s agreed as primary within %v; first acknowledged write %v after the start",
		newName, time.Since(startedAt).Round(time.Millisecond), first.At.Sub(startedAt).Round(time.Millisecond))
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}
	load.Stop()
	t.Logf("write load: %s", load.Summary())
	verifyAcked(ctx, t, promoted, "blocked", load.Acks())
	checkQuorumStandby(ctx, t, promoted, otherStandby(pg, "pg1", newName))
	checkOnlyPrimary(ctx, t, pg, newName, "pg1")

	h := completedEntry(ctx, t, proxies.Proxies[2], 2)
	checkLSNTable(t, h, "pg2", "pg3")
	checkSteps(t, h, clusterstate.StepFreeze, clusterstate.StepBlocked, clusterstate.StepFreeze,
		clusterstate.StepChooseCandidate, clusterstate.StepPromote, clusterstate.StepRepoint)
	logSteps(t, h, killedAt, "kills")
}
