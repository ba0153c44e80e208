package integration

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BenchmarkFailoverClientErrors is BenchmarkFailover (kill -9 of the primary, product timing)
// seen from the clients: per failover, the errors clients got, by class, and the longest wait
// of a request held during the failover.
//
//	CI=true go test -run '^$' -bench FailoverClientErrors -benchtime 5x ./integration
//
// Each iteration starts a fresh cluster and three proxies, opens 50 idle pgx sessions (with
// settings and prepared statements) and 20 autocommit writers, kills the primary, and counts:
//
//	unknown     08007: inserts that reached the old primary and lost their answer. kill -9 of
//	            the postmaster leaves its backends running until they notice, so an insert sent
//	            just after the kill may still reach one; SPEC §5's answer for it is 08007.
//	arrived     any other error of an insert sent after the kill (target 0)
//	before      any other error of an insert sent before the kill (target 0)
//	idle        errors of the idle sessions' first query after the failover (target 0)
//	held-max    the longest an insert sent after the kill took to succeed (its hold)
//	unavailable kill -> first insert acknowledged by the new primary
//
// Only the time from the kill to the first acknowledged insert on the new primary is timed.
func BenchmarkFailoverClientErrors(b *testing.B) {
	var runs []clientErrorRun
	for i := range b.N {
		b.StopTimer()
		runs = append(runs, benchClientErrors(b, i+1))
		b.StartTimer()
	}
	b.StopTimer()
	b.Log(clientErrorTable(runs))
	sum := func(f func(clientErrorRun) int) float64 {
		total := 0
		for _, r := range runs {
			total += f(r)
		}
		return float64(total) / float64(len(runs))
	}
	b.ReportMetric(sum(func(r clientErrorRun) int { return r.unknown }), "08007/failover")
	b.ReportMetric(sum(func(r clientErrorRun) int { return total(r.arrived) }), "arrived-errors/failover")
	b.ReportMetric(sum(func(r clientErrorRun) int { return total(r.before) }), "before-errors/failover")
	b.ReportMetric(sum(func(r clientErrorRun) int { return r.idleErrors }), "idle-errors/failover")
	var held, unavailable []time.Duration
	for _, r := range runs {
		held = append(held, r.heldMax)
		unavailable = append(unavailable, r.unavailable)
	}
	slices.Sort(held)
	slices.Sort(unavailable)
	b.ReportMetric(ms(held[len(held)-1]), "held-max-ms")
	b.ReportMetric(ms(unavailable[len(unavailable)/2]), "unavailable-median-ms")
}

// clientErrorRun is one measured failover.
type clientErrorRun struct {
	newPrimary  string
	unavailable time.Duration
	heldMax     time.Duration
	unknown     int            // 08007 answers
	before      map[string]int // other errors of inserts sent before the kill, by class
	arrived     map[string]int // other errors of inserts sent after the kill, by class
	idleErrors  int
	acked       int
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func benchClientErrors(b *testing.B, iteration int) clientErrorRun {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := startFailoverBench(ctx, b, "bench_clients")
	defer f.teardown()
	proxies := f.proxies
	var idle []*pgx.Conn
	for i := range 50 {
		c, err := pgx.Connect(ctx, proxies.Proxies[i%3].ConnString())
		if err != nil {
			b.Fatal(err)
		}
		defer closeConn(c)
		if _, err := c.Exec(ctx, fmt.Sprintf("SET application_name = 'bench-%d'", i)); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Prepare(ctx, "one", "SELECT $1::int"); err != nil {
			b.Fatal(err)
		}
		idle = append(idle, c)
	}
	load := startWriteLoad(b, "bench_clients", proxies.Proxies, loadOptions{Writers: 20, KeepSession: true})
	defer load.Stop()
	if err := load.WaitAcks(ctx, 200); err != nil {
		b.Fatal(err)
	}

	b.StartTimer()
	killedAt, promoted := f.killPrimary(ctx, b)
	if _, err := load.WaitAck(ctx, killedAt, promoted.Port); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if err := load.WaitAcks(ctx, 200); err != nil {
		b.Fatal(err)
	}
	load.Stop()

	run := clientErrorRun{newPrimary: promoted.Name, before: map[string]int{}, arrived: map[string]int{}}
	acks := load.Acks()
	run.acked = len(acks)
	first := time.Time{}
	for _, a := range acks {
		if a.SentAt.After(killedAt) {
			run.heldMax = max(run.heldMax, a.At.Sub(a.SentAt))
		}
		if a.Port == promoted.Port && a.SentAt.After(killedAt) && (first.IsZero() || a.At.Before(first)) {
			first = a.At
		}
	}
	run.unavailable = first.Sub(killedAt)
	for _, f := range load.Failures() {
		switch {
		case f.Class == "08007":
			run.unknown++
		case f.SentAt.After(killedAt):
			run.arrived[f.Class]++
		default:
			run.before[f.Class]++
		}
	}
	for i, c := range idle {
		var app string
		var one int
		err := c.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app)
		if err == nil {
			err = c.QueryRow(ctx, "one", 1).Scan(&one)
		}
		if err != nil || app != fmt.Sprintf("bench-%d", i) {
			run.idleErrors++
			b.Logf("iteration %d: idle session %d after the failover: %q, %v", iteration, i, app, err)
		}
	}
	verifyAcked(ctx, b, promoted, "bench_clients", acks)
	b.Logf("iteration %d: writers: %s", iteration, load.Summary())
	b.Logf("iteration %d: %s, unavailable %v, held max %v, 08007 %d, other errors before the kill %v, after %v, idle errors %d",
		iteration, promoted.Name, run.unavailable.Round(time.Millisecond), run.heldMax.Round(time.Millisecond),
		run.unknown, run.before, run.arrived, run.idleErrors)
	return run
}

// clientErrorTable renders the runs, one line each.
func clientErrorTable(runs []clientErrorRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-4s %-4s %11s %11s %6s %-16s %-16s %5s %7s\n", "run", "new", "unavail-ms", "held-max-ms",
		"08007", "other before", "other after", "idle", "acked")
	for i, r := range runs {
		fmt.Fprintf(&b, "%-4d %-4s %11.0f %11.0f %6d %-16s %-16s %5d %7d\n", i+1, r.newPrimary, ms(r.unavailable), ms(r.heldMax),
			r.unknown, classes(r.before), classes(r.arrived), r.idleErrors, r.acked)
	}
	return b.String()
}

// classes renders error counts by class, "none" when there are none.
func classes(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, class := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s:%d", class, m[class]))
	}
	return strings.Join(parts, ",")
}
