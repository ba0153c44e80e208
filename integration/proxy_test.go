package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/proxy"
)

// Roles the proxy tests create, one per way of authenticating.
const (
	proxySCRAMUser     = "px_scram" // SCRAM-SHA-256 verifier
	proxySCRAMPassword = "scram-pw"
	proxyMD5User       = "px_md5" // md5 verifier
	proxyMD5Password   = "md5-pw"
	proxyTrustUser     = "px_trust" // no password; trusted by the backend's pg_hba.conf
)

// proxyStepTimeout bounds each step of the proxy tests.
const proxyStepTimeout = 30 * time.Second

// proxyEnv is one PostgreSQL primary and several proxies in front of it, shared by the subtests
// of TestProxy (one cluster per test binary run keeps the test time low).
type proxyEnv struct {
	cluster *localcluster.Cluster
	primary *localcluster.Node
	router  *proxyStaticRouter

	scram *proxy.Server // scram-sha-256, TLS enabled
	md5   *proxy.Server // md5, no TLS
	trust *proxy.Server // trust
	slow  *proxy.Server // scram-sha-256 with a 500 ms startup timeout
}

// proxyStaticRouter always routes to the same primary (its route never changes).
type proxyStaticRouter struct{ target proxy.Target }

func (r *proxyStaticRouter) Route() (proxy.Route, <-chan struct{}) {
	return proxy.Route{Routing: true, Target: r.target}, nil
}
func (r *proxyStaticRouter) BackendFailed(proxy.Target) {}

func TestProxy(t *testing.T) {
	env := startProxyEnv(t)

	t.Run("SimpleAndExtendedProtocol", env.testSimpleAndExtendedProtocol)
	t.Run("Pipelines", env.testPipelines)
	t.Run("CopyInAndOut", env.testCopy)
	t.Run("ListenNotifyAcrossSessions", env.testListenNotify)
	t.Run("Notices", env.testNotices)
	t.Run("ErrorFieldsMatchDirectConnection", env.testErrorFields)
	t.Run("CancelRequest", env.testCancel)
	t.Run("LibpqClientsAsDirectly", env.testLibpqClients)
	t.Run("LargeResultStreams", env.testLargeResult)
	t.Run("BinaryFormat", env.testBinaryFormat)
	t.Run("TLS", env.testTLS)
	t.Run("Authentication", env.testAuthentication)
	t.Run("StartupParametersReachBackend", env.testStartupParameters)
	t.Run("ReplicationRefused", env.testReplicationRefused)
	t.Run("Protocol32", env.testProtocol32)
	t.Run("NegotiateProtocolVersion", env.testNegotiateProtocolVersion)
	t.Run("GSSENCRequestAnsweredN", env.testGSSENCRequest)
	t.Run("BadInput", env.testBadInput)
	t.Run("Psql", env.testPsql)
	t.Run("ShutdownDrainsIdleSession", env.testShutdown)
	t.Run("Stats", env.testStats)
}

func startProxyEnv(t *testing.T) *proxyEnv {
	t.Helper()
	c := StartCluster(t, localcluster.Options{
		Names:    []string{"pg1"},
		ExtraHBA: []string{fmt.Sprintf("host all %s 127.0.0.1/32 trust", proxyTrustUser)},
	})
	env := &proxyEnv{cluster: c, primary: c.Nodes[0]}
	env.router = &proxyStaticRouter{target: proxy.Target{Name: env.primary.Name, Address: env.primary.Address()}}
	ctx := proxyContext(t)
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", proxySCRAMUser, proxySCRAMPassword),
		fmt.Sprintf("SET password_encryption = 'md5'; CREATE ROLE %s LOGIN PASSWORD '%s'", proxyMD5User, proxyMD5Password),
		fmt.Sprintf("CREATE ROLE %s LOGIN", proxyTrustUser),
		fmt.Sprintf("GRANT ALL ON SCHEMA public TO %s, %s, %s", proxySCRAMUser, proxyMD5User, proxyTrustUser),
		fmt.Sprintf("CREATE SCHEMA px_schema AUTHORIZATION %s", proxySCRAMUser),
	} {
		if err := env.primary.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	env.scram = env.startProxy(t, proxy.Config{AuthMethod: proxy.AuthSCRAMSHA256, TLS: proxySelfSignedTLS(t)})
	env.md5 = env.startProxy(t, proxy.Config{AuthMethod: proxy.AuthMD5})
	env.trust = env.startProxy(t, proxy.Config{AuthMethod: proxy.AuthTrust})
	env.slow = env.startProxy(t, proxy.Config{AuthMethod: proxy.AuthSCRAMSHA256, StartupTimeout: 500 * time.Millisecond})
	return env
}

// startProxy starts a proxy in front of the primary; cfg's zero fields get test defaults. It is
// shut down when the test ends.
func (env *proxyEnv) startProxy(t *testing.T, cfg proxy.Config) *proxy.Server {
	t.Helper()
	cfg.NodeID = 7
	cfg.ListenAddr = "127.0.0.1:0"
	cfg.Router = env.router
	cfg.QueryUser = localcluster.QueryUser
	cfg.QueryPassword = localcluster.QueryPassword
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = 10 * time.Second
	}
	srv, err := proxy.NewServer(cfg)
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
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("proxy shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv
}

func proxyContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), proxyStepTimeout)
	t.Cleanup(cancel)
	return ctx
}

func proxyPort(srv *proxy.Server) int {
	return srv.Addr().(*net.TCPAddr).Port
}

// proxyConnString is a libpq connection string to srv. extra is appended as is.
func proxyConnString(srv *proxy.Server, user, password, extra string) string {
	s := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=disable connect_timeout=10", proxyPort(srv), user)
	if password != "" {
		s += " password=" + password
	}
	if extra != "" {
		s += " " + extra
	}
	return s
}

// proxyConnect opens a pgx connection through srv as the SCRAM user (or user/password when given).
func proxyConnect(t *testing.T, ctx context.Context, srv *proxy.Server, extra string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, proxyConnString(srv, proxySCRAMUser, proxySCRAMPassword, extra))
	if err != nil {
		t.Fatalf("connect through the proxy: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// connectDirect opens a pgx connection to the primary as the SCRAM user, bypassing the proxy.
func (env *proxyEnv) connectDirect(t *testing.T, ctx context.Context) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, env.primary.ConnString(proxySCRAMUser, proxySCRAMPassword, "postgres"))
	if err != nil {
		t.Fatalf("connect to the primary: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// proxyRequireWorks proves srv still serves clients: a fresh connection runs a query.
func proxyRequireWorks(t *testing.T, srv *proxy.Server) {
	t.Helper()
	ctx := proxyContext(t)
	conn, err := pgx.Connect(ctx, proxyConnString(srv, proxySCRAMUser, proxySCRAMPassword, ""))
	if err != nil {
		t.Fatalf("proxy no longer serves: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT 41 + 1").Scan(&n); err != nil || n != 42 {
		t.Fatalf("query after bad input: %v, %d", err, n)
	}
}

// proxyRequirePgError requires err to be a *pgconn.PgError with the given SQLSTATE and returns it.
func proxyRequirePgError(t *testing.T, err error, code string) *pgconn.PgError {
	t.Helper()
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		t.Fatalf("got error %v (%T), want PostgreSQL error %s", err, err, code)
	}
	if pgErr.Code != code {
		t.Fatalf("got %s %s %q, want SQLSTATE %s", pgErr.Severity, pgErr.Code, pgErr.Message, code)
	}
	return pgErr
}

// proxySelfSignedTLS returns a server TLS config with a fresh self-signed certificate for 127.0.0.1.
func proxySelfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgquorum test proxy"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	}
}
