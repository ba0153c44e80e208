// Package integration holds pgquorum's end-to-end tests against real PostgreSQL 15, and the
// harness they share (this file). The harness must not hide failures: with CI=true a missing
// PostgreSQL or tool fails the test, it never skips.
//
// A test gets a running quorum cluster (pg1 primary, pg2 and pg3 standbys, 'ANY 1 (pg2, pg3)')
// in a fresh temporary directory, stopped again when the test ends:
//
//	func TestSomething(t *testing.T) {
//		c := integration.StartCluster(t, localcluster.Options{})
//		ctx := t.Context()
//		primary := c.Nodes[0]
//		if err := primary.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
//			t.Fatal(err)
//		}
//		if err := c.Node("pg2").Freeze(); err != nil { // also Thaw, Kill, Start, Stop, Promote
//			t.Fatal(err)
//		}
//	}
//
// pgbench := integration.RequireTool(t, "pgbench") finds an external program the same way.
package integration

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/testenv"
)

// startTimeout bounds StartCluster. Start takes a few seconds; other engineers' tests share the
// two cores, so leave room.
const startTimeout = 2 * time.Minute

// StartCluster starts a local PostgreSQL cluster for the test and stops it when the test ends.
//
// opts.Dir is replaced by a fresh t.TempDir (made traversable by the postgres OS user), Fast is
// always on, and a nil Logger logs to t.Log. The test fails at once if the cluster does not come
// up; if PostgreSQL is not installed it is skipped, or fails when CI=true. At cleanup the
// cluster is closed, the test fails if any process is left in the directory, and when the test
// failed the tail of every server log is printed.
func StartCluster(t testing.TB, opts localcluster.Options) *localcluster.Cluster {
	t.Helper()
	testenv.RequirePostgres(t, opts.BinDir)
	dir := testenv.TempDir(t)
	opts.Dir = dir
	opts.Fast = true
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	c, err := localcluster.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start PostgreSQL cluster in %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("--- last lines of %s ---\n%s", n.LogFile, lastLines(n.LogFile, 30))
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
		pids, err := localcluster.ProcessesIn(dir)
		if err != nil {
			t.Errorf("look for leftover processes: %v", err)
		} else if len(pids) > 0 {
			t.Errorf("processes %v still run in %s after Close", pids, dir)
		}
	})
	return c
}

// RequireTool returns the path of an external program: from PATH, else from the PostgreSQL bin
// dir (pgbench, psql, pg_rewind live there). If it is missing the test is skipped, or fails when
// CI=true.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	if binDir, err := localcluster.FindBinDir(""); err == nil {
		path := filepath.Join(binDir, name)
		if info, err := os.Stat(path); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return path
		}
	}
	testenv.Missing(t, "tool %q not found on PATH nor in the PostgreSQL bin dir", name)
	return ""
}

// testLogWriter sends each slog record to t.Log, which shows it under -v or when the test fails.
type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// lastLines returns at most n last lines of the file at path (read fully: server logs of a test
// are small).
func lastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
