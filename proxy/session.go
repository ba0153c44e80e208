package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// errorWriteTimeout bounds writing a final ErrorResponse to a client.
	errorWriteTimeout = 2 * time.Second
	// lingerTimeout and lingerBytes bound how long and how much unread client input is drained
	// after a final ErrorResponse, so that closing does not reset the connection (a reset can
	// make the client lose the error before reading it).
	lingerTimeout = 250 * time.Millisecond
	lingerBytes   = 64 << 10
)

// session is one client connection and, once authenticated, its backend connection.
//
// Ownership: the startup goroutine owns every field until it starts the relay; afterwards the
// startup fields are read-only, the client→backend relay goroutine is the only writer to the
// backend and the backend→client relay goroutine the only writer to the client. Fields under mu
// are shared with Server.Shutdown; cancel fields are guarded by the registry's mutex.
type session struct {
	srv *Server
	log *slog.Logger
	pid uint32 // the proxy's process id for this session (cancel key); set by the registry

	conn net.Conn // the accepted TCP connection; Close on it always ends the client side

	startupCancel   context.CancelFunc // cancels the startup phase's context
	startupDeadline time.Time          // end of the client's startup budget (startup goroutine)

	// Set during startup, read-only afterwards.
	client        net.Conn // conn, or the TLS connection over it
	clientTLS     bool
	protocolMinor uint16 // protocol 3.x the client speaks (after negotiation: 0, 1 or 2)
	params        []startupParam
	user          string
	creds         credentials // kept so the session can log in again without the client (failover)
	target        Target

	// Guarded by srv.sessions.mu.
	clientSecret []byte
	cancelKey    backendCancelKey
	cancelReady  bool

	running atomic.Int32 // relay goroutines still running; the last one finishes the session

	mu             sync.Mutex
	backend        net.Conn     // set once during startup
	relaying       bool         // startup is done, the relay goroutines run
	startupStopped bool         // Shutdown asked the startup phase to give up
	closing        bool         // the session is ending; the client relay forwards nothing more
	clientGone     bool         // the client's connection failed or could not be written to
	clientEOF      bool         // the client closed its sending side (EOF)
	reason         *clientError // what the client is told before the close; first one wins
	txStatus       byte         // status byte of the last ReadyForQuery from the backend
	readyReceived  uint64       // ReadyForQuery messages received from the backend
	syncsSent      uint64       // Query, FunctionCall and Sync messages forwarded to the backend
	lastClientType byte         // type of the last message the client sent
	extendedOpen   bool         // an extended-protocol batch was started and not yet ended by Sync
}

// atSafePoint reports whether the session is idle between transactions: every request was
// answered, the backend reported no open transaction, and no extended-protocol batch is open.
// Shutdown closes sessions only there; failover replay (later) needs the same test.
// The caller holds s.mu.
func (s *session) atSafePoint() bool {
	return s.relaying && s.txStatus == 'I' && s.syncsSent == s.readyReceived && !s.extendedOpen
}

// cancelPermitted is the hook that decides whether a cancel request may be passed to the
// backend. SPEC §4: a COMMIT waiting for synchronous replication must never be cancelled by the
// proxy; telling that case apart needs the statement text of the running request, which the relay
// does not decode yet, so every cancel is permitted for now.
func (s *session) cancelPermitted() bool {
	return true
}

// closeAtSafePoint closes the session if it is at a safe point, telling the client why. It
// reports whether it did.
func (s *session) closeAtSafePoint(reason *clientError) bool {
	s.mu.Lock()
	if s.closing || !s.atSafePoint() {
		s.mu.Unlock()
		return false
	}
	s.closing = true
	s.reason = reason
	backend := s.backend
	s.mu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	// The backend→client relay sees its read fail, tells the client and closes it.
	_ = backend.Close()
	return true
}

// fail ends the session with reason (unless another reason came first). The client hears the
// reason from the backend→client relay, which is woken by closing the backend connection.
func (s *session) fail(reason *clientError) {
	s.mu.Lock()
	if s.reason == nil && !s.clientGone {
		s.reason = reason
	}
	s.closing = true
	backend := s.backend
	s.mu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	if backend != nil {
		_ = backend.Close()
	}
}

// forceClose closes both connections now (Shutdown's deadline passed).
func (s *session) forceClose(reason *clientError) {
	s.fail(reason)
	_ = s.conn.SetDeadline(time.Now().Add(errorWriteTimeout))
	s.mu.Lock()
	relaying := s.relaying
	s.mu.Unlock()
	if !relaying {
		// Still in startup: unblock its reads; it reports the shutdown itself.
		_ = s.conn.Close()
	}
}

// startRelay starts the two relay goroutines. leftovers are bytes already read from each side
// during startup.
func (s *session) startRelay(clientLeftover, backendLeftover []byte) {
	s.mu.Lock()
	s.relaying = true
	s.txStatus = 'I'
	backend := s.backend
	s.mu.Unlock()
	s.srv.counters.sessions.Add(1)
	s.srv.counters.totalSessions.Add(1)
	toBackend := newRelay(s, s.client, backend, false, clientLeftover)
	toClient := newRelay(s, backend, s.client, true, backendLeftover)
	s.running.Store(2)
	s.srv.goroutines.Add(2)
	go s.runClientToBackend(toBackend)
	go s.runBackendToClient(toClient)
}

// runClientToBackend is the client→backend relay goroutine. Its frame is kept tiny because it
// sits at the bottom of the stack of a parked idle session (a small stack is one that the garbage
// collector can shrink to the minimum).
func (s *session) runClientToBackend(r *relay) {
	defer s.relayGoroutineDone(false)
	s.clientRelayEnded(r.run())
}

// runBackendToClient is the backend→client relay goroutine (see runClientToBackend).
func (s *session) runBackendToClient(r *relay) {
	defer s.relayGoroutineDone(true)
	s.backendRelayEnded(r, r.run())
}

// relayGoroutineDone is deferred by each relay goroutine: last-resort panic recovery, then the
// bookkeeping of a goroutine's end. After a panic the session fails with an internal error,
// which the backend→client relay tells the client; if that relay is the one that panicked, the
// client connection is closed without a message (its stream may be in the middle of a message).
func (s *session) relayGoroutineDone(backendToClient bool) {
	if v := recover(); v != nil {
		where := "client to backend relay"
		if backendToClient {
			where = "backend to client relay"
		}
		s.logPanic(where, v)
		s.fail(fatalf(codeInternalError, "internal error in the pgquorum proxy"))
		if backendToClient {
			_ = s.conn.Close()
		}
	}
	s.relayDone()
	s.srv.goroutines.Done()
}

// clientRelayEnded decides what the end of the client→backend relay means for the session.
func (s *session) clientRelayEnded(err error) {
	var protocolErr *clientError
	var writeErr *relayWriteError
	switch {
	case errors.Is(err, errSessionClosing):
	case errors.As(err, &protocolErr):
		s.log.Info("closing session: protocol violation by the client", "err", err)
		s.fail(protocolErr)
	case errors.As(err, &writeErr):
		s.log.Warn("lost connection to the PostgreSQL server", "backend", s.target.Name, "err", err)
		s.srv.cfg.Router.BackendFailed(s.target)
		s.fail(fatalf(codeConnectionFailure, "lost connection to the PostgreSQL server %s", s.target.Name).withCause(err))
	default:
		if errors.Is(err, io.EOF) {
			// The client finished sending. Like a direct connection: the backend sees the end
			// of input after the requests already sent, and its answers are still relayed.
			s.mu.Lock()
			s.clientEOF = true
			backend := s.backend
			s.mu.Unlock()
			if tcp, ok := backend.(*net.TCPConn); ok && tcp.CloseWrite() == nil {
				return
			}
		}
		// The client's connection failed: nobody to tell.
		s.mu.Lock()
		s.clientGone = true
		s.mu.Unlock()
		s.fail(nil)
	}
}

// backendRelayEnded runs when the backend→client relay stops. The backend→client goroutine is
// the one that tells the client why the session ends and closes the client connection.
func (s *session) backendRelayEnded(r *relay, err error) {
	s.mu.Lock()
	s.closing = true
	reason, clientGone, clientEOF, lastClientType := s.reason, s.clientGone, s.clientEOF, s.lastClientType
	s.mu.Unlock()
	var protocolErr *clientError
	var writeErr *relayWriteError
	switch {
	case reason != nil || clientGone:
	case errors.As(err, &writeErr):
		clientGone = true
	case errors.As(err, &protocolErr):
		s.log.Warn("closing session: invalid message from the PostgreSQL server", "backend", s.target.Name, "err", err)
		reason = protocolErr
	case lastClientType == 'X' || clientEOF:
		// The client asked to terminate, or closed its side; the backend closed as asked.
	case r.lastType == 'E':
		// The backend's last message was an error (FATAL before exit): the client has it.
	default:
		s.log.Warn("PostgreSQL server closed the connection unexpectedly", "backend", s.target.Name, "err", err)
		s.srv.cfg.Router.BackendFailed(s.target)
		reason = fatalf(codeConnectionFailure, "the PostgreSQL server %s closed the connection unexpectedly", s.target.Name).
			withCause(err)
	}
	s.mu.Lock()
	backend := s.backend
	s.mu.Unlock()
	_ = backend.Close()
	if reason != nil && !clientGone && r.atMessageBoundary() {
		_ = s.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
		_, _ = s.client.Write(reason.appendErrorResponse(nil))
	}
	_ = s.client.Close()
}

// relayDone finishes the session when the last relay goroutine ends.
func (s *session) relayDone() {
	if s.running.Add(-1) == 0 {
		s.srv.counters.sessions.Add(-1)
		s.finish()
	}
}

// finish releases everything the session holds. It runs once, in the last goroutine of the
// session.
func (s *session) finish() {
	s.mu.Lock()
	backend := s.backend
	s.mu.Unlock()
	if backend != nil {
		_ = backend.Close()
	}
	if s.client != nil {
		_ = s.client.Close()
	}
	_ = s.conn.Close()
	s.srv.sessions.remove(s)
	s.srv.counters.clientConnections.Add(-1)
	s.log.Debug("session closed")
}

// logPanic logs a recovered panic (a bug) with its stack.
func (s *session) logPanic(where string, v any) {
	s.log.Error("panic in proxy session; closing the session", "where", where, "panic", fmt.Sprint(v),
		"stack", string(debug.Stack()))
}

// writeFinalError sends e to the client during startup, then closes the connection gracefully.
func (s *session) writeFinalError(e *clientError) {
	client := s.client
	if client == nil {
		client = s.conn
	}
	_ = s.conn.SetDeadline(time.Now().Add(errorWriteTimeout))
	if _, err := client.Write(e.appendErrorResponse(nil)); err != nil {
		return
	}
	lingerClose(s.conn)
}

// lingerClose half-closes a TCP connection and discards a bounded amount of unread input for a
// short time, so the peer reads what was written before it sees the close.
func lingerClose(conn net.Conn) {
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tcp.CloseWrite()
	_ = tcp.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, tcp, lingerBytes)
}
