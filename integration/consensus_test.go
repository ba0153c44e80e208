package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/localcluster"
)

// TestConsensus runs three proxy processes in front of a real quorum cluster and
// proves they agree on the primary, survive the loss of the Raft leader, fail
// closed when cut off, and that learners (sidecars) follow the agreed state.
func TestConsensus(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := StartProxies(t, pg, ProxyOptions{HoldTimeout: "3s"})

	t.Run("ProxiesAgreeOnThePrimary", func(t *testing.T) { testProxiesAgree(t, pg, proxies) })
	t.Run("RaftLeaderKilled", func(t *testing.T) { testRaftLeaderKilled(t, pg, proxies) })
	t.Run("CutOffProxyStopsForwarding", func(t *testing.T) { testCutOffProxy(t, pg, proxies) })
	t.Run("LearnersJoinAndFollow", func(t *testing.T) { testLearners(t, pg, proxies) })
}

func testProxiesAgree(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	primary := pg.Nodes[0]
	for _, p := range proxies.Proxies {
		v, err := p.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v.Epoch != 1 || v.Primary != primary.Name || !v.Routing.Routing || v.Routing.Address != primary.Address() {
			t.Fatalf("proxy %d: epoch %d primary %q routing %+v; want epoch 1 primary %s", p.ID, v.Epoch, v.Primary, v.Routing, primary.Name)
		}
		if len(v.Members) != 3 {
			t.Fatalf("proxy %d sees %d members, want 3", p.ID, len(v.Members))
		}
		port := queryServerPort(ctx, t, p)
		if port != primary.Port {
			t.Fatalf("proxy %d forwarded to port %d, want the primary's %d", p.ID, port, primary.Port)
		}
	}
}

// queryServerPort connects through p and returns inet_server_port().
func queryServerPort(ctx context.Context, t *testing.T, p *ProxyProcess) int {
	t.Helper()
	conn, err := pgx.Connect(ctx, p.ConnString())
	if err != nil {
		t.Fatalf("connect through proxy %d: %v", p.ID, err)
	}
	defer conn.Close(context.Background())
	var port int
	if err := conn.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
		t.Fatalf("query through proxy %d: %v", p.ID, err)
	}
	return port
}

func leaderOf(ctx context.Context, proxies []*ProxyProcess) (uint64, error) {
	for _, p := range proxies {
		v, err := p.Cluster(ctx)
		if err == nil && v.Raft.Leader != 0 {
			return v.Raft.Leader, nil
		}
	}
	return 0, fmt.Errorf("no proxy knows a leader")
}

func proxyByID(proxies *ProxyCluster, id uint64) *ProxyProcess {
	for _, p := range proxies.Proxies {
		if p.ID == id {
			return p
		}
	}
	return nil
}

func testRaftLeaderKilled(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
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
	// Sessions opened before the kill, through the surviving proxies.
	var conns []*pgx.Conn
	for _, p := range survivors {
		conn, err := pgx.Connect(ctx, p.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		conns = append(conns, conn)
	}
	if err := pg.Nodes[0].Exec(ctx, "CREATE TABLE IF NOT EXISTS leader_kill (id int)"); err != nil {
		t.Fatal(err)
	}

	killedAt := time.Now()
	leader.Kill()
	for _, p := range survivors {
		err := p.WaitCluster(ctx, "a new Raft leader", func(v admin.ClusterView) bool {
			return v.Raft.Leader != 0 && v.Raft.Leader != leaderID
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("new Raft leader %v after killing leader %d", time.Since(killedAt).Round(time.Millisecond), leaderID)

	// The sessions opened before the kill still work, and so do new ones.
	for i, conn := range conns {
		if _, err := conn.Exec(ctx, "INSERT INTO leader_kill VALUES ($1)", i); err != nil {
			t.Fatalf("session through proxy %d after the leader died: %v", survivors[i].ID, err)
		}
	}
	for _, p := range survivors {
		if port := queryServerPort(ctx, t, p); port != pg.Nodes[0].Port {
			t.Fatalf("proxy %d routes to port %d", p.ID, port)
		}
	}

	// The killed proxy restarts from its data directory and routes again.
	if err := proxies.Start(leader); err != nil {
		t.Fatal(err)
	}
	if err := leader.WaitRouting(ctx); err != nil {
		t.Fatal(err)
	}
}

func testCutOffProxy(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	isolated := proxies.Proxies[0]
	conn, err := pgx.Connect(ctx, isolated.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// The frozen proxies' health monitors wake up after seconds without a
	// probe, their probes in flight timed out: they must not take that for
	// the primary's failure (automatic failover stays on).
	downs := watchDownReports(isolated, pg.Nodes[0].Name)
	defer downs.Stop()

	// Freezing the two other proxies cuts this one off from the Raft quorum.
	others := proxies.Proxies[1:]
	for _, p := range others {
		p.Freeze()
	}
	cutAt := time.Now()
	thawed := false
	thaw := func() {
		if !thawed {
			for _, p := range others {
				p.Thaw()
			}
			thawed = true
		}
	}
	defer thaw()

	err = isolated.WaitCluster(ctx, "routing to stop", func(v admin.ClusterView) bool { return !v.Routing.Routing })
	if err != nil {
		t.Fatal(err)
	}
	stoppedAfter := time.Since(cutAt)
	t.Logf("cut-off proxy stopped routing %v after the cut (lease %v)", stoppedAfter.Round(time.Millisecond), 3*time.Second)

	// Fail closed: the existing session lost its backend ...
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a session through a cut-off proxy still reached the primary")
	}
	// ... and a new connection is held, then refused after hold.timeout (3s).
	start := time.Now()
	_, err = pgx.Connect(ctx, isolated.ConnString())
	if err == nil {
		t.Fatal("a new connection through a cut-off proxy succeeded")
	}
	t.Logf("new connection through the cut-off proxy failed after %v: %v", time.Since(start).Round(time.Millisecond), err)

	thaw()
	thawedAt := time.Now()
	if err := isolated.WaitRouting(ctx); err != nil {
		t.Fatal(err)
	}
	if port := queryServerPort(ctx, t, isolated); port != pg.Nodes[0].Port {
		t.Fatalf("after the cut healed, proxy routes to port %d", port)
	}
	// Each thawed proxy probed the primary again and reported it up; none
	// reported it down on the way (a change is reported at once).
	err = isolated.WaitCluster(ctx, "fresh observations of the primary by the thawed proxies", func(v admin.ClusterView) bool {
		fresh := 0
		for _, n := range v.Nodes {
			for _, o := range n.Observations {
				if n.Name == pg.Nodes[0].Name && o.Proxy != isolated.ID && o.Up && o.At.After(thawedAt) {
					fresh++
				}
			}
		}
		return fresh == len(others)
	})
	if err != nil {
		t.Fatal(err)
	}
	if reports := downs.Stop(); len(reports) > 0 {
		t.Fatalf("proxies reported the primary down at %v after being stopped and resumed", reports)
	}
	if v, err := isolated.Cluster(ctx); err != nil || v.Epoch != 1 {
		t.Fatalf("epoch %d after the cut (%v): a failover of a healthy primary", v.Epoch, err)
	}
}

// testLearners starts 20 learner nodes in this process (sidecars that never
// vote), all with one learner certificate for their block of ids, checks that
// they join and see the agreed epoch, then measures how long a committed
// change takes to reach all of them.
func testLearners(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	const learners = 20
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	fleet := startLearners(ctx, t, pg, proxies, 100, learners)
	nodes := fleet.Nodes
	joinStart := time.Now()
	// The learners route at the voters' epoch (1, unless a loaded machine made the
	// cluster fail over meanwhile: then they follow that too).
	voters, err := proxies.Proxies[0].Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := fleet.waitRouting(ctx, voters.Epoch); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if e := n.Routing().Epoch; e < voters.Epoch {
			t.Fatalf("learner sees epoch %d, the voters %d", e, voters.Epoch)
		}
	}
	t.Logf("%d learners joined and routed within %v", learners, time.Since(joinStart).Round(time.Millisecond))
	v, err := proxies.Proxies[0].Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	learnerCount := 0
	for _, m := range v.Members {
		if !m.Voter {
			learnerCount++
		}
	}
	if learnerCount != learners {
		t.Fatalf("cluster lists %d learners, want %d", learnerCount, learners)
	}

	// A committed change (pause on, then off, through a voter: a learner's
	// certificate does not let it steer the cluster) reaches every learner.
	for _, paused := range []bool{true, false} {
		proposedAt := time.Now()
		if err := proxies.Proxies[0].Client().SetPaused(ctx, paused); err != nil {
			t.Fatal(err)
		}
		var lags []time.Duration
		for _, n := range nodes {
			for n.State().Paused != paused {
				select {
				case <-ctx.Done():
					t.Fatal("a learner never saw the change")
				case <-n.Raft().Applied():
				case <-time.After(5 * time.Millisecond):
				}
			}
			lags = append(lags, time.Since(proposedAt))
		}
		slices.Sort(lags)
		t.Logf("paused=%v visible on all %d learners %v after the proposal (median learner %v)",
			paused, learners, lags[len(lags)-1].Round(time.Millisecond), lags[len(lags)/2].Round(time.Millisecond))
	}
}
