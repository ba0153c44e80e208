package integration

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy"
)

func (env *proxyEnv) testTLS(t *testing.T) {
	ctx := proxyContext(t)
	for _, extra := range []string{"sslmode=require", "sslmode=require sslnegotiation=direct"} {
		t.Run(extra, func(t *testing.T) {
			connString := strings.Replace(proxyConnString(env.scram, proxySCRAMUser, proxySCRAMPassword, ""), "sslmode=disable", extra, 1)
			conn, err := pgx.Connect(ctx, connString)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, ok := conn.PgConn().Conn().(*tls.Conn); !ok {
				t.Fatalf("connection is %T, not TLS", conn.PgConn().Conn())
			}
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM generate_series(1, 50000)").Scan(&n); err != nil || n != 50000 {
				t.Fatalf("query over TLS: %v %d", err, n)
			}
			// A cancel over TLS (pgx encrypts the cancel connection too).
			go func() {
				time.Sleep(200 * time.Millisecond)
				_ = conn.PgConn().CancelRequest(ctx)
			}()
			_, err = conn.Exec(ctx, "SELECT pg_sleep(30)")
			proxyRequirePgError(t, err, "57014")
		})
	}
	// Without TLS configured the proxy answers SSLRequest with 'N': prefer falls back, require fails.
	conn, err := pgx.Connect(ctx, strings.Replace(proxyConnString(env.md5, proxySCRAMUser, proxySCRAMPassword, ""), "sslmode=disable", "sslmode=prefer", 1))
	if err != nil {
		t.Fatalf("sslmode=prefer against a proxy without TLS: %v", err)
	}
	conn.Close(ctx)
	if _, err := pgx.Connect(ctx, strings.Replace(proxyConnString(env.md5, proxySCRAMUser, proxySCRAMPassword, ""), "sslmode=disable", "sslmode=require", 1)); err == nil {
		t.Fatal("sslmode=require succeeded against a proxy without TLS")
	}
}

func (env *proxyEnv) testAuthentication(t *testing.T) {
	type attempt struct {
		name     string
		srv      *proxy.Server
		user     string
		password string
		wantCode string // "" = success
	}
	attempts := []attempt{
		{"scram proxy, SCRAM user", env.scram, proxySCRAMUser, proxySCRAMPassword, ""},
		{"scram proxy, wrong password", env.scram, proxySCRAMUser, "nope", "28P01"},
		{"scram proxy, unknown user", env.scram, "px_nobody", "nope", "28P01"},
		{"scram proxy, md5 user cannot use SCRAM", env.scram, proxyMD5User, proxyMD5Password, "28P01"},
		{"scram proxy, user without password", env.scram, proxyTrustUser, "x", "28P01"},
		{"md5 proxy, md5 user", env.md5, proxyMD5User, proxyMD5Password, ""},
		{"md5 proxy, md5 user wrong password", env.md5, proxyMD5User, "nope", "28P01"},
		{"md5 proxy, SCRAM user gets SCRAM", env.md5, proxySCRAMUser, proxySCRAMPassword, ""},
		{"md5 proxy, SCRAM user wrong password", env.md5, proxySCRAMUser, "nope", "28P01"},
		{"md5 proxy, unknown user", env.md5, "px_nobody", "nope", "28P01"},
		{"trust proxy, trusted user", env.trust, proxyTrustUser, "", ""},
		{"trust proxy, user the backend wants a password for", env.trust, proxySCRAMUser, "", "28000"},
	}
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			ctx := proxyContext(t)
			conn, err := pgx.Connect(ctx, proxyConnString(a.srv, a.user, a.password, ""))
			if a.wantCode == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close(ctx)
				var user string
				if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != a.user {
					t.Fatalf("current_user = %q, %v", user, err)
				}
				return
			}
			pgErr := proxyRequirePgError(t, err, a.wantCode)
			if a.wantCode == "28P01" && pgErr.Message != `password authentication failed for user "`+a.user+`"` {
				t.Fatalf("message %q is not PostgreSQL's", pgErr.Message)
			}
			if pgErr.Severity != "FATAL" {
				t.Fatalf("severity %s, want FATAL", pgErr.Severity)
			}
		})
	}
}

// proxyStartupPacket builds a StartupMessage for protocol 3.minor.
func proxyStartupPacket(minor uint16, kv ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, 0)
	b = binary.BigEndian.AppendUint32(b, 3<<16|uint32(minor))
	for _, s := range kv {
		b = append(append(b, s...), 0)
	}
	b = append(b, 0)
	binary.BigEndian.PutUint32(b, uint32(len(b)))
	return b
}

// proxyDial opens a raw TCP connection to srv for hand-built protocol bytes.
func proxyDial(t *testing.T, srv *proxy.Server) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", srv.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(proxyStepTimeout))
	t.Cleanup(func() { conn.Close() })
	return conn
}

// proxyReceiveUntilReady reads backend messages until ReadyForQuery and returns them (copied).
func proxyReceiveUntilReady(t *testing.T, fe *pgproto3.Frontend) []pgproto3.BackendMessage {
	t.Helper()
	var msgs []pgproto3.BackendMessage
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("receive: %v (after %d messages)", err, len(msgs))
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("error from the proxy: %s %s", m.Code, m.Message)
		case *pgproto3.BackendKeyData:
			msgs = append(msgs, &pgproto3.BackendKeyData{ProcessID: m.ProcessID, SecretKey: bytes.Clone(m.SecretKey)})
		case *pgproto3.NegotiateProtocolVersion:
			msgs = append(msgs, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: m.NewestMinorProtocol,
				UnrecognizedOptions: append([]string(nil), m.UnrecognizedOptions...)})
		case *pgproto3.DataRow:
			msgs = append(msgs, &pgproto3.DataRow{Values: [][]byte{bytes.Clone(m.Values[0])}})
		case *pgproto3.ReadyForQuery:
			return append(msgs, &pgproto3.ReadyForQuery{TxStatus: m.TxStatus})
		default:
			msgs = append(msgs, msg)
		}
	}
}

// proxyFindKey returns the BackendKeyData among msgs, or nil.
func proxyFindKey(msgs []pgproto3.BackendMessage) *pgproto3.BackendKeyData {
	for _, m := range msgs {
		if k, ok := m.(*pgproto3.BackendKeyData); ok {
			return k
		}
	}
	return nil
}

// proxyRawQuery runs SELECT 40 + 2 with the simple protocol on a hand-driven connection.
func proxyRawQuery(t *testing.T, conn net.Conn, fe *pgproto3.Frontend) {
	t.Helper()
	if _, err := conn.Write(append(proxyAppendMessage(nil, 'Q', []byte("SELECT 40 + 2\x00")), 'X', 0, 0, 0, 4)); err != nil {
		t.Fatal(err)
	}
	msgs := proxyReceiveUntilReady(t, fe)
	found := false
	for _, m := range msgs {
		if d, ok := m.(*pgproto3.DataRow); ok && string(d.Values[0]) == "42" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no DataRow 42 in %v", msgs)
	}
}

// proxyAppendMessage appends a typed protocol message to dst.
func proxyAppendMessage(dst []byte, typ byte, body []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(4+len(body)))
	return append(dst, body...)
}

func (env *proxyEnv) testProtocol32(t *testing.T) {
	conn := proxyDial(t, env.trust)
	if _, err := conn.Write(proxyStartupPacket(2, "user", proxyTrustUser, "database", "postgres", "application_name", "px-32")); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	msgs := proxyReceiveUntilReady(t, fe)
	// The primary is PostgreSQL 15, which speaks 3.0: the proxy answers as it does, with
	// NegotiateProtocolVersion 3.0 first and a 4-byte key (a PostgreSQL 18 primary gets 3.2
	// and a 32-byte key: proxy.TestProtocol32CancelKeyEndToEnd).
	nego, ok := msgs[0].(*pgproto3.NegotiateProtocolVersion)
	if !ok || nego.NewestMinorProtocol != 3<<16 || len(nego.UnrecognizedOptions) != 0 {
		t.Fatalf("first message %#v, want NegotiateProtocolVersion 3.0 as PostgreSQL 15 sends", msgs[0])
	}
	if key := proxyFindKey(msgs); key == nil || len(key.SecretKey) != 4 {
		t.Fatalf("BackendKeyData for protocol 3.2 negotiated down to 3.0: %+v", key)
	}
	proxyRawQuery(t, conn, fe)
}

func (env *proxyEnv) testNegotiateProtocolVersion(t *testing.T) {
	conn := proxyDial(t, env.trust)
	if _, err := conn.Write(proxyStartupPacket(7, "user", proxyTrustUser, "_pq_.px_option", "on", "database", "postgres")); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	msgs := proxyReceiveUntilReady(t, fe)
	nego, ok := msgs[0].(*pgproto3.NegotiateProtocolVersion)
	if !ok {
		t.Fatalf("first message %T, want NegotiateProtocolVersion", msgs[0])
	}
	if nego.NewestMinorProtocol != 3<<16 || len(nego.UnrecognizedOptions) != 1 || nego.UnrecognizedOptions[0] != "_pq_.px_option" {
		t.Fatalf("NegotiateProtocolVersion %+v, want 3.0 (PostgreSQL 15's newest) and the option", nego)
	}
	if key := proxyFindKey(msgs); key == nil || len(key.SecretKey) != 4 {
		t.Fatalf("BackendKeyData after negotiating down to 3.0: %+v", key)
	}
	proxyRawQuery(t, conn, fe)
}

func (env *proxyEnv) testGSSENCRequest(t *testing.T) {
	conn := proxyDial(t, env.trust)
	if _, err := conn.Write([]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30}); err != nil {
		t.Fatal(err)
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(conn, answer); err != nil || answer[0] != 'N' {
		t.Fatalf("GSSENCRequest answer %q, %v", answer, err)
	}
	if _, err := conn.Write(proxyStartupPacket(0, "user", proxyTrustUser, "database", "postgres")); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(conn, conn)
	if key := proxyFindKey(proxyReceiveUntilReady(t, fe)); key == nil || len(key.SecretKey) != 4 {
		t.Fatalf("BackendKeyData for protocol 3.0: %+v", key)
	}
	proxyRawQuery(t, conn, fe)
}

// proxyRequireFatalAndClose reads what the proxy sends back on conn and requires one FATAL
// ErrorResponse with the given SQLSTATE and message part, followed by the close.
func proxyRequireFatalAndClose(t *testing.T, conn net.Conn, code, messagePart string) {
	t.Helper()
	data, err := io.ReadAll(conn)
	if err != nil && len(data) == 0 {
		t.Fatalf("read: %v", err)
	}
	if len(data) < 5 || data[0] != 'E' || int(binary.BigEndian.Uint32(data[1:]))+1 != len(data) {
		t.Fatalf("got %q, want exactly one ErrorResponse then the close", data)
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(data[5:]); err != nil {
		t.Fatal(err)
	}
	if e.Severity != "FATAL" || e.Code != code || !strings.Contains(e.Message, messagePart) {
		t.Fatalf("got %s %s %q, want FATAL %s containing %q", e.Severity, e.Code, e.Message, code, messagePart)
	}
}

func (env *proxyEnv) testBadInput(t *testing.T) {
	sslRequest := []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}
	tests := []struct {
		name        string
		srv         *proxy.Server
		input       []byte
		code        string
		messagePart string
	}{
		{"oversized length", env.scram, []byte{0, 0x10, 0, 0, 0, 3, 0, 0}, "08P01", "invalid length of startup packet"},
		{"negative length", env.scram, []byte{0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0}, "08P01", "invalid length of startup packet"},
		{"HTTP request", env.scram, []byte("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"), "08P01", "invalid length of startup packet"},
		{"garbage protocol code", env.scram, []byte{0, 0, 0, 12, 0xde, 0xad, 0xbe, 0xef, 'u', 0, 0, 0}, "0A000", "unsupported frontend protocol"},
		{"malformed parameters", env.scram, []byte{0, 0, 0, 13, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0}, "08P01", "invalid startup packet layout"},
		{"no user", env.scram, proxyStartupPacket(0, "database", "postgres"), "28000", "no PostgreSQL user name"},
		{"bytes after SSLRequest (TLS proxy)", env.scram, append(bytes.Clone(sslRequest), proxyStartupPacket(0, "user", "x")...), "08P01", "received unencrypted data after SSL request"},
		{"bytes after SSLRequest (no TLS)", env.md5, append(bytes.Clone(sslRequest), proxyStartupPacket(0, "user", "x")...), "08P01", "received unencrypted data after SSL request"},
		{"wrong message instead of password", env.scram, append(proxyStartupPacket(0, "user", proxySCRAMUser), 'Q', 0, 0, 0, 5, 0), "08P01", "expected password response"},
		{"oversized password message", env.scram, append(proxyStartupPacket(0, "user", proxySCRAMUser), 'p', 0x7f, 0, 0, 0), "08P01", "invalid message length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := proxyDial(t, tt.srv)
			if _, err := conn.Write(tt.input); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(tt.name, "password") {
				// Skip the authentication request the proxy sends first.
				header := make([]byte, 5)
				if _, err := io.ReadFull(conn, header); err != nil || header[0] != 'R' {
					t.Fatalf("expected an authentication request: %q %v", header, err)
				}
				if _, err := io.CopyN(io.Discard, conn, int64(binary.BigEndian.Uint32(header[1:])-4)); err != nil {
					t.Fatal(err)
				}
			}
			proxyRequireFatalAndClose(t, conn, tt.code, tt.messagePart)
			proxyRequireWorks(t, tt.srv)
		})
	}

	t.Run("client that never finishes authentication", func(t *testing.T) {
		conn := proxyDial(t, env.slow)
		if _, err := conn.Write(proxyStartupPacket(0, "user", proxySCRAMUser, "database", "postgres")); err != nil {
			t.Fatal(err)
		}
		fe := pgproto3.NewFrontend(conn, conn)
		msg, err := fe.Receive()
		if _, ok := msg.(*pgproto3.AuthenticationSASL); !ok || err != nil {
			t.Fatalf("first answer %T, %v; want AuthenticationSASL", msg, err)
		}
		start := time.Now()
		proxyRequireFatalAndClose(t, conn, "08P01", "canceling authentication due to timeout")
		if elapsed := time.Since(start); elapsed > 5*time.Second {
			t.Fatalf("timed out after %s, StartupTimeout is 500ms", elapsed)
		}
		proxyRequireWorks(t, env.slow)
	})

	t.Run("client that sends nothing", func(t *testing.T) {
		conn := proxyDial(t, env.slow)
		proxyRequireFatalAndClose(t, conn, "08P01", "timeout")
		proxyRequireWorks(t, env.slow)
	})
}

func (env *proxyEnv) testPsql(t *testing.T) {
	psql := RequireTool(t, "psql")
	ctx := proxyContext(t)
	dir := t.TempDir()
	run := func(srv *proxy.Server, sslmode, password string, commands ...string) (string, error) {
		args := []string{"-X", "-v", "ON_ERROR_STOP=1", "-At", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort(srv)),
			"-U", proxySCRAMUser, "-d", "postgres"}
		for _, c := range commands {
			args = append(args, "-c", c)
		}
		cmd := exec.CommandContext(ctx, psql, args...)
		cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGSSLMODE="+sslmode, "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	in := filepath.Join(dir, "in.csv")
	outFile := filepath.Join(dir, "out.csv")
	var csv strings.Builder
	for i := range 1000 {
		csv.WriteString(strconv.Itoa(i) + ",row " + strconv.Itoa(i) + "\n")
	}
	if err := os.WriteFile(in, []byte(csv.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(env.scram, "disable", proxySCRAMPassword,
		"CREATE TABLE px_psql (id int, label text)",
		`\copy px_psql FROM '`+in+`' WITH (FORMAT csv)`,
		`\copy (SELECT * FROM px_psql ORDER BY id) TO '`+outFile+`' WITH (FORMAT csv)`,
		"SELECT count(*), sum(id) FROM px_psql",
		"SELECT 1; SELECT 2")
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	if !strings.Contains(out, "1000|499500") {
		t.Fatalf("psql output:\n%s", out)
	}
	copied, err := os.ReadFile(outFile)
	if err != nil || string(copied) != csv.String() {
		t.Fatalf("\\copy out differs from \\copy in (%v)", err)
	}
	// psql over TLS.
	out, err = run(env.scram, "require", proxySCRAMPassword, "SELECT 'tls ok'")
	if err != nil || !strings.Contains(out, "tls ok") {
		t.Fatalf("psql over TLS: %v\n%s", err, out)
	}
	// A wrong password: psql fails with PostgreSQL's message.
	out, err = run(env.scram, "disable", "wrong", "SELECT 1")
	if err == nil || !strings.Contains(out, `password authentication failed for user "`+proxySCRAMUser+`"`) {
		t.Fatalf("psql with a wrong password: %v\n%s", err, out)
	}
	// An error with ON_ERROR_STOP: psql shows the server's error and fails.
	out, err = run(env.scram, "disable", proxySCRAMPassword, "SELECT 1/0")
	if err == nil || !strings.Contains(out, "division by zero") {
		t.Fatalf("psql error: %v\n%s", err, out)
	}
	_ = pgconn.PgError{}
}
