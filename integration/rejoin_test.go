package integration

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/rejoin"
	"github.com/pgquorum/pgquorum/testenv"
)

// rejoinProxyOptions lets automatic failovers follow each other quickly (the flap
// guard defaults to a minute).
var rejoinProxyOptions = ProxyOptions{Extra: "failover: {min_interval: 1s}\n"}

// TestRejoinThreeFailoverCycles kills the primary, waits for the automatic
// failover, rejoins the old primary with pg_rewind (rejoin.Run in-process), and
// does it three times in a row (the third time with the node's postgresql.conf
// outside its data directory, as Debian keeps it): each time the old primary
// streams from the new one, the cluster unfences it, and no acknowledged insert
// is lost. It also proves that rejoin refuses to touch the agreed primary.
func TestRejoinThreeFailoverCycles(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := StartProxies(t, pg, rejoinProxyOptions)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	execThrough(ctx, t, proxies.Proxies[0], "CREATE TABLE rejoin_acked (id int PRIMARY KEY, cycle int NOT NULL)")

	testRejoinRefusesThePrimary(ctx, t, pg, proxies)

	var acked []int
	for cycle := 1; cycle <= 3; cycle++ {
		before, err := proxies.Proxies[0].Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		old := pg.Node(before.Primary)
		acked = insertAcked(ctx, t, proxies.Proxies[cycle%3], cycle, len(acked), 20, acked)

		if err := old.Kill(); err != nil {
			t.Fatal(err)
		}
		killedAt := time.Now()
		newPrimary := waitFailoverAway(ctx, t, proxies, before.Epoch, old.Name)
		t.Logf("cycle %d: %s killed, %s is the primary after %v", cycle, old.Name, newPrimary, time.Since(killedAt).Round(time.Millisecond))
		acked = insertAcked(ctx, t, proxies.Proxies[(cycle+1)%3], cycle, len(acked), 10, acked)

		opts := rejoinOptions(t, proxies.Proxies[(cycle+2)%3], old, false)
		if cycle == 3 {
			// The Debian layout: the node's postgresql.conf lives outside its data directory.
			opts.ConfigFile = moveConfigOut(t, old)
		}
		rejoinedAt := time.Now()
		res, err := rejoin.Run(ctx, opts)
		if err != nil {
			t.Fatalf("cycle %d: rejoin %s: %v", cycle, old.Name, err)
		}
		if opts.ConfigFile != "" {
			if got, err := old.QueryString(ctx, "SHOW config_file"); err != nil || got != opts.ConfigFile {
				t.Fatalf("cycle %d: %s runs with config_file %q (%v), want %s", cycle, old.Name, got, err, opts.ConfigFile)
			}
			if _, err := os.Stat(filepath.Join(old.DataDir, "postgresql.conf")); !os.IsNotExist(err) {
				t.Fatalf("cycle %d: the primary's postgresql.conf, copied by pg_rewind, was left in %s (%v)", cycle, old.DataDir, err)
			}
		}
		t.Logf("cycle %d: %s rejoined in %v: %+v", cycle, old.Name, time.Since(rejoinedAt).Round(time.Millisecond), res)
		if res.Node != old.Name || res.Primary != newPrimary || res.Method != "rewind" || !res.Unfenced {
			t.Fatalf("cycle %d: result %+v; want node %s, primary %s, rewind, unfenced", cycle, res, old.Name, newPrimary)
		}
		requireRejoined(ctx, t, pg, proxies, old, newPrimary)
	}

	final, err := proxies.Proxies[0].Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	requireAcked(ctx, t, pg.Node(final.Primary), acked)
}

// TestRejoinRewindImpossibleThenReclone removes the WAL that pg_rewind needs from
// the old primary: rejoin fails with an error that names the reason and
// --reclone, leaves the node fenced, and then --reclone rejoins it, over the
// leftovers of an interrupted earlier --reclone.
func TestRejoinRewindImpossibleThenReclone(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := StartProxies(t, pg, rejoinProxyOptions)
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	execThrough(ctx, t, proxies.Proxies[0], "CREATE TABLE rejoin_acked (id int PRIMARY KEY, cycle int NOT NULL)")
	acked := insertAcked(ctx, t, proxies.Proxies[0], 1, 0, 20, nil)

	old := pg.Nodes[0]
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	newPrimary := waitFailoverAway(ctx, t, proxies, 1, old.Name)
	acked = insertAcked(ctx, t, proxies.Proxies[1], 1, len(acked), 10, acked)

	// Without its WAL the old primary can neither finish crash recovery nor be rewound.
	walDir := filepath.Join(old.DataDir, "pg_wal")
	entries, err := os.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	for _, e := range entries {
		if len(e.Name()) == 24 && !e.IsDir() {
			if err := os.Remove(filepath.Join(walDir, e.Name())); err != nil {
				t.Fatal(err)
			}
			removed++
		}
	}
	if removed == 0 {
		t.Fatalf("no WAL segment found in %s", walDir)
	}

	_, err = rejoin.Run(ctx, rejoinOptions(t, proxies.Proxies[2], old, false))
	var rewindErr *rejoin.RewindError
	if !errors.As(err, &rewindErr) {
		t.Fatalf("rejoin without WAL: got %v, want a *rejoin.RewindError", err)
	}
	msg := err.Error()
	for _, part := range []string{"pg_rewind cannot rewind", "pgquorum rejoin --pgdata " + old.DataDir + " --reclone"} {
		if !strings.Contains(msg, part) {
			t.Fatalf("error %q does not contain %q", msg, part)
		}
	}
	if rewindErr.Reason == "" || rewindErr.Primary != newPrimary {
		t.Fatalf("RewindError without a reason or with the wrong primary: %+v", rewindErr)
	}
	t.Logf("rewind impossible, as expected: %v", err)
	view, err := proxies.Proxies[0].Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(view.Fenced, old.Name) {
		t.Fatalf("%s is no longer fenced after a failed rejoin: %v", old.Name, view.Fenced)
	}

	// An earlier --reclone was interrupted in the middle of its copy: the run
	// starts the copy again.
	partial := old.DataDir + ".pgquorum-clone"
	if err := os.MkdirAll(filepath.Join(partial, "base"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(partial, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := rejoin.Run(ctx, rejoinOptions(t, proxies.Proxies[2], old, true))
	if err != nil {
		t.Fatalf("rejoin --reclone: %v", err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("the copy directory %s is still there after the re-clone (%v)", partial, err)
	}
	if res.Method != "reclone" || !res.Unfenced || res.Primary != newPrimary || res.OldDataDir == "" {
		t.Fatalf("result %+v; want a reclone from %s that unfenced %s and kept the old directory", res, newPrimary, old.Name)
	}
	if _, err := os.Stat(filepath.Join(res.OldDataDir, "PG_VERSION")); err != nil {
		t.Fatalf("the old data directory was not kept: %v", err)
	}
	requireRejoined(ctx, t, pg, proxies, old, newPrimary)

	// The re-cloned node kept its own configuration (port), and can be promoted
	// later: kill the primary once more and make sure nothing acknowledged is lost.
	acked = insertAcked(ctx, t, proxies.Proxies[0], 2, len(acked), 10, acked)
	before, err := proxies.Proxies[0].Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := pg.Node(newPrimary).Kill(); err != nil {
		t.Fatal(err)
	}
	third := waitFailoverAway(ctx, t, proxies, before.Epoch, newPrimary)
	requireAcked(ctx, t, pg.Node(third), acked)
}

// TestRejoinAfterSwitchover rejoins an old primary that still runs, read-only,
// after a planned switchover, in a cluster whose admin API needs a token:
// without the token rejoin refuses before it touches anything; with it, it
// stops the old primary, rewinds it and drops the default_transaction_read_only
// the switchover left, so that a switchover back to it gives a writable primary.
func TestRejoinAfterSwitchover(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{})
	proxies := StartProxies(t, pg, rejoinProxyOptions) // the harness gives the admin API a token
	tokenFile := proxies.TokenFile
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
	defer cancel()
	execThrough(ctx, t, proxies.Proxies[0], "CREATE TABLE rejoin_acked (id int PRIMARY KEY, cycle int NOT NULL)")
	acked := insertAcked(ctx, t, proxies.Proxies[0], 1, 0, 10, nil)

	old, target := pg.Nodes[0], pg.Nodes[1]
	client := proxies.Proxies[0].Client()
	client.HTTP.Timeout = 2 * time.Minute
	if _, err := client.Switchover(ctx, target.Name); err != nil {
		t.Fatalf("switchover to %s: %v", target.Name, err)
	}
	waitFailoverAway(ctx, t, proxies, 1, old.Name)
	if readOnly, err := old.QueryString(ctx, "SHOW default_transaction_read_only"); err != nil || readOnly != "on" {
		t.Fatalf("the old primary after the switchover: default_transaction_read_only %q, %v; want on", readOnly, err)
	}
	acked = insertAcked(ctx, t, proxies.Proxies[1], 1, len(acked), 10, acked)

	// Without the token: refused before anything is stopped.
	opts := rejoinOptions(t, proxies.Proxies[2], old, false)
	opts.Token = ""
	if _, err := rejoin.Run(ctx, opts); !errors.Is(err, rejoin.ErrAdmin) || !strings.Contains(err.Error(), "token") ||
		!strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("rejoin without the token: got %v, want a refusal naming the token", err)
	}
	if inRecovery, err := old.IsInRecovery(ctx); err != nil || inRecovery {
		t.Fatalf("the old primary after a refused rejoin: in recovery %v, err %v; want it running untouched", inRecovery, err)
	}

	opts.TokenFile = tokenFile
	res, err := rejoin.Run(ctx, opts)
	if err != nil {
		t.Fatalf("rejoin %s: %v", old.Name, err)
	}
	if res.Primary != target.Name || !res.Unfenced {
		t.Fatalf("result %+v", res)
	}
	requireRejoined(ctx, t, pg, proxies, old, target.Name)
	if readOnly, err := old.QueryString(ctx, "SHOW default_transaction_read_only"); err != nil || readOnly != "off" {
		t.Fatalf("the rejoined %s: default_transaction_read_only %q, %v; want off", old.Name, readOnly, err)
	}

	if _, err := client.Switchover(ctx, old.Name); err != nil {
		t.Fatalf("switchover back to the rejoined %s: %v", old.Name, err)
	}
	acked = insertAcked(ctx, t, proxies.Proxies[2], 2, len(acked), 10, acked)
	requireAcked(ctx, t, old, acked)
}

// testRejoinRefusesThePrimary runs rejoin on the primary's own data directory,
// by its derived name and under another node's name: both are refused and the
// primary keeps running and routing.
func testRejoinRefusesThePrimary(ctx context.Context, t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	t.Helper()
	view, err := proxies.Proxies[0].Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	primary := pg.Node(view.Primary)
	_, err = rejoin.Run(ctx, rejoinOptions(t, proxies.Proxies[0], primary, false))
	if !errors.Is(err, rejoin.ErrIsPrimary) {
		t.Fatalf("rejoin of the primary's data directory: got %v, want ErrIsPrimary", err)
	}
	other := rejoinOptions(t, proxies.Proxies[0], primary, false)
	other.NodeName = pg.Nodes[1].Name
	if _, err := rejoin.Run(ctx, other); err == nil || !strings.Contains(err.Error(), "contradicts") {
		t.Fatalf("rejoin of the primary's data directory as %s: got %v, want a refusal", other.NodeName, err)
	}
	unknown := rejoinOptions(t, proxies.Proxies[0], primary, false)
	unknown.NodeName = "pg9"
	if _, err := rejoin.Run(ctx, unknown); !errors.Is(err, rejoin.ErrUnknownNode) {
		t.Fatalf("rejoin as an unknown node: got %v, want ErrUnknownNode", err)
	}
	unreachable := rejoinOptions(t, proxies.Proxies[0], pg.Nodes[1], false)
	unreachable.Admin = []string{FreeAddr(t)}
	if _, err := rejoin.Run(ctx, unreachable); !errors.Is(err, rejoin.ErrAdmin) || !strings.Contains(err.Error(), "cannot reach the admin API") {
		t.Fatalf("rejoin with an unreachable admin API: got %v", err)
	}
	if inRecovery, err := primary.IsInRecovery(ctx); err != nil || inRecovery {
		t.Fatalf("the primary after the refused rejoins: in recovery %v, err %v", inRecovery, err)
	}
	if port := queryServerPort(ctx, t, proxies.Proxies[1]); port != primary.Port {
		t.Fatalf("proxies route to port %d, want the primary's %d", port, primary.Port)
	}
}

func rejoinOptions(t *testing.T, proxy *ProxyProcess, node *localcluster.Node, reclone bool) rejoin.Options {
	return rejoin.Options{
		PGData:        node.DataDir,
		Admin:         []string{proxy.Admin},
		Token:         proxy.AdminOptions().Token,
		Reclone:       reclone,
		SSLMode:       "disable",
		ServerLog:     node.LogFile,
		StreamTimeout: time.Minute,
		Logger:        slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", "rejoin"),
	}
}

// waitFailoverAway waits until every proxy agrees on a primary other than old in
// an epoch after epoch, with old fenced, and returns the new primary.
func waitFailoverAway(ctx context.Context, t *testing.T, proxies *ProxyCluster, epoch uint64, old string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var primary string
	for _, p := range proxies.Proxies {
		err := p.WaitCluster(ctx, "a failover away from "+old, func(v admin.ClusterView) bool {
			if v.Epoch > epoch && v.Primary != "" && v.Primary != old && v.Failover == nil && slices.Contains(v.Fenced, old) && v.Routing.Routing {
				primary = v.Primary
				return true
			}
			return false
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return primary
}

// requireRejoined checks that node streams from primary, that no proxy lists it
// as fenced, and that a row inserted through a proxy reaches it.
func requireRejoined(ctx context.Context, t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster, node *localcluster.Node, primary string) {
	t.Helper()
	replicas, err := pg.Node(primary).Replicas(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(replicas, func(r localcluster.Replica) bool { return r.Name == node.Name && r.State == "streaming" }) {
		t.Fatalf("%s does not stream from %s: pg_stat_replication %+v", node.Name, primary, replicas)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, p := range proxies.Proxies {
		err := p.WaitCluster(wctx, node.Name+" unfenced", func(v admin.ClusterView) bool {
			return !slices.Contains(v.Fenced, node.Name) && v.Primary == primary
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	marker := strconv.FormatInt(time.Now().UnixNano(), 10)
	execThrough(ctx, t, proxies.Proxies[0], "CREATE TABLE IF NOT EXISTS rejoin_marker (v text); INSERT INTO rejoin_marker VALUES ('"+marker+"')")
	for {
		n, err := node.QueryString(wctx, "SELECT count(*) FROM rejoin_marker WHERE v = $1", marker)
		if err == nil && n == "1" {
			break
		}
		select {
		case <-wctx.Done():
			t.Fatalf("a row inserted on %s never reached the rejoined %s (last: %q, %v)", primary, node.Name, n, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The leader puts the rejoined standby back into synchronous_standby_names,
	// so it counts towards the quorum again (not merely streaming async).
	for {
		replicas, err := pg.Node(primary).Replicas(wctx)
		if err == nil && slices.ContainsFunc(replicas, func(r localcluster.Replica) bool { return r.Name == node.Name && r.SyncState == "quorum" }) {
			return
		}
		select {
		case <-wctx.Done():
			names, _ := pg.Node(primary).QueryString(ctx, "SHOW synchronous_standby_names")
			t.Fatalf("rejoined %s is not a quorum standby of %s: synchronous_standby_names %q, pg_stat_replication %+v (%v)",
				node.Name, primary, names, replicas, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// insertAcked inserts n rows through p, one autocommit statement each, and
// returns acked with the ids of the rows PostgreSQL acknowledged.
func insertAcked(ctx context.Context, t *testing.T, p *ProxyProcess, cycle, firstID, n int, acked []int) []int {
	t.Helper()
	conn, err := pgx.Connect(ctx, p.ConnString())
	if err != nil {
		t.Fatalf("connect through proxy %d: %v", p.ID, err)
	}
	defer conn.Close(context.Background())
	for id := firstID; id < firstID+n; id++ {
		if _, err := conn.Exec(ctx, "INSERT INTO rejoin_acked VALUES ($1, $2)", id, cycle); err != nil {
			t.Fatalf("insert %d through proxy %d: %v", id, p.ID, err)
		}
		acked = append(acked, id)
	}
	return acked
}

// requireAcked checks that every acknowledged id is on node (the final primary).
func requireAcked(ctx context.Context, t *testing.T, node *localcluster.Node, acked []int) {
	t.Helper()
	conn, err := node.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var present int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM rejoin_acked WHERE id = ANY($1)", acked).Scan(&present); err != nil {
		t.Fatal(err)
	}
	if present != len(acked) {
		t.Fatalf("%d of %d acknowledged inserts are on the final primary %s", present, len(acked), node.Name)
	}
	t.Logf("all %d acknowledged inserts are on the final primary %s", len(acked), node.Name)
}

func execThrough(ctx context.Context, t *testing.T, p *ProxyProcess, sql string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, p.ConnString())
	if err != nil {
		t.Fatalf("connect through proxy %d: %v", p.ID, err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s through proxy %d: %v", sql, p.ID, err)
	}
}

// moveConfigOut moves the stopped node's postgresql.conf (and the pgquorum.conf
// it includes) out of its data directory, as in the Debian layout, and returns
// the new path of postgresql.conf.
func moveConfigOut(t *testing.T, node *localcluster.Node) string {
	t.Helper()
	etc := filepath.Join(testenv.TempDir(t), "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"postgresql.conf", "pgquorum.conf"} {
		if err := os.Rename(filepath.Join(node.DataDir, name), filepath.Join(etc, name)); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(etc, "postgresql.conf")
}
