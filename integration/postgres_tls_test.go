package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/config"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/node"
	"github.com/pgquorum/pgquorum/rejoin"
)

// TestPostgresOverTLS runs the whole cluster against PostgreSQL that accepts TCP
// connections over TLS only (ssl = on, hostssl-only pg_hba.conf, a test CA): the proxies
// route only if the bootstrap probe, the health probes and the coordinator's SQL all
// use TLS; then sessions, a sidecar that reads verifiers through the voters (no
// database password in its pod) and a switchover that re-points a standby.
func TestPostgresOverTLS(t *testing.T) {
	pg := StartCluster(t, localcluster.Options{TLS: true, HostSSLOnly: true})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if err := pg.Nodes[0].Exec(ctx, "CREATE ROLE app LOGIN PASSWORD 'app-secret'"); err != nil {
		t.Fatal(err)
	}
	ca := pg.TLS.CA
	proxies := StartProxies(t, pg, ProxyOptions{
		Extra: fmt.Sprintf("backend: {sslmode: verify-full, ca: %q, standby_ca: %q}\n", ca, ca),
	})

	t.Run("EveryConnectionUsesTLS", func(t *testing.T) { testEveryConnectionUsesTLS(ctx, t, pg, proxies) })
	t.Run("SidecarWithoutDatabasePassword", func(t *testing.T) { testSidecarWithoutDatabasePassword(ctx, t, pg, proxies) })
	t.Run("MockSaltSurvivesRestart", func(t *testing.T) { testMockSaltSurvivesRestart(ctx, t, proxies) })
	t.Run("SwitchoverRepointsOverTLS", func(t *testing.T) { testSwitchoverRepointsOverTLS(ctx, t, pg, proxies) })
	t.Run("RejoinOverTLS", func(t *testing.T) { testRejoinOverTLS(ctx, t, pg, proxies) })
}

// testMockSaltSurvivesRestart: the salt announced for a role that does not exist is the
// same on every proxy and after a proxy process restarts (derived from the cluster's CA).
func testMockSaltSurvivesRestart(ctx context.Context, t *testing.T, proxies *ProxyCluster) {
	p := proxies.Proxies[2]
	before := scramSaltAt(t, p.Postgres, "no_such_role")
	if other := scramSaltAt(t, proxies.Proxies[0].Postgres, "no_such_role"); other != before {
		t.Fatalf("proxies 1 and 3 announce %q and %q", other, before)
	}
	p.Kill()
	if err := proxies.Start(p); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitRouting(ctx); err != nil {
		t.Fatal(err)
	}
	if after := scramSaltAt(t, p.Postgres, "no_such_role"); after != before {
		t.Fatalf("before the restart %q, after %q", before, after)
	}
}

// appConnString is a connection string through the proxy at addr as the application role.
func appConnString(addr, password string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("host=%s port=%s user=app password=%s dbname=postgres sslmode=disable connect_timeout=10", host, port, password)
}

func testEveryConnectionUsesTLS(ctx context.Context, t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	conn, err := pgx.Connect(ctx, appConnString(proxies.Proxies[0].Postgres, "app-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// Every connection of the proxies on the primary: probes, the coordinator, the auth
	// query, the session.
	list, err := pg.Nodes[0].QueryString(ctx, `SELECT string_agg(a.application_name || ':' || s.ssl, ',' ORDER BY 1)
		FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.client_addr IS NOT NULL AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()`)
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(list, ",")
	seen := map[string]bool{}
	for _, r := range rows {
		name, ssl, _ := strings.Cut(r, ":")
		if ssl != "true" {
			t.Errorf("connection %q without TLS", name)
		}
		seen[name] = true
	}
	for _, want := range []string{"pgquorum-health", "pgquorum-auth-query"} {
		if !seen[want] {
			t.Errorf("no %s connection seen (rows %q)", want, rows)
		}
	}
}

func testSidecarWithoutDatabasePassword(ctx context.Context, t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	const id = 150
	proxies.Cert(t, "node", "--id", fmt.Sprint(id), "--learner")
	var peers []config.Peer
	for _, p := range proxies.Proxies {
		peers = append(peers, config.Peer{ID: p.ID, Raft: p.Raft})
	}
	no := false
	cfg := &config.Config{
		ClusterName: "itest",
		Node:        config.Node{ID: id, DataDir: filepath.Join(t.TempDir(), "sidecar"), Voter: &no},
		Listen:      config.Listen{Postgres: "127.0.0.1:0", Admin: "127.0.0.1:0", Raft: FreeAddr(t)},
		Peers:       peers,
		// No query user, no password: the voters read verifiers for the sidecar.
		Auth: config.Auth{Method: "scram-sha-256", Lookup: config.LookupVoters, QueryDatabase: "postgres"},
		Hold: config.Hold{Timeout: config.Duration{Duration: 10 * time.Second}, MaxHeld: config.DefaultMaxHeld,
			ReleaseConcurrency: config.DefaultReleaseConcurrency},
		Health:  config.Health{Interval: config.Duration{Duration: config.DefaultHealthInterval}, Timeout: config.Duration{Duration: config.DefaultHealthTimeout}},
		Backend: config.BackendTLS{SSLMode: config.SSLVerifyFull, CA: pg.TLS.CA},
		Log:     config.Log{Format: "text", Level: "info"},
		PeerTLS: &config.PeerTLS{
			CA:   filepath.Join(proxies.Certs, "ca.pem"),
			Cert: filepath.Join(proxies.Certs, fmt.Sprintf("node-%d.pem", id)),
			Key:  filepath.Join(proxies.Certs, fmt.Sprintf("node-%d-key.pem", id)),
		},
	}
	for _, n := range pg.Nodes {
		cfg.Backends = append(cfg.Backends, config.Backend{Name: n.Name, Address: n.Address()})
	}
	sidecar, err := node.Start(ctx, cfg, nil, node.Options{NoRuntimeMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sidecar.Close(closeCtx)
	})
	for !sidecar.Routing().Routing {
		select {
		case <-ctx.Done():
			t.Fatalf("the sidecar never routed: %s", sidecar.Routing().Reason)
		case <-sidecar.Raft().Applied():
		case <-time.After(20 * time.Millisecond):
		}
	}
	// With no role to log in with, its readiness (/readyz) is routing and
	// draining only: no login check that could never pass.
	if ready, why := sidecar.Ready(); !ready {
		t.Errorf("the sidecar routes but says it is not ready: %s", why)
	}
	addr := sidecar.PostgresAddr().String()
	conn, err := pgx.Connect(ctx, appConnString(addr, "app-secret"))
	if err != nil {
		t.Fatalf("a client of the sidecar: %v", err)
	}
	defer conn.Close(ctx)
	var user string
	var ssl bool
	if err := conn.QueryRow(ctx, "SELECT current_user::text, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &ssl); err != nil || user != "app" || !ssl {
		t.Fatalf("through the sidecar: user %q, ssl %v, %v", user, ssl, err)
	}
	_, err = pgx.Connect(ctx, appConnString(addr, "wrong"))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password through the sidecar: %v", err)
	}
	// A role that does not exist looks like any other: the salt the sidecar announces (the
	// voters' answer) is the one the voters announce themselves.
	voter := proxies.Proxies[1].Postgres
	for _, role := range []string{"no_such_role", "app"} {
		a, b := scramSaltAt(t, addr, role), scramSaltAt(t, voter, role)
		if a != b {
			t.Errorf("role %s: the sidecar announces %q, a voter %q", role, a, b)
		}
	}
}

// scramSaltAt starts a SCRAM exchange at addr as user and returns the salt and iteration
// count announced.
func scramSaltAt(t *testing.T, addr, user string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": "postgres"}})
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=probe")})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("SCRAM probe at %s as %s: %v", addr, user, err)
		}
		if cont, ok := msg.(*pgproto3.AuthenticationSASLContinue); ok {
			_, saltAndIterations, _ := strings.Cut(string(cont.Data), ",")
			return saltAndIterations
		}
	}
}

func testSwitchoverRepointsOverTLS(ctx context.Context, t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	pg2, pg3 := pg.Node("pg2"), pg.Node("pg3")
	// pg3 streams with a weaker setting than the cluster's (encrypted, not verified): the
	// re-pointed primary_conninfo must not keep it.
	weaker := fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=pg3 sslmode=require", pg.Node("pg1").Port, localcluster.ReplicationUser)
	if err := pg3.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET primary_conninfo = '%s'", weaker)); err != nil {
		t.Fatal(err)
	}
	if err := pg3.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Node("pg1").WaitReplicas(ctx, "pg2", "pg3"); err != nil {
		t.Fatal(err)
	}
	client := proxies.Proxies[0].Client()
	client.HTTP.Timeout = time.Minute
	if _, err := client.Switchover(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
	if err := pg2.WaitReplicas(ctx, "pg3"); err != nil {
		t.Fatal(err)
	}
	requireStreamsOverTLS(ctx, t, pg, pg3, pg2)
}

// requireStreamsOverTLS checks that standby's primary_conninfo names primary with verify-full
// and the cluster's CA, and that primary sees it streaming over TLS.
func requireStreamsOverTLS(ctx context.Context, t *testing.T, pg *localcluster.Cluster, standby, primary *localcluster.Node) {
	t.Helper()
	conninfo, err := standby.QueryString(ctx, "SHOW primary_conninfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("port='%d'", primary.Port), "sslmode='verify-full'", fmt.Sprintf("sslrootcert='%s'", pg.TLS.CA)} {
		if !strings.Contains(conninfo, want) {
			t.Errorf("%s primary_conninfo %q lacks %s", standby.Name, conninfo, want)
		}
	}
	ssl, err := primary.QueryString(ctx, "SELECT s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name = $1", standby.Name)
	if err != nil || ssl != "t" {
		t.Fatalf("%s streams from %s with ssl = %q, %v", standby.Name, primary.Name, ssl, err)
	}
}

// testRejoinOverTLS rejoins the old primary the switchover left behind (pg1, fenced) with
// rejoin.Run — what `pgquorum rejoin` and the agent run — against servers that accept TLS only:
// pg_rewind's source connection and the written primary_conninfo use verify-full with the
// cluster's CA, and pg1 streams from pg2 over TLS as a quorum standby again.
func testRejoinOverTLS(ctx context.Context, t *testing.T, pg *localcluster.Cluster, proxies *ProxyCluster) {
	pg1, pg2 := pg.Node("pg1"), pg.Node("pg2")
	opts := rejoinOptions(t, proxies.Proxies[1], pg1, false)
	// Negative control: without TLS the servers refuse rejoin's connections.
	_, err := rejoin.Run(ctx, opts)
	if err == nil || !strings.Contains(err.Error(), "no encryption") {
		t.Fatalf("rejoin with sslmode=disable against TLS-only servers: got %v, want pg_hba's refusal of an unencrypted connection", err)
	}
	t.Logf("without TLS: %v", err)
	opts.SSLMode, opts.SSLRootCert = "verify-full", pg.TLS.CA
	res, err := rejoin.Run(ctx, opts)
	if err != nil {
		t.Fatalf("rejoin pg1 over TLS: %v", err)
	}
	if res.Primary != "pg2" || !res.Unfenced {
		t.Fatalf("rejoin result %+v, want primary pg2 and unfenced", res)
	}
	requireRejoined(ctx, t, pg, proxies, pg1, "pg2")
	requireStreamsOverTLS(ctx, t, pg, pg1, pg2)
}
