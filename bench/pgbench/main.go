// Command pgbench compares select-only throughput and latency of a real
// PostgreSQL 15 primary reached directly, through PgBouncer (session mode, from
// Debian's package) and through pgquorum, interleaved in one run so that all
// three see the same machine state. It prints a Markdown table with ratios.
//
// Run from the repository root (needs PostgreSQL 15, pgbench and pgbouncer):
//
//	go run ./bench/pgbench -clients 1,8,64 -duration 10s -rounds 3
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/bench/benchenv"
	"github.com/pgquorum/pgquorum/localcluster"
)

type target struct {
	name string
	port int
}

func main() {
	clientsFlag := flag.String("clients", "1,8,64", "comma-separated client counts")
	duration := flag.Duration("duration", 10*time.Second, "length of one pgbench run")
	rounds := flag.Int("rounds", 3, "interleaved rounds; the median is reported")
	scale := flag.Int("scale", 10, "pgbench scale factor")
	flag.Parse()
	var clients []int
	for _, s := range strings.Split(*clientsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("bad -clients %q", *clientsFlag)
		}
		clients = append(clients, n)
	}
	if err := run(clients, *duration, *rounds, *scale); err != nil {
		log.Fatal(err)
	}
}

func run(clients []int, duration time.Duration, rounds, scale int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := benchenv.RaiseFileLimit(65536); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "pgquorum-pgbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}

	log.Printf("starting the PostgreSQL quorum cluster")
	cluster, err := localcluster.Start(ctx, localcluster.Options{Dir: filepath.Join(dir, "pg"),
		ExtraConf: map[string]string{"max_connections": "300"}})
	if err != nil {
		return err
	}
	defer cluster.Close()
	primary := cluster.Nodes[0]

	env := append(os.Environ(), "PGPASSWORD="+localcluster.QueryPassword)
	log.Printf("pgbench -i -s %d", scale)
	initCmd := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(scale),
		"-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", localcluster.QueryUser, "postgres")
	initCmd.Env = env
	if out, err := initCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}

	bin, err := benchenv.BuildPgquorum(ctx, dir)
	if err != nil {
		return err
	}
	qPort, _ := benchenv.FreePort()
	qDir := filepath.Join(dir, "proxy")
	if err := os.MkdirAll(qDir, 0o755); err != nil {
		return err
	}
	node := benchenv.PgquorumNode{Dir: qDir, ClientPort: qPort, AuthMethod: "scram-sha-256",
		QueryUser: localcluster.QueryUser, QueryPassword: localcluster.QueryPassword}
	for _, n := range cluster.Nodes {
		node.Backends = append(node.Backends, [2]string{n.Name, n.Address()})
	}
	cfgPath, err := node.WriteConfig()
	if err != nil {
		return err
	}
	pq, err := benchenv.Start(bin, []string{"run", "--config", cfgPath}, filepath.Join(qDir, "pgquorum.log"), "")
	if err != nil {
		return err
	}
	defer pq.Stop()

	bDir := filepath.Join(dir, "pgbouncer")
	if err := os.MkdirAll(bDir, 0o755); err != nil {
		return err
	}
	bPort, _ := benchenv.FreePort()
	ini, err := benchenv.PgBouncerConfig(bDir, bPort, "127.0.0.1", primary.Port,
		map[string]string{localcluster.QueryUser: localcluster.QueryPassword}, 200)
	if err != nil {
		return err
	}
	if err := benchenv.ChownToPostgres(bDir); err != nil {
		return err
	}
	pb, err := benchenv.Start("pgbouncer", []string{ini}, filepath.Join(bDir, "stdout.log"), "postgres")
	if err != nil {
		return err
	}
	defer pb.Stop()

	targets := []target{{"direct", primary.Port}, {"pgbouncer", bPort}, {"pgquorum", qPort}}
	for _, t := range targets {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		err := benchenv.WaitPort(wctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(t.port)))
		wcancel()
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}

	tps := map[string]map[int][]float64{}
	lat := map[string][]float64{} // median per-transaction latency at 1 client, µs, per round
	for _, t := range targets {
		tps[t.name] = map[int][]float64{}
	}
	for r := range rounds {
		for _, c := range clients {
			order := slices.Clone(targets)
			// Rotate the order each round so no target always runs first.
			order = append(order[r%len(order):], order[:r%len(order)]...)
			for _, t := range order {
				res, err := pgbench(ctx, env, filepath.Join(dir, "logs"), t, c, duration)
				if err != nil {
					return err
				}
				log.Printf("round %d clients %d %-9s tps %.0f median latency %.1f µs", r+1, c, t.name, res.tps, res.medianUS)
				tps[t.name][c] = append(tps[t.name][c], res.tps)
				if c == 1 {
					lat[t.name] = append(lat[t.name], res.medianUS)
				}
			}
		}
	}

	fmt.Printf("\n`pgbench -S` select-only, %s per run, median of %d interleaved rounds, scale %d\n\n", duration, rounds, scale)
	fmt.Printf("| clients | direct tps | PgBouncer tps | pgquorum tps | pgquorum / PgBouncer | pgquorum / direct |\n")
	fmt.Printf("| ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, c := range clients {
		d, b, q := median(tps["direct"][c]), median(tps["pgbouncer"][c]), median(tps["pgquorum"][c])
		fmt.Printf("| %d | %.0f | %.0f | %.0f | %.2f | %.2f |\n", c, d, b, q, q/b, q/d)
	}
	if len(lat["direct"]) > 0 {
		d, b, q := median(lat["direct"]), median(lat["pgbouncer"]), median(lat["pgquorum"])
		fmt.Printf("\nMedian per-transaction latency at 1 client: direct %.1f µs, PgBouncer %.1f µs (+%.1f), pgquorum %.1f µs (+%.1f)\n",
			d, b, b-d, q, q-d)
	}
	return nil
}

type result struct {
	tps      float64
	medianUS float64
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

func pgbench(ctx context.Context, env []string, logDir string, t target, clients int, d time.Duration) (result, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return result{}, err
	}
	prefix := filepath.Join(logDir, fmt.Sprintf("%s-%d-%d", t.name, clients, time.Now().UnixNano()))
	jobs := min(clients, 2)
	args := []string{"-S", "-n", "-T", strconv.Itoa(int(d.Seconds())), "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs),
		"-h", "127.0.0.1", "-p", strconv.Itoa(t.port), "-U", localcluster.QueryUser}
	if clients == 1 {
		args = append(args, "-l", "--log-prefix", prefix)
	}
	args = append(args, "postgres")
	cmd := exec.CommandContext(ctx, "pgbench", args...)
	cmd.Env = env
	cmd.Dir = logDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("pgbench against %s: %w\n%s", t.name, err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("pgbench against %s: no tps in output:\n%s", t.name, out)
	}
	res := result{}
	res.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	if clients == 1 {
		res.medianUS, err = medianLatency(prefix)
		if err != nil {
			return result{}, err
		}
	}
	return res, nil
}

// medianLatency reads pgbench's per-transaction log(s) prefix.* (third field:
// latency in µs) and returns the median.
func medianLatency(prefix string) (float64, error) {
	files, _ := filepath.Glob(prefix + ".*")
	var lat []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 3 {
				if v, err := strconv.ParseFloat(fields[2], 64); err == nil {
					lat = append(lat, v)
				}
			}
		}
		fh.Close()
		os.Remove(f)
	}
	if len(lat) == 0 {
		return 0, fmt.Errorf("no pgbench transaction log at %s.*", prefix)
	}
	return median(lat), nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
