package coordinator

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/health"
	"github.com/pgquorum/pgquorum/integration"
	"github.com/pgquorum/pgquorum/localcluster"
)

// These tests run the PostgreSQL actions against a real PostgreSQL 15 quorum
// cluster (pg1 primary, pg2 and pg3 streaming, ANY 1 (pg2, pg3)).

// queryConnString is the superuser connection string the coordinator uses.
func queryConnString(address string) string {
	return config.ConnString(address, localcluster.QueryUser, localcluster.QueryPassword, "postgres", "", nil)
}

func addressesOf(c *localcluster.Cluster) map[string]string {
	addresses := map[string]string{}
	for _, n := range c.Nodes {
		addresses[n.Name] = n.Address()
	}
	return addresses
}

func sqlActionsFor(c *localcluster.Cluster) *SQLActions {
	return &SQLActions{Addresses: addressesOf(c), ConnString: queryConnString}
}

// testContext bounds a real-PostgreSQL test.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func queryLSN(t *testing.T, ctx context.Context, n *localcluster.Node, sql string) health.LSN {
	t.Helper()
	s, err := n.QueryString(ctx, sql)
	if err != nil {
		t.Fatalf("%s on %s: %v", sql, n.Name, err)
	}
	lsn, err := health.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func TestFreezeStandbyStopsItsWALReceiver(t *testing.T) {
	c := integration.StartCluster(t, localcluster.Options{})
	ctx := testContext(t)
	a := sqlActionsFor(c)
	pg1, pg2 := c.Nodes[0], c.Node("pg2")

	pos, err := a.FreezeStandby(ctx, "pg2")
	if err != nil {
		t.Fatal(err)
	}
	if !pos.InRecovery || pos.Timeline != 1 || pos.ReceiveLSN == 0 || !strings.Contains(pos.PreviousConninfo, "application_name=pg2") {
		t.Fatalf("position %+v (conninfo %s)", pos, conninfo.Redact(pos.PreviousConninfo))
	}
	if n, err := pg2.QueryString(ctx, "SELECT count(*) FROM pg_stat_wal_receiver"); err != nil || n != "0" {
		t.Fatalf("pg_stat_wal_receiver on the frozen pg2 has %s rows (%v)", n, err)
	}

	// The primary still commits (pg3 confirms), and the frozen pg2 receives none of it.
	if err := pg1.Exec(ctx, "CREATE TABLE freeze_test AS SELECT generate_series(1, 1000) AS id"); err != nil {
		t.Fatal(err)
	}
	after := queryLSN(t, ctx, pg1, "SELECT pg_current_wal_lsn()::text")
	if _, err := a.WaitReceived(ctx, "pg3", after); err != nil {
		t.Fatalf("pg3 does not receive: %v", err)
	}
	if got := queryLSN(t, ctx, pg2, "SELECT pg_last_wal_receive_lsn()::text"); got != pos.ReceiveLSN || got >= after {
		t.Errorf("frozen pg2 received up to %s (frozen at %s, primary at %s)", got, pos.ReceiveLSN, after)
	}

	// Freezing again changes nothing and recovers the credentials from the
	// configuration files, for a leader that takes over after a crash.
	again, err := a.FreezeStandby(ctx, "pg2")
	if err != nil {
		t.Fatal(err)
	}
	if again.ReceiveLSN != pos.ReceiveLSN || again.PreviousConninfo != pos.PreviousConninfo {
		t.Errorf("second freeze: %+v, first: %+v", again, pos)
	}

	// A primary is left alone.
	primary, err := a.FreezeStandby(ctx, "pg1")
	if err != nil || primary.InRecovery || primary.Timeline != 1 || primary.ReceiveLSN < after {
		t.Errorf("freeze of the primary: %+v, %v", primary, err)
	}
	if in, err := pg1.IsInRecovery(ctx); err != nil || in {
		t.Errorf("pg1 in recovery %t, %v", in, err)
	}

	// A node that does not answer fails within the action's bound.
	pg3 := c.Node("pg3")
	if err := pg3.Freeze(); err != nil {
		t.Fatal(err)
	}
	defer pg3.Thaw()
	start := time.Now()
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = a.FreezeStandby(short, "pg3")
	cancel()
	if err == nil || time.Since(start) > 3*time.Second {
		t.Errorf("freeze of a silent node: err %v after %v", err, time.Since(start))
	}
}

func TestPromoteAndRepointMakeTheOtherStandbyAQuorumMember(t *testing.T) {
	c := integration.StartCluster(t, localcluster.Options{})
	ctx := testContext(t)
	a := sqlActionsFor(c)
	pg2 := c.Node("pg2")
	if err := c.Nodes[0].Exec(ctx, "CREATE TABLE before_failover (id int)"); err != nil {
		t.Fatal(err)
	}
	// The last transaction committed on the old timeline.
	oldXid, err := c.Nodes[0].QueryString(ctx, "INSERT INTO before_failover VALUES (0) RETURNING pg_current_xact_id()::text")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.FreezeStandby(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
	pos3, err := a.FreezeStandby(ctx, "pg3")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[0].Kill(); err != nil {
		t.Fatal(err)
	}

	const syncNames = `ANY 1 ("pg3")`
	promoted, err := a.Promote(ctx, "pg2", syncNames)
	if err != nil {
		t.Fatal(err)
	}
	if promoted.Timeline != 2 {
		t.Errorf("promoted on timeline %d, want 2", promoted.Timeline)
	}
	// The horizon is past every transaction of the old timeline and at or below every
	// transaction of the new one.
	newXid, err := pg2.QueryString(ctx, "SELECT pg_current_xact_id()::text")
	if err != nil {
		t.Fatal(err)
	}
	if old, _ := strconv.ParseUint(oldXid, 10, 64); promoted.XidHorizon <= old {
		t.Errorf("transaction id horizon %d, not past the old timeline's transaction %s", promoted.XidHorizon, oldXid)
	}
	if next, _ := strconv.ParseUint(newXid, 10, 64); promoted.XidHorizon > next {
		t.Errorf("transaction id horizon %d is past the new primary's transaction %s", promoted.XidHorizon, newXid)
	}
	if got, err := pg2.QueryString(ctx, "SHOW synchronous_standby_names"); err != nil || got != syncNames {
		t.Errorf("synchronous_standby_names on pg2 = %q, %v", got, err)
	}

	template, err := conninfo.Parse(pos3.PreviousConninfo)
	if err != nil {
		t.Fatal(err)
	}
	conninfo := standbyConninfo(template, pg2.Address(), "pg3", "", "")
	changed, err := a.SetPrimaryConninfo(ctx, "pg3", conninfo, false)
	if err != nil || !changed {
		t.Fatalf("re-point pg3: changed %t, %v", changed, err)
	}
	if err := pg2.WaitReplicas(ctx, "pg3"); err != nil {
		t.Fatal(err)
	}
	replicas, err := pg2.Replicas(ctx)
	if err != nil || len(replicas) != 1 || replicas[0].Name != "pg3" || replicas[0].SyncState != "quorum" {
		t.Fatalf("pg_stat_replication on pg2: %+v, %v", replicas, err)
	}
	commitCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := pg2.Exec(commitCtx, "INSERT INTO before_failover VALUES (1)"); err != nil {
		t.Fatalf("commit on the new primary: %v", err)
	}
	if _, err := a.WaitReceived(ctx, "pg3", queryLSN(t, ctx, pg2, "SELECT pg_current_wal_lsn()::text")); err != nil {
		t.Errorf("pg3 does not follow pg2: %v", err)
	}

	// Both actions are idempotent.
	if again, err := a.Promote(ctx, "pg2", syncNames); err != nil || again.Timeline != 2 || again.XidHorizon != 0 {
		t.Errorf("promote again: %+v, %v (want timeline 2 and no horizon: it did not promote)", again, err)
	}
	if changed, err := a.SetPrimaryConninfo(ctx, "pg3", conninfo, false); err != nil || changed {
		t.Errorf("re-point again: changed %t, %v", changed, err)
	}
	if _, err := a.SetPrimaryConninfo(ctx, "pg2", conninfo, false); err == nil {
		t.Error("setting primary_conninfo on a primary succeeded")
	}
}

func TestMakeReadOnlyEndsSessionsAndTheTargetCatchesUp(t *testing.T) {
	c := integration.StartCluster(t, localcluster.Options{})
	ctx := testContext(t)
	a := sqlActionsFor(c)
	pg1 := c.Nodes[0]
	client, err := pg1.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(context.Background())
	if _, err := client.Exec(ctx, "CREATE TABLE switch_test AS SELECT generate_series(1, 1000) AS id"); err != nil {
		t.Fatal(err)
	}

	final, err := a.MakeReadOnly(ctx, "pg1", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Exec(ctx, "SELECT 1"); err == nil {
		t.Error("a client session survived MakeReadOnly")
	}
	var pgErr *pgconn.PgError
	if err := pg1.Exec(ctx, "INSERT INTO switch_test VALUES (0)"); !errors.As(err, &pgErr) || pgErr.Code != "25006" {
		t.Errorf("insert on the read-only primary: %v, want SQLSTATE 25006", err)
	}
	reached, err := a.WaitReceived(ctx, "pg2", final)
	if err != nil || reached < final {
		t.Errorf("pg2 reached %s of final %s: %v", reached, final, err)
	}
	if replicas, err := pg1.Replicas(ctx); err != nil || len(replicas) != 2 {
		t.Errorf("walsenders were ended too: %+v, %v", replicas, err)
	}

	if err := a.MakeReadWrite(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := pg1.Exec(ctx, "INSERT INTO switch_test VALUES (0)")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pg1 stays read-only after MakeReadWrite: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // the postmaster applies the reload asynchronously
	}
}

func TestWaitReceivedIsBounded(t *testing.T) {
	c := integration.StartCluster(t, localcluster.Options{})
	ctx := testContext(t)
	a := sqlActionsFor(c)
	if _, err := a.FreezeStandby(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[0].Exec(ctx, "CREATE TABLE moved_on (id int)"); err != nil {
		t.Fatal(err)
	}
	target := queryLSN(t, ctx, c.Nodes[0], "SELECT pg_current_wal_lsn()::text")
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	reached, err := a.WaitReceived(short, "pg2", target)
	if err == nil || reached == 0 || reached >= target {
		t.Errorf("frozen pg2: reached %s of %s, err %v; want a timeout with its position", reached, target, err)
	}
}
