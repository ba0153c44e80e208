package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// maxAuthQueryConns bounds the connections the proxy opens as QueryUser at the same time, so a
// storm of connecting clients cannot exhaust the primary's max_connections.
const maxAuthQueryConns = 4

// authConnCloseTimeout bounds closing an auth query connection.
const authConnCloseTimeout = time.Second

// authQuerySettings say how the auth query connects and reads verifiers.
type authQuerySettings struct {
	user, password, database string
	tls                      conninfo.Params // sslmode and files (backendtls.go)
	lookupFunction           string          // "" = read pg_authid (pgauth.Lookup)
}

// authQueryPool is a small pool of connections opened as Config.QueryUser to the current
// primary, used to read password verifiers (pgauth.Lookup or pgauth.LookupWithFunction).
// Connections to an earlier target are closed when the target changes. Safe for concurrent use.
type authQueryPool struct {
	settings authQuerySettings
	log      *slog.Logger
	tokens   chan struct{} // one token per connection in use or being opened

	mu      sync.Mutex
	address string           // address of the idle connections
	idle    []*pgconn.PgConn // healthy connections to address, not in use
	closed  bool
}

func newAuthQueryPool(settings authQuerySettings, log *slog.Logger) *authQueryPool {
	return &authQueryPool{settings: settings, log: log, tokens: make(chan struct{}, maxAuthQueryConns)}
}

// lookup reads user's verifier on conn, a connection of the pool.
func (p *authQueryPool) lookup(ctx context.Context, conn *pgconn.PgConn, user string) (pgauth.Verifier, error) {
	if p.settings.lookupFunction != "" {
		return pgauth.LookupWithFunction(ctx, conn, p.settings.lookupFunction, user)
	}
	return pgauth.Lookup(ctx, conn, user)
}

// lookupVerifier reads user's password verifier on the current primary, waiting while no
// primary is agreed and trying again after routing changes when the primary cannot be reached
// (a connection during a failover succeeds after it), all within the hold timeout. The error
// wraps pgauth.ErrNoVerifier for a role without a usable verifier; any other error means the
// lookup could not be done.
func (s *Server) lookupVerifier(ctx context.Context, user string) (pgauth.Verifier, Target, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HoldTimeout)
	defer cancel()
	// The client is not authenticated yet: its wait counts against MaxStartupConnections, never
	// against MaxHeld, so unauthenticated connections cannot take the places of held requests.
	hold := s.newHold(false)
	defer hold.finish(ctx)
	var avoid Target
	var lastErr error
	for {
		target, err := s.waitRoute(ctx, avoid, hold, nil)
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (last attempt: %v)", err, lastErr)
			}
			return pgauth.Verifier{}, Target{}, noPrimaryError(err, s.cfg.HoldTimeout)
		}
		var v pgauth.Verifier
		err = s.authConns.with(ctx, target, func(conn *pgconn.PgConn) error {
			var err error
			v, err = s.authConns.lookup(ctx, conn, user)
			if errors.Is(err, pgauth.ErrNoVerifier) {
				return nil
			}
			return err
		})
		if err == nil {
			hold.routed()
			if v.Kind == pgauth.NoVerifier {
				return v, target, pgauth.ErrNoVerifier
			}
			return v, target, nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && !isAdminShutdown([]byte(pgErr.Code)) || ctx.Err() != nil {
			return pgauth.Verifier{}, target, err
		}
		s.cfg.Router.BackendFailed(target)
		avoid, lastErr = target, err
	}
}

// LookupVerifier reads user's verifier on the current primary with the auth query, for
// another proxy that asks for it (package authlookup: the voters answer the learners). The
// error wraps pgauth.ErrNoVerifier for a role without a usable verifier.
func (s *Server) LookupVerifier(ctx context.Context, user string) (pgauth.Verifier, error) {
	if s.cfg.Verifiers != nil || s.cfg.QueryUser == "" {
		return pgauth.Verifier{}, errors.New("this proxy reads no verifiers itself (no auth.query_user)")
	}
	v, _, err := s.lookupVerifier(ctx, user)
	return v, err
}

// lookupFromSource reads user's verifier from src (a learner's voters), within the hold
// timeout. A role without a usable verifier gets the zero Verifier and no error (the fake
// exchange follows).
func (s *Server) lookupFromSource(ctx context.Context, src VerifierSource, user string) (pgauth.Verifier, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HoldTimeout)
	defer cancel()
	v, err := src.LookupVerifier(ctx, user)
	switch {
	case errors.Is(err, pgauth.ErrNoVerifier):
		return pgauth.Verifier{}, nil
	case err != nil:
		return pgauth.Verifier{}, fatalf(codeConnectionFailure, "could not look up the password of user %q through the voting proxies", user).
			withCause(err)
	}
	return v, nil
}

// with runs fn on a pooled connection to target, as the query user.
func (p *authQueryPool) with(ctx context.Context, target Target, fn func(*pgconn.PgConn) error) error {
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for a query-user connection: %w", ctx.Err())
	}
	defer func() { <-p.tokens }()

	for attempt := 0; ; attempt++ {
		conn, reused, err := p.get(ctx, target)
		if err != nil {
			return err
		}
		err = fn(conn)
		if err == nil {
			p.put(target, conn)
			return nil
		}
		closeAuthConns([]*pgconn.PgConn{conn})
		var pgErr *pgconn.PgError
		if !reused || attempt > 0 || errors.As(err, &pgErr) || ctx.Err() != nil {
			return err
		}
		// A pooled connection may have been broken since its last use (server restarted):
		// try once more on a new one.
	}
}

// get returns an idle connection to target (reused) or opens a new one.
func (p *authQueryPool) get(ctx context.Context, target Target) (conn *pgconn.PgConn, reused bool, err error) {
	var stale []*pgconn.PgConn
	p.mu.Lock()
	if p.address != target.Address {
		stale, p.idle = p.idle, nil
		p.address = target.Address
	}
	for conn == nil && len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if !c.IsClosed() && c.TxStatus() == 'I' {
			conn = c
		} else {
			stale = append(stale, c)
		}
	}
	p.mu.Unlock()
	closeAuthConns(stale)
	if conn != nil {
		return conn, true, nil
	}

	host, port, err := net.SplitHostPort(target.Address)
	if err != nil {
		return nil, false, fmt.Errorf("primary address %q: %w", target.Address, err)
	}
	params := conninfo.Params{
		{Key: "host", Value: host}, {Key: "port", Value: port}, {Key: "user", Value: p.settings.user},
		{Key: "password", Value: p.settings.password}, {Key: "dbname", Value: p.settings.database},
		{Key: "application_name", Value: "pgquorum-auth-query"},
	}
	cfg, err := pgconn.ParseConfig(append(params, p.settings.tls...).String())
	if err != nil {
		return nil, false, fmt.Errorf("auth query connection settings: %w", err)
	}
	conn, err = pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("connect to %s (%s) as %s: %w", target.Name, target.Address, p.settings.user, err)
	}
	return conn, false, nil
}

// put returns a healthy connection to the pool, or closes it.
func (p *authQueryPool) put(target Target, conn *pgconn.PgConn) {
	p.mu.Lock()
	keep := !p.closed && p.address == target.Address && len(p.idle) < maxAuthQueryConns &&
		!conn.IsClosed() && conn.TxStatus() == 'I'
	if keep {
		p.idle = append(p.idle, conn)
	}
	p.mu.Unlock()
	if !keep {
		closeAuthConns([]*pgconn.PgConn{conn})
	}
}

// close closes the idle connections; connections in use are closed when they are returned.
func (p *authQueryPool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	closeAuthConns(idle)
}

// closeAuthConns closes connections, each with a short bound on the polite Terminate.
func closeAuthConns(conns []*pgconn.PgConn) {
	for _, conn := range conns {
		ctx, cancel := context.WithTimeout(context.Background(), authConnCloseTimeout)
		_ = conn.Close(ctx)
		cancel()
	}
}
