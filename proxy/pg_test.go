package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/testenv"
)

// The tests of this file's siblings (*_pg_test.go) run the proxy against real PostgreSQL 15:
// two independent single-node servers, "pga" and "pgb", stand for the old and the new primary,
// and switchRouter lets a test decide where the proxy routes, as the Raft view would. The
// application role has the same SCRAM verifier on both, as it would through replication.

const (
	pgTestUser     = "app"
	pgTestPassword = "app-secret"
)

// startTestPostgres starts a single-node PostgreSQL named name for the test; it is stopped when
// the test ends. Without PostgreSQL the test is skipped, or fails when CI=true.
func startTestPostgres(t *testing.T, name string) *localcluster.Node {
	t.Helper()
	return startTestCluster(t, localcluster.Options{Names: []string{name}}).Nodes[0]
}

// startTestCluster starts a local PostgreSQL cluster with opts (Dir and Fast are set here) for
// the test; it is stopped when the test ends.
func startTestCluster(t *testing.T, opts localcluster.Options) *localcluster.Cluster {
	t.Helper()
	testenv.RequirePostgres(t, "")
	dir := testenv.TempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts.Dir, opts.Fast = dir, true
	c, err := localcluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start PostgreSQL %v: %v", opts.Names, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("stop PostgreSQL %v: %v", opts.Names, err)
		}
	})
	return c
}

// pgPair is the old and the new primary of a test, and the proxy in front of them.
type pgPair struct {
	a, b    *localcluster.Node
	router  *switchRouter
	srv     *Server   // the proxy most tests use
	proxies []*Server // every proxy routed by router
}

// startPgPair starts two servers with the application role and a table t(id int, note text)
// on both, and a SCRAM proxy routing to a. cfg's zero fields get test defaults.
func startPgPair(t *testing.T, cfg Config) *pgPair {
	t.Helper()
	var a, b *localcluster.Node
	var wg sync.WaitGroup
	wg.Go(func() { a = startTestPostgres(t, "pga") })
	wg.Go(func() { b = startTestPostgres(t, "pgb") })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ctx := testContext(t)
	if err := a.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'; GRANT ALL ON SCHEMA public TO %s",
		pgTestUser, pgTestPassword, pgTestUser)); err != nil {
		t.Fatal(err)
	}
	verifier, err := a.QueryString(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", pgTestUser)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Exec(ctx, fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'; GRANT ALL ON SCHEMA public TO %s",
		pgTestUser, verifier, pgTestUser)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*localcluster.Node{a, b} {
		if err := n.Exec(ctx, fmt.Sprintf("CREATE TABLE t (id int, note text); GRANT ALL ON t TO %s", pgTestUser)); err != nil {
			t.Fatal(err)
		}
	}
	p := &pgPair{a: a, b: b, router: newSwitchRouter(Route{Routing: true, Target: targetOf(a)})}
	p.srv = p.newProxy(t, cfg)
	return p
}

// newProxy starts another proxy routed by p.router; cfg's zero fields get test defaults.
func (p *pgPair) newProxy(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.NodeID = 3
	cfg.Router = p.router
	cfg.AuthMethod = AuthSCRAMSHA256
	cfg.QueryUser, cfg.QueryPassword = localcluster.QueryUser, localcluster.QueryPassword
	srv := startProxy(t, cfg)
	p.proxies = append(p.proxies, srv)
	t.Cleanup(func() { p.proxies = slices.DeleteFunc(p.proxies, func(x *Server) bool { return x == srv }) })
	return srv
}

// startProxy starts a proxy serving on a free loopback port (HoldTimeout 10s unless set); it
// is shut down when the test ends.
func startProxy(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.ListenAddr = "127.0.0.1:0"
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = 10 * time.Second
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-served; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv
}

func targetOf(n *localcluster.Node) Target { return Target{Name: n.Name, Address: n.Address()} }

// connString is a libpq connection string through srv as the application role.
func connString(srv *Server, extra string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=postgres sslmode=disable connect_timeout=10 %s",
		srv.Addr().(*net.TCPAddr).Port, pgTestUser, pgTestPassword, extra)
}

// connect opens a pgx connection through the main proxy; it is closed when the test ends.
func (p *pgPair) connect(t *testing.T, extra string) *pgx.Conn {
	t.Helper()
	return connectVia(t, p.srv, extra)
}

// connectVia opens a pgx connection through srv; it is closed when the test ends.
func connectVia(t *testing.T, srv *Server, extra string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), connString(srv, extra))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// failover moves routing from the current primary to n, through "no primary", as a failover
// does, and returns once every proxy applied it.
func (p *pgPair) failover(t *testing.T, n *localcluster.Node) {
	t.Helper()
	p.setRoute(t, Route{})
	p.setRoute(t, Route{Routing: true, Target: targetOf(n)})
}

// setRoute changes the route and returns once every proxy applied it (sessions on a backend
// the route no longer allows have lost it).
func (p *pgPair) setRoute(t *testing.T, r Route) {
	t.Helper()
	p.router.set(r)
	deadline := time.Now().Add(10 * time.Second)
	for _, srv := range p.proxies {
		for cur := srv.route.Load(); *cur != r; cur = srv.route.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("proxy did not apply route %+v", r)
			}
			time.Sleep(time.Millisecond)
		}
		srv.routeChanged(r) // again, synchronously: the drops are done when it returns
	}
}

// serverPort returns inet_server_port() through conn.
func serverPort(t *testing.T, conn *pgx.Conn) int {
	t.Helper()
	var port int
	if err := conn.QueryRow(testContext(t), "SELECT inet_server_port()").Scan(&port); err != nil {
		t.Fatalf("inet_server_port through the proxy: %v", err)
	}
	return port
}

// requirePgCode fails unless err is a PostgreSQL error with SQLSTATE code.
func requirePgCode(t *testing.T, err error, code string) *pgconn.PgError {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != code {
		t.Fatalf("got error %v, want SQLSTATE %s", err, code)
	}
	return pgErr
}

// testContext bounds a test step.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// switchRouter is a Router whose route the test sets. onRoute, when set, receives the
// route every time a caller other than the proxy's watcher asks for it (see waitRouteCaller).
type switchRouter struct {
	mu      sync.Mutex
	route   Route
	changed chan struct{}
	calls   chan Route // every Route call, when not nil (non-blocking)
	// confirmed, when not nil, is what a quorum would confirm (RouteConfirmer): a decision
	// made elsewhere that the proxy's own view (route) does not show yet.
	confirmed *Route
	// confirms receives a value (non-blocking) at every ConfirmedRoute call, when not nil.
	confirms chan struct{}
}

// ConfirmedRoute implements RouteConfirmer.
func (r *switchRouter) ConfirmedRoute(context.Context) (Route, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.confirms != nil {
		select {
		case r.confirms <- struct{}{}:
		default:
		}
	}
	if r.confirmed != nil {
		return *r.confirmed, nil
	}
	return r.route, nil
}

// confirmElsewhere makes ConfirmedRoute answer route until the test ends or it is called
// with nil: a failover or switchover that another proxy's coordinator began.
func (r *switchRouter) confirmElsewhere(t *testing.T, route *Route) <-chan struct{} {
	r.mu.Lock()
	r.confirmed = route
	r.confirms = make(chan struct{}, 1)
	confirms := r.confirms
	r.mu.Unlock()
	t.Cleanup(func() {
		r.mu.Lock()
		r.confirmed, r.confirms = nil, nil
		r.mu.Unlock()
	})
	return confirms
}

func newSwitchRouter(r Route) *switchRouter {
	return &switchRouter{route: r, changed: make(chan struct{})}
}

func (r *switchRouter) set(route Route) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.route = route
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *switchRouter) Route() (Route, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls != nil {
		select {
		case r.calls <- r.route:
		default:
		}
	}
	return r.route, r.changed
}

func (r *switchRouter) BackendFailed(Target) {}
