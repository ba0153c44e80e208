package integration

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/testenv"
)

// TestDegradedStatus checks what an operator is told in the degraded states of
// issue 13 — `pgquorum list` (the real CLI), GET /cluster, /readyz and
// /metrics — on a real cluster, once per PostgreSQL major version installed
// under /usr/lib/postgresql/*/bin (or the one PGQUORUM_PG_BINDIR names):
//
//  1. a standby stopped: "degraded: 1 of 2 standbys", the standby "down",
//     one synchronous standby in effect of two;
//  2. logins to the primary refused (the query user's password changed):
//     /readyz 503 with the reason, while routing goes on;
//  3. the primary killed: after the failover the old primary is "down, was
//     primary", fenced, with no lag figure;
//  4. a proxy cut off from the others (its peers frozen): `list` exits 1.
func TestDegradedStatus(t *testing.T) {
	dirs := localcluster.InstalledBinDirs()
	if env := os.Getenv(localcluster.BinDirEnv); env != "" || len(dirs) == 0 {
		testenv.RequirePostgres(t, env)
		dirs = []string{env}
	}
	for _, dir := range dirs {
		name := "postgres"
		if dir != "" {
			name += "-" + filepath.Base(filepath.Dir(dir)) // /usr/lib/postgresql/15/bin: postgres-15
		}
		t.Run(name, func(t *testing.T) { degradedStatus(t, dir) })
	}
}

func degradedStatus(t *testing.T, binDir string) {
	pg := StartCluster(t, localcluster.Options{BinDir: binDir})
	proxies := startFailoverProxies(t, pg, failoverProxyOptions())
	first := proxies.Proxies[0]
	ctx, cancel := context.WithTimeout(t.Context(), 4*failoverStepTimeout)
	defer cancel()

	if _, err := pollCluster(ctx, first, "full redundancy, every node observed", func(v admin.ClusterView) (bool, error) {
		for _, n := range v.Nodes {
			if !observedByAll(v, n.Name, proxies, func(o clusterstate.Observation) bool { return o.Up }) {
				return false, nil
			}
		}
		return v.Redundancy != nil && v.Redundancy.State == "ok", nil
	}); err != nil {
		t.Fatal(err)
	}
	out, code := runList(ctx, t, proxies, first)
	t.Logf("pgquorum list, healthy:\n%s", out)
	if code != 0 || !strings.Contains(out, "Redundancy: ok: 2 of 2 standbys") || !listRowHas(out, "pg2", "streaming", "quorum") {
		t.Errorf("healthy list: exit %d", code)
	}

	// 1. A standby stops.
	if err := pg.Node("pg3").Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pollCluster(ctx, first, "degraded redundancy", func(v admin.ClusterView) (bool, error) {
		return v.Redundancy != nil && v.Redundancy.Status == "degraded: 1 of 2 standbys (missing: pg3)", nil
	}); err != nil {
		t.Fatal(err)
	}
	// The redundancy comes from the primary's walsenders; pg3's own state from the probes,
	// which need health.interval × 3 to call it down: wait for both.
	testenv.Eventually(t, ctx, 0, "list to show pg3 down and the redundancy degraded", func() (bool, error) {
		out, code = runList(ctx, t, proxies, first)
		return code == 0 && strings.Contains(out, "Redundancy: DEGRADED: 1 of 2 standbys (missing: pg3)") && listRowHas(out, "pg3", "down"), nil
	})
	t.Logf("pgquorum list, a standby stopped:\n%s", out)
	metrics := scrapeMetrics(ctx, t, first)
	for _, want := range []string{"pgquorum_synchronous_standbys_in_effect 1", "pgquorum_synchronous_standbys_configured 2",
		"pgquorum_synchronous_standbys_required 1", "pgquorum_routing_ready 1"} {
		if !strings.Contains(metrics, "\n"+want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, body := readyz(ctx, t, first); code != http.StatusOK {
		t.Errorf("/readyz with one standby stopped: %d %s (the proxy still serves)", code, body)
	}

	// 2. New logins to the primary are refused: this proxy cannot serve new
	// clients although it routes. The probes keep their connections; the
	// password is changed and restored on one connection opened before.
	primary := pg.Node("pg1")
	conn, err := primary.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "ALTER ROLE "+localcluster.QueryUser+" PASSWORD 'not-the-configured-one'"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			_, err := conn.Exec(context.WithoutCancel(ctx), "ALTER ROLE "+localcluster.QueryUser+" PASSWORD '"+localcluster.QueryPassword+"'")
			if err != nil {
				t.Errorf("restore the query user's password: %v", err)
			}
			restored = true
		}
	}
	defer restore()
	var body string
	if err := waitReadyz(ctx, t, first, http.StatusServiceUnavailable, &body); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "cannot open a session to the primary pg1") || !strings.Contains(body, "password authentication failed") {
		t.Errorf("/readyz while logins fail: %s", body)
	}
	t.Logf("/readyz while logins to the primary fail: %s", strings.TrimSpace(body))
	restore()
	if err := waitReadyz(ctx, t, first, http.StatusOK, &body); err != nil {
		t.Fatal(err)
	}

	// 3. The standby comes back, then the primary dies: a failover.
	if err := pg.Node("pg3").Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pollCluster(ctx, first, "pg3 streaming again", func(v admin.ClusterView) (bool, error) {
		return v.Redundancy != nil && v.Redundancy.State == "ok", nil
	}); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := pollCluster(ctx, first, "a new primary, its standby streaming", func(v admin.ClusterView) (bool, error) {
		return v.Primary != "" && v.Primary != "pg1" && v.Routing.Routing && v.Redundancy != nil && len(v.Redundancy.Streaming) == 1, nil
	}); err != nil {
		t.Fatal(err)
	}
	out, code = runList(ctx, t, proxies, first)
	t.Logf("pgquorum list, after kill -9 of the primary pg1:\n%s", out)
	if code != 0 || !listRowHas(out, "pg1", "fenced", "down, was primary") {
		t.Errorf("list after the failover: exit %d", code)
	}
	if row := listRow(out, "pg1"); len(row) < 9 || row[len(row)-2] != "-" {
		t.Errorf("the fenced old primary shows a lag: %q", row)
	}
	if !strings.Contains(out, "Redundancy: DEGRADED: 1 of 2 standbys (missing: pg1)") {
		t.Errorf("list after the failover does not say that the fenced pg1 is missing")
	}
	metrics = scrapeMetrics(ctx, t, first)
	if !strings.Contains(metrics, `pgquorum_failovers_total{kind="automatic",outcome="completed"} 1`) {
		t.Errorf("/metrics does not count the failover")
	}

	// 4. The other two proxies freeze: the first loses its lease and does
	// not route; list says so with exit 1.
	for _, p := range proxies.Proxies[1:] {
		p.Freeze()
		defer p.Thaw()
	}
	if _, err := pollCluster(ctx, first, "not routing", func(v admin.ClusterView) (bool, error) { return !v.Routing.Routing, nil }); err != nil {
		t.Fatal(err)
	}
	out, code = runList(ctx, t, proxies, first)
	t.Logf("pgquorum list, proxies 2 and 3 frozen:\n%s", out)
	if code != 1 || !strings.Contains(out, "is not routing") {
		t.Errorf("list of a proxy that does not route: exit %d", code)
	}
}

// runList runs `pgquorum list` against p's admin API and returns its output
// (stdout and stderr) and exit code.
func runList(ctx context.Context, t *testing.T, proxies *ProxyCluster, p *ProxyProcess) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(ctx, proxies.BinaryPath(), "list", "--admin", p.Admin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if exit, ok := err.(*exec.ExitError); ok {
			return string(out), exit.ExitCode()
		}
		t.Fatalf("pgquorum list: %v", err)
	}
	return string(out), 0
}

// listRow is the fields of node's line in list's node table.
func listRow(out, node string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == node {
			return f
		}
	}
	return nil
}

// listRowHas reports whether node's line holds every one of want.
func listRowHas(out, node string, want ...string) bool {
	line := strings.Join(listRow(out, node), " ")
	for _, w := range want {
		if !strings.Contains(line, w) {
			return false
		}
	}
	return line != ""
}

func scrapeMetrics(ctx context.Context, t *testing.T, p *ProxyProcess) string {
	t.Helper()
	code, body := get(ctx, t, "http://"+p.Admin+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	return body
}

func readyz(ctx context.Context, t *testing.T, p *ProxyProcess) (int, string) {
	t.Helper()
	return get(ctx, t, "http://"+p.Admin+"/readyz")
}

// waitReadyz asks p's /readyz every 200 ms until it answers want; body gets
// the last answer.
func waitReadyz(ctx context.Context, t *testing.T, p *ProxyProcess, want int, body *string) error {
	t.Helper()
	for {
		code, b := readyz(ctx, t, p)
		*body = b
		if code == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func get(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
