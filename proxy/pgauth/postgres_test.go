package pgauth_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/testenv"
)

// This file starts one throwaway PostgreSQL for a test (a single-node localcluster) with the
// test's own pg_hba.conf rules.

// testPostgres is a running throwaway PostgreSQL. The test that started it
// owns it; t.Cleanup stops it.
type testPostgres struct {
	node *localcluster.Node
	port int
}

// startPostgres starts a PostgreSQL whose pg_hba.conf begins with hbaLines, on a free loopback
// port. It returns once the server accepts connections. localcluster also creates its query
// user (pgquorum, a superuser) and replication user.
func startPostgres(t *testing.T, hbaLines []string) *testPostgres {
	t.Helper()
	testenv.RequirePostgres(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{Dir: testenv.TempDir(t), Names: []string{"pga"}, ExtraHBA: hbaLines, Fast: true})
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("stop PostgreSQL: %v", err)
		}
	})
	return &testPostgres{node: c.Nodes[0], port: c.Nodes[0].Port}
}

// connString is a libpq connection string for user over TCP loopback.
func (pg *testPostgres) connString(user, password string) string {
	s := fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres sslmode=disable connect_timeout=10 user='%s'", pg.port, user)
	if password != "" {
		s += fmt.Sprintf(" password='%s'", password)
	}
	return s
}

func (pg *testPostgres) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(pg.port)) }

// connect opens a pgconn connection, closed when the test ends.
func (pg *testPostgres) connect(t *testing.T, user, password string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, pg.connString(user, password))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// exec runs SQL statements and fails the test on error.
func (pg *testPostgres) exec(t *testing.T, conn *pgconn.PgConn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}
