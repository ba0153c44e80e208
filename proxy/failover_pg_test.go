package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/testenv"
)

// TestFailoverBehaviour proves SPEC §5 row by row at the proxy level, against two real
// PostgreSQL servers standing for the old and the new primary (the routing is the test's).
// The subtests share the servers and run in order; each moves routing at least once.
func TestFailoverBehaviour(t *testing.T) {
	p := startPgPair(t, Config{})
	t.Run("IdleSessionMovesWithItsState", func(t *testing.T) { testIdleSessionMoves(t, p) })
	t.Run("TransactionLostGets40001", func(t *testing.T) { testTransactionLost(t, p) })
	t.Run("ExtendedProtocolInALostTransaction", func(t *testing.T) { testExtendedInLostTransaction(t, p) })
	t.Run("RequestInFlightGets08007", func(t *testing.T) { testRequestInFlight(t, p) })
	t.Run("TerminatedByAdministratorEndsTheSession", func(t *testing.T) { testTerminatedIdleSession(t, p) })
	t.Run("TerminatedInASwitchoverMoves", func(t *testing.T) { testTerminatedIdleSessionInSwitchover(t, p) })
	t.Run("HeldUntilPrimaryAgreed", func(t *testing.T) { testHeldUntilPrimary(t, p) })
	t.Run("HoldTimeoutAndBound", func(t *testing.T) { testHoldTimeoutAndBound(t, p) })
	t.Run("ReadOnlyRejectionRetried", func(t *testing.T) { testReadOnlyRejectionRetried(t, p) })
	t.Run("ReadOnlyRejectionOfTheHealthyPrimaryAtOnce", func(t *testing.T) { testReadOnlyRejectionDelivered(t, p) })
	t.Run("TerminatedRequestRetried", func(t *testing.T) { testTerminatedRequestRetried(t, p) })
	t.Run("UnmovableSessionClosed", func(t *testing.T) { testUnmovableSessionClosed(t, p) })
	t.Run("CancelNeverHitsACommit", func(t *testing.T) { testCancelPolicy(t, p) })
	t.Run("SyncRepWaitNeverCut", func(t *testing.T) { testSyncRepWaitNeverCut(t, p) })
	t.Run("BackendKeyDataIsTheBackends", func(t *testing.T) { testBackendKeyData(t, p) })
	t.Run("LostCommitGetsItsRealOutcome", func(t *testing.T) { testLostCommitOutcome(t, p) })
	t.Run("PipelinedInATransactionAnsweredOneByOne", func(t *testing.T) { testPipelinedInTransactionLost(t, p) })
	t.Run("SQLExecuteOfAProtocolStatementAfterAMove", func(t *testing.T) { testExecuteAfterMove(t, p) })
	t.Run("LargeBindAfterAMove", func(t *testing.T) { testLargeBindAfterMove(t, p) })
	t.Run("ReportedSettingChangedByAFunctionMoves", func(t *testing.T) { testReportedSettingChangedByAFunction(t, p) })
	t.Run("LeaseExpiredDropsBackends", func(t *testing.T) { testLeaseExpired(t, p) })
	t.Run("NewConnectionWhilePrimaryDead", func(t *testing.T) { testNewConnectionWhilePrimaryDead(t, p) })
	t.Run("AsyncCommitCountedOrRefused", func(t *testing.T) { testAsyncCommit(t, p) })
	t.Run("DataPathMetrics", func(t *testing.T) { testDataPathMetrics(t, p) })
}

// current returns the server the route names now, and the other one.
func (p *pgPair) current() (*localcluster.Node, *localcluster.Node) {
	r, _ := p.router.Route()
	if r.Target.Name == p.a.Name {
		return p.a, p.b
	}
	return p.b, p.a
}

func mustExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(testContext(t), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func queryText(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(testContext(t), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func testIdleSessionMoves(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	from, to := p.current()
	conn := p.connect(t, "application_name=before")
	for _, sql := range []string{
		"SET search_path TO pg_catalog, public",
		"SET application_name = 'moved-app'",
		"SET myapp.tenant = '42'",
		"BEGIN", "SET myapp.rolled = 'rolled back'", "ROLLBACK",
		"BEGIN", "SET myapp.committed = 'yes'", "SET LOCAL myapp.local = 'local'", "COMMIT",
		"PREPARE sqlq(int) AS SELECT $1 + 1",
		"LISTEN jobs",
	} {
		mustExec(t, conn, sql)
	}
	if _, err := conn.Prepare(ctx, "named", "SELECT $1::int * 2"); err != nil {
		t.Fatal(err)
	}
	if got := queryText(t, conn, "SELECT ($1::int + 100)::text", 1); got != "101" {
		t.Fatalf("cached statement: %s", got)
	}
	if port := serverPort(t, conn); port != from.Port {
		t.Fatalf("before the failover the session is on port %d, want %d", port, from.Port)
	}

	p.failover(t, to)

	// The session listens: it moves at once, and a notification on the new primary reaches it.
	waitFor(t, "the listening session to be on "+to.Name, func() bool {
		n, err := to.QueryString(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", pgTestUser)
		return err == nil && n == "1"
	})
	if err := to.Exec(ctx, "NOTIFY jobs, 'after the move'"); err != nil {
		t.Fatal(err)
	}
	n, err := conn.WaitForNotification(ctx)
	if err != nil || n.Payload != "after the move" {
		t.Fatalf("notification after the move: %+v, %v", n, err)
	}
	if port := serverPort(t, conn); port != to.Port {
		t.Fatalf("after the failover the session is on port %d, want %d", port, to.Port)
	}
	for sql, want := range map[string]string{
		"SHOW search_path":                                                        "pg_catalog, public",
		"SHOW application_name":                                                   "moved-app",
		"SELECT current_setting('myapp.tenant')":                                  "42",
		"SELECT current_setting('myapp.committed')":                               "yes",
		"SELECT coalesce(current_setting('myapp.rolled', true), '')":              "",
		"SELECT coalesce(current_setting('myapp.local', true), '')":               "",
		"SELECT (count(*))::text FROM pg_listening_channels()":                    "1",
		"SELECT (count(*))::text FROM pg_prepared_statements WHERE name = 'sqlq'": "1",
	} {
		if got := queryText(t, conn, sql); got != want {
			t.Errorf("%s = %q after the move, want %q", sql, got, want)
		}
	}
	if got := queryText(t, conn, "EXECUTE sqlq(1)"); got != "2" {
		t.Errorf("EXECUTE of a SQL prepared statement after the move: %s", got)
	}
	var doubled int
	if err := conn.QueryRow(ctx, "named", 21).Scan(&doubled); err != nil || doubled != 42 {
		t.Errorf("named prepared statement after the move: %d, %v", doubled, err)
	}
	if got := queryText(t, conn, "SELECT ($1::int + 100)::text", 2); got != "102" {
		t.Errorf("cached statement after the move: %s", got)
	}
	if got := conn.PgConn().ParameterStatus("application_name"); got != "moved-app" {
		t.Errorf("ParameterStatus application_name = %q, want moved-app", got)
	}
}

func testTransactionLost(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	from, to := p.current()
	conn := p.connect(t, "")
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t VALUES (1, 'lost')")

	p.failover(t, to)

	_, err := conn.Exec(ctx, "INSERT INTO t VALUES (2, 'lost')")
	pgErr := requirePgCode(t, err, codeSerializationFailure)
	if !strings.Contains(pgErr.Message, "not committed") {
		t.Errorf("40001 message %q does not say the transaction was not committed", pgErr.Message)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a statement after 40001 succeeded; the transaction must stay aborted until ROLLBACK")
	} else {
		requirePgCode(t, err, codeInFailedTransaction)
	}
	mustExec(t, conn, "ROLLBACK")
	// The retry succeeds on the new primary.
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t VALUES (3, 'retried')")
	mustExec(t, conn, "COMMIT")
	for _, n := range []*localcluster.Node{from, to} {
		got, err := n.QueryString(ctx, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM t WHERE id IN (1, 2, 3)")
		if err != nil {
			t.Fatal(err)
		}
		want := ""
		if n == to {
			want = "3"
		}
		if got != want {
			t.Errorf("%s holds ids %q, want %q", n.Name, got, want)
		}
	}
}

func testExtendedInLostTransaction(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	_, to := p.current()
	conn := p.connect(t, "")
	pc := conn.PgConn()
	extended := func(sql string) error {
		_, err := pc.ExecParams(ctx, sql, nil, nil, nil, nil).Close()
		return err
	}
	if err := extended("BEGIN"); err != nil {
		t.Fatal(err)
	}
	if err := extended("INSERT INTO t VALUES (11, 'lost')"); err != nil {
		t.Fatal(err)
	}
	p.failover(t, to)
	requirePgCode(t, extended("INSERT INTO t VALUES (12, 'lost')"), codeSerializationFailure)
	requirePgCode(t, extended("SELECT 1"), codeInFailedTransaction)
	if err := extended("ROLLBACK"); err != nil {
		t.Fatalf("ROLLBACK through the extended protocol after 40001: %v", err)
	}
	if pc.TxStatus() != 'I' {
		t.Fatalf("transaction status %q after ROLLBACK", pc.TxStatus())
	}
	if port := serverPort(t, conn); port != to.Port {
		t.Fatalf("after ROLLBACK the session is on port %d, want %d", port, to.Port)
	}
}

func testTerminatedIdleSession(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	cur, _ := p.current()
	conn := p.connect(t, "")
	mustExec(t, conn, "SET myapp.kept = 'yes'")
	pid := queryText(t, conn, "SELECT pg_backend_pid()::text")
	// An administrator ends the idle session's backend on the healthy primary; routing does
	// not change. The client sees what it would see directly: FATAL 57P01, then the end.
	if err := cur.Exec(ctx, "SELECT pg_terminate_backend("+pid+")"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the proxy to close the session", func() bool { return p.srv.sessionPhase(conn.PgConn().Conn().LocalAddr().String()) == phaseClosed })
	_, err := conn.Exec(ctx, "SELECT 1")
	if pgErr := requirePgCode(t, err, codeAdminShutdown); pgErr.Severity != severityFatal ||
		!strings.Contains(pgErr.Message, "administrator command") {
		t.Fatalf("got %s %q, want PostgreSQL's own FATAL", pgErr.Severity, pgErr.Message)
	}
	if !conn.IsClosed() {
		t.Fatal("the connection is still open after the FATAL")
	}
}

// testTerminatedIdleSessionInSwitchover: the same termination while a switchover begun by the
// cluster (which this proxy has not applied yet) ends the old primary's sessions: the session
// moves and keeps its state.
func testTerminatedIdleSessionInSwitchover(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	cur, to := p.current()
	conn := p.connect(t, "")
	mustExec(t, conn, "SET myapp.kept = 'yes'")
	pid := queryText(t, conn, "SELECT pg_backend_pid()::text")
	confirms := p.router.confirmElsewhere(t, &Route{})
	if err := cur.Exec(ctx, "SELECT pg_terminate_backend("+pid+")"); err != nil {
		t.Fatal(err)
	}
	<-confirms
	p.router.confirmElsewhere(t, nil)
	client := conn.PgConn().Conn().LocalAddr().String()
	waitFor(t, "the proxy to see the backend's end", func() bool { return p.srv.sessionPhase(client) == phaseDetached })
	p.failover(t, to)
	if got := queryText(t, conn, "SELECT current_setting('myapp.kept') || ' ' || inet_server_port()"); got != fmt.Sprintf("yes %d", to.Port) {
		t.Fatalf("after a switchover ended its backend the session answers %q, want its setting on the new primary", got)
	}
}

func testRequestInFlight(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	from, to := p.current()
	conn := p.connect(t, "")
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "INSERT INTO t SELECT 5, 'slow' FROM pg_sleep(1)")
		done <- err
	}()
	waitActive(t, from, "INSERT INTO t SELECT 5")
	p.failover(t, to)
	requirePgCode(t, <-done, codeTransactionResolutionUnknown)
	// The session stays usable, on the new primary.
	if port := serverPort(t, conn); port != to.Port {
		t.Fatalf("after 08007 the session is on port %d, want %d", port, to.Port)
	}
}

func testHeldUntilPrimary(t *testing.T, p *pgPair) {
	_, to := p.current()
	conn := p.connect(t, "")
	p.setRoute(t, Route{})

	ports := make(chan int, 2)
	errs := make(chan error, 2)
	go func() {
		var port int
		err := conn.QueryRow(context.Background(), "SELECT inet_server_port()").Scan(&port)
		ports <- port
		errs <- err
	}()
	newConn := make(chan *pgx.Conn, 1)
	go func() {
		c, err := pgx.Connect(context.Background(), connString(p.srv, ""))
		errs <- err
		newConn <- c
	}()
	// The request is held; the new connection waits too, in authentication (its verifier is
	// read on the primary), where it counts as starting, not held (MaxStartupConnections).
	waitFor(t, "a request to be held and a connection to wait in startup", func() bool {
		return p.srv.held.Load() == 1 && p.srv.Stats().StartupConnections == 1
	})
	select {
	case <-ports:
		t.Fatal("a request was answered while no primary was agreed")
	case <-time.After(100 * time.Millisecond):
	}
	p.setRoute(t, Route{Routing: true, Target: targetOf(to)})
	if port := <-ports; port != to.Port {
		t.Fatalf("held request ran on port %d, want %d", port, to.Port)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("held request or connection: %v", err)
		}
	}
	c := <-newConn
	defer c.Close(context.Background())
	if port := serverPort(t, c); port != to.Port {
		t.Fatalf("connection opened during the failover is on port %d, want %d", port, to.Port)
	}
	if n := p.srv.held.Load(); n != 0 {
		t.Fatalf("%d requests still counted as held", n)
	}
}

func testHoldTimeoutAndBound(t *testing.T, p *pgPair) {
	cur, _ := p.current()
	short := p.newProxy(t, Config{HoldTimeout: 500 * time.Millisecond, MaxHeld: 1})
	c1 := connectVia(t, short, "")
	c2 := connectVia(t, short, "")
	p.setRoute(t, Route{})
	first := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := c1.Exec(context.Background(), "SELECT 1")
		first <- err
	}()
	waitFor(t, "the first request to be held", func() bool { return short.held.Load() == 1 })
	_, err := c2.Exec(testContext(t), "SELECT 1")
	if pgErr := requirePgCode(t, err, codeCannotConnectNow); !strings.Contains(pgErr.Message, "too many") {
		t.Fatalf("past hold.max_held: %q", pgErr.Message)
	}
	pgErr := requirePgCode(t, <-first, codeCannotConnectNow)
	if waited := time.Since(start); waited < 400*time.Millisecond {
		t.Fatalf("57P03 after %v, before the hold timeout", waited)
	}
	if !strings.Contains(pgErr.Detail, "not sent") {
		t.Errorf("57P03 detail %q does not say the request was not sent", pgErr.Detail)
	}
	// Both sessions are still usable once a primary is agreed.
	p.setRoute(t, Route{Routing: true, Target: targetOf(cur)})
	for _, c := range []*pgx.Conn{c1, c2} {
		if port := serverPort(t, c); port != cur.Port {
			t.Fatalf("after the hold timeout the session is on port %d, want %d", port, cur.Port)
		}
	}
}

func testReadOnlyRejectionRetried(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	from, to := p.current()
	conn := p.connect(t, "")
	serverPort(t, conn) // the session is on from
	// The old primary becomes read-only (as a switchover does) while routing still names it.
	for _, sql := range []string{"ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"} {
		if err := from.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_ = from.Exec(context.Background(), "ALTER SYSTEM RESET default_transaction_read_only")
		_ = from.Exec(context.Background(), "SELECT pg_reload_conf()")
	})
	waitFor(t, from.Name+" to be read-only", func() bool {
		v, err := from.QueryString(ctx, "SHOW default_transaction_read_only")
		return err == nil && v == "on"
	})
	// A switchover began elsewhere: a quorum confirms "no primary", this proxy has not
	// applied it yet.
	confirms := p.router.confirmElsewhere(t, &Route{})
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "INSERT INTO t VALUES (6, 'retried')")
		done <- err
	}()
	// The proxy got 25006 and asks the cluster whether routing moved; then its own view
	// catches up.
	select {
	case <-confirms:
	case err := <-done:
		t.Fatalf("the insert ended (%v) before the proxy asked about routing", err)
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	p.router.confirmElsewhere(t, nil)
	p.setRoute(t, Route{})
	waitFor(t, "the rejected insert to be held for a retry", func() bool { return p.srv.held.Load() == 1 })
	p.failover(t, to)
	if err := <-done; err != nil {
		t.Fatalf("insert rejected by the read-only old primary was not retried: %v", err)
	}
	for n, want := range map[*localcluster.Node]string{from: "0", to: "1"} {
		got, err := n.QueryString(ctx, "SELECT count(*) FROM t WHERE id = 6")
		if err != nil || got != want {
			t.Errorf("%s holds %s rows with id 6 (%v), want %s", n.Name, got, err, want)
		}
	}
	if got := conn.PgConn().ParameterStatus("default_transaction_read_only"); got != "off" {
		t.Errorf("ParameterStatus default_transaction_read_only = %q after the move, want off", got)
	}
}

// testReadOnlyRejectionDelivered: a primary that is read-only while no failover or
// switchover is in progress (an operator's doing) answers 25006 through the proxy at once.
func testReadOnlyRejectionDelivered(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	conn := p.connect(t, "")
	mustExec(t, conn, "SET default_transaction_read_only = on")
	_, err := conn.Exec(ctx, "INSERT INTO t VALUES (7, 'refused')")
	requirePgCode(t, err, codeReadOnlyTransaction)
	if n := p.srv.held.Load(); n != 0 {
		t.Fatalf("%d requests held after a 25006 of the agreed primary", n)
	}
	if got := queryText(t, conn, "SELECT 'still usable'"); got != "still usable" {
		t.Fatal(got)
	}
}

func testTerminatedRequestRetried(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	from, to := p.current()
	conn := p.connect(t, "")
	result := make(chan string, 1)
	errs := make(chan error, 1)
	go func() {
		var v string
		err := conn.QueryRow(ctx, "SELECT 'ran on ' || inet_server_port() FROM pg_sleep(1)").Scan(&v)
		result <- v
		errs <- err
	}()
	waitActive(t, from, "SELECT 'ran on '")
	// A switchover: no primary, then the old one ends its sessions.
	p.setRoute(t, Route{})
	if err := from.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", pgTestUser); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request to be held for a retry", func() bool { return p.srv.held.Load() == 1 })
	p.setRoute(t, Route{Routing: true, Target: targetOf(to)})
	if err := <-errs; err != nil {
		t.Fatalf("request terminated before any result was not retried: %v", err)
	}
	if got, want := <-result, fmt.Sprintf("ran on %d", to.Port); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func testUnmovableSessionClosed(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	_, to := p.current()
	conn := p.connect(t, "")
	mustExec(t, conn, "CREATE TEMP TABLE scratch (a int)")
	p.failover(t, to)
	_, err := conn.Exec(ctx, "SELECT 1")
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		t.Fatal("a session with a temporary table continued on another server")
	case errors.As(err, &pgErr):
		if pgErr.Code != codeConnectionFailure || !strings.Contains(pgErr.Detail, "temporary") {
			t.Fatalf("got %s %q %q, want 08006 naming the temporary object", pgErr.Code, pgErr.Message, pgErr.Detail)
		}
	case !conn.IsClosed():
		t.Fatalf("got %v and the connection is open", err)
	}
}

func testCancelPolicy(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	cur, _ := p.current()
	conn := p.connect(t, "")
	cancelDuring := func(sql, activity string) (time.Duration, error) {
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := conn.Exec(ctx, sql)
			done <- err
		}()
		waitActive(t, cur, activity)
		if err := conn.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		err := <-done
		return time.Since(start), err
	}
	// An autocommit read is cancelled.
	if _, err := cancelDuring("SELECT pg_sleep(30)", "SELECT pg_sleep(30)"); err == nil {
		t.Fatal("autocommit SELECT not cancelled")
	} else {
		requirePgCode(t, err, codeQueryCanceled)
	}
	// So is an autocommit write that is still running (it is not waiting for synchronous
	// replication of its commit yet).
	if _, err := cancelDuring("CREATE TABLE ctas AS SELECT 7 AS id FROM pg_sleep(30)", "CREATE TABLE ctas"); err == nil {
		t.Fatal("autocommit CREATE TABLE AS not cancelled")
	} else {
		requirePgCode(t, err, codeQueryCanceled)
	}
	mustExec(t, conn, "INSERT INTO t VALUES (7, 'kept')")
	// Inside a transaction, a statement before COMMIT is cancelled.
	mustExec(t, conn, "BEGIN")
	if _, err := cancelDuring("UPDATE t SET note = 'x' FROM pg_sleep(30) WHERE id = 7", "UPDATE t SET note"); err == nil {
		t.Fatal("UPDATE inside a transaction not cancelled")
	} else {
		requirePgCode(t, err, codeQueryCanceled)
	}
	mustExec(t, conn, "ROLLBACK")
	// A held request is cancelled by the proxy; it was never sent.
	p.setRoute(t, Route{})
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "INSERT INTO t VALUES (8, 'never sent')")
		done <- err
	}()
	waitFor(t, "the request to be held", func() bool { return p.srv.held.Load() == 1 })
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	requirePgCode(t, <-done, codeQueryCanceled)
	p.setRoute(t, Route{Routing: true, Target: targetOf(cur)})
	if got, err := cur.QueryString(ctx, "SELECT count(*) FROM t WHERE id = 8"); err != nil || got != "0" {
		t.Fatalf("the cancelled held request ran: %s rows, %v", got, err)
	}
	serverPort(t, conn)
}

func testLeaseExpired(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	cur, _ := p.current()
	conn := p.connect(t, "")
	pid := queryText(t, conn, "SELECT pg_backend_pid()::text")
	p.setRoute(t, Route{LeaseExpired: true})
	waitFor(t, "the backend to be closed", func() bool {
		n, err := cur.QueryString(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = "+pid)
		return err == nil && n == "0"
	})
	ports := make(chan int, 1)
	go func() {
		var port int
		_ = conn.QueryRow(context.Background(), "SELECT inet_server_port()").Scan(&port)
		ports <- port
	}()
	waitFor(t, "the request to be held", func() bool { return p.srv.held.Load() == 1 })
	p.setRoute(t, Route{Routing: true, Target: targetOf(cur)})
	if port := <-ports; port != cur.Port {
		t.Fatalf("after the lease came back the request ran on %d, want %d", port, cur.Port)
	}
}

func testNewConnectionWhilePrimaryDead(t *testing.T, p *pgPair) {
	from, to := p.current()
	if err := from.Kill(); err != nil {
		t.Fatal(err)
	}
	// Routing still names the dead primary until the failover: a new connection waits.
	done := make(chan error, 1)
	conns := make(chan *pgx.Conn, 1)
	go func() {
		c, err := pgx.Connect(context.Background(), connString(p.srv, ""))
		done <- err
		conns <- c
	}()
	waitFor(t, "the connection to wait for a primary", func() bool { return p.srv.Stats().ClientConnections >= 1 })
	p.failover(t, to)
	if err := <-done; err != nil {
		t.Fatalf("connection during the failover: %v", err)
	}
	c := <-conns
	defer c.Close(context.Background())
	if port := serverPort(t, c); port != to.Port {
		t.Fatalf("new connection on port %d, want %d", port, to.Port)
	}
}

// waitActive waits until a query starting with prefix is active on n.
func waitActive(t *testing.T, n *localcluster.Node, prefix string) {
	t.Helper()
	ctx := testContext(t)
	waitFor(t, "query "+prefix+" to run on "+n.Name, func() bool {
		c, err := n.QueryString(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND starts_with(query, $1)", prefix)
		return err == nil && c == "1"
	})
}

// waitFor waits (testenv.Eventually) until cond holds, failing after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.Eventually(t, t.Context(), 30*time.Second, what, testenv.Cond(cond))
}

// sessionPhase returns the phase of the session whose client connects from clientAddr
// (phaseClosed when there is none).
func (s *Server) sessionPhase(clientAddr string) sessionPhase {
	for _, sess := range s.sessions.all() {
		if sess.conn.RemoteAddr().String() == clientAddr {
			sess.mu.Lock()
			defer sess.mu.Unlock()
			return sess.phase
		}
	}
	return phaseClosed
}
