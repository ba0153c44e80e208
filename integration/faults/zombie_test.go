package faults

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// zombieMarker is the value the zombie scenario's own write logs.
const zombieMarker = -7

// testZombiePrimaryAnswers08007 stops every process of the primary with
// SIGSTOP while the workload runs, and sends one more write through a proxy:
// it sits in the stopped server's socket. The proxies fail over and close
// their connections to the old primary; the client of that write gets 08007
// (its outcome is unknown to the proxy). Then SIGCONT: the zombie reads the
// write from its socket and executes it, but its commit waits for a
// synchronous standby forever (they were frozen and now follow the new
// primary), so it is acknowledged to no one and exists on no other node; the
// rejoin rewinds it away.
func testZombiePrimaryAnswers08007(t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	old := s.pg.Node(s.primary)
	w := s.startLoad(t)
	marker, err := pgx.Connect(ctx, s.proxies.Proxy(1).ConnString()+" application_name=faults-zombie")
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close(context.Background())

	if err := old.Freeze(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = old.Thaw() })
	frozenAt := time.Now()
	result := make(chan error, 1)
	go func() {
		_, err := marker.Exec(ctx, fmt.Sprintf("INSERT INTO faults_writes (v, k) VALUES (%d, -1)", zombieMarker))
		result <- err
	}()

	newName := s.waitFailover(t, old.Name)
	promoted := s.pg.Node(newName)
	t.Logf("%s frozen: %s agreed %v later", old.Name, newName, time.Since(frozenAt).Round(time.Millisecond))
	var markerErr error
	select {
	case markerErr = <-result:
	case <-ctx.Done():
		t.Fatal("the write sent to the frozen primary got no answer after the failover")
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](markerErr); !ok || pgErr.Code != "08007" {
		t.Fatalf("the write in the frozen primary's socket was answered %v, want SQLSTATE 08007", markerErr)
	}
	t.Logf("the write in the frozen primary's socket was answered: %v", markerErr)
	if err := w.WaitAcks(ctx, 30); err != nil {
		t.Fatal(err)
	}

	// The zombie wakes up, reads the write from its socket and runs it: its
	// commit waits for a synchronous standby that will never come.
	if err := old.Thaw(); err != nil {
		t.Fatal(err)
	}
	waitSyncRepWait(ctx, t, old, fmt.Sprintf("VALUES (%d, -1)", zombieMarker))
	for _, n := range []string{newName, otherStandby(s, old.Name, newName)} {
		count, err := s.pg.Node(n).QueryString(ctx, "SELECT count(*) FROM faults_writes WHERE v = $1", zombieMarker)
		if err != nil {
			t.Fatal(err)
		}
		if count != "0" {
			t.Errorf("%s holds the write the zombie old primary executed", n)
		}
	}
	s.finishLoad(t, w, promoted)
	s.rejoin(t, old.Name)
	count, err := old.QueryString(ctx, "SELECT count(*) FROM faults_writes WHERE v = $1", zombieMarker)
	if err != nil || count != "0" {
		t.Errorf("after the rejoin %s still holds the zombie's write: %q, %v", old.Name, count, err)
	}
}

// waitSyncRepWait waits until a backend of node runs a statement containing
// text and waits for synchronous replication.
func waitSyncRepWait(ctx context.Context, t *testing.T, node interface {
	QueryString(context.Context, string, ...any) (string, error)
}, text string) {
	t.Helper()
	for {
		n, err := node.QueryString(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event = 'SyncRep' AND query LIKE '%' || $1 || '%'`, text)
		if err == nil && n != "0" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the zombie never ran the write left in its socket (waiting for synchronous replication): %q, %v", n, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// otherStandby is the node that is neither old nor primary.
func otherStandby(s *suite, old, primary string) string {
	for _, n := range s.pg.Nodes {
		if n.Name != old && n.Name != primary {
			return n.Name
		}
	}
	return ""
}
