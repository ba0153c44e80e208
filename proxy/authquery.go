package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// maxAuthQueryConns bounds the connections the proxy opens as QueryUser at the same time, so a
// storm of connecting clients cannot exhaust the primary's max_connections.
const maxAuthQueryConns = 4

// authConnCloseTimeout bounds closing an auth query connection.
const authConnCloseTimeout = time.Second

// authQueryPool is a small pool of connections opened as Config.QueryUser to the current
// primary, used to read password verifiers (pgauth.Lookup). Connections to an earlier target are
// closed when the target changes. Safe for concurrent use.
type authQueryPool struct {
	user, password string
	log            *slog.Logger
	tokens         chan struct{} // one token per connection in use or being opened

	mu      sync.Mutex
	address string           // address of the idle connections
	idle    []*pgconn.PgConn // healthy connections to address, not in use
	closed  bool
}

func newAuthQueryPool(user, password string, log *slog.Logger) *authQueryPool {
	return &authQueryPool{user: user, password: password, log: log, tokens: make(chan struct{}, maxAuthQueryConns)}
}

// lookupVerifier reads user's password verifier on the current primary. The error wraps
// pgauth.ErrNoVerifier for a role without a usable verifier; any other error means the lookup
// could not be done.
func (s *Server) lookupVerifier(ctx context.Context, user string) (pgauth.Verifier, Target, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HoldTimeout)
	defer cancel()
	target, err := s.cfg.Router.Primary(ctx)
	if err != nil {
		return pgauth.Verifier{}, Target{}, noPrimaryError(err, s.cfg.HoldTimeout)
	}
	v, err := s.authConns.lookup(ctx, target, user)
	if err != nil && !errors.Is(err, pgauth.ErrNoVerifier) {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			s.cfg.Router.BackendFailed(target)
		}
	}
	return v, target, err
}

// lookup runs pgauth.Lookup on a pooled connection to target.
func (p *authQueryPool) lookup(ctx context.Context, target Target, user string) (pgauth.Verifier, error) {
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		return pgauth.Verifier{}, fmt.Errorf("wait for an auth query connection: %w", ctx.Err())
	}
	defer func() { <-p.tokens }()

	for attempt := 0; ; attempt++ {
		conn, reused, err := p.get(ctx, target)
		if err != nil {
			return pgauth.Verifier{}, err
		}
		v, err := pgauth.Lookup(ctx, conn, user)
		if err == nil || errors.Is(err, pgauth.ErrNoVerifier) {
			p.put(target, conn)
			return v, err
		}
		closeAuthConns([]*pgconn.PgConn{conn})
		var pgErr *pgconn.PgError
		if !reused || attempt > 0 || errors.As(err, &pgErr) || ctx.Err() != nil {
			return pgauth.Verifier{}, err
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
	connString := fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable application_name=pgquorum-auth-query",
		quoteConnValue(host), quoteConnValue(port), quoteConnValue(p.user), quoteConnValue(p.password))
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, false, fmt.Errorf("auth query connection settings: %w", err)
	}
	conn, err = pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("connect to %s (%s) as %s: %w", target.Name, target.Address, p.user, err)
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

// quoteConnValue quotes a value for a keyword/value connection string.
func quoteConnValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	v = strings.ReplaceAll(v, `'`, `\'`)
	return "'" + v + "'"
}
