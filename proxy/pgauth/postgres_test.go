package pgauth_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// This file starts one throwaway PostgreSQL 15 for a test. It is a minimal
// helper on purpose; the shared cluster harness lives elsewhere.

const postgresBinDir = "/usr/lib/postgresql/15/bin"

// testPostgres is a running throwaway PostgreSQL. The test that started it
// owns it; t.Cleanup stops it.
type testPostgres struct {
	port    int
	dataDir string
	logPath string
}

// requirePostgresBinary returns the path of a PostgreSQL 15 binary, failing
// under CI (CI=true) and skipping elsewhere when it is missing.
func requirePostgresBinary(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(postgresBinDir, name)
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL 15 binary %s is missing (required under CI): %v", path, err)
		}
		t.Skipf("PostgreSQL 15 binary %s is missing: %v", path, err)
	}
	return path
}

// startPostgres initdbs a cluster in a temp dir, writes hbaLines as its
// pg_hba.conf and starts it on a free loopback port. It returns once the
// server accepts connections.
func startPostgres(t *testing.T, hbaLines []string) *testPostgres {
	t.Helper()
	initdb := requirePostgresBinary(t, "initdb")
	postgres := requirePostgresBinary(t, "postgres")
	credential := postgresCredential(t)

	dir := t.TempDir()
	if credential != nil {
		// t.TempDir makes 0700 directories; the postgres user must reach its own.
		for _, d := range []string{filepath.Dir(dir), dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	pg := &testPostgres{dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "postgres.log")}
	socketDir := filepath.Join(dir, "socket")
	for _, d := range []string{pg.dataDir, socketDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		chownForPostgres(t, d, credential)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, initdb, "-D", pg.dataDir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credential}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hbaPath := filepath.Join(pg.dataDir, "pg_hba.conf")
	if err := os.WriteFile(hbaPath, []byte(strings.Join(hbaLines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	chownForPostgres(t, hbaPath, credential)

	// A port picked now may be taken by someone else before PostgreSQL binds
	// it; try a few.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		pg.port = freePort(t)
		lastErr = pg.run(t, postgres, socketDir, credential)
		if lastErr == nil {
			return pg
		}
	}
	t.Fatalf("start postgres: %v", lastErr)
	return nil
}

// run starts the server and waits until it accepts a connection. On success
// a cleanup that stops it is registered.
func (pg *testPostgres) run(t *testing.T, postgres, socketDir string, credential *syscall.Credential) error {
	logFile, err := os.OpenFile(pg.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(postgres, "-D", pg.dataDir, "-p", strconv.Itoa(pg.port), "-k", socketDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "password_encryption=scram-sha-256",
		"-c", "fsync=off",
		"-c", "max_connections=20")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credential}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		// SIGINT is PostgreSQL's fast shutdown; kill if it hangs.
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgconn.Connect(ctx, pg.connString("postgres", ""))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			t.Cleanup(stop)
			return nil
		}
		select {
		case exitErr := <-exited:
			log, _ := os.ReadFile(pg.logPath)
			return fmt.Errorf("postgres exited (%v) on port %d:\n%s", exitErr, pg.port, log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(pg.logPath)
			return fmt.Errorf("postgres did not accept connections within 60s: %v\n%s", err, log)
		}
	}
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

// postgresCredential returns the credential to run PostgreSQL as the
// postgres OS user when we are root, and nil otherwise.
func postgresCredential(t *testing.T) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	account, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root needs a postgres OS user: %v", err)
	}
	uid, errUID := strconv.ParseUint(account.Uid, 10, 32)
	gid, errGID := strconv.ParseUint(account.Gid, 10, 32)
	if err := errors.Join(errUID, errGID); err != nil {
		t.Fatal(err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

func chownForPostgres(t *testing.T, path string, credential *syscall.Credential) {
	t.Helper()
	if credential == nil {
		return
	}
	if err := os.Chown(path, int(credential.Uid), int(credential.Gid)); err != nil {
		t.Fatal(err)
	}
}

// freePort asks the kernel for a free loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
