package proxy

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgquorum/pgquorum/metrics"
)

// testAsyncCommit: a session that lowers synchronous_commit is counted; with
// ForbidAsyncCommit it is refused with 42501 from PostgreSQL itself (the transaction follows),
// by simple and extended protocol and at startup; raising it stays allowed.
func testAsyncCommit(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	allowM := metrics.New(metrics.Options{ClusterName: "t", NodeID: 3, NoRuntimeMetrics: true})
	allowing := p.newProxy(t, Config{Metrics: allowM})
	conn := connectVia(t, allowing, "")
	mustExec(t, conn, "SET synchronous_commit = off")
	mustExec(t, conn, "SELECT set_config('synchronous_commit', 'local', false)")
	if got := queryText(t, conn, "SHOW synchronous_commit"); got != "local" {
		t.Fatalf("allowed: synchronous_commit is %q, want local", got)
	}
	onConn := connectVia(t, allowing, "")
	mustExec(t, onConn, "SET synchronous_commit = remote_apply")
	requireCounter(t, allowM, "pgquorum_proxy_async_commit_sessions_total", "1")
	requireCounter(t, allowM, "pgquorum_proxy_async_commit_refused_total", "0")

	forbidM := metrics.New(metrics.Options{ClusterName: "t", NodeID: 3, NoRuntimeMetrics: true})
	forbidding := p.newProxy(t, Config{Metrics: forbidM, ForbidAsyncCommit: true})
	conn = connectVia(t, forbidding, "")
	refused := func(sql string, args ...any) {
		t.Helper()
		_, err := conn.Exec(ctx, sql, args...)
		e := requirePgCode(t, err, codeInsufficientPrivilege)
		if !strings.Contains(e.Message, "pgquorum refuses synchronous_commit") {
			t.Fatalf("%s: message %q", sql, e.Message)
		}
	}
	refused("SET synchronous_commit = off")
	refused("set Synchronous_Commit to 'remote_write'")
	refused("SELECT set_config('synchronous_commit', $1, false)", "local") // extended protocol
	refused("SELECT 1; SET SESSION synchronous_commit = local")
	if got := queryText(t, conn, "SHOW synchronous_commit"); got != "on" {
		t.Fatalf("forbidden: synchronous_commit is %q, want on", got)
	}
	mustExec(t, conn, "SET synchronous_commit = remote_apply")
	mustExec(t, conn, "SET LOCAL synchronous_commit = on")

	// Inside a transaction the refusal aborts it, as a failed statement does.
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t VALUES (4242, 'async')")
	refused("SET LOCAL synchronous_commit TO off")
	_, err := conn.Exec(ctx, "SELECT 1")
	requirePgCode(t, err, codeInFailedTransaction)
	mustExec(t, conn, "ROLLBACK")
	if got := queryText(t, conn, "SELECT count(*)::text FROM t WHERE id = 4242"); got != "0" {
		t.Fatalf("the refused transaction left %s rows", got)
	}

	// A named prepared statement is refused when executed, and stays refused.
	if _, err := conn.Prepare(ctx, "lower", "SELECT set_config('synchronous_commit', 'off', false)"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		refused("lower")
	}

	// At startup.
	_, err = pgx.Connect(ctx, connString(forbidding, "options='-c synchronous_commit=off'"))
	requirePgCode(t, err, codeInsufficientPrivilege)
	requireCounter(t, forbidM, "pgquorum_proxy_async_commit_sessions_total", "2")
	// Refused: four statements, the SET LOCAL, the Parse (once, executed twice), the startup.
	requireCounter(t, forbidM, "pgquorum_proxy_async_commit_refused_total", "7")
}

// requireCounter checks a sample of m's exposition.
func requireCounter(t *testing.T, m *metrics.Metrics, name, want string) {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if value, ok := strings.CutPrefix(line, name+" "); ok {
			if value != want {
				t.Fatalf("%s = %s, want %s", name, value, want)
			}
			return
		}
	}
	t.Fatalf("%s not exposed", name)
}
