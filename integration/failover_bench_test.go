package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/localcluster"
)

// BenchmarkFailover measures write unavailability after kill -9 of the primary
// (SPEC §7: ≤ 1 s median, ≤ 3 s worst, no acknowledged commit lost), with the
// product's default timing (health probes every 500 ms, 100 ms Raft ticks).
//
//	go test -run '^$' -bench Failover -benchtime 10x ./integration
//
// Each iteration starts a fresh PostgreSQL quorum cluster and three proxies (a
// failover fences the old primary until `pgquorum rejoin`, so the cluster cannot
// be reused), runs six writers through the proxies, kills the primary and
// measures the time from the kill to the first insert acknowledged by the new
// primary. That time is split with the failover's own records:
//
//	detect   kill -> a majority of proxies reported the primary down (observation At)
//	decide   -> the leader began the failover (BeginFailover At)
//	freeze   -> the standbys were frozen (freeze step At); it includes the routing
//	            fence (every proxy confirmed the new epoch), reported apart as "fence"
//	promote  -> the candidate was chosen and promoted (promote step At)
//	reroute  -> the first acknowledged insert on the new primary: re-point the other
//	            standby, commit the new primary, proxies route, clients reconnect
//
// Only the time from the kill to the first acknowledged write is timed (ns/op);
// setup, verification and teardown are not.
func BenchmarkFailover(b *testing.B) {
	var runs []failoverRun
	for i := range b.N {
		b.StopTimer()
		runs = append(runs, benchOneFailover(b, i+1))
		b.StartTimer()
	}
	b.StopTimer()
	b.Log(failoverTable(runs))
	unavailable := func(r failoverRun) time.Duration { return r.unavailable }
	b.ReportMetric(ms(percentile(runs, unavailable, 50)), "median-ms")
	b.ReportMetric(ms(percentile(runs, unavailable, 100)), "worst-ms")
	for _, phase := range failoverPhases {
		b.ReportMetric(ms(percentile(runs, phase.of, 50)), phase.name+"-median-ms")
	}
}

// failoverRun is one measured failover; the phases are relative durations.
type failoverRun struct {
	newPrimary                               string
	unavailable                              time.Duration // kill -> first acknowledged insert on the new primary
	detect, decide, freeze, promote, reroute time.Duration
	complete                                 time.Duration // kill -> CompleteFailover At, for the table
	// reroute split: promote step -> repoint step, -> the failover completed, -> first acknowledged insert
	repoint, completion, firstWrite time.Duration
	fence                           time.Duration // the routing fence, from the freeze step's detail
	acked, errors                   int
}

var failoverPhases = []struct {
	name string
	of   func(failoverRun) time.Duration
}{
	{"detect", func(r failoverRun) time.Duration { return r.detect }},
	{"decide", func(r failoverRun) time.Duration { return r.decide }},
	{"freeze", func(r failoverRun) time.Duration { return r.freeze }},
	{"fence", func(r failoverRun) time.Duration { return r.fence }},
	{"promote", func(r failoverRun) time.Duration { return r.promote }},
	{"reroute", func(r failoverRun) time.Duration { return r.reroute }},
	{"repoint", func(r failoverRun) time.Duration { return r.repoint }},
	{"completion", func(r failoverRun) time.Duration { return r.completion }},
	{"first-write", func(r failoverRun) time.Duration { return r.firstWrite }},
}

// benchOneFailover runs one iteration with the timer stopped, except from the
// kill to the first acknowledged insert on the new primary.
func benchOneFailover(b *testing.B, iteration int) failoverRun {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := startFailoverBench(ctx, b, "bench")
	defer f.teardown()
	proxies := f.proxies
	load := startWriteLoad(b, "bench", proxies.Proxies, loadOptions{Writers: 2 * len(proxies.Proxies), Pace: writePace})
	defer load.Stop()
	if err := load.WaitAcks(ctx, 200); err != nil {
		b.Fatal(err)
	}
	watch := watchDownReports(proxies.Proxies[0], "pg1")
	defer watch.Stop()

	b.StartTimer()
	killedAt, promoted := f.killPrimary(ctx, b)
	first, err := load.WaitAck(ctx, killedAt, promoted.Port)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	downAt := watch.Stop()

	if err := load.WaitAcks(ctx, 100); err != nil {
		b.Fatal(err)
	}
	load.Stop()
	acks := load.Acks()
	verifyAcked(ctx, b, promoted, "bench", acks)

	history, err := proxies.Proxies[0].Client().History(ctx)
	if err != nil {
		b.Fatal(err)
	}
	i := slices.IndexFunc(history, func(h clusterstate.HistoryEntry) bool {
		return h.Epoch == 2 && h.Outcome == clusterstate.OutcomeCompleted
	})
	if i < 0 {
		b.Fatalf("no completed failover of epoch 2 in /history: %+v", history)
	}
	h := history[i]
	freezeAt, promoteAt, repointAt := stepAt(h, clusterstate.StepFreeze), stepAt(h, clusterstate.StepPromote), stepAt(h, clusterstate.StepRepoint)
	if freezeAt.IsZero() || promoteAt.IsZero() || repointAt.IsZero() {
		b.Fatalf("the failover recorded no freeze, promote or repoint step: %+v", h.Steps)
	}
	fence, err := fenceDuration(h)
	if err != nil {
		b.Fatal(err)
	}
	run := failoverRun{
		fence:       fence,
		newPrimary:  promoted.Name,
		unavailable: first.At.Sub(killedAt),
		freeze:      freezeAt.Sub(h.StartedAt),
		promote:     promoteAt.Sub(freezeAt),
		reroute:     first.At.Sub(promoteAt),
		complete:    h.At.Sub(killedAt),
		repoint:     repointAt.Sub(promoteAt),
		completion:  h.At.Sub(repointAt),
		firstWrite:  first.At.Sub(h.At),
		acked:       len(acks),
		errors:      total(load.Errors()),
	}
	// A majority of the three voters: the second report of the primary down.
	if len(downAt) >= 2 {
		run.detect = downAt[1].Sub(killedAt)
		run.decide = h.StartedAt.Sub(downAt[1])
	} else {
		b.Logf("iteration %d: saw %d down reports of pg1; detect and decide unknown", iteration, len(downAt))
		run.detect, run.decide = -1, -1
	}
	b.Logf("iteration %d: %s in %v (detect %v, decide %v, freeze %v of which fence %v, promote %v, reroute %v = repoint %v + completion %v + first write %v)",
		iteration, promoted.Name, run.unavailable.Round(time.Millisecond), run.detect.Round(time.Millisecond), run.decide.Round(time.Millisecond),
		run.freeze.Round(time.Millisecond), run.fence.Round(time.Millisecond), run.promote.Round(time.Millisecond), run.reroute.Round(time.Millisecond),
		run.repoint.Round(time.Millisecond), run.completion.Round(time.Millisecond), run.firstWrite.Round(time.Millisecond))
	return run
}

// fenceDuration reads how long the routing fence took from the freeze step's
// detail ("fenced in 3ms: confirmed by proxies 1, 2, 3; frozen: ...").
func fenceDuration(h clusterstate.HistoryEntry) (time.Duration, error) {
	for _, s := range h.Steps {
		if s.Step != clusterstate.StepFreeze {
			continue
		}
		rest, ok := strings.CutPrefix(s.Detail, "fenced in ")
		if !ok {
			break
		}
		took, _, _ := strings.Cut(rest, ":")
		return time.ParseDuration(took)
	}
	return 0, fmt.Errorf("the freeze step does not say how long the routing fence took: %+v", h.Steps)
}

// failoverBench is what one iteration of a failover benchmark sets up: a fresh quorum
// cluster, three proxies, and the table of its load on pg1, the primary that killPrimary kills.
type failoverBench struct {
	pg      *localcluster.Cluster
	proxies *ProxyCluster
	old     *localcluster.Node
}

// startFailoverBench sets up one iteration; its teardown must run before the next one starts.
func startFailoverBench(ctx context.Context, b *testing.B, table string) *failoverBench {
	pg := StartCluster(b, localcluster.Options{})
	f := &failoverBench{pg: pg, proxies: startFailoverProxies(b, pg, ProxyOptions{}), old: pg.Node("pg1")}
	writeLoadTable(ctx, b, f.old, table)
	return f
}

// killPrimary kills pg1 (kill -9) and returns when the proxies agree on a new primary: when
// the kill happened, and the new primary.
func (f *failoverBench) killPrimary(ctx context.Context, b *testing.B) (killedAt time.Time, promoted *localcluster.Node) {
	killedAt = time.Now()
	if err := f.old.Kill(); err != nil {
		b.Fatal(err)
	}
	return killedAt, f.pg.Node(waitNewPrimary(ctx, b, f.proxies.Proxies, "pg1", 2))
}

// teardown stops the iteration's proxies and PostgreSQL cluster at once, and removes the data
// directories, instead of keeping ten clusters until the benchmark's cleanup.
func (f *failoverBench) teardown() {
	for _, p := range f.proxies.Proxies {
		p.Kill()
	}
	_ = f.pg.Close()
	for _, n := range f.pg.Nodes {
		_ = os.RemoveAll(n.DataDir)
	}
}

// stepAt returns the time of the last record of step in h, or zero.
func stepAt(h clusterstate.HistoryEntry, step clusterstate.Step) time.Time {
	var at time.Time
	for _, s := range h.Steps {
		if s.Step == step {
			at = s.At
		}
	}
	return at
}

// downWatch polls a proxy's /cluster every 20 ms and keeps, per proxy, the
// earliest report of node down. Reports carry the reporting proxy's clock (the
// same host here). Owner: its goroutine writes first until Stop.
type downWatch struct {
	cancel context.CancelFunc
	done   chan struct{}
	first  map[uint64]time.Time
}

func watchDownReports(p *ProxyProcess, node string) *downWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &downWatch{cancel: cancel, done: make(chan struct{}), first: map[uint64]time.Time{}}
	started := time.Now()
	go func() {
		defer close(w.done)
		for {
			if v, err := p.Cluster(ctx); err == nil {
				for _, n := range v.Nodes {
					if n.Name != node {
						continue
					}
					for _, o := range n.Observations {
						if at, seen := w.first[o.Proxy]; !o.Up && o.At.After(started) && (!seen || o.At.Before(at)) {
							w.first[o.Proxy] = o.At
						}
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

// Stop ends the watch and returns the first down report of each proxy, earliest
// first. Calling it again returns the same.
func (w *downWatch) Stop() []time.Time {
	w.cancel()
	<-w.done
	var times []time.Time
	for _, at := range w.first {
		times = append(times, at)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	return times
}

// percentile returns the p-th percentile (nearest rank) of f over the runs,
// ignoring negative (unknown) values.
func percentile(runs []failoverRun, f func(failoverRun) time.Duration, p int) time.Duration {
	var values []time.Duration
	for _, r := range runs {
		if v := f(r); v >= 0 {
			values = append(values, v)
		}
	}
	if len(values) == 0 {
		return -1
	}
	slices.Sort(values)
	rank := (p*len(values) + 99) / 100
	return values[max(rank, 1)-1]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// failoverTable renders the runs, one line each, with the median and worst.
func failoverTable(runs []failoverRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-4s %-4s %11s %8s %8s %8s %8s %8s %8s %8s %8s %8s %9s %7s %6s\n",
		"run", "new", "unavail-ms", "detect", "decide", "freeze", "fence", "promote", "reroute", "repoint", "complet", "1stwrite", "complete", "acked", "errors")
	for i, r := range runs {
		fmt.Fprintf(&b, "%-4d %-4s %11.0f %8.0f %8.0f %8.0f %8.0f %8.0f %8.0f %8.0f %8.0f %8.0f %9.0f %7d %6d\n", i+1, r.newPrimary,
			ms(r.unavailable), ms(r.detect), ms(r.decide), ms(r.freeze), ms(r.fence), ms(r.promote), ms(r.reroute),
			ms(r.repoint), ms(r.completion), ms(r.firstWrite), ms(r.complete), r.acked, r.errors)
	}
	for _, q := range []struct {
		name string
		p    int
	}{{"p50", 50}, {"max", 100}} {
		fmt.Fprintf(&b, "%-9s %11.0f", q.name, ms(percentile(runs, func(r failoverRun) time.Duration { return r.unavailable }, q.p)))
		for _, phase := range failoverPhases {
			fmt.Fprintf(&b, " %8.0f", ms(percentile(runs, phase.of, q.p)))
		}
		b.WriteString("\n")
	}
	return b.String()
}
