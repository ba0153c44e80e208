package faults

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
	"github.com/pgquorum/pgquorum/integration"
	"github.com/pgquorum/pgquorum/integration/proxies"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/rejoin"
	"github.com/pgquorum/pgquorum/testenv"
)

// TestFaults runs the scenarios one after the other on one PostgreSQL quorum
// cluster and three proxies; each scenario leaves the cluster whole again (the
// old primary rejoined) for the next. A scenario that fails ends the run: the
// next ones would start from a broken cluster.
func TestFaults(t *testing.T) {
	s := startSuite(t)
	scenarios := []struct {
		name string
		run  func(t *testing.T, s *suite)
	}{
		{"StaleReadUnderPartition", testStaleReadUnderPartition},
		{"ZombiePrimaryAnswers08007", testZombiePrimaryAnswers08007},
		{"LeaderKilledAtEveryStep", testLeaderKilledAtEveryStep},
		{"TwoFailuresNeverAsync", testTwoFailuresNeverAsync},
		{"VoterLostItsDataDirectory", testVoterLostItsDataDirectory},
		{"MajorityOfVotersLost", testMajorityOfVotersLost},
	}
	for _, sc := range scenarios {
		if !t.Run(sc.name, func(t *testing.T) { sc.run(t, s) }) {
			t.Fatalf("scenario %s failed; the later ones are not run", sc.name)
		}
	}
	s.logSummary(t)
}

// stepTimeout bounds each wait of a scenario.
const stepTimeout = 90 * time.Second

// checkTimeout bounds the linearizability search of one history.
const checkTimeout = 2 * time.Minute

// suite is the cluster the scenarios share. Owner: the test goroutine.
type suite struct {
	pg        *localcluster.Cluster
	proxies   *proxies.Cluster
	fw        *Firewall
	failpoint string // the failpoint file of the coordinator (failpoints build)
	primary   string // the agreed primary between scenarios
	epoch     uint64
	retired   map[uint64]bool // proxies replaced for good (disaster recovery)

	mu      sync.Mutex
	results []result
}

// result is one scenario run's checks, for the summary.
type result struct {
	scenario      string
	ops           int
	acked         int
	unknownWrites int
	verdict       porcupine.CheckResult
}

func startSuite(t *testing.T) *suite {
	t.Helper()
	testenv.RequirePostgres(t, "")
	fw, err := NewFirewall()
	if err != nil {
		testenv.Missing(t, "a usable iptables (root, owner match): %v", err)
	}
	t.Cleanup(func() {
		if err := fw.Close(); err != nil {
			t.Errorf("remove the firewall rules: %v", err)
		}
		if left, err := fw.Leftover(); err != nil || len(left) > 0 {
			t.Errorf("firewall rules left behind: %q (%v)", left, err)
		}
	})
	pg := integration.StartCluster(t, localcluster.Options{})
	s := &suite{pg: pg, fw: fw, failpoint: filepath.Join(t.TempDir(), "failpoint"), primary: "pg1", epoch: 1, retired: map[uint64]bool{}}
	s.proxies = proxies.Start(t, pg, proxies.Options{
		Binary:      failpointBinary(t),
		Env:         []string{"PGQUORUM_FAILPOINT_FILE=" + s.failpoint},
		SysProcAttr: fw.ProxyAttr,
		// Quick to notice a dead node; automatic failovers may follow each other.
		Extra: "failover: {min_interval: 1s}\nhealth: {interval: 200ms}\n",
	})
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	if err := pg.Node("pg1").Exec(ctx, Schema); err != nil {
		t.Fatal(err)
	}
	return s
}

var failpointBuild struct {
	sync.Once
	path string
	err  error
}

// failpointBinary builds cmd/pgquorum with the failpoints tag (see
// coordinator/failpoint_on.go) once per test binary.
func failpointBinary(t *testing.T) string {
	t.Helper()
	failpointBuild.Do(func() {
		dir, err := os.MkdirTemp("", "pgquorum-faults-bin-")
		if err != nil {
			failpointBuild.err = err
			return
		}
		failpointBuild.path = filepath.Join(dir, "pgquorum")
		out, err := exec.Command("go", "build", "-tags", "failpoints", "-o", failpointBuild.path,
			"github.com/pgquorum/pgquorum/cmd/pgquorum").CombinedOutput()
		if err != nil {
			failpointBuild.err = fmt.Errorf("go build -tags failpoints: %v\n%s", err, out)
		}
	})
	if failpointBuild.err != nil {
		t.Fatal(failpointBuild.err)
	}
	return failpointBuild.path
}

// startLoad empties the workload's tables on the primary and starts clients
// through the given proxies (default: all).
func (s *suite) startLoad(t *testing.T, through ...*proxies.Process) *Workload {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	if err := s.pg.Node(s.primary).Exec(ctx, "TRUNCATE faults_writes; UPDATE faults_register SET v = 0"); err != nil {
		t.Fatal(err)
	}
	if len(through) == 0 {
		through = s.running()
	}
	var targets []string
	for _, p := range through {
		targets = append(targets, p.ConnString())
	}
	w := StartWorkload(WorkloadOptions{Targets: targets})
	t.Cleanup(w.Stop)
	if err := w.WaitAcks(ctx, 50); err != nil {
		t.Fatal(err)
	}
	return w
}

// killPostgres kills n (kill -9 of its postmaster), noting the moment in w's history first
// (History.WithoutDyingServerReads).
func killPostgres(w *Workload, n *localcluster.Node) error {
	w.History.NoteKill(n.Port)
	return n.Kill()
}

// finishLoad stops the workload and checks its history: linearizable, and
// every acknowledged write on each of nodes (the primary first) exactly once.
func (s *suite) finishLoad(t *testing.T, w *Workload, nodes ...*localcluster.Node) {
	t.Helper()
	w.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	acked, attempted := w.Acknowledged()
	for _, n := range nodes {
		counts, err := writeLog(ctx, n, len(nodes) > 1 && n != nodes[0], s.pg.Node(s.primary))
		if err != nil {
			t.Fatal(err)
		}
		v := VerifyAcknowledged(n.Name, acked, attempted, counts)
		if !v.OK() {
			t.Errorf("acknowledged writes: %v", v)
		} else {
			t.Logf("acknowledged writes: %v", v)
		}
	}
	ops, left := w.History.WithoutDyingServerReads()
	if len(left) > 0 {
		t.Logf("%d reads answered by a PostgreSQL server after its kill -9 are not judged (PostgreSQL shows a commit whose synchronous wait the postmaster's death cut; docs/architecture.md): %v",
			len(left), left[:min(len(left), 5)])
	}
	lin := CheckLinearizable(ops, checkTimeout)
	t.Logf("linearizability: %v; client errors %v", lin, w.Errors())
	if lin.Result != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("pgquorum-faults-%s-%d.html", strings.ReplaceAll(t.Name(), "/", "_"), time.Now().Unix()))
		if err := lin.Visualize(path); err == nil {
			t.Logf("porcupine's view of the history: %s", path)
		}
		t.Errorf("the history is not linearizable (%s)", lin.Result)
	}
	s.mu.Lock()
	s.results = append(s.results, result{scenario: t.Name(), ops: lin.Ops, acked: len(acked), unknownWrites: lin.UnknownWrites, verdict: lin.Result})
	s.mu.Unlock()
}

// writeLog reads the write log of node: value -> rows. A standby is first
// given time to replay everything the primary has.
func writeLog(ctx context.Context, node *localcluster.Node, standby bool, primary *localcluster.Node) (map[int64]int, error) {
	if standby {
		lsn, err := primary.QueryString(ctx, "SELECT pg_current_wal_flush_lsn()::text")
		if err != nil {
			return nil, err
		}
		want, err := health.ParseLSN(lsn)
		if err != nil {
			return nil, err
		}
		var replayed string
		for {
			replayed, err = node.QueryString(ctx, "SELECT coalesce(pg_last_wal_replay_lsn()::text, '0/0')")
			if got, perr := health.ParseLSN(replayed); err == nil && perr == nil && got >= want {
				break
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%s did not replay up to %s of %s (replayed %s, %v)", node.Name, lsn, primary.Name, replayed, err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	conn, err := node.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT v, count(*) FROM faults_writes GROUP BY v")
	if err != nil {
		return nil, fmt.Errorf("read the write log on %s: %w", node.Name, err)
	}
	counts := map[int64]int{}
	for rows.Next() {
		var v, n int64
		if err := rows.Scan(&v, &n); err != nil {
			return nil, err
		}
		counts[v] = int(n)
	}
	return counts, rows.Err()
}

// waitFailover waits until every proxy of ps agrees on a primary other than
// old at an epoch after s.epoch, routes to it and lists old as fenced; it
// records the new primary and epoch in s and returns the primary.
func (s *suite) waitFailover(t *testing.T, old string, ps ...*proxies.Process) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	if len(ps) == 0 {
		ps = s.running()
	}
	var primary string
	var epoch uint64
	for _, p := range ps {
		err := p.WaitCluster(ctx, "a failover away from "+old, func(v admin.ClusterView) bool {
			if v.Epoch > s.epoch && v.Primary != "" && v.Primary != old && v.Failover == nil &&
				slices.Contains(v.Fenced, old) && v.Routing.Routing {
				primary, epoch = v.Primary, v.Epoch
				return true
			}
			return false
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	s.primary, s.epoch = primary, epoch
	return primary
}

// rejoin rewinds the fenced node name and starts it as a standby of the
// primary (rejoin.Run, as `pgquorum rejoin` does), then waits until it streams,
// counts in the synchronous quorum again and no proxy lists it as fenced.
func (s *suite) rejoin(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	node := s.pg.Node(name)
	started := time.Now()
	res, err := rejoin.Run(ctx, rejoin.Options{
		PGData:    node.DataDir,
		Admin:     []string{s.leader(t).Admin},
		TokenFile: s.proxies.TokenFile,
		SSLMode:   "disable",
		// After two failures no standby is left to copy credentials from.
		ReplicationUser: localcluster.ReplicationUser,
		ServerLog:       node.LogFile,
		StreamTimeout:   time.Minute,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("rejoin %s: %v", name, err)
	}
	for _, p := range s.running() {
		if err := p.WaitCluster(ctx, name+" unfenced", func(v admin.ClusterView) bool {
			return !slices.Contains(v.Fenced, name) && v.Primary == s.primary
		}); err != nil {
			t.Fatal(err)
		}
	}
	primary := s.pg.Node(s.primary)
	for {
		replicas, err := primary.Replicas(ctx)
		if err == nil && slices.ContainsFunc(replicas, func(r localcluster.Replica) bool {
			return r.Name == name && r.State == "streaming" && r.SyncState == "quorum"
		}) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("rejoined %s is not a quorum standby of %s: %+v (%v)", name, s.primary, replicas, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("%s rejoined as a standby of %s in %v (%s)", name, s.primary, time.Since(started).Round(time.Millisecond), res.Method)
}

// completed returns the history entry of the failover that completed at s.epoch.
func (s *suite) completed(t *testing.T, p *proxies.Process) clusterstate.HistoryEntry {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	history, err := p.Client().History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found []clusterstate.HistoryEntry
	for _, h := range history {
		if h.Epoch == s.epoch && h.Outcome == clusterstate.OutcomeCompleted {
			found = append(found, h)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d completed failovers of epoch %d in /history, want 1: %+v", len(found), s.epoch, history)
	}
	return found[0]
}

// stepDetail is the detail of the last record of step in h.
func stepDetail(h clusterstate.HistoryEntry, step clusterstate.Step) string {
	detail := ""
	for _, r := range h.Steps {
		if r.Step == step {
			detail = r.Detail
		}
	}
	return detail
}

// leader returns the proxy that leads the Raft cluster, as the running proxies of ps agree.
func (s *suite) leader(t *testing.T, ps ...*proxies.Process) *proxies.Process {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	if len(ps) == 0 {
		ps = s.running()
	}
	for {
		var id uint64
		agreed := true
		for _, p := range ps {
			v, err := p.Cluster(ctx)
			if err != nil || v.Raft.Leader == 0 || (id != 0 && v.Raft.Leader != id) {
				agreed = false
				break
			}
			id = v.Raft.Leader
		}
		if agreed && s.proxies.Proxy(id) != nil {
			return s.proxies.Proxy(id)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the proxies never agreed on a Raft leader")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// running lists the proxies in service (not retired).
func (s *suite) running() []*proxies.Process {
	var out []*proxies.Process
	for _, p := range s.proxies.Proxies {
		if !s.retired[p.ID] {
			out = append(out, p)
		}
	}
	return out
}

// raftPort is the port of p's Raft listener.
func raftPort(t *testing.T, p *proxies.Process) int {
	t.Helper()
	_, port, err := net.SplitHostPort(p.Raft)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (s *suite) logSummary(t *testing.T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-60s %8s %8s %8s %s\n", "scenario", "ops", "acked", "unknown", "linearizable")
	for _, r := range s.results {
		fmt.Fprintf(&b, "%-60s %8d %8d %8d %s\n", r.scenario, r.ops, r.acked, r.unknownWrites, r.verdict)
	}
	t.Log(b.String())
}
