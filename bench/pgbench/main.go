// Command pgbench compares a real PostgreSQL 15 primary reached directly, through
// PgBouncer (session mode, Debian's package), through HAProxy (tcp mode, Debian's
// package) and through pgquorum, interleaved in one run so that all of them see
// the same machine state. It measures two things per client count:
//
//   - throughput: `pgbench -S` select-only at full speed (tps, and the median
//     per-transaction latency at 1 client);
//   - work per transaction: `pgbench -S -R RATE` at a fixed rate, and the proxy
//     process's own CPU time (utime+stime from /proc/PID/stat) divided by the
//     transactions done. This is much steadier than tps on a shared machine,
//     because it does not depend on how much CPU the other processes leave.
//
// It prints Markdown tables with ratios against PgBouncer, HAProxy and direct.
//
// Run from the repository root (needs PostgreSQL 15, pgbench, pgbouncer, haproxy):
//
//	go run ./bench/pgbench -clients 1,8,64 -duration 10s -rounds 3
//
// To compare two builds of pgquorum (before/after a change) on a noisy machine,
// pass -base-bin OLD: the old binary runs as a fifth target, "pgquorum-base" (or the name
// given with -base-name), interleaved with the rest; -base-env gives it its own environment
// (the same binary with GOMAXPROCS=1, say). -perf DIR records a perf profile of pgquorum during
// each fixed-rate run (perf record -g), for `perf report -i`.
package main

import (
	"bufio"
	"context"
	"errors"
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

// target is one way to reach the primary.
type target struct {
	name string
	port int
	proc *benchenv.Process // the proxy process (nil for direct)
}

type options struct {
	clients     []int
	duration    time.Duration
	rounds      int
	scale       int
	rate        int  // fixed rate of the CPU measure; 0 skips it
	throughput  bool // run the full-speed measure
	targets     []string
	bin         string // prebuilt pgquorum ("" builds ./cmd/pgquorum)
	baseBin     string // a second pgquorum build, measured as pgquorum-base
	pgquorumEnv []string
	baseEnv     []string
	baseName    string
	perfDir     string
	perfStat    bool // count system calls and context switches per transaction (perf stat)
}

func main() {
	var o options
	clientsFlag := flag.String("clients", "1,8,64", "comma-separated client counts")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of one pgbench run")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds; the median is reported")
	flag.IntVar(&o.scale, "scale", 10, "pgbench scale factor")
	flag.IntVar(&o.rate, "rate", 3000, "transactions per second of the CPU-per-transaction measure (0: skip it)")
	flag.BoolVar(&o.throughput, "tps", true, "measure full-speed throughput")
	targetsFlag := flag.String("targets", "direct,pgbouncer,haproxy,pgquorum", "what to measure (also relay-DESIGN: a bare Go relay of go run ./bench/relaydesigns, e.g. relay-goroutines)")
	flag.StringVar(&builtinScript, "builtin", "select-only", "pgbench built-in script: select-only (-S), or tpcb-like (explicit BEGIN ... END transactions that write)")
	flag.StringVar(&scriptFile, "script", "", "a pgbench script file to run instead of the built-in one (pgbench -f)")
	flag.StringVar(&o.bin, "bin", "", "pgquorum binary to measure (default: build ./cmd/pgquorum)")
	flag.StringVar(&o.baseBin, "base-bin", "", "a second pgquorum binary, measured as pgquorum-base")
	envFlag := flag.String("pgquorum-env", "", "comma-separated KEY=VALUE for the pgquorum processes (e.g. GOMAXPROCS=1)")
	flag.StringVar(&o.baseName, "base-name", "pgquorum-base", "name of the -base-bin target in the tables")
	baseEnvFlag := flag.String("base-env", "", "comma-separated KEY=VALUE for pgquorum-base (default: as -pgquorum-env)")
	flag.BoolVar(&o.perfStat, "perfstat", false, "also count the proxy's system calls and context switches per transaction (perf stat)")
	flag.StringVar(&o.perfDir, "perf", "", "directory for perf profiles of pgquorum during the fixed-rate runs")
	flag.Parse()
	for _, s := range strings.Split(*clientsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("bad -clients %q", *clientsFlag)
		}
		o.clients = append(o.clients, n)
	}
	o.targets = strings.Split(*targetsFlag, ",")
	if o.baseBin != "" {
		o.targets = append(o.targets, o.baseName)
	}
	if *envFlag != "" {
		o.pgquorumEnv = strings.Split(*envFlag, ",")
	}
	o.baseEnv = o.pgquorumEnv
	if *baseEnvFlag != "" {
		o.baseEnv = strings.Split(*baseEnvFlag, ",")
	}
	if err := run(o); err != nil {
		log.Fatal(err)
	}
}

func run(o options) error {
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
		ExtraConf: map[string]string{"max_connections": "400"}})
	if err != nil {
		return err
	}
	defer cluster.Close()
	primary := cluster.Nodes[0]

	env := append(os.Environ(), "PGPASSWORD="+localcluster.QueryPassword)
	log.Printf("pgbench -i -s %d", o.scale)
	initCmd := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(o.scale),
		"-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", localcluster.QueryUser, "postgres")
	initCmd.Env = env
	if out, err := initCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}

	var targets []target
	for _, name := range o.targets {
		t, err := startTarget(ctx, o, name, dir, cluster)
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		if t.proc != nil {
			defer t.proc.Stop()
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		err = benchenv.WaitPort(wctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(t.port)))
		wcancel()
		if err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
		targets = append(targets, t)
	}

	// What each proxy spends with no client traffic (pgquorum: Raft ticks, health probes,
	// routing lease); the fixed-rate figures include it, spread over the transactions.
	idle := map[string]float64{} // µs of CPU per second
	if o.rate > 0 {
		for _, t := range targets {
			if t.proc == nil {
				continue
			}
			before, err := benchenv.CPUTime(t.proc.Cmd.Process.Pid)
			if err != nil {
				return err
			}
			time.Sleep(o.duration)
			after, err := benchenv.CPUTime(t.proc.Cmd.Process.Pid)
			if err != nil {
				return err
			}
			idle[t.name] = float64(after-before) / float64(time.Microsecond) / o.duration.Seconds()
			log.Printf("%-13s idle: %.0f µs CPU per second", t.name, idle[t.name])
		}
	}

	tps := map[string]map[int][]float64{}
	cpu := map[string]map[int][]float64{}    // µs of proxy CPU per transaction
	sys := map[string]map[int][]float64{}    // system calls per transaction
	csw := map[string]map[int][]float64{}    // context switches per transaction
	kernel := map[string]map[int][]float64{} // µs of the proxy's CPU per transaction in the kernel
	lat := map[string][]float64{}            // median per-transaction latency at 1 client, µs, per round
	for _, t := range targets {
		tps[t.name], cpu[t.name] = map[int][]float64{}, map[int][]float64{}
		sys[t.name], csw[t.name] = map[int][]float64{}, map[int][]float64{}
		kernel[t.name] = map[int][]float64{}
	}
	logDir := filepath.Join(dir, "logs")
	for r := range o.rounds {
		for _, c := range o.clients {
			// Rotate the order each round so no target always runs first.
			order := slices.Clone(targets)
			order = append(order[r%len(order):], order[:r%len(order)]...)
			for _, t := range order {
				if o.throughput {
					res, err := pgbench(ctx, env, logDir, t, c, o.duration, 0)
					if err != nil {
						return err
					}
					log.Printf("round %d clients %d %-13s tps %.0f median latency %.1f µs", r+1, c, t.name, res.tps, res.medianUS)
					tps[t.name][c] = append(tps[t.name][c], res.tps)
					if c == 1 {
						lat[t.name] = append(lat[t.name], res.medianUS)
					}
				}
				if o.rate > 0 && t.proc != nil {
					m, err := cpuPerTransaction(ctx, env, logDir, o, t, c, r)
					if err != nil {
						return err
					}
					log.Printf("round %d clients %d %-13s at %d tps: %.1f µs CPU (%.1f in the kernel), %.1f syscalls, %.2f context switches per transaction",
						r+1, c, t.name, o.rate, m.cpuUS, m.kernelUS, m.syscalls, m.switches)
					kernel[t.name][c] = append(kernel[t.name][c], m.kernelUS)
					cpu[t.name][c] = append(cpu[t.name][c], m.cpuUS)
					sys[t.name][c] = append(sys[t.name][c], m.syscalls)
					csw[t.name][c] = append(csw[t.name][c], m.switches)
				}
			}
		}
	}
	printTables(o, targets, tps, cpu, lat)
	if o.rate > 0 {
		fmt.Printf("\nIdle CPU of each proxy (no client traffic), µs per second:")
		for _, t := range targets {
			if t.proc != nil {
				fmt.Printf(" %s %.0f (%.1f µs per transaction at %d tps);", t.name, idle[t.name], idle[t.name]/float64(o.rate), o.rate)
			}
		}
		fmt.Println()
	}
	if o.rate > 0 {
		printProxyTable("Of the proxy CPU per transaction, µs in the kernel (stime), same runs", o.clients, targets,
			func(name string, c int) string { return fmt.Sprintf("%.1f", median(kernel[name][c])) })
	}
	if o.perfStat {
		printProxyTable("System calls / context switches of the proxy process per transaction (perf stat), same runs", o.clients, targets,
			func(name string, c int) string {
				return fmt.Sprintf("%.1f / %.2f", median(sys[name][c]), median(csw[name][c]))
			})
	}
	return nil
}

// printProxyTable prints a table with a row per client count and a column per proxy (the
// targets with a process), each cell from cell.
func printProxyTable(title string, clients []int, targets []target, cell func(name string, clients int) string) {
	fmt.Printf("\n%s\n\n", title)
	header, rule := "| clients |", "| ---: |"
	for _, t := range targets {
		if t.proc != nil {
			header += " " + t.name + " |"
			rule += " ---: |"
		}
	}
	fmt.Println(header)
	fmt.Println(rule)
	for _, c := range clients {
		line := fmt.Sprintf("| %d |", c)
		for _, t := range targets {
			if t.proc != nil {
				line += " " + cell(t.name, c) + " |"
			}
		}
		fmt.Println(line)
	}
}

// startTarget starts the proxy called name (nothing for "direct").
func startTarget(ctx context.Context, o options, name, dir string, cluster *localcluster.Cluster) (target, error) {
	primary := cluster.Nodes[0]
	port, err := benchenv.FreePort()
	if err != nil {
		return target{}, err
	}
	sub := filepath.Join(dir, "targets", name) // apart from the binary BuildPgquorum writes in dir
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return target{}, err
	}
	if design, ok := strings.CutPrefix(name, "relay-"); ok {
		// A bare Go relay with no protocol work (bench/relaydesigns' child with that design, e.g.
		// relay-goroutines, relay-io_uring-defer), environment as pgquorum's: the floor of a
		// design in this setting.
		bin := filepath.Join(sub, "relaydesigns")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./bench/relaydesigns")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return target{}, fmt.Errorf("go build ./bench/relaydesigns: %w", err)
		}
		args := []string{"-child", design, "-listen", "127.0.0.1:" + strconv.Itoa(port), "-server", primary.Address()}
		p, err := benchenv.StartEnv(bin, args, filepath.Join(sub, "stdout.log"), o.pgquorumEnv)
		return target{name: name, port: port, proc: p}, err
	}
	switch name {
	case "direct":
		return target{name: name, port: primary.Port}, nil
	case "pgbouncer":
		ini, err := benchenv.PgBouncerConfig(sub, port, "127.0.0.1", primary.Port,
			map[string]string{localcluster.QueryUser: localcluster.QueryPassword}, 200)
		if err != nil {
			return target{}, err
		}
		if err := benchenv.ChownToPostgres(sub); err != nil {
			return target{}, err
		}
		p, err := benchenv.Start("pgbouncer", []string{ini}, filepath.Join(sub, "stdout.log"), "postgres")
		return target{name: name, port: port, proc: p}, err
	case "haproxy":
		cfg, err := benchenv.HAProxyConfig(sub, port, primary.Address(), 1000)
		if err != nil {
			return target{}, err
		}
		p, err := benchenv.Start("haproxy", []string{"-db", "-f", cfg}, filepath.Join(sub, "stdout.log"), "")
		return target{name: name, port: port, proc: p}, err
	case "pgquorum", o.baseName:
		bin, env := o.bin, o.pgquorumEnv
		if name == o.baseName {
			bin, env = o.baseBin, o.baseEnv
		}
		if bin == "" {
			if bin, err = benchenv.BuildPgquorum(ctx, dir); err != nil {
				return target{}, err
			}
		}
		node := benchenv.PgquorumNode{Dir: sub, ClientPort: port, AuthMethod: "scram-sha-256",
			QueryUser: localcluster.QueryUser, QueryPassword: localcluster.QueryPassword}
		for _, n := range cluster.Nodes {
			node.Backends = append(node.Backends, [2]string{n.Name, n.Address()})
		}
		cfgPath, err := node.WriteConfig()
		if err != nil {
			return target{}, err
		}
		p, err := benchenv.StartEnv(bin, []string{"run", "--config", cfgPath}, filepath.Join(sub, "pgquorum.log"), env)
		return target{name: name, port: port, proc: p}, err
	}
	return target{}, fmt.Errorf("unknown target %q (want direct, pgbouncer, haproxy, pgquorum or relay-DESIGN)", name)
}

// workPerTransaction is what the proxy process spent per transaction in a fixed-rate run.
type workPerTransaction struct {
	cpuUS    float64 // CPU time, µs
	kernelUS float64 // the part of cpuUS spent in the kernel (stime), µs
	syscalls float64 // system calls (with -perfstat)
	switches float64 // context switches (with -perfstat)
}

// cpuPerTransaction runs pgbench at the fixed rate against t and returns the proxy process's
// work per transaction.
func cpuPerTransaction(ctx context.Context, env []string, logDir string, o options, t target, clients, round int) (workPerTransaction, error) {
	var m workPerTransaction
	pid := t.proc.Cmd.Process.Pid
	var stat *exec.Cmd
	statFile := filepath.Join(logDir, fmt.Sprintf("perfstat-%s-%d-%d.csv", t.name, clients, round))
	if o.perfStat {
		stat = exec.CommandContext(ctx, "perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter,context-switches",
			"-p", strconv.Itoa(pid), "-o", statFile)
		if err := stat.Start(); err != nil {
			return m, fmt.Errorf("perf stat: %w", err)
		}
	}
	var perf *exec.Cmd
	if o.perfDir != "" && clients == 8 && strings.HasPrefix(t.name, "pgquorum") {
		if err := os.MkdirAll(o.perfDir, 0o755); err != nil {
			return m, err
		}
		out := filepath.Join(o.perfDir, fmt.Sprintf("%s-round%d.perf.data", t.name, round+1))
		perf = exec.CommandContext(ctx, "perf", "record", "-F", "1999", "-g", "-p", strconv.Itoa(pid), "-o", out)
		if err := perf.Start(); err != nil {
			return m, fmt.Errorf("perf record: %w", err)
		}
	}
	userBefore, sysBefore, err := benchenv.CPUTimes(pid)
	if err != nil {
		return m, err
	}
	res, err := pgbench(ctx, env, logDir, t, clients, o.duration, o.rate)
	if err != nil {
		return m, err
	}
	userAfter, sysAfter, err := benchenv.CPUTimes(pid)
	if err != nil {
		return m, err
	}
	for _, c := range []*exec.Cmd{perf, stat} {
		if c != nil {
			_ = c.Process.Signal(os.Interrupt)
			_ = c.Wait()
		}
	}
	if res.transactions == 0 {
		return m, errors.New("no transactions")
	}
	n := float64(res.transactions)
	m.cpuUS = float64(userAfter-userBefore+sysAfter-sysBefore) / float64(time.Microsecond) / n
	m.kernelUS = float64(sysAfter-sysBefore) / float64(time.Microsecond) / n
	if stat != nil {
		counts, err := readPerfStat(statFile)
		if err != nil {
			return m, err
		}
		m.syscalls, m.switches = counts["raw_syscalls:sys_enter"]/n, counts["context-switches"]/n
	}
	return m, nil
}

// readPerfStat reads `perf stat -x ,` output: value,unit,event,...
func readPerfStat(path string) (map[string]float64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ",")
		if len(f) >= 3 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				out[f[2]] = v
			}
		}
	}
	return out, nil
}

func printTables(o options, targets []target, tps, cpu map[string]map[int][]float64, lat map[string][]float64) {
	has := func(name string) bool {
		return slices.ContainsFunc(targets, func(t target) bool { return t.name == name })
	}
	ratio := func(a, b float64) string {
		if a == 0 || b == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	if o.throughput {
		fmt.Printf("\n`pgbench -S` select-only, %s per run, median of %d interleaved rounds, scale %d\n\n", o.duration, o.rounds, o.scale)
		header, rule := "| clients |", "| ---: |"
		for _, t := range targets {
			header += " " + t.name + " tps |"
			rule += " ---: |"
		}
		for _, other := range []string{"pgbouncer", "haproxy", "direct", o.baseName} {
			if has(other) && has("pgquorum") {
				header += " pgquorum / " + other + " |"
				rule += " ---: |"
			}
		}
		fmt.Println(header)
		fmt.Println(rule)
		for _, c := range o.clients {
			line := fmt.Sprintf("| %d |", c)
			for _, t := range targets {
				line += fmt.Sprintf(" %.0f |", median(tps[t.name][c]))
			}
			for _, other := range []string{"pgbouncer", "haproxy", "direct", o.baseName} {
				if has(other) && has("pgquorum") {
					line += " " + ratio(median(tps["pgquorum"][c]), median(tps[other][c])) + " |"
				}
			}
			fmt.Println(line)
		}
		if len(lat["direct"]) > 0 {
			d := median(lat["direct"])
			fmt.Printf("\nMedian per-transaction latency at 1 client: direct %.1f µs", d)
			for _, t := range targets {
				if t.name != "direct" && len(lat[t.name]) > 0 {
					v := median(lat[t.name])
					fmt.Printf(", %s %.1f µs (+%.1f)", t.name, v, v-d)
				}
			}
			fmt.Println()
		}
	}
	if o.rate > 0 {
		fmt.Printf("\nProxy CPU time per transaction (µs, utime+stime of the proxy process), `pgbench -S -R %d`, %s per run, median of %d interleaved rounds\n\n",
			o.rate, o.duration, o.rounds)
		header, rule := "| clients |", "| ---: |"
		for _, t := range targets {
			if t.proc != nil {
				header += " " + t.name + " |"
				rule += " ---: |"
			}
		}
		for _, other := range []string{"pgbouncer", "haproxy", o.baseName} {
			if has(other) && has("pgquorum") {
				header += " pgquorum / " + other + " |"
				rule += " ---: |"
			}
		}
		fmt.Println(header)
		fmt.Println(rule)
		for _, c := range o.clients {
			line := fmt.Sprintf("| %d |", c)
			for _, t := range targets {
				if t.proc != nil {
					line += fmt.Sprintf(" %.1f |", median(cpu[t.name][c]))
				}
			}
			for _, other := range []string{"pgbouncer", "haproxy", o.baseName} {
				if has(other) && has("pgquorum") {
					line += " " + ratio(median(cpu["pgquorum"][c]), median(cpu[other][c])) + " |"
				}
			}
			fmt.Println(line)
		}
	}
}

type result struct {
	tps          float64
	transactions int64
	medianUS     float64
}

var (
	tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	txLine  = regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`)
)

// builtinScript is the pgbench built-in script every run uses (-builtin), unless scriptFile
// (-script) names a script file.
var builtinScript, scriptFile = "select-only", ""

// pgbench runs pgbench -S (or the -builtin script) against t; rate > 0 runs it at that fixed rate.
func pgbench(ctx context.Context, env []string, logDir string, t target, clients int, d time.Duration, rate int) (result, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return result{}, err
	}
	prefix := filepath.Join(logDir, fmt.Sprintf("%s-%d-%d", t.name, clients, time.Now().UnixNano()))
	jobs := min(clients, 2)
	script := []string{"-b", builtinScript}
	if scriptFile != "" {
		script = []string{"-f", scriptFile}
	}
	args := []string{script[0], script[1], "-n", "-T", strconv.Itoa(int(d.Seconds())), "-c", strconv.Itoa(clients), "-j", strconv.Itoa(jobs),
		"-h", "127.0.0.1", "-p", strconv.Itoa(t.port), "-U", localcluster.QueryUser}
	logLatency := clients == 1 && rate == 0
	if logLatency {
		args = append(args, "-l", "--log-prefix", prefix)
	}
	if rate > 0 {
		args = append(args, "-R", strconv.Itoa(rate))
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
	n := txLine.FindSubmatch(out)
	if m == nil || n == nil {
		return result{}, fmt.Errorf("pgbench against %s: no tps in output:\n%s", t.name, out)
	}
	res := result{}
	res.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	res.transactions, _ = strconv.ParseInt(string(n[1]), 10, 64)
	if logLatency {
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
