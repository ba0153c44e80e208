package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/testenv"
)

// testTimeout bounds each test's own steps; the machine is small and shared.
const testTimeout = 45 * time.Second

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// queryString runs sql on n and fails the test on error.
func queryString(t *testing.T, ctx context.Context, n *localcluster.Node, sql string) string {
	t.Helper()
	v, err := n.QueryString(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func execSQL(t *testing.T, ctx context.Context, n *localcluster.Node, sql string) {
	t.Helper()
	if err := n.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

// waitForRows waits until table t on n holds want rows (replay on a standby is asynchronous).
func waitForRows(t *testing.T, ctx context.Context, n *localcluster.Node, want string) {
	t.Helper()
	testenv.Eventually(t, ctx, 0, n.Name+" to see "+want+" rows", func() (bool, error) {
		v, err := n.QueryString(ctx, "SELECT count(*) FROM t")
		return v == want, err
	})
}

func TestClusterStartsWithQuorumReplication(t *testing.T) {
	begin := time.Now()
	c := StartCluster(t, localcluster.Options{})
	t.Logf("3-node cluster started in %v", time.Since(begin).Round(time.Millisecond))
	ctx := testContext(t)
	primary, pg2, pg3 := c.Nodes[0], c.Node("pg2"), c.Node("pg3")

	if got, want := c.SyncStandbyNames(), "ANY 1 (pg2, pg3)"; got != want {
		t.Errorf("SyncStandbyNames() = %q, want %q", got, want)
	}
	if got := queryString(t, ctx, primary, "SHOW synchronous_standby_names"); got != c.SyncStandbyNames() {
		t.Errorf("primary synchronous_standby_names = %q, want %q", got, c.SyncStandbyNames())
	}
	if got := queryString(t, ctx, primary, "SHOW synchronous_commit"); got != "on" {
		t.Errorf("synchronous_commit = %q, want on", got)
	}
	replicas, err := primary.Replicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range replicas {
		got = append(got, r.Name+" "+r.State+" "+r.SyncState)
	}
	if want := []string{"pg2 streaming quorum", "pg3 streaming quorum"}; !slices.Equal(got, want) {
		t.Errorf("pg_stat_replication = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		node         *localcluster.Node
		wantRecovery bool
	}{{primary, false}, {pg2, true}, {pg3, true}} {
		got, err := tc.node.IsInRecovery(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.wantRecovery {
			t.Errorf("%s in recovery = %v, want %v", tc.node.Name, got, tc.wantRecovery)
		}
	}
	if err := pg2.WaitStreaming(ctx); err != nil {
		t.Error(err)
	}

	// The query user has a SCRAM verifier, and the md5 HBA line checks the password.
	if got := queryString(t, ctx, primary, "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'pgquorum'"); got != "SCRAM-SHA-256$" {
		t.Errorf("pgquorum password verifier starts with %q, want SCRAM-SHA-256$", got)
	}
	if conn, err := pgx.Connect(ctx, primary.ConnString(localcluster.QueryUser, "wrong", "postgres")); err == nil {
		conn.Close(ctx)
		t.Error("connected as pgquorum with a wrong password")
	}

	// A commit on the primary reaches both standbys.
	execSQL(t, ctx, primary, "CREATE TABLE t (id int)")
	execSQL(t, ctx, primary, "INSERT INTO t VALUES (1), (2)")
	waitForRows(t, ctx, pg2, "2")
	waitForRows(t, ctx, pg3, "2")
	if err := pg2.Exec(ctx, "INSERT INTO t VALUES (3)"); err == nil {
		t.Error("a standby accepted a write")
	}
}

func TestKilledStandbyRestartsAndCatchesUp(t *testing.T) {
	c := StartCluster(t, localcluster.Options{})
	ctx := testContext(t)
	primary, pg3 := c.Nodes[0], c.Node("pg3")
	execSQL(t, ctx, primary, "CREATE TABLE t (id int)")

	if err := pg3.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pg3.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("killed node still accepts connections")
	}
	if err := pg3.Kill(); err == nil {
		t.Error("Kill of a dead node succeeded")
	}
	// pg2 alone satisfies ANY 1: commits go on.
	execSQL(t, ctx, primary, "INSERT INTO t VALUES (1)")

	if err := pg3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := primary.WaitReplicas(ctx, "pg3"); err != nil {
		t.Fatal(err)
	}
	waitForRows(t, ctx, pg3, "1")
	if inRecovery, err := pg3.IsInRecovery(ctx); err != nil || !inRecovery {
		t.Errorf("restarted pg3 in recovery = %v, %v; want a standby", inRecovery, err)
	}

	// A frozen node can be killed too: its stopped children are continued so they can exit.
	pg2 := c.Node("pg2")
	if err := pg2.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := pg2.Kill(); err != nil {
		t.Fatal(err)
	}
	execSQL(t, ctx, primary, "INSERT INTO t VALUES (2)")
	if err := pg2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := primary.WaitReplicas(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
	waitForRows(t, ctx, pg2, "2")

	// A clean stop and start.
	if err := pg3.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg3.Stop(ctx); err == nil {
		t.Error("Stop of a stopped node succeeded")
	}
	if err := pg3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pg3.Start(ctx); err == nil {
		t.Error("Start of a running node succeeded")
	}
	if err := pg3.WaitStreaming(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFrozenStandbysBlockCommitUntilThawed(t *testing.T) {
	c := StartCluster(t, localcluster.Options{})
	ctx := testContext(t)
	primary, pg2, pg3 := c.Nodes[0], c.Node("pg2"), c.Node("pg3")
	execSQL(t, ctx, primary, "CREATE TABLE t (id int)")

	for _, n := range []*localcluster.Node{pg2, pg3} {
		if err := n.Freeze(); err != nil {
			t.Fatal(err)
		}
	}
	if err := pg2.Freeze(); err != nil {
		t.Errorf("second Freeze: %v", err)
	}
	committed := make(chan error, 1)
	go func() { committed <- primary.Exec(ctx, "INSERT INTO t VALUES (1)") }()

	// Blocked is an observable state: the backend waits for a synchronous standby.
	testenv.Eventually(t, ctx, 0, "the INSERT to wait for sync replication", func() (bool, error) {
		v, err := primary.QueryString(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
		return v == "1", err
	})
	select {
	case err := <-committed:
		t.Fatalf("commit returned while both standbys were frozen: %v", err)
	default:
	}
	if got := queryString(t, ctx, primary, "SELECT count(*) FROM t"); got != "0" {
		t.Errorf("a commit waiting for its standbys is visible: count = %s", got)
	}

	if err := pg2.Thaw(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-committed:
		if err != nil {
			t.Fatalf("commit after thaw: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("commit still blocked after pg2 was thawed")
	}
	if got := queryString(t, ctx, primary, "SELECT count(*) FROM t"); got != "1" {
		t.Errorf("count after commit = %s, want 1", got)
	}

	// Close must also stop a node that is still frozen, leave nothing behind, and be repeatable.
	dir := filepath.Dir(pg3.LogFile)
	if err := c.Close(); err != nil {
		t.Fatalf("Close with pg3 frozen: %v", err)
	}
	if pids, err := localcluster.ProcessesIn(dir); err != nil || len(pids) > 0 {
		t.Errorf("after Close: processes %v in %s (err %v)", pids, dir, err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := pg3.Start(ctx); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestPromoteStandbyAfterPrimaryKilled(t *testing.T) {
	c := StartCluster(t, localcluster.Options{})
	ctx := testContext(t)
	primary, pg2 := c.Nodes[0], c.Node("pg2")
	execSQL(t, ctx, primary, "CREATE TABLE t (id int)")
	execSQL(t, ctx, primary, "INSERT INTO t VALUES (1)")
	waitForRows(t, ctx, pg2, "1")

	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := pg2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if inRecovery, err := pg2.IsInRecovery(ctx); err != nil || inRecovery {
		t.Fatalf("promoted pg2 in recovery = %v, %v", inRecovery, err)
	}
	// The new primary has no synchronous standbys configured, so its commits do not wait.
	execSQL(t, ctx, pg2, "INSERT INTO t VALUES (2)")
	waitForRows(t, ctx, pg2, "2")

	// The killed primary restarts with crash recovery and keeps its committed row.
	if err := primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitForRows(t, ctx, primary, "1")
}

func TestStartFailureReportsServerLogAndCleansUp(t *testing.T) {
	testenv.RequirePostgres(t, "")
	dir := testenv.TempDir(t)
	ctx := testContext(t)
	_, err := localcluster.Start(ctx, localcluster.Options{
		Dir:       dir,
		Names:     []string{"solo"},
		ExtraConf: map[string]string{"shared_buffers": "plenty"},
		Fast:      true,
	})
	if err == nil {
		t.Fatal("Start with an invalid setting succeeded")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error does not quote the server log: %v", err)
	}
	if pids, err := localcluster.ProcessesIn(dir); err != nil || len(pids) > 0 {
		t.Errorf("processes %v left in %s (err %v)", pids, dir, err)
	}
}

// Start explains a port taken by another process, and works again once it is free.
func TestStartReportsPortInUse(t *testing.T) {
	c := StartCluster(t, localcluster.Options{Names: []string{"solo"}})
	ctx := testContext(t)
	solo := c.Nodes[0]
	if err := solo.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	squatter, err := net.Listen("tcp", solo.Address())
	if err != nil {
		t.Fatalf("occupy %s: %v", solo.Address(), err)
	}
	err = solo.Start(ctx)
	squatter.Close()
	if err == nil {
		t.Fatal("Start succeeded on a port held by another process")
	}
	for _, want := range []string{"port already in use", "Address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error does not mention %q: %v", want, err)
		}
	}
	if err := solo.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, ctx, solo, "SELECT 1"); got != "1" {
		t.Errorf("SELECT 1 = %q", got)
	}
}

// A Dir too deep for unix socket paths (107 bytes) still works: the sockets go to a short
// temporary directory, which Close removes.
func TestDeepDirUsesShortSocketDir(t *testing.T) {
	testenv.RequirePostgres(t, "")
	dir := filepath.Join(testenv.TempDir(t), strings.Repeat("d", 60))
	ctx := testContext(t)
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: dir, Names: []string{"solo"}, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	solo := c.Nodes[0]
	if strings.HasPrefix(solo.SocketDir, dir) || len(solo.SocketDir) > 90 {
		t.Errorf("SocketDir = %s, want a short directory outside %s", solo.SocketDir, dir)
	}
	if got := queryString(t, ctx, solo, "SHOW unix_socket_directories"); got != solo.SocketDir {
		t.Errorf("unix_socket_directories = %q, want %q", got, solo.SocketDir)
	}
	if _, err := os.Stat(filepath.Join(solo.SocketDir, fmt.Sprintf(".s.PGSQL.%d", solo.Port))); err != nil {
		t.Errorf("no socket: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(solo.SocketDir); !os.IsNotExist(err) {
		t.Errorf("socket dir %s still exists after Close (err %v)", solo.SocketDir, err)
	}
	if pids, err := localcluster.ProcessesIn(dir); err != nil || len(pids) > 0 {
		t.Errorf("processes %v left in %s (err %v)", pids, dir, err)
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	testenv.RequirePostgres(t, "")
	dir := testenv.TempDir(t)
	for _, tc := range []struct {
		name string
		opts localcluster.Options
		want string
	}{
		{"no dir", localcluster.Options{}, "Dir is required"},
		{"bad name", localcluster.Options{Dir: dir, Names: []string{"pg1", "PG-2"}}, `node name "PG-2"`},
		{"duplicate name", localcluster.Options{Dir: dir, Names: []string{"a", "a"}}, "given twice"},
		{"quorum too big", localcluster.Options{Dir: dir, Quorum: 3}, "Quorum 3"},
		{"reserved setting", localcluster.Options{Dir: dir, ExtraConf: map[string]string{"port": "1"}}, `"port" is managed`},
		{"line break in hba", localcluster.Options{Dir: dir, ExtraHBA: []string{"local all all trust\nhost"}}, "line break"},
		{"no PostgreSQL", localcluster.Options{Dir: dir, BinDir: dir}, "server programs not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := localcluster.Start(t.Context(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start error = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("rejected options left files in %s: %v (err %v)", dir, entries, err)
	}
}

func TestRequireToolFindsPostgresTools(t *testing.T) {
	for _, name := range []string{"pg_ctl", "pgbench"} {
		path := RequireTool(t, name)
		info, err := os.Stat(path)
		if err != nil || info.Mode()&0o111 == 0 {
			t.Errorf("RequireTool(%q) = %q, not an executable (err %v)", name, path, err)
		}
	}
}
