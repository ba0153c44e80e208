package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
)

// BenchmarkFailoverCommitOutcomes measures what clients committing explicit transactions are
// told about COMMITs in flight when the primary is killed (SPEC §5: their real outcome, read
// from the new primary; target: no 08007), and proves every answer right:
//
//	CI=true go test -run '^$' -bench FailoverCommitOutcomes -benchtime 3x ./integration
//
// Each iteration starts a fresh cluster and three proxies, runs 16 writers (BEGIN; INSERT a
// unique id; COMMIT) through them, kills the primary with kill -9 and waits until the writers
// commit on the new primary. Each COMMIT's answer is one of:
//
//	committed      success: the id must be on the new primary, exactly once
//	not committed  40001 (at COMMIT or before): the id must not be there
//	unknown        08007 or a lost connection at COMMIT: either is allowed (counted)
//
// Reported per failover: 08007 (unknown answers), and how many answers of COMMITs in flight
// at the kill were resolved by the proxy (a success or 40001 told after the loss). The timer
// covers only the kill to the first commit on the new primary.
func BenchmarkFailoverCommitOutcomes(b *testing.B) {
	var runs []commitOutcomeRun
	for i := range b.N {
		b.StopTimer()
		runs = append(runs, benchCommitOutcomes(b, i+1))
		b.StartTimer()
	}
	b.StopTimer()
	var unknown, resolved, committed, notCommitted int
	for i, r := range runs {
		b.Logf("failover %d: %d committed, %d not committed (40001), %d unknown (08007 %d, connection %d); lost-COMMIT answers resolved by the proxy: %d",
			i+1, r.committed, r.notCommitted, r.unknown, r.unknown08007, r.unknown-r.unknown08007, r.resolved)
		unknown += r.unknown08007
		resolved += r.resolved
		committed += r.committed
		notCommitted += r.notCommitted
	}
	n := float64(len(runs))
	b.ReportMetric(float64(unknown)/n, "08007/failover")
	b.ReportMetric(float64(resolved)/n, "resolved/failover")
	b.ReportMetric(float64(committed)/n, "committed/failover")
	b.ReportMetric(float64(notCommitted)/n, "40001/failover")
}

// commitOutcomeRun is one failover's answers.
type commitOutcomeRun struct {
	committed, notCommitted, unknown, unknown08007 int
	resolved                                       int // COMMITs sent before the kill and answered after it, not 08007
}

func benchCommitOutcomes(b *testing.B, iteration int) commitOutcomeRun {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f := startFailoverBench(ctx, b, "outcomes")
	defer f.teardown()
	proxies := f.proxies
	load := startTxLoad(proxies.Proxies, "outcomes", 16)
	defer load.Stop()
	if err := load.waitCommits(ctx, 200, 0); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	killedAt, promoted := f.killPrimary(ctx, b)
	if err := load.waitCommits(ctx, 1, promoted.Port); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if err := load.waitCommits(ctx, 100, promoted.Port); err != nil {
		b.Fatal(err)
	}
	load.Stop()

	b.Logf("failover %d: the proxies' resolutions: %s", iteration, resolutionLog(proxies.Proxies))
	for _, a := range load.answers {
		if a.outcome == txUnknown && a.atCommit {
			b.Logf("failover %d: COMMIT sent %v after the kill, answered %v after: %v", iteration,
				a.commitSent.Sub(killedAt).Round(time.Millisecond), a.answered.Sub(killedAt).Round(time.Millisecond), a.err)
		}
	}
	present, err := idCounts(ctx, promoted, "outcomes")
	if err != nil {
		b.Fatal(err)
	}
	var run commitOutcomeRun
	for _, a := range load.answers {
		switch a.outcome {
		case txCommitted:
			run.committed++
			if present[a.id] != 1 {
				b.Errorf("iteration %d: id %d was told committed but is on the new primary %d times", iteration, a.id, present[a.id])
			}
		case txNotCommitted:
			run.notCommitted++
			if present[a.id] != 0 {
				b.Errorf("iteration %d: id %d was told not committed (%v) but is on the new primary", iteration, a.id, a.err)
			}
		case txUnknown:
			run.unknown++
			if a.code == "08007" {
				run.unknown08007++
			}
			if present[a.id] > 1 {
				b.Errorf("iteration %d: id %d is on the new primary %d times", iteration, a.id, present[a.id])
			}
		}
		if a.commitSent.Before(killedAt) && a.answered.After(killedAt) && a.outcome != txUnknown && a.atCommit {
			run.resolved++
		}
	}
	return run
}

// idCounts returns how many rows of table hold each id, on node.
func idCounts(ctx context.Context, node *localcluster.Node, table string) (map[int64]int, error) {
	conn, err := node.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer closeConn(conn)
	rows, err := conn.Query(ctx, "SELECT id, count(*) FROM "+table+" GROUP BY id")
	if err != nil {
		return nil, err
	}
	counts := map[int64]int{}
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		counts[id] = int(n)
	}
	return counts, rows.Err()
}

type txOutcome uint8

const (
	txCommitted txOutcome = iota + 1
	txNotCommitted
	txUnknown
)

// txAnswer is what one writer was told about one transaction.
type txAnswer struct {
	id         int64
	outcome    txOutcome
	atCommit   bool // the answer is the COMMIT's (not an earlier statement's)
	code       string
	err        error
	port       int
	commitSent time.Time
	answered   time.Time
}

// txLoad runs writers of explicit transactions until Stop. Owner: the writers append to
// answers under mu; read answers only after Stop.
type txLoad struct {
	table  string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nextID atomic.Int64

	mu      sync.Mutex
	answers []txAnswer
	changed chan struct{}
}

func startTxLoad(proxies []*ProxyProcess, table string, writers int) *txLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &txLoad{table: table, cancel: cancel, changed: make(chan struct{})}
	for i := range writers {
		p := proxies[i%len(proxies)]
		l.wg.Go(func() { l.run(ctx, p) })
	}
	return l
}

// Stop ends the writers and waits for them (idempotent).
func (l *txLoad) Stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *txLoad) run(ctx context.Context, p *ProxyProcess) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	insert := fmt.Sprintf("INSERT INTO %s (id, writer) VALUES ($1, 0) RETURNING inet_server_port()", l.table)
	for ctx.Err() == nil {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			c, err := pgx.Connect(cctx, p.ConnString())
			cancel()
			if err != nil {
				pause(ctx)
				continue
			}
			conn = c
		}
		id := l.nextID.Add(1)
		a := l.transaction(ctx, conn, insert, id)
		if ctx.Err() != nil && a.outcome != txCommitted {
			return // stopped mid-transaction: not an answer of the failover
		}
		l.mu.Lock()
		l.answers = append(l.answers, a)
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
		if a.err != nil {
			if conn.IsClosed() || a.outcome == txUnknown {
				closeConn(conn)
				conn = nil
			}
			pause(ctx)
		}
	}
}

// transaction runs BEGIN; INSERT id; COMMIT and classifies the answer.
func (l *txLoad) transaction(ctx context.Context, conn *pgx.Conn, insert string, id int64) txAnswer {
	a := txAnswer{id: id}
	qctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tx, err := conn.Begin(qctx)
	if err == nil {
		err = tx.QueryRow(qctx, insert, id).Scan(&a.port)
		if err != nil {
			_ = tx.Rollback(qctx)
		}
	}
	if err != nil {
		// Before COMMIT: the transaction was not committed, whatever the error.
		a.outcome, a.err, a.answered = txNotCommitted, err, time.Now()
		return a
	}
	a.atCommit = true
	a.commitSent = time.Now()
	err = tx.Commit(qctx)
	a.answered = time.Now()
	a.err = err
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		a.outcome = txCommitted
	case errors.As(err, &pgErr) && pgErr.Code == "40001":
		a.outcome, a.code = txNotCommitted, pgErr.Code
	case errors.As(err, &pgErr):
		a.outcome, a.code = txUnknown, pgErr.Code
	default:
		a.outcome = txUnknown
	}
	return a
}

// waitCommits waits until n more transactions committed on the server at port (0: any).
func (l *txLoad) waitCommits(ctx context.Context, n, port int) error {
	l.mu.Lock()
	start := len(l.answers)
	l.mu.Unlock()
	for {
		l.mu.Lock()
		got := 0
		for _, a := range l.answers[start:] {
			if a.outcome == txCommitted && (port == 0 || a.port == port) {
				got++
			}
		}
		changed := l.changed
		var codes []string
		for _, a := range l.answers[max(0, len(l.answers)-3):] {
			if a.err != nil {
				codes = append(codes, a.err.Error())
			}
		}
		l.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d commits on port %d (got %d; last errors: %s): %w", n, port, got, strings.Join(codes, "; "), ctx.Err())
		case <-changed:
		}
	}
}

func pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Millisecond):
	}
}

// resolutionLog counts the proxies' log lines about lost COMMITs, by what they say.
func resolutionLog(proxies []*ProxyProcess) string {
	counts := map[string]int{}
	for _, p := range proxies {
		data, err := os.ReadFile(p.LogPath)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			for _, what := range []string{`outcome=committed`, `outcome="not committed"`, `outcome=unknown`,
				"cannot read a lost COMMIT", "replication cannot be confirmed", "the primary ended the session",
				"backend ended the session; moving it", "several requests in flight"} {
				if strings.Contains(line, what) {
					counts[what]++
				}
			}
		}
	}
	return fmt.Sprint(counts)
}
