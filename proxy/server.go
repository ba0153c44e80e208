package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

const (
	minAcceptBackoff        = 5 * time.Millisecond
	maxAcceptBackoff        = time.Second
	shutdownPollInterval    = 2 * time.Millisecond
	maxShutdownPollInterval = 100 * time.Millisecond
	// forceCloseWait bounds how long Shutdown and Serve wait for session goroutines after
	// closing their connections.
	forceCloseWait = 5 * time.Second
)

// Server is a PostgreSQL wire-protocol proxy. Create it with NewServer, then Listen (optional)
// and Serve; stop it with Shutdown or by cancelling Serve's context.
//
// Ownership: the accept loop goroutine (Serve) owns the listener loop; sessions own themselves
// (see session); the registry and counters are safe for concurrent use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	sessions  *sessionRegistry
	counters  counters
	authConns *authQueryPool
	// backendTLS secures every connection to PostgreSQL (backendtls.go).
	backendTLS *backendTLS
	// mockKey keys the fake SCRAM exchanges of unknown roles.
	mockKey pgauth.MockKey

	mu       sync.Mutex
	listener net.Listener
	serving  bool

	shuttingDown atomic.Bool
	goroutines   sync.WaitGroup // session goroutines (startup and relay), and the route watcher

	route        atomic.Pointer[Route] // the latest route the watcher saw
	stopWatching chan struct{}         // closed by Shutdown
	stopOnce     sync.Once
	protocols    sync.Map      // primary address -> newest protocol minor it speaks (protocol.go)
	held         atomic.Int64  // requests and connections waiting for a primary (startHold)
	logins       chan struct{} // backend login slots (acquireLogin)
	forwarding   chan struct{} // cancel requests being forwarded to other nodes (forwardCancel)
}

// NewServer checks cfg and returns a Server that is not listening yet.
func NewServer(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:          cfg,
		log:          cfg.Logger.With("component", "proxy"),
		sessions:     newSessionRegistry(),
		stopWatching: make(chan struct{}),
		logins:       make(chan struct{}, cfg.ReleaseConcurrency),
		forwarding:   make(chan struct{}, maxForwardingCancels),
	}
	r, _ := cfg.Router.Route()
	s.route.Store(&r)
	s.backendTLS = newBackendTLS(cfg.BackendTLS)
	s.mockKey = pgauth.NewMockKey(cfg.MockSecret)
	s.authConns = newAuthQueryPool(authQuerySettings{
		user: cfg.QueryUser, password: cfg.QueryPassword, database: cfg.QueryDatabase,
		tls: s.backendTLS.connStringParams(), lookupFunction: cfg.LookupFunction,
	}, s.log)
	return s, nil
}

// Listen binds Config.ListenAddr, so that Addr is known before Serve. Serve calls it when it has
// not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return nil
	}
	if s.shuttingDown.Load() {
		return ErrServerClosed
	}
	ln, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("proxy: listen on %s: %w", s.cfg.ListenAddr, err)
	}
	s.listener = ln
	return nil
}

// Addr returns the listening address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return nil
	}
	return s.listener.Addr()
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	return s.counters.snapshot()
}

// Serve accepts client connections until ctx ends or Shutdown is called. When ctx ends it
// closes the listener and every session (clients get FATAL 57P01) and returns nil once their
// goroutines have stopped. After Shutdown it returns ErrServerClosed at once (Shutdown drains the
// sessions). Serve may be called only once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("proxy: Serve called twice")
	}
	if s.shuttingDown.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.serving = true
	ln := s.listener
	s.goroutines.Add(1) // the route watcher
	s.mu.Unlock()

	stopAccepting := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stopAccepting()
	go s.watchRoutes(ctx, s.cfg.Router)
	s.startTrustCheck(ctx)
	s.log.Info("proxy listening", "addr", ln.Addr().String(), "auth", s.cfg.AuthMethod, "tls", s.cfg.TLS != nil)

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.shuttingDown.Load() {
				return ErrServerClosed
			}
			if ctx.Err() != nil {
				s.stopOnce.Do(func() { close(s.stopWatching) })
				s.closeAllSessions()
				s.waitForSessions(forceCloseWait)
				s.authConns.close()
				return nil
			}
			if isTemporaryAcceptError(err) {
				backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
				s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
				}
				continue
			}
			return fmt.Errorf("proxy: accept: %w", err)
		}
		backoff = 0
		if !s.track() {
			_ = conn.Close() // accepted as Shutdown began
			return ErrServerClosed
		}
		go s.serveConn(ctx, conn)
	}
}

// isTemporaryAcceptError reports whether an Accept error is worth retrying (resource
// exhaustion or a connection aborted before it was accepted).
func isTemporaryAcceptError(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS,
		syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// Shutdown stops accepting connections, closes each session as soon as it is idle between
// transactions (the client gets FATAL 57P01), and returns when none is left. When ctx ends first
// it closes the remaining sessions at once and returns ctx.Err(). Sessions still in startup are
// refused with FATAL 57P03.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shuttingDown.Store(true) // under mu: see track
	if s.listener != nil {
		_ = s.listener.Close()
	}
	s.mu.Unlock()
	s.stopOnce.Do(func() { close(s.stopWatching) })
	defer s.authConns.close()

	reason := fatalf(codeAdminShutdown, "terminating connection because the pgquorum proxy is shutting down")
	interval := shutdownPollInterval
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		for _, sess := range s.sessions.all() {
			sess.drain(reason)
		}
		if s.sessions.count() == 0 {
			s.waitForSessions(forceCloseWait)
			return nil
		}
		select {
		case <-ctx.Done():
			s.closeAllSessions()
			s.waitForSessions(forceCloseWait)
			return ctx.Err()
		case <-timer.C:
			interval = min(2*interval, maxShutdownPollInterval)
			timer.Reset(interval)
		}
	}
}

// track counts one more server goroutine in s.goroutines, unless Shutdown has begun. A
// goroutine started while no other runs (the route watcher, a connection accepted as Shutdown
// begins) must be counted before Shutdown waits for them; Shutdown sets shuttingDown under mu,
// so either the count comes first or the goroutine is not started. It reports whether the
// caller may start it.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown.Load() {
		return false
	}
	s.goroutines.Add(1)
	return true
}

// closeAllSessions ends every session now.
func (s *Server) closeAllSessions() {
	reason := fatalf(codeAdminShutdown, "terminating connection because the pgquorum proxy is shutting down")
	for _, sess := range s.sessions.all() {
		sess.forceClose(reason)
	}
}

// waitForSessions waits until every session goroutine has returned, at most limit.
func (s *Server) waitForSessions(limit time.Duration) {
	done := make(chan struct{})
	go func() {
		s.goroutines.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit):
		s.log.Warn("session goroutines still running after shutdown", "sessions", s.sessions.count())
	}
}
