package pgauth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// openBackendSession connects to pg as creds.User and authenticates with
// BackendAuth, as the proxy does for a session's backend connection. It
// returns the frontend once the backend is ReadyForQuery.
func openBackendSession(t *testing.T, pg *testPostgres, creds pgauth.Credentials) (*pgproto3.Frontend, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", pg.addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	frontend := pgproto3.NewFrontend(conn, conn)
	frontend.Send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": creds.User, "database": "postgres"},
	})
	if err := frontend.Flush(); err != nil {
		t.Fatal(err)
	}
	auth := pgauth.NewBackendAuth(creds, nil)
	for {
		msg, err := frontend.Receive()
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		switch msg.(type) {
		case *pgproto3.ReadyForQuery:
			if !auth.Done() {
				return nil, errors.New("ReadyForQuery before AuthenticationOk")
			}
			return frontend, nil
		case *pgproto3.ParameterStatus, *pgproto3.BackendKeyData, *pgproto3.NoticeResponse:
			continue
		}
		reply, err := auth.Handle(msg)
		if err != nil {
			return nil, err
		}
		if reply != nil {
			frontend.Send(reply)
			if err := frontend.Flush(); err != nil {
				return nil, err
			}
		}
	}
}

// sessionUser asks the backend who it thinks we are.
func sessionUser(t *testing.T, frontend *pgproto3.Frontend) string {
	t.Helper()
	frontend.Send(&pgproto3.Query{String: "SELECT pg_catalog.session_user()"})
	if err := frontend.Flush(); err != nil {
		t.Fatal(err)
	}
	var user string
	for {
		msg, err := frontend.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			user = string(m.Values[0])
		case *pgproto3.ErrorResponse:
			t.Fatalf("query failed: %s", m.Message)
		case *pgproto3.ReadyForQuery:
			return user
		}
	}
}

func lookupOn(t *testing.T, conn *pgconn.PgConn, user string) (pgauth.Verifier, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return pgauth.Lookup(ctx, conn, user)
}

func mustLookup(t *testing.T, conn *pgconn.PgConn, user string) pgauth.Verifier {
	t.Helper()
	v, err := lookupOn(t, conn, user)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", user, err)
	}
	return v
}

func TestAgainstRealPostgres(t *testing.T) {
	pg := startPostgres(t, []string{
		"host all postgres 127.0.0.1/32 trust",
		"host all md5_role 127.0.0.1/32 md5",
		"host all scram_behind_md5 127.0.0.1/32 md5",
		"host all all 127.0.0.1/32 scram-sha-256",
	})
	admin := pg.connect(t, "postgres", "")
	precomputed, err := pgauth.NewSCRAMVerifier("precomputed pw", []byte("our own salt 16b"), 5000)
	if err != nil {
		t.Fatal(err)
	}
	const oddRole = `odd'na,me=`
	pg.exec(t, admin, `
		CREATE ROLE scram_role LOGIN PASSWORD 'scram secret';
		SET password_encryption = 'md5';
		CREATE ROLE md5_role LOGIN PASSWORD 'md5 secret';
		CREATE ROLE md5_behind_scram LOGIN PASSWORD 'md5 secret';
		RESET password_encryption;
		CREATE ROLE scram_behind_md5 LOGIN PASSWORD 'other secret';
		CREATE ROLE nologin_role NOLOGIN PASSWORD 'x';
		CREATE ROLE nopassword_role LOGIN;
		CREATE ROLE expired_role LOGIN PASSWORD 'x' VALID UNTIL '2000-01-01';
		CREATE ROLE forever_role LOGIN PASSWORD 'x' VALID UNTIL 'infinity';
		CREATE ROLE "odd'na,me=" LOGIN PASSWORD 'odd secret';
		CREATE ROLE precomputed_role LOGIN PASSWORD '`+precomputed.Text()+`';`)

	t.Run("Lookup", func(t *testing.T) {
		tests := []struct {
			user   string
			want   pgauth.VerifierKind // NoVerifier means ErrNoVerifier expected
			reason string              // for NoVerifier: what the error says
		}{
			{"scram_role", pgauth.SCRAMSHA256, ""},
			{"md5_role", pgauth.MD5, ""},
			{"forever_role", pgauth.SCRAMSHA256, ""},
			{oddRole, pgauth.SCRAMSHA256, ""},
			{"nologin_role", pgauth.NoVerifier, "cannot log in"},
			{"nopassword_role", pgauth.NoVerifier, "no password"},
			{"expired_role", pgauth.NoVerifier, "expired"},
			{"no_such_role", pgauth.NoVerifier, "does not exist"},
			{"scram_role' OR '1'='1", pgauth.NoVerifier, "does not exist"},
			{"SCRAM_ROLE", pgauth.NoVerifier, "does not exist"},
			{"", pgauth.NoVerifier, "not a valid role name"},
			{"a\x00b", pgauth.NoVerifier, "not a valid role name"},
			{"scram_role\xff", pgauth.NoVerifier, "not a valid role name"},
			{"scram_role" + strings.Repeat("x", 100), pgauth.NoVerifier, "does not exist"},
		}
		for _, tt := range tests {
			v, err := lookupOn(t, admin, tt.user)
			if tt.want == pgauth.NoVerifier {
				if !errors.Is(err, pgauth.ErrNoVerifier) || !strings.Contains(err.Error(), tt.reason) {
					t.Errorf("Lookup(%q) = %v, %v; want ErrNoVerifier because %s", tt.user, v, err, tt.reason)
				}
				continue
			}
			if err != nil || v.Kind != tt.want {
				t.Errorf("Lookup(%q) = %v, %v; want kind %v", tt.user, v, err, tt.want)
			}
		}
	})

	t.Run("Lookup ignores search_path and shadow objects", func(t *testing.T) {
		conn := pg.connect(t, "postgres", "")
		pg.exec(t, conn, `
			CREATE SCHEMA shadow;
			CREATE TABLE shadow.pg_authid (rolname name, rolpassword text, rolcanlogin bool, rolvaliduntil timestamptz);
			INSERT INTO shadow.pg_authid VALUES ('scram_role', '`+pgauth.MD5Verifier("scram_role", "evil")+`', true, NULL);
			SET search_path = shadow, pg_catalog;`)
		v := mustLookup(t, conn, "scram_role")
		if v.Kind != pgauth.SCRAMSHA256 {
			t.Fatalf("Lookup read the shadow table: %v", v)
		}
	})

	t.Run("Lookup reports connection problems, not a missing role", func(t *testing.T) {
		conn := pg.connect(t, "postgres", "")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := pgauth.Lookup(ctx, conn, "scram_role")
		if err == nil || errors.Is(err, pgauth.ErrNoVerifier) {
			t.Fatalf("cancelled lookup: err = %v", err)
		}
	})

	t.Run("stored verifiers match the passwords", func(t *testing.T) {
		v := mustLookup(t, admin, "scram_role")
		derived, err := pgauth.NewSCRAMVerifier("scram secret", v.Salt, v.Iterations)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(derived.StoredKey, v.StoredKey) || !bytes.Equal(derived.ServerKey, v.ServerKey) {
			t.Fatal("keys derived from the password differ from PostgreSQL's")
		}
		if got := mustLookup(t, admin, "md5_role"); got.MD5 != pgauth.MD5Verifier("md5_role", "md5 secret") {
			t.Fatal("md5 verifier differs from PostgreSQL's")
		}
		if got := mustLookup(t, admin, "precomputed_role"); got.Text() != precomputed.Text() {
			t.Fatal("PostgreSQL did not store our precomputed verifier as is")
		}
		// PostgreSQL accepts the password for the verifier we computed.
		pg.connect(t, "precomputed_role", "precomputed pw")
	})

	t.Run("SCRAM client to proxy to postgres", func(t *testing.T) {
		for _, role := range []struct{ name, password string }{
			{"scram_role", "scram secret"},
			{oddRole, "odd secret"},
			{"precomputed_role", "precomputed pw"},
			{"scram_behind_md5", "other secret"}, // md5 in pg_hba, but PostgreSQL upgrades to SCRAM
		} {
			v := mustLookup(t, admin, role.name)
			creds, err := runSCRAM(t, pgauth.NewSCRAMServer(role.name, v, nil), role.password)
			if err != nil {
				t.Fatalf("%s: proxy refused the right password: %v", role.name, err)
			}
			frontend, err := openBackendSession(t, pg, creds)
			if err != nil {
				t.Fatalf("%s: backend authentication failed: %v", role.name, err)
			}
			if got := sessionUser(t, frontend); got != role.name {
				t.Fatalf("backend session user = %q, want %q", got, role.name)
			}
		}
	})

	t.Run("libpq client to proxy to postgres", func(t *testing.T) {
		lookupConn := pg.connect(t, "postgres", "")
		lookup := func(user string) (pgauth.Verifier, error) { return lookupOn(t, lookupConn, user) }

		addr, outcome := serveOneClient(t, scramAuthenticator(lookup))
		if out, err := connectWithPsql(t, addr, "scram_role", "scram secret"); err != nil {
			t.Fatalf("psql refused: %v\n%s", err, out)
		}
		o := awaitOutcome(t, outcome)
		if o.err != nil {
			t.Fatal(o.err)
		}
		frontend, err := openBackendSession(t, pg, o.creds)
		if err != nil {
			t.Fatalf("backend authentication with psql's recovered key failed: %v", err)
		}
		if got := sessionUser(t, frontend); got != "scram_role" {
			t.Fatalf("backend session user = %q", got)
		}

		for _, user := range []string{"scram_role", "expired_role", "no_such_role"} {
			addr, outcome = serveOneClient(t, scramAuthenticator(lookup))
			if out, err := connectWithPsql(t, addr, user, "wrong"); err == nil || !strings.Contains(out, "password authentication failed") {
				t.Fatalf("psql as %s with a wrong password: %v\n%s", user, err, out)
			}
			if o := awaitOutcome(t, outcome); !errors.Is(o.err, pgauth.ErrWrongPassword) {
				t.Fatalf("proxy outcome for %s: %v", user, o.err)
			}
		}
	})

	t.Run("wrong password stops at the proxy", func(t *testing.T) {
		v := mustLookup(t, admin, "scram_role")
		if _, err := runSCRAM(t, pgauth.NewSCRAMServer("scram_role", v, nil), "not the secret"); !errors.Is(err, pgauth.ErrWrongPassword) {
			t.Fatalf("err = %v, want ErrWrongPassword", err)
		}
	})

	t.Run("postgres refuses a wrong ClientKey", func(t *testing.T) {
		v := mustLookup(t, admin, "scram_role")
		creds, err := runSCRAM(t, pgauth.NewSCRAMServer("scram_role", v, nil), "scram secret")
		if err != nil {
			t.Fatal(err)
		}
		creds.ClientKey = bytes.Clone(creds.ClientKey)
		creds.ClientKey[0] ^= 1
		_, err = openBackendSession(t, pg, creds)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Fatalf("err = %v, want PostgreSQL's 28P01", err)
		}
	})

	t.Run("postgres signature is checked", func(t *testing.T) {
		v := mustLookup(t, admin, "scram_role")
		creds, err := runSCRAM(t, pgauth.NewSCRAMServer("scram_role", v, nil), "scram secret")
		if err != nil {
			t.Fatal(err)
		}
		// A ServerKey from another verifier: the real server cannot match it,
		// exactly as an impostor could not.
		creds.ServerKey = mustLookup(t, admin, "forever_role").ServerKey
		if _, err := openBackendSession(t, pg, creds); err == nil || !strings.Contains(err.Error(), "server signature") {
			t.Fatalf("err = %v, want a server signature mismatch", err)
		}
	})

	t.Run("MD5 client to proxy to postgres", func(t *testing.T) {
		v := mustLookup(t, admin, "md5_role")
		salt, err := pgauth.MD5Challenge(nil)
		if err != nil {
			t.Fatal(err)
		}
		creds, err := pgauth.VerifyMD5(v, "md5_role", salt, md5ClientResponse("md5_role", "md5 secret", salt))
		if err != nil {
			t.Fatal(err)
		}
		frontend, err := openBackendSession(t, pg, creds)
		if err != nil {
			t.Fatalf("backend md5 authentication failed: %v", err)
		}
		if got := sessionUser(t, frontend); got != "md5_role" {
			t.Fatalf("backend session user = %q", got)
		}

		if _, err := pgauth.VerifyMD5(v, "md5_role", salt, md5ClientResponse("md5_role", "wrong", salt)); !errors.Is(err, pgauth.ErrWrongPassword) {
			t.Fatalf("wrong md5 password: %v", err)
		}
		// An unknown role gets the challenge too and fails only on the answer.
		_, err = lookupOn(t, admin, "no_such_role")
		if !errors.Is(err, pgauth.ErrNoVerifier) {
			t.Fatal(err)
		}
		if _, err := pgauth.VerifyMD5(pgauth.Verifier{}, "no_such_role", salt, md5ClientResponse("no_such_role", "x", salt)); !errors.Is(err, pgauth.ErrWrongPassword) {
			t.Fatalf("unknown role: %v", err)
		}
	})

	t.Run("md5 credentials cannot answer a SCRAM backend", func(t *testing.T) {
		v := mustLookup(t, admin, "md5_behind_scram")
		salt := [4]byte{1, 2, 3, 4}
		creds, err := pgauth.VerifyMD5(v, "md5_behind_scram", salt, md5ClientResponse("md5_behind_scram", "md5 secret", salt))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := openBackendSession(t, pg, creds); err == nil || !strings.Contains(err.Error(), "SCRAM-SHA-256") {
			t.Fatalf("err = %v, want a clear SCRAM/md5 mismatch", err)
		}
	})

	t.Run("a query user without superuser reads verifiers through the documented function", func(t *testing.T) {
		// The SQL operators are told to run (configs/auth-lookup-function.sql), as is.
		sql, err := os.ReadFile(filepath.Join("..", "..", "configs", "auth-lookup-function.sql"))
		if err != nil {
			t.Fatal(err)
		}
		pg.exec(t, admin, "ALTER ROLE pgquorum NOSUPERUSER PASSWORD 'query secret'; CREATE ROLE super_role LOGIN SUPERUSER PASSWORD 'x'")
		pg.exec(t, admin, string(sql))
		query := pg.connect(t, "pgquorum", "query secret")
		ctx := context.Background()
		if _, err := pgauth.Lookup(ctx, query, "scram_role"); err == nil || errors.Is(err, pgauth.ErrNoVerifier) {
			t.Fatalf("the query user reads pg_authid itself: %v", err)
		}
		const function = "pgquorum.get_auth"
		for _, tt := range []struct {
			user string
			want pgauth.VerifierKind
		}{
			{"scram_role", pgauth.SCRAMSHA256},
			{"md5_role", pgauth.MD5},
			{oddRole, pgauth.SCRAMSHA256},
			{"nologin_role", pgauth.NoVerifier},
			{"nopassword_role", pgauth.NoVerifier},
			{"expired_role", pgauth.NoVerifier},
			{"super_role", pgauth.NoVerifier}, // never handed out
			{"no_such_role", pgauth.NoVerifier},
			{"", pgauth.NoVerifier},
		} {
			v, err := pgauth.LookupWithFunction(ctx, query, function, tt.user)
			if tt.want == pgauth.NoVerifier {
				if !errors.Is(err, pgauth.ErrNoVerifier) {
					t.Errorf("%q: %v, %v; want ErrNoVerifier", tt.user, v, err)
				}
				continue
			}
			if err != nil || v.Kind != tt.want {
				t.Errorf("%q: %v, %v; want kind %v", tt.user, v, err, tt.want)
			}
		}
		if got, want := mustLookupWith(t, query, function, "scram_role"), mustLookup(t, admin, "scram_role"); got.Text() != want.Text() {
			t.Error("the function returns another verifier than pg_authid holds")
		}
		// Nobody else may run it.
		other := pg.connect(t, "scram_role", "scram secret")
		if _, err := pgauth.LookupWithFunction(ctx, other, function, "md5_role"); err == nil || errors.Is(err, pgauth.ErrNoVerifier) {
			t.Fatalf("a role without EXECUTE ran the lookup function: %v", err)
		}
		if _, err := pgauth.LookupWithFunction(ctx, query, "get_auth", "scram_role"); err == nil {
			t.Fatal("an unqualified function name was accepted")
		}
	})
}

func mustLookupWith(t *testing.T, conn *pgconn.PgConn, function, user string) pgauth.Verifier {
	t.Helper()
	v, err := pgauth.LookupWithFunction(context.Background(), conn, function, user)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
