package integration

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
)

// This file holds the write load of the failover and hold-and-retry tests and benchmarks:
// writers that insert unique ids through the proxies in autocommit and count an insert as
// acknowledged only when its commit returned success. Every error is counted by SQLSTATE, so a
// test can require "success or 08007, nothing else". Afterwards verifyAcked proves that every
// acknowledged insert is on the new primary, once.

// writePace is a pause after each acknowledged insert that leaves CPU to the proxies and
// PostgreSQL on a two-core machine: a few hundred commits per second per writer.
const writePace = 5 * time.Millisecond

// ack is one acknowledged insert.
type ack struct {
	ID     int64
	Writer int
	Port   int       // inet_server_port() of the PostgreSQL server that ran the insert
	SentAt time.Time // just before the insert was sent
	At     time.Time // when the commit's success reached the writer
}

// failure is one failed insert: its class and when it was sent.
type failure struct {
	Class  string
	SentAt time.Time
}

// loadOptions shape a writeLoad.
type loadOptions struct {
	Writers int           // spread over the proxies in turn
	Pace    time.Duration // pause after each acknowledged insert (0: none)
	// KeepSession keeps a writer's session after an error that leaves it open (08007, 40001:
	// the proxy says it is still usable), as an application would; otherwise a writer
	// reconnects after any error.
	KeepSession bool
}

// writeLoad runs writer goroutines until Stop. Owner: the test goroutine calls Stop; the
// writers update the counters under mu.
type writeLoad struct {
	table  string
	opts   loadOptions
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nextID atomic.Int64

	mu        sync.Mutex
	acks      []ack
	failures  []failure         // every failed insert
	errors    map[string]int    // SQLSTATE (or "connection") -> count, connection attempts included
	lastError map[string]string // by class
	longest   time.Duration     // the longest request, success or not (during a failover: the longest hold)
	changed   chan struct{}     // closed and replaced on every ack
}

// writeLoadTable creates the table a write load inserts into. There is no
// unique constraint on id on purpose: an insert the proxy sent twice would show
// up as a duplicate.
func writeLoadTable(ctx context.Context, t testing.TB, primary *localcluster.Node, table string) {
	t.Helper()
	sql := fmt.Sprintf("CREATE TABLE %s (id bigint NOT NULL, writer int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())", table)
	if err := primary.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

// startWriteLoad starts writers inserting into table (see writeLoadTable). They stop at Stop
// or when the test ends.
func startWriteLoad(t testing.TB, table string, proxies []*ProxyProcess, opts loadOptions) *writeLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &writeLoad{table: table, opts: opts, cancel: cancel, errors: map[string]int{}, lastError: map[string]string{},
		changed: make(chan struct{})}
	for writer := range opts.Writers {
		p := proxies[writer%len(proxies)]
		l.wg.Go(func() { l.run(ctx, writer+1, p) })
	}
	t.Cleanup(l.Stop)
	return l
}

// run is one writer: one session through p, replaced when it is gone (or after any error
// without KeepSession).
func (l *writeLoad) run(ctx context.Context, writer int, p *ProxyProcess) {
	sql := fmt.Sprintf("INSERT INTO %s (id, writer) VALUES ($1, $2) RETURNING inet_server_port()", l.table)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	for ctx.Err() == nil {
		if conn == nil {
			connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			c, err := pgx.Connect(connectCtx, p.ConnString())
			cancel()
			if err != nil {
				l.failed(ctx, err)
				continue
			}
			conn = c
		}
		// Every attempt gets a fresh id: an insert whose outcome is unknown may have
		// committed, and must not be confused with a later one.
		id := l.nextID.Add(1)
		queryCtx, cancel := context.WithTimeout(ctx, 45*time.Second)
		sentAt := time.Now()
		var port int
		err := conn.QueryRow(queryCtx, sql, id, writer).Scan(&port)
		at := time.Now()
		cancel()
		l.mu.Lock()
		l.longest = max(l.longest, at.Sub(sentAt))
		if err == nil {
			l.acks = append(l.acks, ack{ID: id, Writer: writer, Port: port, SentAt: sentAt, At: at})
			close(l.changed)
			l.changed = make(chan struct{})
		} else if ctx.Err() == nil { // not an insert aborted by Stop
			l.failures = append(l.failures, failure{Class: classOf(err), SentAt: sentAt})
		}
		l.mu.Unlock()
		if err != nil {
			l.failed(ctx, err)
			if !l.opts.KeepSession || conn.IsClosed() {
				closeConn(conn)
				conn = nil
			}
			continue
		}
		if l.opts.Pace > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(l.opts.Pace):
			}
		}
	}
}

// failed counts an error; after a connection error it waits a little, so that a dead proxy
// does not make the writer spin.
func (l *writeLoad) failed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	class := classOf(err)
	l.mu.Lock()
	l.errors[class]++
	l.lastError[class] = err.Error()
	l.mu.Unlock()
	if class == "connection" || !l.opts.KeepSession {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// classOf returns an error's SQLSTATE, or "connection" when it has none.
func classOf(err error) string {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code
	}
	return "connection"
}

// Stop stops the writers and waits for them. Calling it twice is fine.
func (l *writeLoad) Stop() {
	l.cancel()
	l.wg.Wait()
}

// Acks returns a copy of the acknowledged inserts so far, in the order they were recorded.
func (l *writeLoad) Acks() []ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks)
}

// Failures returns the failed inserts.
func (l *writeLoad) Failures() []failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failures)
}

// Errors returns the error counts by SQLSTATE ("connection" for errors without one).
func (l *writeLoad) Errors() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.errors)
}

// Summary describes the load for logs.
func (l *writeLoad) Summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, class := range slices.Sorted(maps.Keys(l.errors)) {
		parts = append(parts, fmt.Sprintf("%s x%d (last: %s)", class, l.errors[class], l.lastError[class]))
	}
	return fmt.Sprintf("%d acknowledged inserts, longest request %v, errors: [%s]", len(l.acks),
		l.longest.Round(time.Millisecond), strings.Join(parts, "; "))
}

// WaitAck waits until an insert sent at or after since is acknowledged by the server on port
// (0 = any) and returns the first such one.
func (l *writeLoad) WaitAck(ctx context.Context, since time.Time, port int) (ack, error) {
	for {
		l.mu.Lock()
		changed := l.changed
		var first ack
		found := false
		for _, a := range l.acks {
			if !a.SentAt.Before(since) && (port == 0 || a.Port == port) && (!found || a.At.Before(first.At)) {
				first, found = a, true
			}
		}
		l.mu.Unlock()
		if found {
			return first, nil
		}
		select {
		case <-ctx.Done():
			return ack{}, fmt.Errorf("no insert sent after %s acknowledged by port %d: %w (%s)",
				since.Format("15:04:05.000"), port, ctx.Err(), l.Summary())
		case <-changed:
		}
	}
}

// WaitAcks waits until n more inserts are acknowledged.
func (l *writeLoad) WaitAcks(ctx context.Context, n int) error {
	l.mu.Lock()
	target := len(l.acks) + n
	l.mu.Unlock()
	for {
		l.mu.Lock()
		changed, count := l.changed, len(l.acks)
		l.mu.Unlock()
		if count >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d more acknowledged inserts: %w (%s)", n, ctx.Err(), l.Summary())
		case <-changed:
		}
	}
}

// closeConn closes a pgx connection within a second.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// verifyAcked checks on node (queried directly, not through a proxy) that every
// acknowledged insert of acks is in table exactly once, and that no id appears
// twice. It returns how many rows the table holds.
func verifyAcked(ctx context.Context, t testing.TB, node *localcluster.Node, table string, acks []ack) int {
	t.Helper()
	conn, err := node.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, fmt.Sprintf("SELECT id, count(*) FROM %s GROUP BY id", table))
	if err != nil {
		t.Fatalf("read %s on %s: %v", table, node.Name, err)
	}
	counts := map[int64]int64{}
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		counts[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read %s on %s: %v", table, node.Name, err)
	}
	var missing []int64
	for _, a := range acks {
		if counts[a.ID] == 0 {
			missing = append(missing, a.ID)
		}
	}
	var duplicated []int64
	total := 0
	for id, n := range counts {
		total += int(n)
		if n > 1 {
			duplicated = append(duplicated, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d acknowledged inserts are missing on %s (lost commits), e.g. ids %v",
			len(missing), len(acks), node.Name, missing[:min(len(missing), 10)])
	}
	if len(duplicated) > 0 {
		slices.Sort(duplicated)
		t.Errorf("%d ids were inserted more than once on %s (a request was sent twice), e.g. %v",
			len(duplicated), node.Name, duplicated[:min(len(duplicated), 10)])
	}
	return total
}
