package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The register workload: Keys registers in table faults_register, read and
// written by clients through every proxy. A write sets a register to a value
// no other write uses and, in the same statement, logs the value in
// faults_writes, so that afterwards every acknowledged write can be looked for
// (VerifyAcknowledged) while the registers give the linearizability checker
// reads to judge (CheckLinearizable).

// Keys is the number of registers.
const Keys = 4

// Schema creates the workload's tables (run once on the primary).
const Schema = `
CREATE TABLE faults_register (k int PRIMARY KEY, v bigint NOT NULL);
INSERT INTO faults_register SELECT k, 0 FROM generate_series(0, 3) k;
CREATE TABLE faults_writes (v bigint NOT NULL, k int NOT NULL);`

const (
	readSQL  = `SELECT v, inet_server_port() FROM faults_register WHERE k = $1`
	writeSQL = `WITH w AS (UPDATE faults_register SET v = $2 WHERE k = $1 RETURNING k),
	l AS (INSERT INTO faults_writes (v, k) VALUES ($2, $1))
	SELECT inet_server_port()`
)

// Workload runs register clients until Stop. Owner: the test goroutine calls
// Stop; clients record into History and the attempted/acknowledged lists under mu.
type Workload struct {
	History *History
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	next    atomic.Int64

	targetOf []int // client id -> index of its target; fixed at start

	mu        sync.Mutex
	attempted []int64 // every value sent in a write
	acked     []int64 // values whose write returned success
	errors    map[string]int
	changed   chan struct{} // closed and replaced on every acknowledged write
}

// WorkloadOptions configure the clients.
type WorkloadOptions struct {
	// Targets are the connection strings of the proxies; Clients and Readers
	// connect to each.
	Targets []string
	Clients int // per target, reading and writing at random; default 2
	// Readers per target only read: a stale read is never hidden behind a
	// write that waits. Default 1.
	Readers int
	Pace    time.Duration // pause between two operations of one client; default 5ms
	// OpTimeout bounds one operation; its outcome is then unknown. Default 10s.
	OpTimeout time.Duration
}

// StartWorkload starts the clients.
func StartWorkload(opts WorkloadOptions) *Workload {
	if opts.Clients == 0 {
		opts.Clients = 2
	}
	if opts.Readers == 0 {
		opts.Readers = 1
	}
	if opts.Pace == 0 {
		opts.Pace = 5 * time.Millisecond
	}
	if opts.OpTimeout == 0 {
		opts.OpTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Workload{History: NewHistory(), cancel: cancel, errors: map[string]int{}, changed: make(chan struct{})}
	for i, target := range opts.Targets {
		for c := range opts.Clients + opts.Readers {
			id := len(w.targetOf)
			w.targetOf = append(w.targetOf, i)
			readOnly := c >= opts.Clients
			w.wg.Go(func() { w.run(ctx, id, target, readOnly, opts) })
		}
	}
	return w
}

// TargetOf is the index in WorkloadOptions.Targets of client's target.
func (w *Workload) TargetOf(client int) int { return w.targetOf[client] }

// run is one client: one session at a time through target, replaced after
// any error.
func (w *Workload) run(ctx context.Context, id int, target string, readOnly bool, opts WorkloadOptions) {
	rng := rand.New(rand.NewPCG(uint64(id), 42))
	var conn *pgx.Conn
	defer func() { closeConn(conn) }()
	for ctx.Err() == nil {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, opts.OpTimeout)
			c, err := pgx.Connect(cctx, target+" application_name=faults")
			cancel()
			if err != nil {
				w.countError(ctx, err)
				pause(ctx, 20*time.Millisecond)
				continue
			}
			conn = c
		}
		op := Op{Client: id, Key: rng.IntN(Keys), Write: !readOnly && rng.IntN(2) == 0}
		if op.Write {
			op.Value = w.next.Add(1)
			w.mu.Lock()
			w.attempted = append(w.attempted, op.Value)
			w.mu.Unlock()
		}
		octx, cancel := context.WithTimeout(ctx, opts.OpTimeout)
		op.Call = w.History.Now()
		var err error
		if op.Write {
			err = conn.QueryRow(octx, writeSQL, op.Key, op.Value).Scan(&op.Port)
		} else {
			err = conn.QueryRow(octx, readSQL, op.Key).Scan(&op.Value, &op.Port)
		}
		op.Return = w.History.Now()
		cancel()
		if ctx.Err() != nil && err != nil {
			op.Outcome = Unknown // stopped mid-operation
		} else {
			op.Outcome = outcomeOf(err)
		}
		w.History.Add(op)
		if err != nil {
			closeConn(conn)
			conn = nil
			w.countError(ctx, err)
		} else if op.Write {
			w.mu.Lock()
			w.acked = append(w.acked, op.Value)
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
		pause(ctx, opts.Pace)
	}
}

// outcomeOf classifies an operation's error: only answers that say the
// request never ran (SPEC §5: 57P03 held too long, 40001 not committed; 25006
// refused by a read-only server) are failures; anything else may have run.
func outcomeOf(err error) Outcome {
	if err == nil {
		return Ok
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case "57P03", "40001", "25006":
			return Failed
		}
	}
	return Unknown
}

func (w *Workload) countError(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	code := "connection"
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		code = pgErr.Code
	} else if errors.Is(err, context.DeadlineExceeded) {
		code = "timeout"
	}
	w.mu.Lock()
	w.errors[code]++
	w.mu.Unlock()
}

// Stop stops the clients and waits for them. Safe to call twice.
func (w *Workload) Stop() {
	w.cancel()
	w.wg.Wait()
}

// Acknowledged returns the values of the acknowledged writes so far, and of
// every write attempted.
func (w *Workload) Acknowledged() (acked, attempted []int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked), slices.Clone(w.attempted)
}

// Errors counts the clients' errors by SQLSTATE ("connection", "timeout" for
// the others).
func (w *Workload) Errors() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int, len(w.errors))
	for k, v := range w.errors {
		out[k] = v
	}
	return out
}

// WaitAcks waits until n more writes are acknowledged.
func (w *Workload) WaitAcks(ctx context.Context, n int) error {
	w.mu.Lock()
	target := len(w.acked) + n
	w.mu.Unlock()
	for {
		w.mu.Lock()
		changed, count := w.changed, len(w.acked)
		w.mu.Unlock()
		if count >= target {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d more acknowledged writes (%d so far, errors %v): %w", n, count, w.Errors(), ctx.Err())
		case <-changed:
		}
	}
}

// FirstOn returns the first operation answered by the server on port that
// was called at or after since (a history time); ok is false when there is none.
func FirstOn(ops []Op, port int, since int64, write bool) (Op, bool) {
	var first Op
	found := false
	for _, op := range ops {
		if op.Outcome == Ok && op.Port == port && op.Write == write && op.Call >= since && (!found || op.Return < first.Return) {
			first, found = op, true
		}
	}
	return first, found
}

func closeConn(conn *pgx.Conn) {
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
