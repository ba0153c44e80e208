package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
)

// testSyncRepWaitNeverCut proves that no cancel cuts a commit's wait for synchronous
// replication through the proxy: the server waits for a standby that never answers
// (synchronous_standby_names names one that is not there), so every commit waits in SyncRep.
// The client's cancel is not forwarded; and when the wait is cut anyway (an administrator's
// pg_cancel_backend, standing for a cancel that raced the backend into its wait), the
// commit's success reaches the client only once replication no longer holds it back.
func testSyncRepWaitNeverCut(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	cur, _ := p.current()
	setSyncStandbys(t, cur, "absent_standby")
	conn := p.connect(t, "")
	pid := queryText(t, conn, "SELECT pg_backend_pid()::text")
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "INSERT INTO t VALUES (40, 'waits for a standby')")
		done <- err
	}()
	inSyncRep := func(pid string) func() bool {
		return func() bool {
			n, err := cur.QueryString(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = "+pid+" AND wait_event = 'SyncRep'")
			return err == nil && n == "1"
		}
	}
	waitFor(t, "the insert's commit to wait for synchronous replication", inSyncRep(pid))

	refused := p.srv.Stats().CancelRefused
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cancel to be refused", func() bool { return p.srv.Stats().CancelRefused == refused+1 })

	// The wait is cut behind the proxy's back: the proxy holds the success while its own
	// barrier waits for replication.
	if err := cur.Exec(ctx, "SELECT pg_cancel_backend("+pid+")"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the proxy's barrier to wait for synchronous replication", func() bool {
		select {
		case err := <-done:
			t.Fatalf("the insert returned (%v) while its commit was not replicated", err)
		default:
		}
		n, err := cur.QueryString(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND usename <> $1", pgTestUser)
		return err == nil && n == "1"
	})
	select {
	case err := <-done:
		t.Fatalf("the insert returned (%v) while its commit was not replicated", err)
	default:
	}
	setSyncStandbys(t, cur, "")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("insert after replication no longer holds it: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the insert's answer was not relayed once replication was confirmed")
	}
	if got := queryText(t, conn, "SELECT count(*)::text FROM t WHERE id = 40"); got != strconv.Itoa(1) {
		t.Fatalf("%s rows with id 40", got)
	}
}

// testBackendKeyData: the client is given its backend's real process id, so that NOTIFY's
// sender pid matches it; after a move the client keeps its key and cancel requests reach the
// new backend.
func testBackendKeyData(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	_, to := p.current()
	conn := p.connect(t, "")
	pid := conn.PgConn().PID()
	if got := queryText(t, conn, "SELECT pg_backend_pid()::text"); got != strconv.Itoa(int(pid)) {
		t.Fatalf("BackendKeyData process id %d, the backend's is %s", pid, got)
	}
	mustExec(t, conn, "LISTEN keytest")
	mustExec(t, conn, "NOTIFY keytest, 'mine'")
	n, err := conn.WaitForNotification(ctx)
	if err != nil || n.PID != pid {
		t.Fatalf("own notification from pid %d (%v), want %d", n.PID, err, pid)
	}
	p.failover(t, to)
	if got := queryText(t, conn, "SELECT inet_server_port()::text"); got != strconv.Itoa(to.Port) {
		t.Fatalf("session on port %s after the failover", got)
	}
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
		done <- err
	}()
	waitActive(t, to, "SELECT pg_sleep(30)")
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	requirePgCode(t, <-done, codeQueryCanceled)
}

// setSyncStandbys sets synchronous_standby_names on n (and resets it when the test ends): a
// name of no connected standby makes every commit wait in SyncRep.
func setSyncStandbys(t *testing.T, n *localcluster.Node, value string) {
	t.Helper()
	set := func(value string) error {
		for _, sql := range []string{"ALTER SYSTEM SET synchronous_standby_names = '" + value + "'", "SELECT pg_reload_conf()"} {
			if err := n.Exec(context.Background(), sql); err != nil {
				return err
			}
		}
		return nil
	}
	if err := set(value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = set("") })
}

// commitWaitingForStandby starts COMMIT of a transaction that inserted id on conn and returns
// once the commit waits for synchronous replication on n.
func commitWaitingForStandby(t *testing.T, conn *pgx.Conn, n *localcluster.Node, id int) <-chan error {
	t.Helper()
	ctx := testContext(t)
	mustExec(t, conn, "BEGIN")
	mustExec(t, conn, "INSERT INTO t VALUES ("+strconv.Itoa(id)+", 'lost commit')")
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "COMMIT")
		done <- err
	}()
	waitFor(t, "the COMMIT to wait for synchronous replication", func() bool {
		c, err := n.QueryString(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND wait_event = 'SyncRep'", pgTestUser)
		return err == nil && c == "1"
	})
	return done
}

// testLostCommitOutcome: a COMMIT lost with the backend gets its real outcome. On the same
// server (the proxy lost its connection, the primary lives on) the proxy waits until the
// transaction is over and replicated, then tells COMMIT; on the primary promoted in the next
// epoch, a transaction id at or past its horizon was never committed there: 40001.
func testLostCommitOutcome(t *testing.T, p *pgPair) {
	cur, to := p.current()
	setSyncStandbys(t, cur, "absent_standby")
	conn := p.connect(t, "")
	done := commitWaitingForStandby(t, conn, cur, 50)
	// This proxy's lease lapses and comes back: the backend connection is gone, the server is
	// the same.
	p.setRoute(t, Route{LeaseExpired: true})
	p.setRoute(t, Route{Routing: true, Target: targetOf(cur)})
	select {
	case err := <-done:
		t.Fatalf("the COMMIT was answered (%v) before it was replicated", err)
	case <-time.After(200 * time.Millisecond):
	}
	setSyncStandbys(t, cur, "")
	if err := <-done; err != nil {
		t.Fatalf("COMMIT lost with the connection, committed on the same server: %v", err)
	}
	if got := queryText(t, conn, "SELECT count(*)::text FROM t WHERE id = 50"); got != "1" {
		t.Fatalf("%s rows with id 50 after the COMMIT was told committed", got)
	}

	// The same on a primary that dies for good: the new one (next epoch, horizon 1: every id
	// of the old timeline is at or past it, as for an old primary whose WAL never reached it)
	// does not have it.
	p.setRoute(t, Route{Routing: true, Target: Target{Name: cur.Name, Address: cur.Address(), Epoch: 5}})
	setSyncStandbys(t, cur, "absent_standby")
	conn = p.connect(t, "")
	done = commitWaitingForStandby(t, conn, cur, 51)
	p.setRoute(t, Route{})
	p.setRoute(t, Route{Routing: true, Target: Target{Name: to.Name, Address: to.Address(), Epoch: 6, XidHorizon: 1}})
	pgErr := requirePgCode(t, <-done, codeSerializationFailure)
	if !strings.Contains(pgErr.Message, "not committed") {
		t.Fatalf("40001 %q does not say the transaction was not committed", pgErr.Message)
	}
	if conn.PgConn().TxStatus() != 'I' {
		t.Fatalf("transaction status %q after the lost COMMIT's answer", conn.PgConn().TxStatus())
	}
	if port := serverPort(t, conn); port != to.Port {
		t.Fatalf("after the lost COMMIT the session is on port %d, want %d", port, to.Port)
	}
	p.setRoute(t, Route{Routing: true, Target: targetOf(to)})
}

// testPipelinedInTransactionLost: requests pipelined inside a transaction when the primary is
// lost are answered one by one, as PostgreSQL answers requests after an error in a
// transaction (40001, then 25P02), and the session goes on after ROLLBACK.
func testPipelinedInTransactionLost(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	from, to := p.current()
	conn := p.connect(t, "")
	mustExec(t, conn, "BEGIN")
	pipeline := conn.PgConn().StartPipeline(ctx)
	pipeline.SendQueryParams("SELECT pg_sleep(2)", nil, nil, nil, nil)
	pipeline.SendPipelineSync()
	pipeline.SendQueryParams("INSERT INTO t VALUES (60, 'pipelined')", nil, nil, nil, nil)
	pipeline.SendPipelineSync()
	if err := pipeline.Flush(); err != nil {
		t.Fatal(err)
	}
	waitActive(t, from, "SELECT pg_sleep(2)")
	p.failover(t, to)
	var codes []string
	for range 4 {
		res, err := pipeline.GetResults()
		if err != nil {
			requireCode := func() string {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) {
					return pgErr.Code
				}
				return err.Error()
			}
			codes = append(codes, requireCode())
			continue
		}
		switch r := res.(type) {
		case *pgconn.ResultReader:
			if _, err := r.Close(); err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) {
					codes = append(codes, pgErr.Code)
				} else {
					codes = append(codes, err.Error())
				}
			}
		case *pgconn.PipelineSync:
			codes = append(codes, "sync")
		}
	}
	if err := pipeline.Close(); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Fatalf("pipeline close: %v", err)
		}
	}
	if got := strings.Join(codes, ","); got != "40001,sync,25P02,sync" {
		t.Fatalf("pipelined answers %s, want 40001,sync,25P02,sync", got)
	}
	mustExec(t, conn, "ROLLBACK")
	if port := serverPort(t, conn); port != to.Port {
		t.Fatalf("after ROLLBACK the session is on port %d, want %d", port, to.Port)
	}
}

// testExecuteAfterMove: a statement prepared with the protocol's Parse and first used after a
// move by SQL EXECUTE in a simple Query is prepared again first, as for Bind.
func testExecuteAfterMove(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	_, to := p.current()
	conn := p.connect(t, "")
	if _, err := conn.Prepare(ctx, "doubled", "SELECT $1::int * 2"); err != nil {
		t.Fatal(err)
	}
	p.failover(t, to)
	var got string
	if err := conn.QueryRow(ctx, "EXECUTE doubled(21)", pgx.QueryExecModeSimpleProtocol).Scan(&got); err != nil {
		t.Fatalf("EXECUTE of a protocol-prepared statement after a move: %v", err)
	}
	if got != "42" {
		t.Fatalf("EXECUTE doubled(21) = %s", got)
	}
	if port := serverPort(t, conn); port != to.Port {
		t.Fatalf("session on port %d, want %d", port, to.Port)
	}
	// Bind of it afterwards does not prepare it again (it exists: 42P05 would fail the request).
	if got := queryText(t, conn, "SELECT ($1::int * 2)::text", 5); got != "10" {
		t.Fatal(got)
	}
	if _, err := conn.Exec(ctx, "doubled", 4); err != nil {
		t.Fatalf("the statement used through the protocol after EXECUTE re-prepared it: %v", err)
	}
}

// testLargeBindAfterMove: a named statement first used after a move by a Bind too large to be
// kept (streamed through the relay in pieces) is prepared again ahead of it.
func testLargeBindAfterMove(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	_, to := p.current()
	conn := p.connect(t, "")
	if _, err := conn.Prepare(ctx, "bignote", "INSERT INTO t VALUES ($1, $2)"); err != nil {
		t.Fatal(err)
	}
	p.failover(t, to)
	note := strings.Repeat("large parameter ", 8*streamThreshold/16)
	if _, err := conn.Exec(ctx, "bignote", 777, note); err != nil {
		t.Fatalf("a large Bind of a statement prepared before the move: %v", err)
	}
	if got := queryText(t, conn, "SELECT length(note)::text FROM t WHERE id = 777"); got != strconv.Itoa(len(note)) {
		t.Fatalf("the row has a note of %s bytes, want %d", got, len(note))
	}
	if port := serverPort(t, conn); port != to.Port {
		t.Fatalf("session on port %d, want %d", port, to.Port)
	}
	mustExec(t, conn, "DELETE FROM t WHERE id = 777")
}

// testReportedSettingChangedByAFunction: a setting PostgreSQL reports (TimeZone), changed
// inside a function the proxy cannot read, is set again on the new primary after a move from
// the ParameterStatus the client saw.
func testReportedSettingChangedByAFunction(t *testing.T, p *pgPair) {
	ctx := testContext(t)
	_, to := p.current()
	for _, n := range []*localcluster.Node{p.a, p.b} {
		if err := n.Exec(ctx, `CREATE OR REPLACE FUNCTION tokyo() RETURNS text LANGUAGE sql
			AS $$ SELECT set_config('TimeZone', 'Asia/Tokyo', false) $$`); err != nil {
			t.Fatal(err)
		}
	}
	conn := p.connect(t, "")
	if got := queryText(t, conn, "SELECT tokyo()"); got != "Asia/Tokyo" {
		t.Fatal(got)
	}
	p.failover(t, to)
	if got := queryText(t, conn, "SELECT current_setting('TimeZone') || ' ' || inet_server_port()"); got != fmt.Sprintf("Asia/Tokyo %d", to.Port) {
		t.Fatalf("after the move: %q, want the TimeZone the function set, on the new primary", got)
	}
	if got := conn.PgConn().ParameterStatus("TimeZone"); got != "Asia/Tokyo" {
		t.Fatalf("ParameterStatus TimeZone %q after the move", got)
	}
}
