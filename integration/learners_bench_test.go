package integration

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
	"github.com/pgquorum/pgquorum/rejoin"
)

// BenchmarkLearners measures a sidecar fleet (SPEC §7: ≥ 100 learners, a new
// primary visible to all within 200 ms of its commit):
//
//	CI=true go test -run '^$' -bench Learners -benchtime 1x -timeout 30m ./integration
//
// PGQUORUM_BENCH_LEARNERS=20,50 picks the fleet sizes (default 20,50,100). For
// each size: a fresh 3-node PostgreSQL quorum cluster, three voter proxies as
// `pgquorum run` processes with the default timing (100 ms Raft ticks, health
// probes every 500 ms), and N learners started in this process as separate
// node.Node instances (N processes do not fit a 2-core machine next to
// PostgreSQL and the voters; what a learner sends and receives is the same).
// It reports:
//
//	join      first learner started -> every learner routes to the agreed primary
//	idle      over 10 s with no client: CPU of the Raft leader's process, of the
//	          learners' process, and of every PostgreSQL process (% of one core),
//	          and the client connections PostgreSQL serves (all of them
//	          pgquorum's own: probes, the leader's admin sessions)
//	switchover  learnerSwitchovers switchovers (each followed by a rejoin of the
//	          old primary, not measured): for every learner, the time from the
//	          completion the leader recorded (its CompleteFailover proposal,
//	          before the commit) to the learner routing to the new primary;
//	          min/median/p99/max over all learners and switchovers, and the
//	          leader's and PostgreSQL's CPU during the switchovers
//
// The machine's load average is reported too: other work on the machine
// changes every figure.
func BenchmarkLearners(b *testing.B) {
	sizes := []int{20, 50, 100}
	if env := os.Getenv("PGQUORUM_BENCH_LEARNERS"); env != "" {
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				b.Fatalf("PGQUORUM_BENCH_LEARNERS=%q: want a comma-separated list of fleet sizes", env)
			}
			sizes = append(sizes, n)
		}
	}
	var rows []learnerRun
	for _, n := range sizes {
		b.Run(fmt.Sprintf("learners=%d", n), func(b *testing.B) {
			r := benchLearners(b, n)
			rows = append(rows, r)
			b.ReportMetric(r.join.Seconds(), "join-s")
			b.ReportMetric(ms(r.visible[len(r.visible)/2]), "visible-median-ms")
			b.ReportMetric(ms(r.visible[len(r.visible)-1]), "visible-max-ms")
			b.ReportMetric(float64(r.pgConns), "pg-conns")
			b.Log(learnerTable([]learnerRun{r}))
		})
	}
	b.Log(learnerTable(rows))
}

// learnerSwitchovers is the number of switchovers per fleet size.
const learnerSwitchovers = 2

// learnerRun is what one fleet size measured.
type learnerRun struct {
	learners               int
	join                   time.Duration
	visible                []time.Duration // sorted, every learner of every switchover
	switchover             []time.Duration // request -> answer
	idleLeader, idleFleet  float64         // % of one core
	idlePG                 float64
	pgConns                int
	pgConnsDetail          string
	switchLeader, switchPG float64 // % of one core while switching over
	loadBefore, loadAfter  string
}

func benchLearners(b *testing.B, count int) learnerRun {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pg := StartCluster(b, localcluster.Options{})
	proxies := startFailoverProxies(b, pg, ProxyOptions{})
	defer (&failoverBench{pg: pg, proxies: proxies}).teardown() // stop this size's cluster before the next one starts
	pgDir := filepath.Dir(filepath.Dir(pg.Nodes[0].DataDir))
	run := learnerRun{learners: count, loadBefore: loadAverage()}

	start := time.Now()
	fleet := startLearners(ctx, b, pg, proxies, 1000, count)
	started := time.Since(start)
	if err := fleet.waitRouting(ctx, 1); err != nil {
		b.Fatal(err)
	}
	run.join = time.Since(start)
	b.Logf("%d learners joined and route %v after the first one started (starting them took %v)", count,
		run.join.Round(time.Millisecond), started.Round(time.Millisecond))

	// Idle: no client anywhere.
	leader := raftLeader(ctx, b, proxies)
	idle := newCPUWindow(leader.Pid(), pgDir)
	idle.resume()
	time.Sleep(10 * time.Second)
	idle.pause()
	run.idleLeader, run.idleFleet, run.idlePG = idle.percent()
	run.pgConns, run.pgConnsDetail = pgClientConnections(ctx, b, pg)

	// Switchovers, each to a standby that is not fenced, then a rejoin of the
	// old primary so the next one has a standby too.
	switching := newCPUWindow(leader.Pid(), pgDir)
	for range learnerSwitchovers {
		v, err := proxies.Proxies[0].Cluster(ctx)
		if err != nil {
			b.Fatal(err)
		}
		from, to := v.Primary, nextStandby(v)
		watch := fleet.watchPrimary(ctx, to)
		client := leader.Client()
		client.HTTP.Timeout = time.Minute
		switching.resume()
		requested := time.Now()
		h, err := client.Switchover(ctx, to)
		if err != nil {
			b.Fatalf("switchover %s -> %s: %v", from, to, err)
		}
		if h.Outcome != clusterstate.OutcomeCompleted || h.NewPrimary != to {
			b.Fatalf("switchover %s -> %s: %+v", from, to, h)
		}
		applied, routed := watch()
		switching.pause()
		run.switchover = append(run.switchover, time.Since(requested))
		var applyLag, routeLag []time.Duration
		for i, at := range routed {
			if at.IsZero() {
				b.Fatalf("learner %d never routed to %s", fleet.Nodes[i].Raft().Status().ID, to)
			}
			run.visible = append(run.visible, max(at.Sub(h.At), 0))
			applyLag = append(applyLag, max(applied[i].Sub(h.At), 0))
			routeLag = append(routeLag, at.Sub(applied[i]))
		}
		slices.Sort(applyLag)
		slices.Sort(routeLag)
		b.Logf("switchover %s -> %s answered in %v; learners applied it %v (median) / %v (max) after the completion was recorded, and routed %v / %v after applying",
			from, to, time.Since(requested).Round(time.Millisecond), applyLag[len(applyLag)/2].Round(time.Millisecond), applyLag[len(applyLag)-1].Round(time.Millisecond),
			routeLag[len(routeLag)/2].Round(time.Millisecond), routeLag[len(routeLag)-1].Round(time.Millisecond))
		if _, err := rejoin.Run(ctx, benchRejoinOptions(b, leader, pg.Node(from))); err != nil {
			b.Fatalf("rejoin %s: %v", from, err)
		}
		waitUnfenced(ctx, b, proxies, from)
	}
	run.switchLeader, _, run.switchPG = switching.percent()
	slices.Sort(run.visible)
	run.loadAfter = loadAverage()
	return run
}

// raftLeader returns the voter proxy that leads.
func raftLeader(ctx context.Context, b *testing.B, proxies *ProxyCluster) *ProxyProcess {
	id, err := leaderOf(ctx, proxies.Proxies)
	if err != nil {
		b.Fatal(err)
	}
	return proxyByID(proxies, id)
}

// nextStandby picks the first configured node that is neither the primary nor fenced.
func nextStandby(v admin.ClusterView) string {
	for _, n := range v.Nodes {
		if n.Name != v.Primary && !slices.Contains(v.Fenced, n.Name) {
			return n.Name
		}
	}
	return ""
}

func benchRejoinOptions(b *testing.B, proxy *ProxyProcess, node *localcluster.Node) rejoin.Options {
	return rejoin.Options{
		PGData:        node.DataDir,
		Admin:         []string{proxy.Admin},
		Token:         proxy.AdminOptions().Token,
		SSLMode:       "disable",
		ServerLog:     node.LogFile,
		StreamTimeout: time.Minute,
		Logger:        slog.New(slog.DiscardHandler),
	}
}

// waitUnfenced waits until every voter proxy lists node as not fenced.
func waitUnfenced(ctx context.Context, b *testing.B, proxies *ProxyCluster, node string) {
	for _, p := range proxies.Proxies {
		if err := p.WaitCluster(ctx, node+" unfenced", func(v admin.ClusterView) bool { return !slices.Contains(v.Fenced, node) }); err != nil {
			b.Fatal(err)
		}
	}
}

// pgClientConnections counts the client backends of every PostgreSQL node
// (this query's own excluded), with a breakdown by application_name.
func pgClientConnections(ctx context.Context, b *testing.B, pg *localcluster.Cluster) (int, string) {
	total := 0
	var detail []string
	for _, n := range pg.Nodes {
		s, err := n.QueryString(ctx, `SELECT coalesce(string_agg(a, ' '), '') FROM (
  SELECT application_name || '=' || count(*) AS a FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY application_name ORDER BY application_name) s`)
		if err != nil {
			b.Fatal(err)
		}
		fields := strings.Fields(s)
		count := 0
		for _, f := range fields {
			_, c, _ := strings.Cut(f, "=")
			v, _ := strconv.Atoi(c)
			count += v
		}
		total += count
		detail = append(detail, fmt.Sprintf("%s: %d (%s)", n.Name, count, strings.Join(fields, " ")))
	}
	return total, strings.Join(detail, "; ")
}

// cpuWindow adds up the CPU time (utime+stime, all threads) of the leader
// process, this process and every PostgreSQL process over stretches of wall
// time between resume and pause.
type cpuWindow struct {
	leader, self int
	pgDir        string

	elapsed, leaderCPU, selfCPU, pgCPU time.Duration
	// At the last resume:
	startedAt      time.Time
	leader0, self0 time.Duration
	pg0            map[int]time.Duration
}

func newCPUWindow(leader int, pgDir string) *cpuWindow {
	return &cpuWindow{leader: leader, self: os.Getpid(), pgDir: pgDir}
}

func (w *cpuWindow) resume() {
	w.startedAt = time.Now()
	w.leader0, w.self0 = processCPU(w.leader), processCPU(w.self)
	w.pg0 = pgCPU(w.pgDir)
}

func (w *cpuWindow) pause() {
	w.elapsed += time.Since(w.startedAt)
	w.leaderCPU += processCPU(w.leader) - w.leader0
	w.selfCPU += processCPU(w.self) - w.self0
	for pid, t := range pgCPU(w.pgDir) {
		w.pgCPU += t - w.pg0[pid] // a process that started meanwhile counts from zero
	}
}

// percent returns the leader's, this process's and PostgreSQL's CPU in % of one core.
func (w *cpuWindow) percent() (leader, self, pg float64) {
	pct := func(d time.Duration) float64 { return 100 * d.Seconds() / w.elapsed.Seconds() }
	return pct(w.leaderCPU), pct(w.selfCPU), pct(w.pgCPU)
}

// pgCPU returns the CPU time of every process under the cluster's directory.
func pgCPU(dir string) map[int]time.Duration {
	pids, _ := localcluster.ProcessesIn(dir)
	out := make(map[int]time.Duration, len(pids))
	for _, pid := range pids {
		out[pid] = processCPU(pid)
	}
	return out
}

// processCPU reads utime+stime of pid from /proc (zero if it is gone).
func processCPU(pid int) time.Duration {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ is 100 on Linux
}

func loadAverage() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// learnerTable renders the runs for docs/benchmarks.md.
func learnerTable(runs []learnerRun) string {
	var b strings.Builder
	b.WriteString("\n| learners | join s | visible after completion ms (min / median / p99 / max) | switchover s | idle CPU % leader / learners' process / PostgreSQL | PostgreSQL client connections | switchover CPU % leader / PostgreSQL | load average before → after |\n")
	b.WriteString("| ---: | ---: | --- | --- | --- | ---: | --- | --- |\n")
	for _, r := range runs {
		q := func(p int) float64 { return ms(r.visible[min(len(r.visible)-1, (p*len(r.visible)+99)/100-1)]) }
		var sw []string
		for _, d := range r.switchover {
			sw = append(sw, fmt.Sprintf("%.2f", d.Seconds()))
		}
		fmt.Fprintf(&b, "| %d | %.2f | %.0f / %.0f / %.0f / %.0f | %s | %.1f / %.1f / %.1f | %d | %.1f / %.1f | %s → %s |\n",
			r.learners, r.join.Seconds(), ms(r.visible[0]), q(50), q(99), q(100), strings.Join(sw, ", "),
			r.idleLeader, r.idleFleet, r.idlePG, r.pgConns, r.switchLeader, r.switchPG, r.loadBefore, r.loadAfter)
	}
	for _, r := range runs {
		fmt.Fprintf(&b, "\n%d learners, PostgreSQL connections: %s", r.learners, r.pgConnsDetail)
	}
	return b.String()
}
