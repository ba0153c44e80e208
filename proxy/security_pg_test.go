package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/pki"
)

// The tests of this file run the proxy against one PostgreSQL 15 with ssl = on whose
// pg_hba.conf accepts TCP connections over TLS only (hostssl), as a server that requires TLS
// does: whatever connection the proxy opens in plaintext fails.

// securityFixture is the TLS PostgreSQL and what the proxies of a test need to reach it.
type securityFixture struct {
	pg   *localcluster.Node
	pgCA string // the CA of PostgreSQL's certificate
	// pgClientCert and pgClientKey: a client certificate PostgreSQL accepts.
	pgClientCert, pgClientKey string
	router                    *switchRouter
	backendTLS                conninfo.Params // verify-full against pgCA

	clientTLS *tls.Config // the proxy's certificate for clients (127.0.0.1)
	clientCA  string      // its CA, for clients' sslrootcert
}

const (
	certUser       = "certapp"    // PostgreSQL asks it for a client certificate too
	lookupUser     = "pgq_lookup" // a query user without superuser, with the lookup function
	lookupPassword = "lookup-secret"
	authDatabase   = "authdb"
)

func startSecurityFixture(t *testing.T) *securityFixture {
	t.Helper()
	c := startTestCluster(t, localcluster.Options{Names: []string{"pgs"}, TLS: true, HostSSLOnly: true,
		// certapp must come with a client certificate signed by the cluster's CA, and its password.
		ExtraHBA: []string{"hostssl all " + certUser + " 127.0.0.1/32 scram-sha-256 clientcert=verify-ca"}})
	f := &securityFixture{pg: c.Nodes[0], pgCA: c.TLS.CA, pgClientCert: c.TLS.ClientCert, pgClientKey: c.TLS.ClientKey}
	f.router = newSwitchRouter(Route{Routing: true, Target: targetOf(f.pg)})
	f.backendTLS = conninfo.Params{{Key: "sslmode", Value: "verify-full"}, {Key: "sslrootcert", Value: f.pgCA}}

	ctx := testContext(t)
	if err := f.pg.Exec(ctx, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s';
		CREATE ROLE %s LOGIN PASSWORD '%s';
		CREATE ROLE %s LOGIN NOSUPERUSER PASSWORD '%s'`, pgTestUser, pgTestPassword, certUser, pgTestPassword, lookupUser, lookupPassword)); err != nil {
		t.Fatal(err)
	}
	if err := f.pg.Exec(ctx, "CREATE DATABASE "+authDatabase); err != nil {
		t.Fatal(err)
	}
	// The documented lookup function, granted to the non-superuser query user, in authdb only.
	sql, err := os.ReadFile(filepath.Join("..", "configs", "auth-lookup-function.sql"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, f.pg.ConnString(localcluster.QueryUser, localcluster.QueryPassword, authDatabase))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := db.Exec(ctx, strings.ReplaceAll(string(sql), " TO pgquorum;", " TO "+lookupUser+";")); err != nil {
		t.Fatal(err)
	}

	ca, err := pki.NewCA("clients", 1)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.IssueNode(1, 1, pki.RoleVoter, []string{"127.0.0.1"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	f.clientTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	f.clientCA = filepath.Join(t.TempDir(), "client-ca.pem")
	if err := os.WriteFile(f.clientCA, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// proxy starts a proxy in front of the TLS PostgreSQL: SCRAM, backend verify-full and the
// superuser query user unless cfg says otherwise.
func (f *securityFixture) proxy(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.NodeID = 5
	cfg.Router = f.router
	if cfg.AuthMethod == "" {
		cfg.AuthMethod = AuthSCRAMSHA256
	}
	if cfg.QueryUser == "" {
		cfg.QueryUser, cfg.QueryPassword = localcluster.QueryUser, localcluster.QueryPassword
	}
	if cfg.BackendTLS == nil {
		cfg.BackendTLS = f.backendTLS
	}
	return startProxy(t, cfg)
}

// superuserQuery runs sql on PostgreSQL directly and returns the first column of its rows.
func (f *securityFixture) superuserQuery(t *testing.T, sql string) []string {
	t.Helper()
	ctx := testContext(t)
	conn, err := f.pg.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSecurityAgainstPostgres(t *testing.T) {
	f := startSecurityFixture(t)
	t.Run("BackendConnectionsUseTLS", func(t *testing.T) { testBackendConnectionsUseTLS(t, f) })
	t.Run("PostgreSQLRefusesPlaintext", func(t *testing.T) { testPostgreSQLRefusesPlaintext(t, f) })
	t.Run("WrongBackendCA", func(t *testing.T) { testWrongBackendCA(t, f) })
	t.Run("BackendClientCertificate", func(t *testing.T) { testBackendClientCertificate(t, f) })
	t.Run("QueryUserWithoutSuperuser", func(t *testing.T) { testQueryUserWithoutSuperuser(t, f) })
	t.Run("ChannelBinding", func(t *testing.T) { testChannelBinding(t, f) })
	t.Run("TLSRequired", func(t *testing.T) { testTLSRequired(t, f) })
	t.Run("TrustWarning", func(t *testing.T) { testTrustWarning(t, f) })
	t.Run("MockSaltStable", func(t *testing.T) { testMockSaltStable(t, f) })
	t.Run("ConnectionLimits", func(t *testing.T) { testConnectionLimits(t, f) })
	t.Run("StartupDoesNotTakeHeldPlaces", func(t *testing.T) { testStartupDoesNotTakeHeldPlaces(t, f) })
	t.Run("NamedPortalFlood", func(t *testing.T) { testNamedPortalFlood(t, f) })
}

func testBackendConnectionsUseTLS(t *testing.T, f *securityFixture) {
	srv := f.proxy(t, Config{QueryDatabase: authDatabase})
	conn := connectVia(t, srv, "")
	ctx := testContext(t)
	var ssl bool
	if err := conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("the session's backend connection: ssl = %v, %v", ssl, err)
	}
	// The auth query ran in auth.query_database, over TLS.
	got := f.superuserQuery(t, `SELECT a.datname || ' ' || s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
		WHERE a.application_name = 'pgquorum-auth-query'`)
	if len(got) != 1 || got[0] != authDatabase+" true" {
		t.Fatalf("auth query connections (database, ssl): %q, want one in %s over TLS", got, authDatabase)
	}
	// A cancel request reaches the backend (over TLS too).
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(context.Background(), "SELECT pg_sleep(30)")
		done <- err
	}()
	waitFor(t, "the sleep to run", func() bool {
		return len(f.superuserQuery(t, "SELECT pid::text FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")) == 1
	})
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		requirePgCode(t, err, codeQueryCanceled)
	case <-time.After(20 * time.Second):
		t.Fatal("the cancel request did not reach the backend")
	}
}

func testPostgreSQLRefusesPlaintext(t *testing.T, f *securityFixture) {
	plaintext := conninfo.Params{{Key: "sslmode", Value: "disable"}}
	// The auth query cannot connect...
	srv := f.proxy(t, Config{BackendTLS: plaintext})
	_, err := pgx.Connect(testContext(t), connString(srv, ""))
	if pgErr := requirePgCode(t, err, codeConnectionFailure); !strings.Contains(pgErr.Message, "could not look up the password") {
		t.Fatalf("auth query in plaintext to a hostssl-only server: %v", err)
	}
	// ...nor the session's backend: PostgreSQL's own answer reaches the client.
	srv = f.proxy(t, Config{BackendTLS: plaintext, AuthMethod: AuthTrust})
	_, err = pgx.Connect(testContext(t), connString(srv, ""))
	if pgErr := requirePgCode(t, err, codeInvalidAuthSpec); !strings.Contains(pgErr.Message, "no encryption") {
		t.Fatalf("session in plaintext to a hostssl-only server: %v", err)
	}
}

func testWrongBackendCA(t *testing.T, f *securityFixture) {
	// The client CA did not sign PostgreSQL's certificate: no login, a clear error at once
	// (not a wait for another primary until the hold timeout).
	srv := f.proxy(t, Config{
		BackendTLS: conninfo.Params{{Key: "sslmode", Value: "verify-ca"}, {Key: "sslrootcert", Value: f.clientCA}},
		// The auth query needs the right CA: only the sessions' backends use the wrong one.
		AuthMethod: AuthTrust,
	})
	start := time.Now()
	_, err := pgx.Connect(testContext(t), connString(srv, ""))
	pgErr := requirePgCode(t, err, codeUnableToConnect)
	if !strings.Contains(pgErr.Message, "could not establish TLS") || !strings.Contains(pgErr.Detail, "certificate") {
		t.Fatalf("wrong CA: %q (%q)", pgErr.Message, pgErr.Detail)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("the TLS failure took %v: it was retried", waited)
	}
}

func testBackendClientCertificate(t *testing.T, f *securityFixture) {
	asCertUser := func(srv *Server) error {
		conn, err := pgx.Connect(testContext(t), strings.Replace(connString(srv, ""), "user="+pgTestUser, "user="+certUser, 1))
		if err == nil {
			conn.Close(context.Background())
		}
		return err
	}
	without := f.proxy(t, Config{})
	if pgErr := requirePgCode(t, asCertUser(without), codeInvalidAuthSpec); !strings.Contains(pgErr.Message, "certificate") {
		t.Fatalf("without backend.cert: %v", pgErr)
	}
	with := f.proxy(t, Config{BackendTLS: append(f.backendTLS,
		conninfo.Param{Key: "sslcert", Value: f.pgClientCert}, conninfo.Param{Key: "sslkey", Value: f.pgClientKey})})
	if err := asCertUser(with); err != nil {
		t.Fatalf("with backend.cert: %v", err)
	}
}

func testQueryUserWithoutSuperuser(t *testing.T, f *securityFixture) {
	srv := f.proxy(t, Config{QueryUser: lookupUser, QueryPassword: lookupPassword, QueryDatabase: authDatabase,
		LookupFunction: "pgquorum.get_auth"})
	conn := connectVia(t, srv, "")
	var user string
	if err := conn.QueryRow(testContext(t), "SELECT current_user").Scan(&user); err != nil || user != pgTestUser {
		t.Fatalf("current_user = %q, %v", user, err)
	}
	for _, bad := range []string{
		strings.Replace(connString(srv, ""), "password="+pgTestPassword, "password=wrong", 1),
		strings.Replace(connString(srv, ""), "user="+pgTestUser, "user=no_such_role", 1),
		strings.Replace(connString(srv, ""), "user="+pgTestUser, "user="+localcluster.QueryUser, 1), // a superuser: never looked up
	} {
		_, err := pgx.Connect(testContext(t), bad)
		requirePgCode(t, err, codeInvalidPassword)
	}
}

// psql runs psql with connString and returns its combined output.
func psql(t *testing.T, connString, password string) (string, error) {
	t.Helper()
	bin, err := localcluster.FindBinDir("")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "psql"), "-X", "-A", "-t", "-c", "SELECT 'ok:' || current_user", connString)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func proxyURL(srv *Server, params string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres %s", srv.Addr().(*net.TCPAddr).Port, pgTestUser, params)
}

func testChannelBinding(t *testing.T, f *securityFixture) {
	srv := f.proxy(t, Config{TLS: f.clientTLS})
	// pgx: channel_binding=require succeeds only with SCRAM-SHA-256-PLUS.
	conn := connectVia(t, srv, "sslmode=verify-full sslrootcert="+f.clientCA+" channel_binding=require")
	var ssl bool
	if err := conn.QueryRow(testContext(t), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("through the bound session, the backend: ssl = %v, %v", ssl, err)
	}
	if _, err := pgx.Connect(testContext(t), connString(srv, "sslmode=disable channel_binding=require")); err == nil {
		t.Fatal("pgx: channel_binding=require succeeded without TLS")
	}
	_, err := pgx.Connect(testContext(t), strings.Replace(connString(srv, "sslmode=require channel_binding=require"),
		"password="+pgTestPassword, "password=wrong", 1))
	requirePgCode(t, err, codeInvalidPassword)

	// psql (libpq 15).
	out, err := psql(t, proxyURL(srv, "sslmode=require channel_binding=require"), pgTestPassword)
	if err != nil || out != "ok:"+pgTestUser {
		t.Fatalf("psql channel_binding=require over TLS: %v\n%s", err, out)
	}
	out, err = psql(t, proxyURL(srv, "sslmode=disable channel_binding=require"), pgTestPassword)
	if err == nil || !strings.Contains(out, "channel binding") {
		t.Fatalf("psql channel_binding=require without TLS: %v\n%s", err, out)
	}
}

func testTLSRequired(t *testing.T, f *securityFixture) {
	srv := f.proxy(t, Config{TLS: f.clientTLS, TLSRequired: true})
	_, err := pgx.Connect(testContext(t), connString(srv, "sslmode=disable"))
	if pgErr := requirePgCode(t, err, codeInvalidAuthSpec); !strings.Contains(pgErr.Message, "requires TLS") {
		t.Fatalf("plaintext session: %v", err)
	}
	connectVia(t, srv, "sslmode=require")
	out, err := psql(t, proxyURL(srv, "sslmode=disable"), pgTestPassword)
	if err == nil || !strings.Contains(out, "without encryption refused") {
		t.Fatalf("psql sslmode=disable: %v\n%s", err, out)
	}
	if out, err := psql(t, proxyURL(srv, "sslmode=prefer"), pgTestPassword); err != nil || out != "ok:"+pgTestUser {
		t.Fatalf("psql sslmode=prefer: %v\n%s", err, out)
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testTrustWarning(t *testing.T, f *securityFixture) {
	// localcluster trusts the superuser "postgres" on loopback (hostssl here) and asks
	// every other role for a password.
	for _, tt := range []struct {
		queryUser, password string
		warn                bool
	}{
		{localcluster.SuperUser, "", true},
		{localcluster.QueryUser, localcluster.QueryPassword, false},
	} {
		var logs syncBuffer
		srv := f.proxy(t, Config{AuthMethod: AuthTrust, QueryUser: tt.queryUser, QueryPassword: tt.password,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if got := srv.checkTrustedQueryUser(testContext(t)); got != tt.warn {
			t.Errorf("query user %s: warned %v, want %v", tt.queryUser, got, tt.warn)
		}
		if tt.warn && !strings.Contains(logs.String(), "every client of this proxy can connect as that user") {
			t.Errorf("no warning in the log:\n%s", logs.String())
		}
	}
}

// scramSalt starts a SCRAM exchange through addr as user and returns the salt and iteration
// count the server announced, as a client probing for roles would see them.
func scramSalt(t *testing.T, srv *Server, user string) string {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": "postgres"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok {
		t.Fatalf("got %T, want AuthenticationSASL", msg)
	}
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=probe")})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err = fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		t.Fatalf("got %T, want AuthenticationSASLContinue", msg)
	}
	_, saltAndIterations, _ := strings.Cut(string(cont.Data), ",")
	return saltAndIterations
}

func testMockSaltStable(t *testing.T, f *securityFixture) {
	secret := []byte("the cluster's mock secret")
	first := f.proxy(t, Config{MockSecret: secret})
	second := f.proxy(t, Config{MockSecret: secret})
	ghost := scramSalt(t, first, "no_such_role")
	if got := scramSalt(t, second, "no_such_role"); got != ghost {
		t.Fatalf("two proxies announce %q and %q for the same unknown role", ghost, got)
	}
	if got := scramSalt(t, first, "no_such_role"); got != ghost {
		t.Fatalf("one proxy announces %q, then %q", ghost, got)
	}
	// A restart: a new process with the same secret.
	restarted := f.proxy(t, Config{MockSecret: secret})
	if got := scramSalt(t, restarted, "no_such_role"); got != ghost {
		t.Fatalf("after a restart %q, before %q", got, ghost)
	}
	if got := scramSalt(t, first, "other_ghost"); got == ghost {
		t.Fatal("two unknown roles share a salt")
	}
	// A real role's salt is its own, on every proxy.
	own := scramSalt(t, first, pgTestUser)
	if got := scramSalt(t, second, pgTestUser); got != own || !strings.HasSuffix(own, ",i=4096") {
		t.Fatalf("real role: %q and %q", own, got)
	}
	if other := f.proxy(t, Config{MockSecret: []byte("another cluster's secret")}); scramSalt(t, other, "no_such_role") == ghost {
		t.Fatal("the mock salt does not depend on the secret")
	}
}

func testConnectionLimits(t *testing.T, f *securityFixture) {
	srv := f.proxy(t, Config{MaxClientConnections: 3, MaxStartupConnections: 1})
	// A client that connects and says nothing holds the only startup place.
	silent, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the silent connection to start", func() bool { return srv.Stats().StartupConnections == 1 })
	_, err = pgx.Connect(testContext(t), connString(srv, ""))
	if pgErr := requirePgCode(t, err, codeTooManyConnections); !strings.Contains(pgErr.Message, "connecting") {
		t.Fatalf("past max_startup_connections: %v", err)
	}
	silent.Close()
	waitFor(t, "the silent connection to end", func() bool { return srv.Stats().StartupConnections == 0 })
	for range 3 {
		connectVia(t, srv, "")
	}
	if n := srv.Stats().StartupConnections; n != 0 {
		t.Fatalf("%d authenticated sessions still count as starting", n)
	}
	_, err = pgx.Connect(testContext(t), connString(srv, ""))
	if pgErr := requirePgCode(t, err, codeTooManyConnections); pgErr.Message != "sorry, too many clients already" {
		t.Fatalf("past max_client_connections: %v", err)
	}
	if n := srv.Stats().RefusedConnections; n != 2 {
		t.Fatalf("%d connections counted as refused, want 2", n)
	}
}

func testStartupDoesNotTakeHeldPlaces(t *testing.T, f *securityFixture) {
	srv := f.proxy(t, Config{MaxHeld: 1, MaxStartupConnections: 10})
	session := connectVia(t, srv, "")
	f.router.set(Route{})
	defer f.router.set(Route{Routing: true, Target: targetOf(f.pg)})
	waitFor(t, "the proxy to see no primary", func() bool { return !srv.route.Load().Routing })
	// Unauthenticated connections wait for the primary (to read their verifier)...
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			c, err := pgx.Connect(context.Background(), connString(srv, ""))
			if err == nil {
				c.Close(context.Background())
			}
			errs <- err
		}()
	}
	waitFor(t, "three connections to wait in startup", func() bool { return srv.Stats().StartupConnections == 3 })
	if n := srv.held.Load(); n != 0 {
		t.Fatalf("unauthenticated connections take %d of the held places", n)
	}
	// ...and an authenticated client's request still finds the one held place.
	answered := make(chan error, 1)
	go func() {
		_, err := session.Exec(context.Background(), "SELECT 1")
		answered <- err
	}()
	waitFor(t, "the request to be held", func() bool { return srv.held.Load() == 1 })
	f.router.set(Route{Routing: true, Target: targetOf(f.pg)})
	if err := <-answered; err != nil {
		t.Fatalf("held request: %v", err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("connection that waited in startup: %v", err)
		}
	}
}

// portalClient is a protocol-level client through the proxy, for messages pgx does not send.
type portalClient struct {
	t  *testing.T
	fe *pgproto3.Frontend
}

func newPortalClient(t *testing.T, srv *Server) *portalClient {
	t.Helper()
	conn, err := pgconn.Connect(testContext(t), connString(srv, ""))
	if err != nil {
		t.Fatal(err)
	}
	hijacked, err := conn.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	_ = hijacked.Conn.SetDeadline(time.Now().Add(2 * time.Minute))
	t.Cleanup(func() { hijacked.Conn.Close() })
	return &portalClient{t: t, fe: hijacked.Frontend}
}

// run sends msgs and reads until readies ReadyForQuery messages; it returns the statuses, the
// DataRows and the SQLSTATEs of the errors.
func (c *portalClient) run(readies int, msgs ...pgproto3.FrontendMessage) (statuses string, rows int, codes []string) {
	c.t.Helper()
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		c.t.Fatal(err)
	}
	for len(statuses) < readies {
		msg, err := c.fe.Receive()
		if err != nil {
			c.t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			statuses += string(m.TxStatus)
		case *pgproto3.DataRow:
			rows++
		case *pgproto3.ErrorResponse:
			codes = append(codes, m.Code)
		}
	}
	return statuses, rows, codes
}

func testNamedPortalFlood(t *testing.T, f *securityFixture) {
	srv := f.proxy(t, Config{})
	c := newPortalClient(t, srv)
	parse := &pgproto3.Parse{Query: "SELECT 1"}
	sync := &pgproto3.Sync{}

	// PostgreSQL keys a portal by the first 63 bytes of its name, and so does the proxy.
	long := strings.Repeat("p", 100)
	_, rows, codes := c.run(1, parse, &pgproto3.Bind{DestinationPortal: long + "x"}, &pgproto3.Execute{Portal: long + "y"}, sync)
	if rows != 1 || len(codes) != 0 {
		t.Fatalf("Execute of a name equal in its first 63 bytes: %d rows, errors %v", rows, codes)
	}

	// The flood of the report: Binds of unique 15 kB names (unique in their first bytes too),
	// each portal in its own implicit transaction, pipelined in batches. PostgreSQL forgets
	// each at its Sync; the proxy must too. (An Execute cannot name them: PostgreSQL takes at
	// most 10000 bytes in an Execute.) Half the batches have 20 kB names, which the proxy
	// forwards in pieces.
	const batches, perBatch = 40, 50
	for b := range batches {
		size := 15 << 10
		if b%2 == 1 {
			size = 20 << 10
		}
		var msgs []pgproto3.FrontendMessage
		for i := range perBatch {
			unique := fmt.Sprintf("%06d%s", b*perBatch+i, strings.Repeat("n", size))
			msgs = append(msgs, &pgproto3.Bind{DestinationPortal: unique}, sync)
		}
		statuses, _, codes := c.run(perBatch, msgs...)
		if statuses != strings.Repeat("I", perBatch) || len(codes) != 0 {
			t.Fatalf("batch %d: statuses %q, errors %v", b, statuses, codes)
		}
		// At most the portals of the batch just answered (dropped at the next Bind).
		if n := srv.Stats().NamedPortals; n > perBatch {
			t.Fatalf("after %d portals bound in %d transactions the proxy tracks %d", (b+1)*perBatch, (b+1)*perBatch, n)
		}
	}

	// Inside one transaction, a subtransaction rolled back after an error drops its portals in
	// PostgreSQL; the proxy does not follow that, but its bound holds.
	if statuses, _, _ := c.run(1, &pgproto3.Query{String: "BEGIN"}); statuses != "T" {
		t.Fatalf("BEGIN: %q", statuses)
	}
	for i := range 3 * maxTrackedPortals {
		portal := fmt.Sprintf("sp%d", i)
		statuses, _, codes := c.run(3, &pgproto3.Query{String: "SAVEPOINT s"},
			&pgproto3.Parse{Query: "SELECT 1/0"}, &pgproto3.Bind{DestinationPortal: portal}, &pgproto3.Execute{Portal: portal}, sync,
			&pgproto3.Query{String: "ROLLBACK TO SAVEPOINT s"})
		if statuses != "TET" || len(codes) != 1 || codes[0] != "22012" {
			t.Fatalf("savepoint round %d: statuses %q, errors %v", i, statuses, codes)
		}
		if n := srv.Stats().NamedPortals; n > maxTrackedPortals {
			t.Fatalf("the proxy tracks %d portals in one transaction, more than %d", n, maxTrackedPortals)
		}
	}
	if statuses, _, _ := c.run(1, &pgproto3.Query{String: "COMMIT"}); statuses != "I" {
		t.Fatalf("COMMIT: %q", statuses)
	}
	c.run(1, parse, &pgproto3.Bind{DestinationPortal: "after"}, &pgproto3.Execute{Portal: "after"}, sync)
	if n := srv.Stats().NamedPortals; n != 1 {
		t.Fatalf("after the transaction ended the proxy tracks %d portals, want 1 (the new one)", n)
	}
	c.fe.Send(&pgproto3.Terminate{})
	_ = c.fe.Flush()
	waitFor(t, "the session to end", func() bool { return srv.Stats().ClientConnections == 0 })
	if n := srv.Stats().NamedPortals; n != 0 {
		t.Fatalf("%d portals counted after the session ended", n)
	}
}
