package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
)

// Waits and checks shared by the failover tests and benchmark.

// startFailoverProxies is StartProxies, then a check that the three proxies are
// really three: each answers /cluster as itself, and no two listen on the same
// address. FreeAddr closes its probe listener before the port is used, so two
// calls can return the same port; a proxy that then fails to bind is hidden when
// its admin address is another proxy's. Fail at once and say so, rather than
// time out later waiting for the missing proxy's observations.
func startFailoverProxies(t testing.TB, pg *localcluster.Cluster, opts ProxyOptions) *ProxyCluster {
	t.Helper()
	proxies := StartProxies(t, pg, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner := map[string]uint64{}
	for _, p := range proxies.Proxies {
		for _, addr := range []string{p.Postgres, p.Admin, p.Raft} {
			if other, taken := owner[addr]; taken {
				t.Fatalf("harness: proxies %d and %d were both given %s (FreeAddr returned the same free port twice)", other, p.ID, addr)
			}
			owner[addr] = p.ID
		}
		v, err := p.Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v.NodeID != p.ID {
			t.Fatalf("harness: proxy %d's admin address %s is answered by proxy %d", p.ID, p.Admin, v.NodeID)
		}
	}
	return proxies
}

// pollCluster polls p's /cluster every 20 ms until cond returns true or an error
// (which ends the wait at once), or ctx ends. It returns the last view.
func pollCluster(ctx context.Context, p *ProxyProcess, what string, cond func(admin.ClusterView) (bool, error)) (admin.ClusterView, error) {
	var last admin.ClusterView
	var lastErr error
	for {
		v, err := p.Cluster(ctx)
		if err == nil {
			last = v
			done, cerr := cond(v)
			if cerr != nil {
				return v, fmt.Errorf("proxy %d: waiting for %s: %w", p.ID, what, cerr)
			}
			if done {
				return v, nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("proxy %d: waiting for %s: %w (last error %v; last view: epoch %d primary %q routing %+v failover %s)",
				p.ID, what, ctx.Err(), lastErr, last.Epoch, last.Primary, last.Routing, describeFailover(last.Failover))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// describeFailover renders a failover in progress for error messages.
func describeFailover(f *clusterstate.FailoverProgress) string {
	if f == nil {
		return "none"
	}
	s := fmt.Sprintf("%s epoch %d next %s seq %d candidate %q", f.Kind, f.Epoch, f.Next, f.Seq, f.Candidate)
	if f.Blocked {
		s += " blocked: " + f.BlockedReason
	}
	return s
}

// routesTo reports whether v is a settled view: epoch, primary, no failover in
// progress, and the proxy routes to that primary.
func routesTo(v admin.ClusterView, epoch uint64, primary string) bool {
	return v.Epoch == epoch && v.Primary == primary && v.Failover == nil &&
		v.Routing.Routing && v.Routing.Primary == primary && v.Routing.Epoch == epoch
}

// failIfEpochPast ends a wait at once when the cluster went further than expected.
func failIfEpochPast(v admin.ClusterView, epoch uint64) error {
	if v.Epoch > epoch {
		return fmt.Errorf("epoch %d is past the expected %d (primary %q, failover %s)", v.Epoch, epoch, v.Primary, describeFailover(v.Failover))
	}
	return nil
}

// waitNewPrimary waits until every proxy of ps agrees on one new primary (not
// old) at epoch, with no failover in progress, routes to it, and fences old. It
// fails at once when a proxy goes past epoch or two proxies disagree.
func waitNewPrimary(ctx context.Context, t testing.TB, ps []*ProxyProcess, old string, epoch uint64) string {
	t.Helper()
	var primary string
	for _, p := range ps {
		v, err := pollCluster(ctx, p, fmt.Sprintf("a new primary agreed at epoch %d", epoch), func(v admin.ClusterView) (bool, error) {
			return v.Primary != "" && v.Primary != old && routesTo(v, epoch, v.Primary), failIfEpochPast(v, epoch)
		})
		if err != nil {
			t.Fatal(err)
		}
		if primary != "" && v.Primary != primary {
			t.Fatalf("proxy %d agrees on %s, another proxy on %s at the same epoch %d", p.ID, v.Primary, primary, epoch)
		}
		primary = v.Primary
		if !slices.Contains(v.Fenced, old) {
			t.Fatalf("proxy %d: old primary %s is not fenced (fenced: %v)", p.ID, old, v.Fenced)
		}
	}
	return primary
}

// expectNoFailover watches ps for quietPeriod and fails if any proxy leaves epoch
// and primary, or starts a failover.
func expectNoFailover(ctx context.Context, t *testing.T, ps []*ProxyProcess, epoch uint64, primary string) {
	t.Helper()
	seen := map[uint64]int{} // successful views per proxy
	until := time.Now().Add(quietPeriod)
	for time.Now().Before(until) {
		for _, p := range ps {
			v, err := p.Cluster(ctx)
			if err != nil {
				continue // a slow answer on a busy machine; the view count below catches a dead proxy
			}
			seen[p.ID]++
			if v.Epoch != epoch || v.Primary != primary || v.Failover != nil {
				t.Fatalf("proxy %d: epoch %d primary %q failover %s; want epoch %d primary %s and no failover",
					p.ID, v.Epoch, v.Primary, describeFailover(v.Failover), epoch, primary)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	for _, p := range ps {
		if seen[p.ID] < 5 {
			t.Fatalf("proxy %d answered /cluster only %d times in %v", p.ID, seen[p.ID], quietPeriod)
		}
	}
}

// observedByAll reports whether every proxy's latest observation of node in v satisfies ok.
func observedByAll(v admin.ClusterView, node string, proxies *ProxyCluster, ok func(clusterstate.Observation) bool) bool {
	for _, n := range v.Nodes {
		if n.Name != node {
			continue
		}
		for _, p := range proxies.Proxies {
			i := slices.IndexFunc(n.Observations, func(o clusterstate.Observation) bool { return o.Proxy == p.ID })
			if i < 0 || !ok(n.Observations[i]) {
				return false
			}
		}
		return true
	}
	return false
}

// completedEntry returns the completed history entry of epoch from p's /history.
func completedEntry(ctx context.Context, t *testing.T, p *ProxyProcess, epoch uint64) clusterstate.HistoryEntry {
	t.Helper()
	history, err := p.Client().History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range history {
		if h.Epoch == epoch && h.Outcome == clusterstate.OutcomeCompleted {
			return h
		}
	}
	t.Fatalf("no completed entry for epoch %d in /history: %+v", epoch, history)
	return clusterstate.HistoryEntry{}
}

// checkLSNTable checks that h's LSN table has a reachable, frozen row with a WAL
// position for each of nodes.
func checkLSNTable(t *testing.T, h clusterstate.HistoryEntry, nodes ...string) {
	t.Helper()
	for _, name := range nodes {
		i := slices.IndexFunc(h.LSNTable, func(r clusterstate.LSNRow) bool { return r.Node == name })
		if i < 0 {
			t.Errorf("LSN table of epoch %d has no row for %s: %+v", h.Epoch, name, h.LSNTable)
			continue
		}
		r := h.LSNTable[i]
		if !r.Reachable || !r.Frozen || r.Timeline == 0 || max(r.ReceiveLSN, r.ReplayLSN) == 0 {
			t.Errorf("LSN table of epoch %d: row %+v, want %s reachable, frozen, with timeline and LSN", h.Epoch, r, name)
		}
	}
}

// checkSteps checks that h recorded the steps in this order (others may come between).
func checkSteps(t *testing.T, h clusterstate.HistoryEntry, want ...clusterstate.Step) {
	t.Helper()
	var got []clusterstate.Step
	for _, s := range h.Steps {
		got = append(got, s.Step)
	}
	next := 0
	for _, s := range got {
		if next < len(want) && s == want[next] {
			next++
		}
	}
	if next < len(want) {
		t.Errorf("history entry of epoch %d recorded steps %v, want %v in this order", h.Epoch, got, want)
	}
}

// logSteps logs h's steps with their times relative to since.
func logSteps(t *testing.T, h clusterstate.HistoryEntry, since time.Time, sinceWhat string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "epoch %d %s %s -> %s (reason %q), relative to the %s:\n", h.Epoch, h.Kind, h.OldPrimary, h.NewPrimary, h.Reason, sinceWhat)
	fmt.Fprintf(&b, "  %-20s %+8dms\n", "begin", h.StartedAt.Sub(since).Milliseconds())
	for _, s := range h.Steps {
		fmt.Fprintf(&b, "  %-20s %+8dms  %s\n", s.Step, s.At.Sub(since).Milliseconds(), s.Detail)
	}
	fmt.Fprintf(&b, "  %-20s %+8dms", h.Outcome, h.At.Sub(since).Milliseconds())
	t.Log(b.String())
}

// otherStandby returns the node that is neither old nor primary.
func otherStandby(pg *localcluster.Cluster, old, primary string) *localcluster.Node {
	for _, n := range pg.Nodes {
		if n.Name != old && n.Name != primary {
			return n
		}
	}
	return nil
}

// checkQuorumStandby waits until standby streams from primary and checks that the
// primary counts it in its synchronous quorum (sync_state "quorum").
func checkQuorumStandby(ctx context.Context, t *testing.T, primary, standby *localcluster.Node) {
	t.Helper()
	if err := primary.WaitReplicas(ctx, standby.Name); err != nil {
		t.Fatal(err)
	}
	replicas, err := primary.Replicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range replicas {
		if r.Name == standby.Name && r.SyncState != "quorum" {
			t.Errorf("pg_stat_replication on %s: %s has sync_state %q, want quorum", primary.Name, r.Name, r.SyncState)
		}
	}
	names, err := primary.QueryString(ctx, "SHOW synchronous_standby_names")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: synchronous_standby_names = %q, replicas %+v", primary.Name, names, replicas)
}

// checkOnlyPrimary checks that primary is the only running node out of recovery,
// among the nodes other than skip (a dead or fenced old primary).
func checkOnlyPrimary(ctx context.Context, t *testing.T, pg *localcluster.Cluster, primary string, skip ...string) {
	t.Helper()
	for _, n := range pg.Nodes {
		if slices.Contains(skip, n.Name) {
			continue
		}
		inRecovery, err := n.IsInRecovery(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := n.Name != primary; inRecovery != want {
			t.Errorf("%s: pg_is_in_recovery() = %v, want %v (the primary is %s)", n.Name, inRecovery, want, primary)
		}
	}
}
