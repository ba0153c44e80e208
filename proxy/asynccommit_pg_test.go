package proxy

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgquorum/pgquorum/metrics"
	"github.com/pgquorum/pgquorum/testenv"
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
	if got := scrapeValue(m, name); got != want {
		t.Fatalf("%s = %q, want %s", name, got, want)
	}
}

// scrapeValue returns the value of a sample (name with its labels) of m's exposition, or "" when
// it is not exposed.
func scrapeValue(m *metrics.Metrics, name string) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if value, ok := strings.CutPrefix(line, name+" "); ok {
			return value
		}
	}
	return ""
}

// testDataPathMetrics: queries, transactions, their durations, the sessions per backend node,
// failed backend logins and failed client authentications move as clients use the proxy.
func testDataPathMetrics(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	from, _ := p.current()
	m := metrics.New(metrics.Options{ClusterName: "t", NodeID: 3, NoRuntimeMetrics: true, Backends: []string{p.a.Name, p.b.Name}})
	srv := p.newProxy(t, Config{Metrics: m})
	conn := connectVia(t, srv, "")
	requireCounter(t, m, `pgquorum_proxy_backend_sessions{node="`+from.Name+`"}`, "1")
	mustExec(t, conn, "SELECT 1")                                  // a Query: 1 query, 1 transaction
	if _, err := conn.Exec(ctx, "SELECT $1::int", 2); err != nil { // extended protocol: 1 Sync
		t.Fatal(err)
	}
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t VALUES (5151, 'metrics')")
	mustExec(t, conn, "ROLLBACK") // 3 queries, 1 transaction
	// pgx prepares the extended-protocol statement first (Parse, Describe, Sync): 1 more query.
	requireCounter(t, m, "pgquorum_proxy_queries_total", "6")
	requireCounter(t, m, "pgquorum_proxy_transactions_total", "4")
	requireCounter(t, m, "pgquorum_proxy_query_duration_seconds_count", "6")

	_, err := pgx.Connect(ctx, connString(srv, "")+" password=wrong")
	requirePgCode(t, err, codeInvalidPassword)
	requireCounter(t, m, `pgquorum_proxy_auth_failures_total{reason="bad_password"}`, "1")
	_, err = pgx.Connect(ctx, strings.Replace(connString(srv, ""), "dbname=postgres", "dbname=nosuchdb", 1))
	requirePgCode(t, err, "3D000")
	requireCounter(t, m, `pgquorum_proxy_backend_connect_errors_total{node="`+from.Name+`",reason="other"}`, "1")

	closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := conn.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, ctx, 10*time.Second, "the closed session to be uncounted", func() (bool, error) {
		return scrapeValue(m, `pgquorum_proxy_backend_sessions{node="`+from.Name+`"}`) == "0", nil
	})
}
