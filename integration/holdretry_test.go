package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/rejoin"
	"github.com/pgquorum/pgquorum/testenv"
)

// TestHoldRetry proves SPEC §5 end to end: three `pgquorum run` processes in front of a real
// PostgreSQL 15 quorum cluster, clients of three kinds (pgx, psql, Python psycopg2), and the
// proxies' hold, move and retry across
//
//  1. kill -9 of the primary (pg1 -> pg2 or pg3): 50 idle sessions with settings and prepared
//     statements survive; 20 autocommit writers see only success or 08007 and no insert is
//     lost or doubled; a client mid-transaction gets 40001, rolls back and retries; a
//     connection opened during the failover succeeds after it;
//  2. the killed primary rejoins, then a planned switchover to the other standby under the same
//     write load: no error at all;
//  3. the loss of that last primary and of the rejoined node, which cannot fail over (no
//     standby left): requests and
//     1,000 new connections are held and refused with 57P03 at hold.timeout, and the proxy's
//     memory stays bounded meanwhile.
//
// The subtests share the cluster and run in this order (each failover fences a node).
func TestHoldRetry(t *testing.T) {
	psql := RequireTool(t, "psql")
	python, script := requirePsycopg2(t)
	pg := StartCluster(t, localcluster.Options{})
	opts := failoverProxyOptions()
	opts.HoldTimeout = holdRetryHoldTimeout.String()
	proxies := startFailoverProxies(t, pg, opts)

	var primary string
	t.Run("KillPrimary", func(t *testing.T) { primary = testHoldRetryKill(t, pg, proxies, psql, python, script) })
	if primary == "" {
		t.Fatal("no new primary after the kill; the later subtests need one")
	}
	var last string
	t.Run("PlannedSwitchover", func(t *testing.T) { last = testHoldRetrySwitchover(t, pg, proxies, primary) })
	if last == "" {
		t.Fatal("no primary after the switchover; the last subtest needs one")
	}
	t.Run("HoldTimeoutWithoutFailover", func(t *testing.T) { testHoldRetryTimeout(t, pg, proxies, last) })
}

// holdRetryHoldTimeout is the proxies' hold.timeout: longer than a failover (about a second
// here), short enough for the test that waits it out.
const holdRetryHoldTimeout = 5 * time.Second

func testHoldRetryKill(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster, psql, python, script string) string {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	old := pg.Node("pg1")
	writeLoadTable(ctx, t, old, "hr_kill")

	// 50 idle sessions: 40 pgx, 5 psql, 5 psycopg2, over the three proxies.
	var idle []idleClient
	for i := range 40 {
		idle = append(idle, openPgxIdle(ctx, t, proxies.Proxies[i%3], i+1))
	}
	for i := range 5 {
		idle = append(idle, openPsqlIdle(ctx, t, psql, proxies.Proxies[i%3], i+1))
		idle = append(idle, openPsycopg2Idle(ctx, t, python, script, proxies.Proxies[(i+1)%3], i+1))
	}
	// A client in the middle of a transaction.
	tx, err := pgx.Connect(ctx, proxies.Proxies[0].ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(tx)
	for _, sql := range []string{"BEGIN", "INSERT INTO hr_kill (id, writer) VALUES (-1, 0)"} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	// 20 autocommit writers.
	load := startWriteLoad(t, "hr_kill", proxies.Proxies, loadOptions{Writers: 20, KeepSession: true})
	if err := load.WaitAcks(ctx, 200); err != nil {
		t.Fatal(err)
	}

	killedAt := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	// A connection opened during the failover.
	type opened struct {
		port int
		err  error
	}
	during := make(chan opened, 1)
	go func() {
		c, err := pgx.Connect(ctx, proxies.Proxies[1].ConnString())
		if err != nil {
			during <- opened{err: err}
			return
		}
		defer closeConn(c)
		var port int
		err = c.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port)
		during <- opened{port: port, err: err}
	}()
	newName := waitNewPrimary(ctx, t, proxies.Proxies, "pg1", 2)
	promoted := pg.Node(newName)
	t.Logf("kill -9 pg1: %s agreed by every proxy %v later", newName, time.Since(killedAt).Round(time.Millisecond))

	if o := <-during; o.err != nil || o.port != promoted.Port {
		t.Errorf("connection opened during the failover: port %d, %v; want it on %s (%d)", o.port, o.err, newName, promoted.Port)
	}
	if _, err := load.WaitAck(ctx, killedAt, promoted.Port); err != nil {
		t.Fatal(err)
	}
	if err := load.WaitAcks(ctx, 200); err != nil {
		t.Fatal(err)
	}
	load.Stop()
	t.Logf("writers: %s", load.Summary())
	for class, n := range load.Errors() {
		if class != "08007" {
			t.Errorf("writers got %d errors of class %s; only success or 08007 is allowed (%s)", n, class, load.Summary())
		}
	}
	rows := verifyAcked(ctx, t, promoted, "hr_kill", load.Acks())
	t.Logf("%s holds %d rows for %d acknowledged inserts", newName, rows, len(load.Acks()))

	// The transaction: 40001, ROLLBACK, retry.
	_, err = tx.Exec(ctx, "INSERT INTO hr_kill (id, writer) VALUES (-2, 0)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" || !strings.Contains(pgErr.Message, "not committed") {
		t.Errorf("statement of a transaction that lost its primary: %v; want 40001 saying it was not committed", err)
	}
	for _, sql := range []string{"ROLLBACK", "BEGIN", "INSERT INTO hr_kill (id, writer) VALUES (-3, 0)", "COMMIT"} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Errorf("%s after 40001: %v", sql, err)
		}
	}
	got, err := promoted.QueryString(ctx, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM hr_kill WHERE id < 0")
	if err != nil || got != "-3" {
		t.Errorf("transaction rows on %s: %q (%v), want only the retried one, -3", newName, got, err)
	}

	// The idle sessions: the next query of each runs on the new primary with its state.
	for _, c := range idle {
		c.Check(ctx, t, promoted.Port)
	}
	return newName
}

func testHoldRetrySwitchover(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster, from string) string {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	to := otherStandby(pg, "pg1", from)
	// pg1 rejoins as a standby first: without it the target would have no standby
	// and its commits would wait (SPEC §4: synchronous replication is never off).
	if _, err := rejoin.Run(ctx, rejoinOptions(t, proxies.Proxies[0], pg.Node("pg1"), false)); err != nil {
		t.Fatalf("rejoin pg1: %v", err)
	}
	requireRejoined(ctx, t, pg, proxies, pg.Node("pg1"), from)
	writeLoadTable(ctx, t, pg.Node(from), "hr_switch")
	var idle []idleClient
	for i := range 6 {
		idle = append(idle, openPgxIdle(ctx, t, proxies.Proxies[i%3], 100+i))
	}
	load := startWriteLoad(t, "hr_switch", proxies.Proxies, loadOptions{Writers: 20, KeepSession: true})
	if err := load.WaitAcks(ctx, 200); err != nil {
		t.Fatal(err)
	}
	client := proxies.Proxies[0].Client()
	client.HTTP.Timeout = time.Minute
	startedAt := time.Now()
	if _, err := client.Switchover(ctx, to.Name); err != nil {
		t.Fatalf("switchover %s -> %s: %v", from, to.Name, err)
	}
	if got := waitNewPrimary(ctx, t, proxies.Proxies, from, 3); got != to.Name {
		t.Fatalf("proxies agree on %s after a switchover to %s", got, to.Name)
	}
	t.Logf("switchover %s -> %s done %v after the request", from, to.Name, time.Since(startedAt).Round(time.Millisecond))
	if _, err := load.WaitAck(ctx, startedAt, to.Port); err != nil {
		t.Fatal(err)
	}
	if err := load.WaitAcks(ctx, 200); err != nil {
		t.Fatal(err)
	}
	load.Stop()
	t.Logf("writers: %s", load.Summary())
	if errs := load.Errors(); len(errs) > 0 {
		t.Errorf("autocommit writers saw errors during a planned switchover: %s", load.Summary())
	}
	verifyAcked(ctx, t, to, "hr_switch", load.Acks())
	for _, c := range idle {
		c.Check(ctx, t, to.Port)
	}
	return to.Name
}

func testHoldRetryTimeout(t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster, primaryName string) {
	const waiting = 1000
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	primary := pg.Node(primaryName)
	p := proxies.Proxies[0]
	session, err := pgx.Connect(ctx, p.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer closeConn(session)
	if _, err := session.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	rssBefore, err := residentMemory(p.Pid())
	if err != nil {
		t.Fatal(err)
	}

	// The last primary dies, and its only standby (pg1) too: no standby is left to promote.
	if err := pg.Node("pg1").Kill(); err != nil {
		t.Fatal(err)
	}
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	// The session's backend dies with its postmaster; once the proxy has seen that, the
	// session's next request cannot have reached the dead server (which would make its
	// outcome unknown: 08007).
	testenv.Eventually(t, ctx, 0, "the proxy to see the session's backend die", func() (bool, error) {
		n, err := proxyGauge(ctx, p, `pgquorum_proxy_backend_sessions{node="`+primary.Name+`"}`)
		return n == 0, err
	})
	start := time.Now()
	results := make(chan error, waiting)
	var wg sync.WaitGroup
	for range waiting {
		wg.Go(func() {
			c, err := pgconn.Connect(ctx, p.ConnString())
			if err == nil {
				_ = c.Close(context.Background())
			}
			results <- err
		})
	}
	sessionErr := make(chan error, 1)
	go func() {
		_, err := session.Exec(ctx, "SELECT 1")
		sessionErr <- err
	}()
	// While they wait: the proxy counts the new connections as starting (they wait to read
	// their verifier on the primary, before authentication, so they never take a
	// hold.max_held place) and the idle session's request as held; its memory stays bounded.
	var peakRSS, peakHeld, peakStarting int64
	testenv.Eventually(t, ctx, 0, "the connections to wait", testenv.Cond(func() bool {
		rss, _ := residentMemory(p.Pid())
		peakRSS = max(peakRSS, rss)
		held, _ := proxyGauge(ctx, p, "pgquorum_proxy_held_requests")
		peakHeld = max(peakHeld, held)
		starting, _ := proxyGauge(ctx, p, "pgquorum_proxy_client_connections_starting")
		peakStarting = max(peakStarting, starting)
		return held >= 1 && starting >= waiting || time.Since(start) > holdRetryHoldTimeout
	}))
	wg.Wait()
	close(results)
	refused := 0
	for err := range results {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "57P03" {
			refused++
		} else {
			t.Errorf("a connection waiting for a primary ended with %v, want 57P03", err)
		}
	}
	waited := time.Since(start)
	err = <-sessionErr
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P03" || pgErr.Severity != "ERROR" {
		t.Errorf("request of an idle session during the outage: %v; want ERROR 57P03", err)
	}
	if session.IsClosed() {
		t.Error("the session was closed by a hold timeout; it should stay usable")
	}
	if waited < holdRetryHoldTimeout-time.Second || waited > 4*holdRetryHoldTimeout {
		t.Errorf("the held connections were refused after %v; hold.timeout is %v", waited, holdRetryHoldTimeout)
	}
	growth := peakRSS - rssBefore
	t.Logf("%d connections waited and were refused with 57P03 after %v; starting gauge peaked at %d, held at %d; proxy RSS %d MiB before, peak %d MiB (%.1f KiB per waiting connection)",
		refused, waited.Round(time.Millisecond), peakStarting, peakHeld, rssBefore>>20, peakRSS>>20, float64(growth)/1024/waiting)
	if peakStarting < waiting {
		t.Errorf("pgquorum_proxy_client_connections_starting peaked at %d with %d connections waiting", peakStarting, waiting)
	}
	if peakHeld != 1 {
		t.Errorf("pgquorum_proxy_held_requests peaked at %d with one session's request and %d unauthenticated connections waiting, want 1", peakHeld, waiting)
	}
	const maxGrowth = 64 << 20
	if growth > maxGrowth {
		t.Errorf("proxy RSS grew by %d MiB with %d held connections (bound %d MiB)", growth>>20, waiting, maxGrowth>>20)
	}
}

// proxyGauge reads a gauge without labels from p's /metrics.
func proxyGauge(ctx context.Context, p *ProxyProcess, name string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			fields := strings.Fields(line)
			v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			return int64(v), err
		}
	}
	return 0, fmt.Errorf("no %s in /metrics of proxy %d", name, p.ID)
}
