package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
)

// TestFailoverFencesCutOffPrimary stops the primary with SIGSTOP: alive, but cut
// off from everyone. The proxies fail over; after the thaw the old primary
// acknowledges nothing (its standbys were frozen, so a commit on it waits for
// synchronous replication forever), its last commit never reaches the new primary,
// and no proxy routes to it again.
func TestFailoverFencesCutOffPrimary(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := startFailoverProxies(t, pg, failoverProxyOptions())
	ctx, cancel := context.WithTimeout(t.Context(), failoverStepTimeout)
	defer cancel()
	old := pg.Node("pg1")
	writeLoadTable(ctx, t, old, "cut_off")
	load := startWriteLoad(t, "cut_off", proxies.Proxies, loadOptions{Writers: 2 * len(proxies.Proxies), Pace: writePace})
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}

	if err := old.Freeze(); err != nil {
		t.Fatal(err)
	}
	frozenAt := time.Now() // from here on no process of pg1 runs until the thaw
	t.Cleanup(func() { _ = old.Thaw() })
	newName := waitNewPrimary(ctx, t, proxies.Proxies, "pg1", 2)
	promoted := pg.Node(newName)
	first, err := load.WaitAck(ctx, frozenAt, promoted.Port)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pg1 frozen: %s agreed at epoch 2 within %v; first acknowledged write %v after the freeze",
		newName, time.Since(frozenAt).Round(time.Millisecond), first.At.Sub(frozenAt).Round(time.Millisecond))

	thawedAt := time.Now()
	if err := old.Thaw(); err != nil {
		t.Fatal(err)
	}
	// The proxies see pg1 alive again, as a primary out of recovery ...
	_, err = pollCluster(ctx, proxies.Proxies[0], "pg1 observed up and out of recovery by every proxy", func(v admin.ClusterView) (bool, error) {
		return observedByAll(v, "pg1", proxies, func(o clusterstate.Observation) bool { return o.Up && !o.InRecovery && o.At.After(thawedAt) }), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("every proxy observes pg1 up again %v after the thaw", time.Since(thawedAt).Round(time.Millisecond))
	// ... and none routes to it: it is fenced.
	for _, p := range proxies.Proxies {
		v, err := p.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !routesTo(v, 2, newName) || !slices.Contains(v.Fenced, "pg1") || nodeRole(v, "pg1") != "fenced" {
			t.Errorf("proxy %d after the thaw: epoch %d primary %q routing %+v fenced %v pg1 role %q; want epoch 2, %s, pg1 fenced",
				p.ID, v.Epoch, v.Primary, v.Routing, v.Fenced, nodeRole(v, "pg1"), newName)
		}
		if port := queryServerPort(ctx, t, p); port != promoted.Port {
			t.Errorf("proxy %d forwards to port %d after the thaw, want %s's %d", p.ID, port, newName, promoted.Port)
		}
	}
	if err := load.WaitAcks(ctx, 100); err != nil {
		t.Fatal(err)
	}

	// A commit sent straight to the old primary is not acknowledged.
	const markerID = -1
	commitOnFencedPrimary(ctx, t, old, "cut_off", markerID)

	load.Stop()
	acks := load.Acks()
	t.Logf("write load: %s", load.Summary())
	for _, a := range acks {
		if a.Port == old.Port && !a.SentAt.Before(frozenAt) {
			t.Errorf("insert %d sent %v after pg1 was frozen was acknowledged by pg1", a.ID, a.SentAt.Sub(frozenAt))
		}
	}
	verifyAcked(ctx, t, promoted, "cut_off", acks)

	// Only one node accepts writes: the old primary's last commit is on neither
	// the new primary nor its standby.
	other := otherStandby(pg, "pg1", newName)
	checkQuorumStandby(ctx, t, promoted, other)
	for _, n := range []*localcluster.Node{promoted, other} {
		count, err := n.QueryString(ctx, "SELECT count(*) FROM cut_off WHERE id = $1", markerID)
		if err != nil {
			t.Fatal(err)
		}
		if count != "0" {
			t.Errorf("%s holds the row committed on the fenced old primary after the failover", n.Name)
		}
	}
	checkOnlyPrimary(ctx, t, pg, newName, "pg1")
	h := completedEntry(ctx, t, proxies.Proxies[0], 2)
	checkLSNTable(t, h, "pg2", "pg3")
	logSteps(t, h, frozenAt, "freeze")
}

// commitOnFencedPrimary inserts id into table directly on the old primary (no
// proxy) and checks that the commit is not acknowledged: it must wait for
// synchronous replication (no standby streams from the old primary any more)
// until the client gives up, or fail. A context deadline is used, not
// statement_timeout: PostgreSQL turns a cancelled wait for synchronous replication
// into a success with a WARNING, which is exactly what must never happen here.
func commitOnFencedPrimary(ctx context.Context, t *testing.T, old *localcluster.Node, table string, id int64) {
	t.Helper()
	conn, err := old.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	pid := conn.PgConn().PID()
	commitCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	done := make(chan error, 1)
	sentAt := time.Now()
	go func() {
		_, err := conn.Exec(commitCtx, "INSERT INTO "+table+" (id, writer) VALUES ($1, 0)", id)
		done <- err
	}()
	waited := false
	for !waited {
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("the fenced old primary acknowledged a commit after the failover")
			}
			t.Logf("commit on the fenced old primary failed at once: %v", err)
			return
		case <-commitCtx.Done():
			t.Fatalf("the commit on the old primary was never seen waiting for synchronous replication")
		case <-time.After(20 * time.Millisecond):
		}
		event, err := old.QueryString(commitCtx, "SELECT coalesce(wait_event, 'none') FROM pg_stat_activity WHERE pid = $1", pid)
		if err == nil && event == "SyncRep" {
			waited = true
		}
	}
	err = <-done
	if err == nil {
		t.Fatalf("the fenced old primary acknowledged a commit after the failover")
	}
	t.Logf("commit on the fenced old primary waited for synchronous replication and was not acknowledged within %v: %v",
		time.Since(sentAt).Round(time.Millisecond), err)
}

// nodeRole returns the role /cluster gives the PostgreSQL node name.
func nodeRole(v admin.ClusterView, name string) string {
	for _, n := range v.Nodes {
		if n.Name == name {
			return n.Role
		}
	}
	return ""
}
