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
)

// classifiedLoad is the write load of the hold-and-retry tests: autocommit inserts of unique
// ids through the proxies, each on one session for the whole run. Unlike writeLoad it keeps its
// session after an error the proxy says leaves it usable (08007), and it counts every error by
// SQLSTATE, so a test can require "success or 08007, nothing else". It also records the
// longest time a request took, which during a failover is the longest hold.
//
// Owner: the test goroutine calls Stop; the writers update the counters under mu.
type classifiedLoad struct {
	table  string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	nextID atomic.Int64

	mu        sync.Mutex
	acks      []ack
	failures  []failure      // every failed insert
	unknown   []int64        // ids whose insert got 08007 (may or may not be committed)
	errors    map[string]int // SQLSTATE (or "connection") -> count
	lastError map[string]string
	longest   time.Duration // the longest request, success or not
	changed   chan struct{}
}

// failure is one failed insert: its class and when it was sent.
type failure struct {
	Class  string
	SentAt time.Time
}

// startClassifiedLoad starts writers spread over the proxies, inserting into table (created
// by writeLoadTable).
func startClassifiedLoad(t testing.TB, table string, proxies []*ProxyProcess, writers int) *classifiedLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &classifiedLoad{table: table, cancel: cancel, errors: map[string]int{}, lastError: map[string]string{},
		changed: make(chan struct{})}
	for writer := range writers {
		p := proxies[writer%len(proxies)]
		l.wg.Go(func() { l.run(ctx, writer+1, p) })
	}
	t.Cleanup(l.Stop)
	return l
}

// run is one writer. It reconnects only when its session is gone.
func (l *classifiedLoad) run(ctx context.Context, writer int, p *ProxyProcess) {
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
				l.failed(ctx, 0, err)
				continue
			}
			conn = c
		}
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
		}
		l.mu.Unlock()
		if err == nil {
			continue
		}
		if ctx.Err() == nil { // not an insert aborted by Stop
			l.mu.Lock()
			l.failures = append(l.failures, failure{Class: classOf(err), SentAt: sentAt})
			l.mu.Unlock()
		}
		l.failed(ctx, id, err)
		if conn.IsClosed() {
			closeConn(conn)
			conn = nil
		}
	}
}

// failed records an error of insert id (0: a connection attempt).
func (l *classifiedLoad) failed(ctx context.Context, id int64, err error) {
	if ctx.Err() != nil {
		return
	}
	class := classOf(err)
	l.mu.Lock()
	l.errors[class]++
	l.lastError[class] = err.Error()
	if class == "08007" {
		l.unknown = append(l.unknown, id)
	}
	l.mu.Unlock()
	if class == "connection" {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// classOf returns an error's SQLSTATE, or "connection" when it has none.
func classOf(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return "connection"
}

// Failures returns the failed inserts.
func (l *classifiedLoad) Failures() []failure {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.failures)
}

// Stop stops the writers and waits for them. Calling it twice is fine.
func (l *classifiedLoad) Stop() {
	l.cancel()
	l.wg.Wait()
}

// Acks returns the acknowledged inserts so far.
func (l *classifiedLoad) Acks() []ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks)
}

// Errors returns the error counts by SQLSTATE ("connection" for errors without one).
func (l *classifiedLoad) Errors() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.errors)
}

// Longest returns the longest request so far.
func (l *classifiedLoad) Longest() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.longest
}

// Summary describes the load for logs.
func (l *classifiedLoad) Summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for _, class := range slices.Sorted(maps.Keys(l.errors)) {
		parts = append(parts, fmt.Sprintf("%s x%d (last: %s)", class, l.errors[class], l.lastError[class]))
	}
	return fmt.Sprintf("%d acknowledged inserts, longest request %v, errors: [%s]", len(l.acks),
		l.longest.Round(time.Millisecond), strings.Join(parts, "; "))
}

// WaitAckOn waits until an insert sent at or after since is acknowledged by the server on port.
func (l *classifiedLoad) WaitAckOn(ctx context.Context, since time.Time, port int) error {
	for {
		l.mu.Lock()
		changed := l.changed
		found := slices.ContainsFunc(l.acks, func(a ack) bool { return !a.SentAt.Before(since) && a.Port == port })
		l.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no insert acknowledged by port %d: %w (%s)", port, ctx.Err(), l.Summary())
		case <-changed:
		}
	}
}

// WaitAcks waits until n more inserts are acknowledged.
func (l *classifiedLoad) WaitAcks(ctx context.Context, n int) error {
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
