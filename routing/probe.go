// Package routing tells the proxy where the primary is.
//
// ConsensusRouter implements proxy.Router from the agreed state. ProbeRouter finds the
// primary by asking every configured PostgreSQL node whether it is in recovery; it is the
// bootstrap hint for a fresh cluster. The package decides nothing about failover and never
// changes a PostgreSQL node.
package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/proxy"
)

// Backend is one PostgreSQL node the router may pick.
type Backend struct {
	Name    string
	Address string
}

// ProbeRouter finds the primary by probing `pg_is_in_recovery()` on every backend
// and remembers it until the proxy reports a failure talking to it.
//
// It refuses to route when more than one node claims to be primary: sending
// writes to two primaries would lose commits, so the proxy holds instead.
//
// Safe for concurrent use; the cached target is guarded by mu.
type ProbeRouter struct {
	Backends []Backend
	// ConnString returns the libpq connection string used to probe address
	// (user, password, database of the query user; connect_timeout).
	ConnString func(address string) string
	// RetryInterval is the pause between probe rounds when no primary is found.
	// Zero means 200ms.
	RetryInterval time.Duration
	// ProbeTimeout bounds one probe of one node. Zero means 2s.
	ProbeTimeout time.Duration
	Logger       *slog.Logger

	mu      sync.Mutex
	current *proxy.Target
}

// Primary returns the cached primary or probes until exactly one primary is found.
func (r *ProbeRouter) Primary(ctx context.Context) (proxy.Target, error) {
	r.mu.Lock()
	if r.current != nil {
		t := *r.current
		r.mu.Unlock()
		return t, nil
	}
	r.mu.Unlock()

	retry := r.RetryInterval
	if retry == 0 {
		retry = 200 * time.Millisecond
	}
	var lastErr error
	for {
		t, err := r.probeAll(ctx)
		if err == nil {
			r.mu.Lock()
			r.current = &t
			r.mu.Unlock()
			r.logger().Info("primary found by probing", "node", t.Name, "address", t.Address)
			return t, nil
		}
		if lastErr == nil || lastErr.Error() != err.Error() {
			r.logger().Warn("no primary found", "err", err)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return proxy.Target{}, fmt.Errorf("no primary found: %w (last probe: %v)", ctx.Err(), lastErr)
		case <-time.After(retry):
		}
	}
}

// BackendFailed forgets t so that the next Primary call probes again.
func (r *ProbeRouter) BackendFailed(t proxy.Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.current != nil && r.current.Address == t.Address {
		r.current = nil
	}
}

// FindPrimary probes every backend once and returns the one that is not in
// recovery; it errors when none or more than one is.
func (r *ProbeRouter) FindPrimary(ctx context.Context) (proxy.Target, error) {
	return r.probeAll(ctx)
}

type probeResult struct {
	backend    Backend
	inRecovery bool
	err        error
}

func (r *ProbeRouter) probeAll(ctx context.Context) (proxy.Target, error) {
	results := make([]probeResult, len(r.Backends))
	var wg sync.WaitGroup
	for i, b := range r.Backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec, err := r.probe(ctx, b.Address)
			results[i] = probeResult{backend: b, inRecovery: rec, err: err}
		}()
	}
	wg.Wait()

	var primaries []Backend
	var errs []error
	for _, res := range results {
		switch {
		case res.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", res.backend.Name, res.err))
		case !res.inRecovery:
			primaries = append(primaries, res.backend)
		}
	}
	switch len(primaries) {
	case 1:
		return proxy.Target{Name: primaries[0].Name, Address: primaries[0].Address}, nil
	case 0:
		if len(errs) > 0 {
			return proxy.Target{}, fmt.Errorf("every reachable node is in recovery: %w", errors.Join(errs...))
		}
		return proxy.Target{}, errors.New("every node is in recovery")
	default:
		return proxy.Target{}, fmt.Errorf("refusing to route: %d nodes are not in recovery (%s and %s); resolve the split brain first",
			len(primaries), primaries[0].Name, primaries[1].Name)
	}
}

func (r *ProbeRouter) probe(ctx context.Context, address string) (bool, error) {
	timeout := r.ProbeTimeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgconn.Connect(ctx, r.ConnString(address))
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	res := conn.ExecParams(ctx, "SELECT pg_catalog.pg_is_in_recovery()", nil, nil, nil, nil).Read()
	if res.Err != nil {
		return false, res.Err
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		return false, errors.New("unexpected answer to pg_is_in_recovery()")
	}
	return string(res.Rows[0][0]) == "t", nil
}

func (r *ProbeRouter) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
