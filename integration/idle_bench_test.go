package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/localcluster"
)

// BenchmarkIdleCPU measures the CPU a `pgquorum run` process uses with no
// client at all: three voters and one learner (a sidecar) in front of a real
// quorum cluster, production settings (info logs, 100 ms Raft ticks, 500 ms
// health probes), utime+stime from /proc/PID/stat over 10 s:
//
//	CI=true go test -run '^$' -bench IdleCPU -benchtime 1x ./integration
//
// PGQUORUM_BENCH_BINARY runs another build of pgquorum (to compare with an
// older one).
func BenchmarkIdleCPU(b *testing.B) {
	pg := StartCluster(b, localcluster.Options{})
	proxies := startFailoverProxies(b, pg, ProxyOptions{LogLevel: "info", Binary: os.Getenv("PGQUORUM_BENCH_BINARY")})
	defer (&failoverBench{pg: pg, proxies: proxies}).teardown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	learner := proxies.AddNode(b, 10, false)
	if err := learner.WaitRouting(ctx); err != nil {
		b.Fatal(err)
	}
	leaderID, err := leaderOf(ctx, proxies.Proxies)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(2 * time.Second) // past the start-up (first probes, version reports)
	const window = 10 * time.Second
	before := map[uint64]time.Duration{}
	for _, p := range proxies.Proxies {
		before[p.ID] = processCPU(p.Pid())
	}
	load := loadAverage()
	time.Sleep(window)
	var lines []string
	perRole := map[string][]float64{}
	for _, p := range proxies.Proxies {
		role := "follower"
		switch {
		case p.ID == leaderID:
			role = "leader"
		case p == learner:
			role = "learner"
		}
		used := processCPU(p.Pid()) - before[p.ID]
		perSecond := float64(used.Microseconds()) / 1000 / window.Seconds()
		lines = append(lines, fmt.Sprintf("proxy %d (%s): %.1f ms of CPU per second", p.ID, role, perSecond))
		perRole[role] = append(perRole[role], perSecond)
	}
	for role, values := range perRole { // the mean of the two followers
		sum := 0.0
		for _, v := range values {
			sum += v
		}
		b.ReportMetric(sum/float64(len(values)), role+"-ms/s")
	}
	slices.Sort(lines)
	b.Logf("idle, no client, over %v (load average %s; CPU time in 10 ms ticks):\n%s", window, load, strings.Join(lines, "\n"))
}
