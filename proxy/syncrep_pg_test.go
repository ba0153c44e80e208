package proxy

import (
	"context"
	"strconv"
	"testing"
	"time"
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
	setSync := func(value string) {
		for _, sql := range []string{"ALTER SYSTEM SET synchronous_standby_names = '" + value + "'", "SELECT pg_reload_conf()"} {
			if err := cur.Exec(context.Background(), sql); err != nil {
				t.Fatal(err)
			}
		}
	}
	setSync("absent_standby")
	t.Cleanup(func() { setSync("") })
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
	setSync("")
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
