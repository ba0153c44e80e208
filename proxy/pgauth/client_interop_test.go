package pgauth_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
	"github.com/pgquorum/pgquorum/testenv"
)

// These tests point real client libraries at the package's server side:
// pgx's pgconn and libpq (through psql), each knowing only the password.

// connectWithPgx connects pgconn to addr and reports the error, if any.
func connectWithPgx(t *testing.T, addr, user, password string) error {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s password='%s' dbname=x sslmode=disable", host, port, user, password))
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// connectWithPsql runs libpq's psql against addr and returns its output and error.
func connectWithPsql(t *testing.T, addr, user, password string) (string, error) {
	t.Helper()
	psql := filepath.Join(testenv.RequirePostgres(t, ""), "psql")
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, "-X", "-w", "-c", `\q`,
		fmt.Sprintf("host=%s port=%s user=%s dbname=x sslmode=disable connect_timeout=10", host, port, user))
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCHANNELBINDING=prefer")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestRealClientsAuthenticateWithSCRAM(t *testing.T) {
	v := testVerifier(t, "correct horse")
	clients := map[string]func(t *testing.T, addr, user, password string) error{
		"pgx": connectWithPgx,
		"libpq": func(t *testing.T, addr, user, password string) error {
			out, err := connectWithPsql(t, addr, user, password)
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		},
	}
	for name, connect := range clients {
		t.Run(name, func(t *testing.T) {
			addr, outcome := serveOneClient(t, scramAuthenticator(staticLookup("alice", v)))
			if err := connect(t, addr, "alice", "correct horse"); err != nil {
				t.Fatalf("client with the right password was refused: %v", err)
			}
			o := awaitOutcome(t, outcome)
			if o.err != nil || o.creds.Method != pgauth.MethodSCRAMSHA256 || len(o.creds.ClientKey) != 32 {
				t.Fatalf("server outcome: %v, %v", o.creds, o.err)
			}

			addr, outcome = serveOneClient(t, scramAuthenticator(staticLookup("alice", v)))
			wrongErr := connect(t, addr, "alice", "wrong horse")
			if wrongErr == nil {
				t.Fatal("client with a wrong password was accepted")
			}
			if o := awaitOutcome(t, outcome); !errors.Is(o.err, pgauth.ErrWrongPassword) {
				t.Fatalf("server outcome for wrong password: %v", o.err)
			}

			addr, outcome = serveOneClient(t, scramAuthenticator(staticLookup("alice", v)))
			unknownErr := connect(t, addr, "mallory", "wrong horse")
			if unknownErr == nil {
				t.Fatal("unknown role was accepted")
			}
			if o := awaitOutcome(t, outcome); !errors.Is(o.err, pgauth.ErrWrongPassword) {
				t.Fatalf("server outcome for unknown role: %v", o.err)
			}
			// The client cannot tell an unknown role from a wrong password.
			fromFatal := func(err error) string {
				text := strings.ReplaceAll(err.Error(), "mallory", "alice")
				if i := strings.Index(text, "FATAL"); i >= 0 {
					return text[i:]
				}
				return text
			}
			if fromFatal(unknownErr) != fromFatal(wrongErr) {
				t.Fatalf("unknown role error %q differs from wrong password error %q", unknownErr, wrongErr)
			}
		})
	}
}

func TestRealClientsAuthenticateWithMD5(t *testing.T) {
	v, err := pgauth.ParseVerifier(pgauth.MD5Verifier("bob", "battery staple"))
	if err != nil {
		t.Fatal(err)
	}
	addr, outcome := serveOneClient(t, md5Authenticator(staticLookup("bob", v)))
	if err := connectWithPgx(t, addr, "bob", "battery staple"); err != nil {
		t.Fatalf("pgx with the right password was refused: %v", err)
	}
	if o := awaitOutcome(t, outcome); o.err != nil || o.creds.MD5 != v.MD5 {
		t.Fatalf("server outcome: %v, %v", o.creds, o.err)
	}

	addr, outcome = serveOneClient(t, md5Authenticator(staticLookup("bob", v)))
	if out, err := connectWithPsql(t, addr, "bob", "battery staple"); err != nil {
		t.Fatalf("psql with the right password was refused: %v\n%s", err, out)
	}
	if o := awaitOutcome(t, outcome); o.err != nil {
		t.Fatalf("server outcome: %v", o.err)
	}

	for _, user := range []string{"bob", "nobody"} {
		addr, outcome = serveOneClient(t, md5Authenticator(staticLookup("bob", v)))
		if out, err := connectWithPsql(t, addr, user, "wrong"); err == nil {
			t.Fatalf("psql as %s with a wrong password was accepted: %s", user, out)
		}
		if o := awaitOutcome(t, outcome); !errors.Is(o.err, pgauth.ErrWrongPassword) {
			t.Fatalf("server outcome for %s: %v", user, o.err)
		}
	}
}
