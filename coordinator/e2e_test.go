package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
	"github.com/pgquorum/pgquorum/integration"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/pki"
)

// End-to-end tests of the coordinator: a real PostgreSQL 15 quorum cluster and
// three in-process proxies, each with a real Raft member (TCP on loopback), a
// health monitor, a HealthReporter and a Coordinator, as package node wires them
// (without the client listener). Health probes run every 500 ms, the target
// configuration of SPEC §7.

// proxy is one in-process pgquorum proxy of the test.
type proxy struct {
	id      uint64
	raft    *consensus.Node
	machine *clusterstate.Machine
	monitor *health.Monitor
	coord   *Coordinator
}

// e2e is a PostgreSQL cluster with three proxies.
type e2e struct {
	t       *testing.T
	pg      *localcluster.Cluster
	proxies []*proxy
}

// e2eCredentials issues voter id a certificate of ca.
func e2eCredentials(t *testing.T, ca *pki.CA, id uint64) *pki.Credentials {
	t.Helper()
	kp, err := ca.IssueNode(id, id, pki.RoleVoter, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := pki.NewCredentials(ca.CertPEM(), kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func startE2E(t *testing.T) *e2e {
	t.Helper()
	pg := integration.StartCluster(t, localcluster.Options{})
	e := &e2e{t: t, pg: pg}
	addresses := addressesOf(pg)
	var specs []clusterstate.NodeSpec
	var monitorNodes []health.MonitorNode
	for _, n := range pg.Nodes {
		specs = append(specs, clusterstate.NodeSpec{Name: n.Name})
		monitorNodes = append(monitorNodes, health.MonitorNode{Name: n.Name, ConnString: queryConnString(n.Address())})
	}

	listeners := make([]net.Listener, 3)
	var peers []consensus.Peer
	for i := range listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners[i] = ln
		peers = append(peers, consensus.Peer{ID: uint64(i + 1), Addr: ln.Addr().String()})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, p := range e.proxies {
			_ = p.raft.Close()
		}
	})
	base := slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dataDir := t.TempDir()
	ca, err := pki.NewCA("coordinator-e2e", 1) // the proxies talk over mutual TLS, as in production
	if err != nil {
		t.Fatal(err)
	}
	for i, ln := range listeners {
		id := uint64(i + 1)
		logger := base.With("proxy", id)
		machine := clusterstate.NewMachine()
		raft, err := consensus.Start(ctx, consensus.Config{
			ClusterName:  "coordinator-e2e",
			NodeID:       id,
			DataDir:      filepath.Join(dataDir, strconv.FormatUint(id, 10)),
			Voter:        true,
			Peers:        peers,
			StateMachine: machine,
			Transport:    consensus.TCPTransportOn(ln),
			PeerTLS:      e2eCredentials(t, ca, id),
			Logger:       slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("proxy", id),
		})
		if err != nil {
			t.Fatal(err)
		}
		monitor, err := health.NewMonitor(health.MonitorConfig{Nodes: monitorNodes, Interval: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		p := &proxy{id: id, raft: raft, machine: machine, monitor: monitor}
		p.coord = &Coordinator{
			Raft:        raft,
			State:       machine,
			Nodes:       specs,
			FindPrimary: func(ctx context.Context) (string, error) { return findPrimary(ctx, pg) },
			Addresses:   addresses,
			ConnString:  queryConnString,
			Health:      monitor,
			MinInterval: time.Minute,
			Logger:      logger.With("component", "coordinator"),
		}
		reporter := &HealthReporter{Raft: raft, Proxy: id, Health: monitor, Logger: logger.With("component", "reporter")}
		e.proxies = append(e.proxies, p)
		wg.Go(func() { _ = monitor.Run(ctx) })
		wg.Go(func() {
			if err := reporter.Run(ctx); err != nil {
				t.Errorf("reporter %d: %v", id, err)
			}
		})
		wg.Go(func() { p.coord.Run(ctx) })
	}
	// Ready: bootstrapped, and every proxy reported pg1 up.
	e.await("bootstrap and health reports", func(st clusterstate.State) bool {
		n, _ := st.Node("pg1")
		return st.Primary == "pg1" && len(n.Observations) == 3
	})
	return e
}

// findPrimary is the bootstrap's discovery: the one node not in recovery.
func findPrimary(ctx context.Context, c *localcluster.Cluster) (string, error) {
	var primaries []string
	for _, n := range c.Nodes {
		in, err := n.IsInRecovery(ctx)
		if err == nil && !in {
			primaries = append(primaries, n.Name)
		}
	}
	if len(primaries) != 1 {
		return "", fmt.Errorf("found primaries %v, want exactly one", primaries)
	}
	return primaries[0], nil
}

// state is the replicated state as proxy 1 applied it.
func (e *e2e) state() clusterstate.State { return e.proxies[0].machine.State() }

// await waits (bounded) until proxy 1's applied state satisfies pred.
func (e *e2e) await(what string, pred func(clusterstate.State) bool) clusterstate.State {
	e.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		applied := e.proxies[0].raft.Applied()
		if st := e.state(); pred(st) {
			return st
		}
		select {
		case <-applied:
		case <-deadline:
			e.t.Fatalf("timed out waiting for %s; state: %+v failover: %+v", what, e.state(), e.state().Failover)
		}
	}
}

// leader returns the proxy whose Raft member leads now.
func (e *e2e) leader() *proxy {
	e.t.Helper()
	for _, p := range e.proxies {
		if p.raft.Status().IsLeader {
			return p
		}
	}
	e.t.Fatal("no leader")
	return nil
}

// writer inserts rows into table on the node as fast as it can and remembers
// every id whose commit was acknowledged (synchronous_commit = on, ANY 1).
type writer struct {
	mu    sync.Mutex
	acked []int64
	done  chan struct{}
	err   error
}

func startWriter(t *testing.T, ctx context.Context, n *localcluster.Node, table string) *writer {
	t.Helper()
	if err := n.Exec(ctx, "CREATE TABLE "+table+" (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	conn, err := n.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer conn.Close(context.Background())
		for id := int64(1); ctx.Err() == nil; id++ {
			if _, err := conn.Exec(ctx, "INSERT INTO "+table+" VALUES ($1)", id); err != nil {
				w.err = err
				return
			}
			w.mu.Lock()
			w.acked = append(w.acked, id)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { <-w.done })
	return w
}

// waitAcked waits until the writer has at least n acknowledged commits.
func (w *writer) waitAcked(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		w.mu.Lock()
		got := len(w.acked)
		w.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-w.done:
			t.Fatalf("writer stopped after %d commits: %v", got, w.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d commits acknowledged", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ackedIDs waits for the writer to stop and returns its acknowledged ids.
func (w *writer) ackedIDs(t *testing.T) []int64 {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(60 * time.Second):
		t.Fatal("writer did not stop")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

// checkAllPresent verifies that every acknowledged id is on node, and that node
// commits again (its remaining standby streams and confirms).
func checkAllPresent(t *testing.T, ctx context.Context, n *localcluster.Node, table string, ids []int64) {
	t.Helper()
	conn, err := n.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var missing int64
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM unnest($1::bigint[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM "+table+" t WHERE t.id = a.id)", ids).Scan(&missing); err != nil {
		t.Fatal(err)
	}
	if missing != 0 {
		t.Fatalf("%d of %d acknowledged commits are missing on the new primary %s", missing, len(ids), n.Name)
	}
	t.Logf("all %d acknowledged commits are on %s", len(ids), n.Name)
	commitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := conn.Exec(commitCtx, "INSERT INTO "+table+" VALUES (-1)"); err != nil {
		t.Fatalf("commit on the new primary %s: %v", n.Name, err)
	}
}

// eventTimes records, from proxy 1's applied state, when each failover event was
// first seen, relative to start.
type eventTimes struct {
	mu     sync.Mutex
	start  time.Time
	events map[string]time.Duration
	order  []string
}

func watchEvents(e *e2e, ctx context.Context, start time.Time) *eventTimes {
	ev := &eventTimes{start: start, events: map[string]time.Duration{}}
	note := func(name string) {
		ev.mu.Lock()
		defer ev.mu.Unlock()
		if _, ok := ev.events[name]; !ok {
			ev.events[name] = time.Since(start)
			ev.order = append(ev.order, name)
		}
	}
	go func() {
		for ctx.Err() == nil {
			applied := e.proxies[0].raft.Applied()
			st := e.state()
			n, _ := st.Node("pg1")
			down := 0
			for _, o := range n.Observations {
				if !o.Up && o.At.After(start) {
					down++
				}
			}
			if down >= 1 {
				note("first proxy reports pg1 down")
			}
			if down >= 2 {
				note("majority reports pg1 down")
			}
			if f := st.Failover; f != nil {
				note("begin (no primary, traffic held)")
				for _, s := range f.Steps {
					note(string(s.Step))
				}
			} else if st.Epoch > 1 {
				note("complete (" + st.Primary + " routed)")
			}
			select {
			case <-applied:
			case <-ctx.Done():
			}
		}
	}()
	return ev
}

func (ev *eventTimes) log(t *testing.T) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var b strings.Builder
	for _, name := range ev.order {
		fmt.Fprintf(&b, "\n  %8s  %s", ev.events[name].Round(time.Millisecond), name)
	}
	t.Logf("failover timeline after kill -9 of the primary:%s", b.String())
}

func TestE2EKillPrimaryLosesNoAcknowledgedCommit(t *testing.T) {
	e := startE2E(t)
	ctx := testContext(t)
	w := startWriter(t, ctx, e.pg.Nodes[0], "acked")
	w.waitAcked(t, 200)

	start := time.Now()
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	ev := watchEvents(e, watchCtx, start)
	if err := e.pg.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}
	st := e.await("a new primary", func(st clusterstate.State) bool { return st.Failover == nil && st.Epoch > 1 })
	took := time.Since(start)
	stopWatch()
	ev.log(t)
	t.Logf("kill -9 to new primary agreed: %v", took.Round(time.Millisecond))

	h := st.History[len(st.History)-1]
	if h.Outcome != clusterstate.OutcomeCompleted || h.Kind != clusterstate.KindAutomatic || st.Primary == "pg1" || !st.IsFenced("pg1") {
		t.Fatalf("history %+v, primary %s, fenced %v", h, st.Primary, st.Fenced)
	}
	t.Logf("LSN table behind the decision: %s", formatLSNTable(h.LSNTable))
	ids := w.ackedIDs(t)
	checkAllPresent(t, ctx, e.pg.Node(st.Primary), "acked", ids)

	// The other standby follows the new primary as a quorum member.
	other := "pg2"
	if st.Primary == "pg2" {
		other = "pg3"
	}
	primary := e.pg.Node(st.Primary)
	if err := primary.WaitReplicas(ctx, other); err != nil {
		t.Fatal(err)
	}
	if replicas, err := primary.Replicas(ctx); err != nil || len(replicas) != 1 || replicas[0].SyncState != "quorum" {
		t.Errorf("pg_stat_replication on %s: %+v, %v", st.Primary, replicas, err)
	}
}

func TestE2EPrimaryAndStandbyDownBlocksUntilTheStandbyReturns(t *testing.T) {
	e := startE2E(t)
	ctx := testContext(t)
	w := startWriter(t, ctx, e.pg.Nodes[0], "acked")
	w.waitAcked(t, 100)
	pg3 := e.pg.Node("pg3")
	if err := pg3.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	w.waitAcked(t, 200) // pg2 alone confirms now
	if err := e.pg.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}

	st := e.await("a blocked failover", func(st clusterstate.State) bool { return st.Failover != nil && st.Failover.Blocked })
	const want = "1 of 2 standbys reachable, need 2 (unreachable: pg3)"
	if st.Failover.BlockedReason != want {
		t.Fatalf("blocked reason %q, want %q", st.Failover.BlockedReason, want)
	}
	if s := e.leader().coord.Safety(); s.Safe {
		t.Errorf("Safety() says safe during a blocked failover")
	}
	// Several re-checks later: still held, nobody promoted.
	pg2 := e.pg.Node("pg2")
	for until := time.Now().Add(3 * time.Second); time.Now().Before(until); time.Sleep(200 * time.Millisecond) {
		if in, err := pg2.IsInRecovery(ctx); err != nil || !in {
			t.Fatalf("pg2 promoted during a blocked failover (in recovery %t, %v)", in, err)
		}
		if st := e.state(); st.Primary != "" || st.Failover == nil || !st.Failover.Blocked {
			t.Fatalf("failover no longer blocked: primary %q failover %+v", st.Primary, st.Failover)
		}
	}

	// pg3 comes back: the failover proceeds with zero loss.
	if err := pg3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st = e.await("the failover to complete", func(st clusterstate.State) bool { return st.Failover == nil && st.Epoch > 1 })
	if st.Primary != "pg2" {
		t.Fatalf("new primary %s, want pg2 (pg3 missed the last commits)", st.Primary)
	}
	checkAllPresent(t, ctx, pg2, "acked", w.ackedIDs(t))
}

func TestE2EBlockedFailoverIsAbortedWhenThePrimaryReturns(t *testing.T) {
	e := startE2E(t)
	ctx := testContext(t)
	pg1, pg2, pg3 := e.pg.Nodes[0], e.pg.Node("pg2"), e.pg.Node("pg3")
	if err := pg3.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg1.Freeze(); err != nil { // silent, like a cut network
		t.Fatal(err)
	}
	e.await("a blocked failover", func(st clusterstate.State) bool { return st.Failover != nil && st.Failover.Blocked })
	if err := pg1.Thaw(); err != nil {
		t.Fatal(err)
	}
	st := e.await("the abort", func(st clusterstate.State) bool { return st.Failover == nil && st.Primary == "pg1" })
	if h := st.History[len(st.History)-1]; h.Outcome != clusterstate.OutcomeAborted {
		t.Fatalf("history %+v", h)
	}
	// pg2 was unfrozen: it streams from pg1 again and pg1 commits.
	if err := pg2.WaitStreaming(ctx); err != nil {
		t.Fatal(err)
	}
	commitCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := pg1.Exec(commitCtx, "CREATE TABLE after_abort (id int)"); err != nil {
		t.Fatalf("commit on pg1 after the abort: %v", err)
	}
}

func TestE2ESwitchoverLosesNothing(t *testing.T) {
	e := startE2E(t)
	ctx := testContext(t)
	w := startWriter(t, ctx, e.pg.Nodes[0], "acked")
	w.waitAcked(t, 200)

	// Ask a follower: the command goes through Raft to the leader.
	var follower *proxy
	for _, p := range e.proxies {
		if !p.raft.Status().IsLeader {
			follower = p
		}
	}
	start := time.Now()
	entry, err := follower.coord.Switchover(ctx, "pg3")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("switchover took %v; steps: %+v", time.Since(start).Round(time.Millisecond), entry.Steps)
	if entry.NewPrimary != "pg3" || entry.Kind != clusterstate.KindSwitchover {
		t.Fatalf("history entry %+v", entry)
	}
	ids := w.ackedIDs(t)
	t.Logf("the writer on the old primary stopped with: %v", w.err)
	pg3 := e.pg.Node("pg3")
	checkAllPresent(t, ctx, pg3, "acked", ids)
	if err := e.pg.Nodes[0].Exec(ctx, "CREATE TABLE old_primary_writes (id int)"); err == nil {
		t.Error("the old primary accepts writes after the switchover")
	}
	if err := pg3.WaitReplicas(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
}
