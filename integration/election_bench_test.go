package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/localcluster"
)

// BenchmarkRaftLeaderElection measures the time from kill -9 of the Raft
// leader's process to a new leader known by both surviving proxies, with the
// production timing (100 ms tick, 1-2 s randomized election timeout). Each
// iteration kills the current leader and restarts it afterwards.
//
//	go test -run '^$' -bench RaftLeaderElection -benchtime 10x ./integration
func BenchmarkRaftLeaderElection(b *testing.B) {
	pg := StartCluster(b, localcluster.Options{})
	proxies := StartProxies(b, pg, ProxyOptions{})
	ctx := context.Background()
	var elections []time.Duration
	b.ResetTimer()
	for b.Loop() {
		stepCtx, cancel := context.WithTimeout(ctx, time.Minute)
		leaderID, err := leaderOf(stepCtx, proxies.Proxies)
		if err != nil {
			b.Fatal(err)
		}
		leader := proxyByID(proxies, leaderID)
		killedAt := time.Now()
		leader.Kill()
		for _, p := range proxies.Proxies {
			if p == leader {
				continue
			}
			if err := p.WaitCluster(stepCtx, "a new leader", func(v admin.ClusterView) bool {
				return v.Raft.Leader != 0 && v.Raft.Leader != leaderID
			}); err != nil {
				b.Fatal(err)
			}
		}
		elections = append(elections, time.Since(killedAt))
		b.StopTimer()
		if err := proxies.Start(leader); err != nil {
			b.Fatal(err)
		}
		for _, p := range proxies.Proxies {
			if err := p.WaitCluster(stepCtx, "a stable cluster", func(v admin.ClusterView) bool {
				return v.Routing.Routing && v.Raft.Leader != 0
			}); err != nil {
				b.Fatal(err)
			}
		}
		cancel()
		b.StartTimer()
	}
	slices.Sort(elections)
	b.ReportMetric(float64(elections[len(elections)/2].Milliseconds()), "median-ms")
	b.ReportMetric(float64(elections[len(elections)-1].Milliseconds()), "worst-ms")
	b.ReportMetric(float64(elections[0].Milliseconds()), "best-ms")
}
