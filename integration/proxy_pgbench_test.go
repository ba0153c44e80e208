package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/proxy"
	"github.com/pgquorum/pgquorum/testenv"
)

// BenchmarkProxyPgbench compares `pgbench -S` (select-only, simple protocol) directly against
// PostgreSQL, through PgBouncer (session mode) and through the proxy, in the same run, at 1, 8
// and 64 clients (SPEC §7). It reports transactions per second for each and the ratio
// proxy/PgBouncer, and the average latency added over direct at 1 client. It runs only with
// -bench (it takes about a minute and a half):
//
//	go test ./integration -run XXX -bench ProxyPgbench -benchtime 1x
func BenchmarkProxyPgbench(b *testing.B) {
	pgbench := RequireTool(b, "pgbench")
	pgbouncer := RequireTool(b, "pgbouncer")
	c := StartCluster(b, localcluster.Options{
		Names:     []string{"pg1"},
		ExtraHBA:  []string{fmt.Sprintf("host all %s 127.0.0.1/32 trust", proxyTrustUser)},
		ExtraConf: map[string]string{"max_connections": "300"},
	})
	primary := c.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, sql := range []string{
		fmt.Sprintf("CREATE ROLE %s LOGIN", proxyTrustUser),
		fmt.Sprintf("GRANT ALL ON SCHEMA public TO %s", proxyTrustUser),
	} {
		if err := primary.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	proxyRunPgbench(b, ctx, pgbench, primary.Port, "-i", "-s", "1", "-q")

	srv, err := proxy.NewServer(proxy.Config{NodeID: 1, ListenAddr: "127.0.0.1:0", AuthMethod: proxy.AuthTrust,
		Router: &proxyStaticRouter{target: proxy.Target{Name: primary.Name, Address: primary.Address()}}})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ctx)
	b.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	bouncerPort := proxyStartPgBouncer(b, pgbouncer, primary.Port)

	// The machine is shared and noisy: run short rounds of the three targets interleaved and
	// report the median of each.
	const rounds, seconds = 3, "2"
	targets := []struct {
		name string
		port int
	}{{"direct", primary.Port}, {"pgbouncer", bouncerPort}, {"proxy", proxyPort(srv)}}
	for _, clients := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			args := []string{"-S", "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)), "-T", seconds}
			tps := map[string][]float64{}
			latency := map[string][]float64{}
			for range rounds {
				for _, target := range targets {
					t, l := proxyParsePgbench(b, proxyRunPgbench(b, ctx, pgbench, target.port, args...))
					tps[target.name] = append(tps[target.name], t)
					latency[target.name] = append(latency[target.name], l)
				}
			}
			median := func(v []float64) float64 {
				slices.Sort(v)
				return v[len(v)/2]
			}
			direct, bouncer, proxied := median(tps["direct"]), median(tps["pgbouncer"]), median(tps["proxy"])
			directLatency := median(latency["direct"])
			b.ReportMetric(direct, "tps-direct")
			b.ReportMetric(bouncer, "tps-pgbouncer")
			b.ReportMetric(proxied, "tps-proxy")
			b.ReportMetric(proxied/bouncer, "proxy/pgbouncer")
			b.ReportMetric((median(latency["proxy"])-directLatency)*1000, "µs-added-latency-proxy")
			b.ReportMetric((median(latency["pgbouncer"])-directLatency)*1000, "µs-added-latency-pgbouncer")
		})
	}
}

// proxyRunPgbench runs pgbench against 127.0.0.1:port as the trusted user and returns its output.
func proxyRunPgbench(b *testing.B, ctx context.Context, pgbench string, port int, args ...string) string {
	b.Helper()
	args = append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", proxyTrustUser}, append(args, "postgres")...)
	cmd := exec.CommandContext(ctx, pgbench, args...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("pgbench %v: %v\n%s", args, err, out)
	}
	return string(out)
}

var (
	proxyPgbenchTPS     = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	proxyPgbenchLatency = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

// proxyParsePgbench returns the tps and the average latency in milliseconds of a pgbench run.
func proxyParsePgbench(b *testing.B, out string) (tps, latencyMS float64) {
	b.Helper()
	m, l := proxyPgbenchTPS.FindStringSubmatch(out), proxyPgbenchLatency.FindStringSubmatch(out)
	if m == nil || l == nil {
		b.Fatalf("cannot parse pgbench output:\n%s", out)
	}
	tps, _ = strconv.ParseFloat(m[1], 64)
	latencyMS, _ = strconv.ParseFloat(l[1], 64)
	return tps, latencyMS
}

// proxyStartPgBouncer runs PgBouncer in session mode in front of the PostgreSQL server on pgPort,
// as the postgres OS user when we are root (PgBouncer refuses to run as root). It returns
// PgBouncer's port.
func proxyStartPgBouncer(b *testing.B, pgbouncer string, pgPort int) int {
	b.Helper()
	dir := testenv.TempDir(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	userlist := filepath.Join(dir, "userlist.txt")
	ini := filepath.Join(dir, "pgbouncer.ini")
	config := fmt.Sprintf(`[databases]
postgres = host=127.0.0.1 port=%d dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = session
max_client_conn = 500
default_pool_size = 100
logfile = %s
pidfile = %s
`, pgPort, port, userlist, filepath.Join(dir, "pgbouncer.log"), filepath.Join(dir, "pgbouncer.pid"))
	for path, content := range map[string]string{ini: config, userlist: fmt.Sprintf("%q \"\"\n", proxyTrustUser)} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	cmd := exec.Command(pgbouncer, ini)
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			b.Fatal(err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		if err := os.Chown(dir, uid, gid); err != nil {
			b.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			conn.Close()
			return port
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			b.Fatalf("pgbouncer did not start: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
