package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/localcluster"
)

// This file holds the write load of the failover tests and benchmark: writers
// that insert unique ids through the proxies, reconnect on any error, and count
// an insert as acknowledged only when its commit returned success. Afterwards
// verifyAcked proves that every acknowledged insert is on the new primary, once.

// writePace is the pause of a writer after each acknowledged insert: a steady
// load of a few hundred commits per second per writer that leaves CPU to the
// proxies and PostgreSQL on a two-core machine.
const writePace = 5 * time.Millisecond

// ack is one acknowledged insert.
type ack struct {
	ID     int64
	Writer int
	Port   int       // inet_server_port() of the PostgreSQL server that ran the insert
	SentAt time.Time // just before the insert was sent
	At     time.Time // when the commit's success reached the writer
}

// writeLoad runs writer goroutines until Stop. Owner: the test goroutine calls
// Stop; the writers append to acks under mu.
type writeLoad struct {
	table  string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nextID atomic.Int64
	errors atomic.Int64

	mu       sync.Mutex
	acks     []ack
	lastErr  error
	errCodes map[string]int // errors by SQLSTATE; "-" for errors without one (connect, timeout)
	changed  chan struct{}  // closed and replaced on every ack
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

// startWriteLoad starts perProxy writers on each proxy, inserting into table
// (see writeLoadTable). The writers stop at Stop or when the test ends.
func startWriteLoad(t testing.TB, table string, proxies []*ProxyProcess, perProxy int) *writeLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &writeLoad{table: table, cancel: cancel, errCodes: map[string]int{}, changed: make(chan struct{})}
	for i, p := range proxies {
		for j := range perProxy {
			writer := i*perProxy + j + 1
			w.wg.Go(func() { w.run(ctx, writer, p) })
		}
	}
	t.Cleanup(func() { w.Stop() })
	return w
}

// run is one writer: one session through p, replaced after any error.
func (w *writeLoad) run(ctx context.Context, writer int, p *ProxyProcess) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
		}
	}()
	sql := fmt.Sprintf("INSERT INTO %s (id, writer) VALUES ($1, $2) RETURNING inet_server_port()", w.table)
	for ctx.Err() == nil {
		if conn == nil {
			connectCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
			c, err := pgx.Connect(connectCtx, p.ConnString())
			cancel()
			if err != nil {
				w.failed(ctx, err)
				continue
			}
			conn = c
		}
		// Every attempt gets a fresh id: an insert whose outcome is unknown
		// may have committed, and must not be confused with a later one.
		id := w.nextID.Add(1)
		queryCtx, cancel := context.WithTimeout(ctx, 45*time.Second)
		sentAt := time.Now()
		var port int
		err := conn.QueryRow(queryCtx, sql, id, writer).Scan(&port)
		at := time.Now()
		cancel()
		if err != nil {
			closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = conn.Close(closeCtx)
			cancel()
			conn = nil
			w.failed(ctx, err)
			continue
		}
		w.mu.Lock()
		w.acks = append(w.acks, ack{ID: id, Writer: writer, Port: port, SentAt: sentAt, At: at})
		close(w.changed)
		w.changed = make(chan struct{})
		w.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(writePace):
		}
	}
}

// failed counts an error and waits a little before the writer tries again, so
// that a dead proxy does not make it spin.
func (w *writeLoad) failed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	w.errors.Add(1)
	code := "-"
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		code = pgErr.Code
	}
	w.mu.Lock()
	w.lastErr = err
	w.errCodes[code]++
	w.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Millisecond):
	}
}

// Stop stops the writers and waits for them. Calling it twice is fine.
func (w *writeLoad) Stop() {
	w.cancel()
	w.wg.Wait()
}

// Acks returns a copy of the acknowledged inserts so far, in the order they were recorded.
func (w *writeLoad) Acks() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acks)
}

// Summary describes the load for logs.
func (w *writeLoad) Summary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("%d acknowledged inserts, %d errors %v (last: %v)", len(w.acks), w.errors.Load(), w.errCodes, w.lastErr)
}

// WaitAck waits until an insert sent at or after since is acknowledged by the
// server on port (0 = any) and returns the first such one.
func (w *writeLoad) WaitAck(ctx context.Context, since time.Time, port int) (ack, error) {
	for {
		w.mu.Lock()
		changed := w.changed
		var first ack
		found := false
		for _, a := range w.acks {
			if !a.SentAt.Before(since) && (port == 0 || a.Port == port) && (!found || a.At.Before(first.At)) {
				first, found = a, true
			}
		}
		w.mu.Unlock()
		if found {
			return first, nil
		}
		select {
		case <-ctx.Done():
			return ack{}, fmt.Errorf("no insert sent after %s acknowledged by port %d: %w (%s)",
				since.Format("15:04:05.000"), port, ctx.Err(), w.Summary())
		case <-changed:
		}
	}
}

// WaitAcks waits until n more inserts than the given count are acknowledged.
func (w *writeLoad) WaitAcks(ctx context.Context, n int) error {
	w.mu.Lock()
	target := len(w.acks) + n
	w.mu.Unlock()
	for {
		w.mu.Lock()
		changed, count := w.changed, len(w.acks)
		w.mu.Unlock()
		if count >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d more acknowledged inserts: %w (%s)", n, ctx.Err(), w.Summary())
		case <-changed:
		}
	}
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
