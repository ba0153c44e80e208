package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgquorum/pgquorum/testenv"
)

// Idle client sessions of three kinds (pgx, psql, psycopg2) that set session state, stay idle
// across a failover, then check that their next query runs on the new primary with the same
// settings and prepared statements.

// idleClient is one idle session under test.
type idleClient interface {
	// Check runs the session's next queries and fails the test unless they succeed on the
	// server at wantPort with the session's state intact.
	Check(ctx context.Context, t *testing.T, wantPort int)
	Name() string
}

// pgxIdle is a pgx session with settings, a named prepared statement and a cached one.
type pgxIdle struct {
	n    int
	conn *pgx.Conn
}

func openPgxIdle(ctx context.Context, t *testing.T, p *ProxyProcess, n int) *pgxIdle {
	t.Helper()
	conn, err := pgx.Connect(ctx, p.ConnString())
	if err != nil {
		t.Fatalf("pgx session %d: %v", n, err)
	}
	t.Cleanup(func() { closeConn(conn) })
	for _, sql := range []string{
		fmt.Sprintf("SET application_name = 'idle-%d'", n),
		"SET search_path TO pg_catalog, public",
		fmt.Sprintf("SET hr.tag = 'pgx-%d'", n),
		"SET statement_timeout = '50s'",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("pgx session %d: %s: %v", n, sql, err)
		}
	}
	if _, err := conn.Prepare(ctx, "double", "SELECT $1::int * 2"); err != nil {
		t.Fatalf("pgx session %d: prepare: %v", n, err)
	}
	var v int
	if err := conn.QueryRow(ctx, "SELECT $1::int + 1000", n).Scan(&v); err != nil || v != n+1000 {
		t.Fatalf("pgx session %d: cached statement: %d, %v", n, v, err)
	}
	return &pgxIdle{n: n, conn: conn}
}

func (c *pgxIdle) Name() string { return fmt.Sprintf("pgx session %d", c.n) }

func (c *pgxIdle) Check(ctx context.Context, t *testing.T, wantPort int) {
	var port int
	var app, tag, path, timeout string
	err := c.conn.QueryRow(ctx, `SELECT inet_server_port(), current_setting('application_name'), current_setting('hr.tag'),
		current_setting('search_path'), current_setting('statement_timeout')`).Scan(&port, &app, &tag, &path, &timeout)
	if err != nil {
		t.Errorf("%s: first query after the failover: %v", c.Name(), err)
		return
	}
	if port != wantPort || app != fmt.Sprintf("idle-%d", c.n) || tag != fmt.Sprintf("pgx-%d", c.n) ||
		path != "pg_catalog, public" || timeout != "50s" {
		t.Errorf("%s after the failover: port %d application_name %q hr.tag %q search_path %q statement_timeout %q",
			c.Name(), port, app, tag, path, timeout)
	}
	var doubled, cached int
	if err := c.conn.QueryRow(ctx, "double", c.n).Scan(&doubled); err != nil || doubled != 2*c.n {
		t.Errorf("%s: named prepared statement after the failover: %d, %v", c.Name(), doubled, err)
	}
	if err := c.conn.QueryRow(ctx, "SELECT $1::int + 1000", c.n).Scan(&cached); err != nil || cached != c.n+1000 {
		t.Errorf("%s: cached statement after the failover: %d, %v", c.Name(), cached, err)
	}
}

// processIdle is a psql or psycopg2 process driven over stdin/stdout, one line per answer.
type processIdle struct {
	name   string
	tag    string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *bytes.Buffer
	check  string // what to send to check (ends the process)
	// want returns the answer lines expected for wantPort.
	want func(wantPort int) []string
}

// openPsqlIdle starts psql with settings and a SQL prepared statement, idle until Check.
func openPsqlIdle(ctx context.Context, t *testing.T, psql string, p *ProxyProcess, n int) *processIdle {
	t.Helper()
	tag := fmt.Sprintf("psql-%d", n)
	c := startIdleProcess(ctx, t, fmt.Sprintf("psql session %d", n), tag,
		exec.Command(psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", p.ConnString()),
		fmt.Sprintf("SET hr.tag = '%s';\nPREPARE triple(int) AS SELECT $1 * 3;\nSELECT 'ready';\n", tag))
	c.check = "SELECT current_setting('hr.tag') || ' ' || inet_server_port();\nEXECUTE triple(7);\n\\q\n"
	c.want = func(port int) []string { return []string{fmt.Sprintf("%s %d", tag, port), "21"} }
	return c
}

// psycopg2Script is the psycopg2 client: it sets state, says "ready", waits for a line on
// stdin, then prints what the checks read.
const psycopg2Script = `
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1])
conn.autocommit = True
cur = conn.cursor()
cur.execute("SET hr.tag = %s", (sys.argv[2],))
cur.execute("PREPARE quad(int) AS SELECT $1 * 4")
print("ready", flush=True)
sys.stdin.readline()
cur.execute("SELECT current_setting('hr.tag'), inet_server_port()")
tag, port = cur.fetchone()
cur.execute("EXECUTE quad(5)")
print(f"{tag} {port}", flush=True)
print(cur.fetchone()[0], flush=True)
`

// openPsycopg2Idle starts a Python psycopg2 session, idle until Check.
func openPsycopg2Idle(ctx context.Context, t *testing.T, python, script string, p *ProxyProcess, n int) *processIdle {
	t.Helper()
	tag := fmt.Sprintf("psycopg2-%d", n)
	c := startIdleProcess(ctx, t, fmt.Sprintf("psycopg2 session %d", n), tag,
		exec.Command(python, script, p.ConnString(), tag), "")
	c.check = "go\n"
	c.want = func(port int) []string { return []string{fmt.Sprintf("%s %d", tag, port), "20"} }
	return c
}

// requirePsycopg2 returns a Python interpreter that has the psycopg2 module (Debian's
// python3-psycopg2 belongs to /usr/bin/python3, which may not be the python3 on PATH) and the
// path of the client script. It fails (CI) or skips when there is none.
func requirePsycopg2(t *testing.T) (python, script string) {
	t.Helper()
	candidates := []string{"/usr/bin/python3"}
	if path, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, path)
	}
	var failures []string
	for _, candidate := range candidates {
		out, err := exec.Command(candidate, "-c", "import psycopg2").CombinedOutput()
		if err == nil {
			python = candidate
			break
		}
		failures = append(failures, fmt.Sprintf("%s: %v: %s", candidate, err, bytes.TrimSpace(out)))
	}
	if python == "" {
		testenv.Missing(t, "no python3 with the psycopg2 module (Debian: python3-psycopg2): %s", strings.Join(failures, "; "))
	}
	script = filepath.Join(t.TempDir(), "idle_client.py")
	if err := os.WriteFile(script, []byte(psycopg2Script), 0o644); err != nil {
		t.Fatal(err)
	}
	return python, script
}

// startIdleProcess starts cmd, sends setup, and waits for its "ready" line.
func startIdleProcess(ctx context.Context, t *testing.T, name, tag string, cmd *exec.Cmd, setup string) *processIdle {
	t.Helper()
	c := &processIdle{name: name, tag: tag, cmd: cmd, lines: make(chan string, 16), stderr: &bytes.Buffer{}}
	cmd.Stderr = c.stderr
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- strings.TrimSpace(sc.Text())
		}
	}()
	if setup != "" {
		if _, err := io.WriteString(c.stdin, setup); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if line, ok := c.next(ctx); !ok || line != "ready" {
		t.Fatalf("%s: got %q instead of ready; stderr: %s", name, line, c.stderr.String())
	}
	return c
}

// next returns the next output line, or false at the end of output or ctx.
func (c *processIdle) next(ctx context.Context) (string, bool) {
	select {
	case line, ok := <-c.lines:
		return line, ok
	case <-ctx.Done():
		return "", false
	}
}

func (c *processIdle) Name() string { return c.name }

func (c *processIdle) Check(ctx context.Context, t *testing.T, wantPort int) {
	if _, err := io.WriteString(c.stdin, c.check); err != nil {
		t.Errorf("%s: %v", c.name, err)
		return
	}
	for _, want := range c.want(wantPort) {
		got, ok := c.next(ctx)
		if !ok || got != want {
			t.Errorf("%s after the failover: got %q, want %q; stderr: %s", c.name, got, want, c.stderr.String())
			return
		}
	}
	_ = c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil || c.stderr.Len() > 0 {
			t.Errorf("%s exited with %v; stderr: %s", c.name, err, c.stderr.String())
		}
	case <-ctx.Done():
		t.Errorf("%s did not exit", c.name)
	}
}

// residentMemory returns the resident set size of process pid in bytes (Linux).
func residentMemory(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// pid returns the process id of p.
