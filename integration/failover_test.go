package integration

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
)

// The failover tests (SPEC §4 and §5) run three `pgquorum run` processes in front
// of a real PostgreSQL 15 quorum cluster (pg1 primary, 'ANY 1 (pg2, pg3)') and break
// things: kill -9 or SIGSTOP a PostgreSQL node or a proxy. Each top-level test gets a
// fresh cluster, because a failover fences the old primary until `pgquorum rejoin`.
// Writers insert unique ids through the proxies and reconnect on any error; after
// every failover each acknowledged insert must be on the new primary exactly once.
//
// Files: this one (kill -9 of the primary, and what must not cause a failover),
// failover_fence_test.go (a primary cut off by SIGSTOP), failover_blocked_test.go
// (too few standbys), failover_leader_test.go (the Raft leader dies mid-failover),
// failover_switchover_test.go (planned switchovers), failover_load_test.go (the
// writers), failover_checks_test.go (waits and checks they share) and
// failover_bench_test.go (BenchmarkFailover).

// failoverProxyOptions makes the proxies quick to notice a dead node (probes every
// 200 ms) and lets automatic failovers follow each other after 1 s.
func failoverProxyOptions() ProxyOptions {
	return ProxyOptions{Extra: "failover: {min_interval: 1s}\nhealth: {interval: 200ms}\n"}
}

// failoverStepTimeout bounds each step of a failover test.
const failoverStepTimeout = 90 * time.Second

// quietPeriod is how long a test watches that nothing happens (no failover) after
// the condition that could wrongly cause one is established. The coordinator decides
// every 200 ms, so a wrong decision would show within a second.
const quietPeriod = 3 * time.Second

// TestFailover proves that a standby down or one frozen proxy does not cause a
// failover, then that kill -9 of the primary under a write load promotes a standby
// without losing an acknowledged insert, and leaves a quorum-replicated cluster.
func TestFailover(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := startFailoverProxies(t, pg, failoverProxyOptions())
	var loads []tableLoad // every load of the subtests, verified after the failover

	t.Run("StandbyDownIsNoFailover", func(t *testing.T) { loads = append(loads, testStandbyDown(t, pg, proxies)) })
	t.Run("FrozenProxyIsNoFailover", func(t *testing.T) { loads = append(loads, testFrozenProxy(t, pg, proxies)) })
	t.Run("PrimaryKilledUnderLoad", func(t *testing.T) { testPrimaryKilled(t, pg, proxies, loads) })
}

// tableLoad is a finished write load: its table and acknowledged inserts.
type tableLoad struct {
	table string
	acks  []ack
}

func testStandbyDown(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) tableLoad {
	ctx, cancel := context.WithTimeout(t.Context(), failoverStepTimeout)
	defer cancel()
	primary, standby := pg.Node("pg1"), pg.Node("pg3")
	writeLoadTable(ctx, t, primary, "standby_down")
	load := startWriteLoad(t, "standby_down", proxies.Proxies, loadOptions{Writers: 1 * len(proxies.Proxies), Pace: writePace})
	if err := load.WaitAcks(ctx, 20); err != nil {
		t.Fatal(err)
	}

	killedAt := time.Now()
	if err := standby.Kill(); err != nil {
		t.Fatal(err)
	}
	// Every proxy observes pg3 down, and says an automatic failover would not be safe now.
	_, err := pollCluster(ctx, proxies.Proxies[0], "pg3 observed down by every proxy", func(v admin.ClusterView) (bool, error) {
		return observedByAll(v, "pg3", proxies, func(o clusterstate.Observation) bool { return !o.Up }), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("every proxy observes pg3 down %v after kill -9", time.Since(killedAt).Round(time.Millisecond))
	for _, p := range proxies.Proxies {
		v, err := pollCluster(ctx, p, "failover reported unsafe because pg3 is down", func(v admin.ClusterView) (bool, error) {
			return !v.FailoverSafety.Safe && strings.Contains(strings.Join(v.FailoverSafety.Reasons, "; "), "pg3"), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("proxy %d: failover safety: %q", p.ID, v.FailoverSafety.Reasons)
	}

	// Nothing happens: the primary keeps acknowledging commits (pg2 is the quorum).
	expectNoFailover(ctx, t, proxies.Proxies, 1, "pg1")
	if err := load.WaitAcks(ctx, 20); err != nil {
		t.Fatal(err)
	}

	if err := standby.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := primary.WaitReplicas(ctx, "pg2", "pg3"); err != nil {
		t.Fatal(err)
	}
	for _, p := range proxies.Proxies {
		if _, err := pollCluster(ctx, p, "failover safe again", func(v admin.ClusterView) (bool, error) {
			return v.FailoverSafety.Safe, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	load.Stop()
	t.Logf("write load: %s", load.Summary())
	return tableLoad{table: "standby_down", acks: load.Acks()}
}

func testFrozenProxy(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) tableLoad {
	ctx, cancel := context.WithTimeout(t.Context(), failoverStepTimeout)
	defer cancel()
	writeLoadTable(ctx, t, pg.Node("pg1"), "proxy_frozen")
	leaderID, err := leaderOf(ctx, proxies.Proxies)
	if err != nil {
		t.Fatal(err)
	}
	// Freeze the Raft leader: the most the loss of one proxy can do.
	frozen := proxyByID(proxies, leaderID)
	var others []*ProxyProcess
	for _, p := range proxies.Proxies {
		if p != frozen {
			others = append(others, p)
		}
	}
	load := startWriteLoad(t, "proxy_frozen", others, loadOptions{Writers: 1 * len(others), Pace: writePace})
	if err := load.WaitAcks(ctx, 20); err != nil {
		t.Fatal(err)
	}

	frozenAt := time.Now()
	frozen.Freeze()
	t.Cleanup(frozen.Thaw)
	for _, p := range others {
		if _, err := pollCluster(ctx, p, "a new Raft leader", func(v admin.ClusterView) (bool, error) {
			return v.Raft.Leader != 0 && v.Raft.Leader != leaderID, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("proxy %d (the Raft leader) frozen; new leader elected %v later", leaderID, time.Since(frozenAt).Round(time.Millisecond))

	expectNoFailover(ctx, t, others, 1, "pg1")
	if err := load.WaitAcks(ctx, 20); err != nil {
		t.Fatal(err)
	}

	frozen.Thaw()
	for _, p := range proxies.Proxies {
		if _, err := pollCluster(ctx, p, "routing to pg1 at epoch 1 after the thaw", func(v admin.ClusterView) (bool, error) {
			return routesTo(v, 1, "pg1"), failIfEpochPast(v, 1)
		}); err != nil {
			t.Fatal(err)
		}
	}
	load.Stop()
	t.Logf("write load: %s", load.Summary())
	return tableLoad{table: "proxy_frozen", acks: load.Acks()}
}

func testPrimaryKilled(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster, earlier []tableLoad) {
	ctx, cancel := context.WithTimeout(t.Context(), failoverStepTimeout)
	defer cancel()
	old := pg.Node("pg1")
	writeLoadTable(ctx, t, old, "primary_killed")
	load := startWriteLoad(t, "primary_killed", proxies.Proxies, loadOptions{Writers: 2 * len(proxies.Proxies), Pace: writePace})
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}

	killedAt := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	newName := waitNewPrimary(ctx, t, proxies.Proxies, "pg1", 2)
	agreedAfter := time.Since(killedAt)
	promoted := pg.Node(newName)
	first, err := load.WaitAck(ctx, killedAt, promoted.Port)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kill -9 pg1: %s agreed as primary at epoch 2 by every proxy within %v; first acknowledged write %v after the kill",
		newName, agreedAfter.Round(time.Millisecond), first.At.Sub(killedAt).Round(time.Millisecond))
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}
	load.Stop()
	acks := load.Acks()
	t.Logf("write load: %s", load.Summary())

	// Every acknowledged insert, of this load and of the earlier subtests, is on the new primary once.
	rows := verifyAcked(ctx, t, promoted, "primary_killed", acks)
	t.Logf("%s holds %d rows for %d acknowledged inserts", newName, rows, len(acks))
	for _, l := range earlier {
		verifyAcked(ctx, t, promoted, l.table, l.acks)
	}

	// The other standby streams from the new primary and counts in its quorum.
	other := otherStandby(pg, "pg1", newName)
	checkQuorumStandby(ctx, t, promoted, other)
	checkOnlyPrimary(ctx, t, pg, newName, "pg1")

	// Every proxy fences pg1 and forwards to the new primary.
	for _, p := range proxies.Proxies {
		v, err := p.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(v.Fenced, "pg1") {
			t.Errorf("proxy %d: fenced %v, want pg1 fenced", p.ID, v.Fenced)
		}
		if port := queryServerPort(ctx, t, p); port != promoted.Port {
			t.Errorf("proxy %d forwards to port %d, want %s's %d", p.ID, port, newName, promoted.Port)
		}
	}

	// /history has the completed automatic failover with the LSN table behind it.
	h := completedEntry(ctx, t, proxies.Proxies[1], 2)
	if h.Kind != clusterstate.KindAutomatic || h.OldPrimary != "pg1" || h.NewPrimary != newName || h.Forced {
		t.Errorf("history entry: kind %s old %s new %s forced %v; want automatic pg1 -> %s, not forced", h.Kind, h.OldPrimary, h.NewPrimary, h.Forced, newName)
	}
	checkLSNTable(t, h, "pg2", "pg3")
	checkSteps(t, h, clusterstate.StepFreeze, clusterstate.StepChooseCandidate, clusterstate.StepPromote, clusterstate.StepRepoint)
	logSteps(t, h, killedAt, "kill")
}
