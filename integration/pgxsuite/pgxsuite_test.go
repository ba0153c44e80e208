package pgxsuite

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/integration"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/proxy"
	"github.com/pgquorum/pgquorum/testenv"
)

// directCounts are the results of the suite run directly against PostgreSQL 15 on this
// project's machines (PGQUORUM_PGX_DIRECT=1 runs it directly in the same test and compares with
// that run instead; run it so when go.mod moves to another pgx version, and record the figures
// here).
var directCounts = map[string]suiteCounts{
	"v5.12.0": {Passed: 2650, Skipped: 29},
}

// suiteTimeout bounds one run of the suite (compile and test).
const suiteTimeout = 12 * time.Minute

// TestPgxSuiteThroughProxy runs `go test ./...` in pgx's module directory with
// PGX_TEST_DATABASE pointing at a proxy, and requires no failure and as many passing tests as
// directly.
func TestPgxSuiteThroughProxy(t *testing.T) {
	goTool := integration.RequireTool(t, "go")
	psql := integration.RequireTool(t, "psql")
	ctx, cancel := context.WithTimeout(context.Background(), 2*suiteTimeout+5*time.Minute)
	defer cancel()
	version, moduleDir := downloadPgx(ctx, t, goTool)

	pg := integration.StartCluster(t, localcluster.Options{})
	primary := pg.Nodes[0]
	if err := primary.Exec(ctx, "CREATE DATABASE pgx_test"); err != nil {
		t.Fatal(err)
	}
	applySetup(ctx, t, psql, moduleDir, primary)

	srv := startProxy(t, primary)
	host, port, _ := net.SplitHostPort(srv.Addr().String())
	throughProxy := fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=pgx_test sslmode=disable",
		host, port, localcluster.QueryUser, localcluster.QueryPassword)

	want, recorded := directCounts[version]
	if os.Getenv("PGQUORUM_PGX_DIRECT") == "1" || !recorded {
		direct := primary.ConnString(localcluster.QueryUser, localcluster.QueryPassword, "pgx_test")
		want = runSuite(ctx, t, goTool, moduleDir, direct)
		t.Logf("pgx %s directly: %s", version, want)
		if len(want.Failed) > 0 {
			t.Fatalf("pgx %s fails directly against PostgreSQL: %v", version, want.Failed)
		}
	}
	got := runSuite(ctx, t, goTool, moduleDir, throughProxy)
	t.Logf("pgx %s through the proxy: %s (directly: %d passed, %d skipped)", version, got, want.Passed, want.Skipped)
	if len(got.Failed) > 0 {
		t.Errorf("pgx %s through the proxy: %d failed: %s", version, len(got.Failed), strings.Join(got.Failed, ", "))
	}
	if got.Passed != want.Passed {
		t.Errorf("pgx %s through the proxy: %d passed, directly %d", version, got.Passed, want.Passed)
	}
}

// downloadPgx downloads the pgx module at the version in go.mod and returns the version and
// its (read-only) directory in the module cache.
func downloadPgx(ctx context.Context, t *testing.T, goTool string) (version, dir string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, goTool, "list", "-m", "-f", "{{.Version}}", "github.com/jackc/pgx/v5").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/jackc/pgx/v5: %v", err)
	}
	version = strings.TrimSpace(string(out))
	out, err = exec.CommandContext(ctx, goTool, "mod", "download", "-json", "github.com/jackc/pgx/v5@"+version).Output()
	if err != nil {
		t.Fatalf("go mod download github.com/jackc/pgx/v5@%s: %v", version, err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil || info.Dir == "" {
		t.Fatalf("go mod download: %s (%v)", out, err)
	}
	return version, info.Dir
}

// applySetup applies pgx's testsetup/postgresql_setup.sql to pgx_test as the postgres
// superuser, as pgx's own CI does. psql runs as the postgres OS user when we are root (the
// script asks `whoami`); the module cache is not readable by it, so the script is copied first.
func applySetup(ctx context.Context, t *testing.T, psql, moduleDir string, primary *localcluster.Node) {
	t.Helper()
	script, err := os.ReadFile(filepath.Join(moduleDir, "testsetup", "postgresql_setup.sql"))
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(testenv.TempDir(t), "postgresql_setup.sql")
	if err := os.WriteFile(copyPath, script, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{psql, "-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port),
		"-U", localcluster.SuperUser, "-d", "pgx_test", "-f", copyPath}
	if os.Geteuid() == 0 {
		args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply pgx's setup SQL: %v\n%s", err, out)
	}
}

// startProxy starts a proxy routing to primary, as the application's entry point.
func startProxy(t *testing.T, primary *localcluster.Node) *proxy.Server {
	t.Helper()
	route := proxy.Route{Routing: true, Target: proxy.Target{Name: primary.Name, Address: primary.Address(), Epoch: 1}}
	srv, err := proxy.NewServer(proxy.Config{
		NodeID:        1,
		ListenAddr:    "127.0.0.1:0",
		Router:        fixedRouter{route},
		AuthMethod:    proxy.AuthSCRAMSHA256,
		QueryUser:     localcluster.QueryUser,
		QueryPassword: localcluster.QueryPassword,
	})
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
		<-served
	})
	return srv
}

// fixedRouter always routes to one primary (the cluster does not fail over in this test).
type fixedRouter struct{ route proxy.Route }

func (r fixedRouter) Route() (proxy.Route, <-chan struct{}) { return r.route, nil }
func (r fixedRouter) BackendFailed(proxy.Target)            {}

// suiteCounts are the results of one run of the suite: tests and subtests that passed and
// were skipped, and the names of those that failed.
type suiteCounts struct {
	Passed, Skipped int
	Failed          []string
}

func (c suiteCounts) String() string {
	return fmt.Sprintf("%d passed, %d failed, %d skipped", c.Passed, len(c.Failed), c.Skipped)
}

// runSuite runs pgx's tests against connString and counts the results from `go test -json`.
func runSuite(ctx context.Context, t *testing.T, goTool, moduleDir, connString string) suiteCounts {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, suiteTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "test", "-json", "-count=1", "-p", "2", "./...")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "PGX_TEST_DATABASE="+connString, "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var counts suiteCounts
	scanner := bufio.NewScanner(stdout)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		var ev struct{ Action, Package, Test string }
		if json.Unmarshal(scanner.Bytes(), &ev) != nil || ev.Test == "" {
			continue
		}
		switch ev.Action {
		case "pass":
			counts.Passed++
		case "skip":
			counts.Skipped++
		case "fail":
			counts.Failed = append(counts.Failed, strings.TrimPrefix(ev.Package, "github.com/jackc/pgx/v5")+" "+ev.Test)
		}
	}
	waitErr := cmd.Wait()
	slices.Sort(counts.Failed)
	t.Logf("go test ./... in %s: %s in %v", moduleDir, counts, time.Since(start).Round(time.Second))
	if waitErr != nil && len(counts.Failed) == 0 {
		t.Fatalf("go test in pgx's module: %v\n%s", waitErr, lastLines(stderr.String(), 40))
	}
	return counts
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
