package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
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

// session is one client connection and, once authenticated, its backend connection, which may
// be replaced by a connection to a new primary (a move) while the client stays connected.
//
// Which goroutine owns what follows from the session's phase (phase.go, under mu).
//
// Ownership: the startup goroutine owns every field until it starts the relay. Then:
//   - the client→backend relay goroutine reads the client, writes the backend, and owns the
//     backend's lifecycle: it holds requests, moves the session and answers the client itself
//     while no backend is usable (the link is down);
//   - the backend→client relay goroutine reads the backend and writes the client while the
//     link is up. When the backend is lost it decides what the client is told (loss.go), hands
//     the client side over to the client→backend relay (parked) and waits for a new backend
//     (links) or the end of the session (ending).
//
// Fields under mu are shared by both relays, Server.Shutdown, the route watcher and cancel
// requests; cancel keys are guarded by the registry's mutex.
type session struct {
	srv *Server
	log *slog.Logger
	id  uint64 // the session's number in this proxy (logs); set by the registry

	conn net.Conn // the accepted TCP connection; Close on it always ends the client side

	startupCancel   context.CancelFunc // cancels the startup phase's context
	startupDeadline time.Time          // end of the client's startup budget (startup goroutine)
	startupPlace    bool               // holds one of Config.MaxStartupConnections (startup goroutine)

	// Set during startup, read-only afterwards.
	client    net.Conn // conn, or the TLS connection over it
	clientTLS bool
	// clientBinding is the tls-server-end-point data of the certificate the client got (for
	// SCRAM-SHA-256-PLUS); set by the TLS handshake, dropped after authentication.
	clientBinding []byte
	protocolMinor uint16 // protocol 3.x the client speaks (after negotiation: 0, 1 or 2)
	params        []startupParam
	user          string
	creds         credentials       // kept so the session can log in again without the client (failover)
	startupParams map[string]string // ParameterStatus values sent to the client at startup
	// asyncCommit: the session lowered synchronous_commit (counted once, asynccommit.go).
	// Written during startup, then by the client→backend relay.
	asyncCommit bool

	// Guarded by srv.sessions.mu.
	clientPID    uint32 // the process id in the BackendKeyData the client got (its first backend's)
	clientSecret []byte
	cancelKey    backendCancelKey
	cancelReady  bool

	running atomic.Int32 // relay goroutines still running; the last one finishes the session

	// Facts the relays read without the lock on their fast paths.
	hasRecords      atomic.Bool // len(records) > 0
	retryArmed      atomic.Bool // a retry copy of the request in flight is kept (retry.go)
	backslashQuotes atomic.Bool // standard_conforming_strings is off (for the SQL scanner)
	wakeRequested   atomic.Bool // the backend→client relay asked the client→backend relay to act
	injecting       atomic.Bool // the answer of a request the proxy sent itself is awaited (resolve.go, reprepare.go)

	// serverParams are the ParameterStatus values the client has seen. Owner: the
	// backend→client relay while the link is up, the client→backend relay while it is down.
	serverParams map[string]string

	// ctx ends with the session: it bounds holds and moves and wakes a parked relay. Both are
	// set by newSession and never change, so any goroutine may call stop.
	ctx  context.Context
	stop context.CancelFunc

	clientWriteMu sync.Mutex // serializes writes to the client made outside the relay loop

	mu             sync.Mutex
	phase          sessionPhase     // where the session is in its life (phase.go); changed by transitionLocked only
	backend        net.Conn         // the current backend connection (nil before startup connects)
	target         Target           // where backend is connected
	mode           localMode        // detached: how the client→backend relay answers the client
	clientGone     bool             // the client's connection failed or could not be written to
	clientEOF      bool             // the client closed its sending side (EOF)
	reason         *clientError     // what the client is told before the close; first one wins
	txStatus       byte             // transaction status the client last saw in a ReadyForQuery
	readyReceived  uint64           // requests answered (ReadyForQuery from the backend or the proxy)
	requestTimes   requestTimes     // when the requests in flight were sent (datapath_metrics.go)
	countedBackend string           // the node the session is counted on (datapath_metrics.go)
	idleThrough    uint64           // requests answered when a ReadyForQuery last said idle: the named portals of requests before it are gone
	syncsSent      uint64           // requests sent to the backend (Query, FunctionCall, Sync)
	lastClientType byte             // type of the last message the client sent
	extendedOpen   bool             // an extended-protocol batch was started and not yet ended by Sync
	inflight       inflightFacts    // what the requests sent and not answered may do
	state          *sessionState    // replayable state; nil until the session changes any
	records        []*segRecord     // requests whose effects wait for their answers (inspect.go)
	holdCancel     chan struct{}    // while a client request waits for a primary: closed by a cancel request
	retry          retryCopy        // the request in flight, while it may be retried (retry.go)
	probe          commitProbe      // the transaction id probe of the COMMIT in flight (resolve.go)
	reprepare      reprepareRequest // re-prepares sent ahead of a Query that EXECUTEs them (reprepare.go)
	// The COMMIT lost with the backend whose outcome the session is resolving (resolve.go).
	lostCommit       commitProbe
	lostCommitTarget Target
	handoff          *handoff // created at the first lost backend
}

// handoff carries the client side between the relays when a backend is lost: the
// backend→client relay sends its verdict on parked, the client→backend relay sends the new
// backend on links after the move. Only sessions that lose a backend need one.
type handoff struct {
	parked chan lossVerdict
	links  chan backendLink
}

// handoffChannels returns the session's handoff, creating it.
func (s *session) handoffChannels() *handoff {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handoff == nil {
		s.handoff = &handoff{parked: make(chan lossVerdict, 1), links: make(chan backendLink, 1)}
	}
	return s.handoff
}

// inflightFacts is what the requests sent and not yet answered may do.
type inflightFacts struct {
	mayCommit    bool // a COMMIT (or something that may commit) is among them
	writes       bool // something other than a read, SET or transaction control
	rollbackOnly bool // exactly one request, a single ROLLBACK
	txControl    bool // a transaction control statement (BEGIN, COMMIT, ROLLBACK, ...) is among them
}

// backendLink is a backend connection handed to the backend→client relay after a move.
type backendLink struct {
	conn     net.Conn
	leftover []byte // bytes read past the replay's ReadyForQuery
}

// stateLocked returns the session state, creating it. s.mu is held.
func (s *session) stateLocked() *sessionState {
	if s.state == nil {
		s.state = &sessionState{}
	}
	return s.state
}

// atSafePointLocked reports whether the session is idle between transactions: every request
// was answered, the client's last ReadyForQuery said idle, and no extended-protocol batch is
// open. New requests start here; Shutdown closes sessions only here. s.mu is held.
func (s *session) atSafePointLocked() bool {
	switch {
	case s.phase == phaseRouted, s.phase == phaseDraining, s.phase == phaseDetached && s.mode == modeIdle:
		return s.txStatus == 'I' && s.syncsSent == s.readyReceived && !s.extendedOpen
	}
	return false
}

// newSession returns the session of an accepted connection, in the startup phase.
func newSession(srv *Server, conn net.Conn, startupCancel context.CancelFunc) *session {
	if startupCancel == nil {
		startupCancel = func() {}
	}
	s := &session{srv: srv, conn: conn, startupCancel: startupCancel, log: srv.log}
	s.ctx, s.stop = context.WithCancel(context.Background())
	return s
}

// drain is Shutdown's request: a session in startup gives up (the client gets 57P03), a
// session at a safe point or without requests in flight (held, detached, moving) closes now,
// and a routed session with requests in flight closes at its next safe point (drainedLocked).
// The client is told reason.
func (s *session) drain(reason *clientError) {
	s.mu.Lock()
	if s.phase == phaseStartup {
		s.transitionLocked(evDrain)
		_ = s.conn.SetDeadline(time.Now())
		s.mu.Unlock()
		s.startupCancel()
		return
	}
	if s.phase == phaseClosed || s.phase == phaseDraining {
		s.mu.Unlock()
		return
	}
	safe := s.atSafePointLocked()
	s.transitionLocked(evDrain)
	if safe {
		s.transitionLocked(evSafePoint)
	}
	if s.reason == nil && !s.clientGone {
		s.reason = reason
	}
	closed := s.phase == phaseClosed
	backend := s.backend
	s.mu.Unlock()
	if closed {
		s.closeNow(backend)
	}
}

// drainedLocked is called where the session may have reached a safe point: a draining session
// that did is closed (the caller then calls closeNow). It reports whether it was. s.mu is held.
func (s *session) drainedLocked() bool {
	return s.phase == phaseDraining && s.atSafePointLocked() && s.transitionLocked(evSafePoint)
}

// closeNow ends a session whose phase is closed: the backend→client relay sees its read fail
// (or, when parked, the session end), tells the client the session's reason and closes it.
func (s *session) closeNow(backend net.Conn) {
	_ = s.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	s.closeEnding()
	if backend != nil {
		_ = backend.Close()
	}
}

// dropStaleBackend closes the session's backend when route no longer allows it: a new primary
// is agreed elsewhere, or the lease expired. It reports whether it did. Called by the route
// watcher; the backend→client relay then decides what the client sees (loss.go).
func (s *session) dropStaleBackend(r Route) bool {
	s.mu.Lock()
	stale := s.phase.linked() && s.backend != nil &&
		(r.LeaseExpired || r.Routing && (r.Target.Address != s.target.Address || r.Target.Name != s.target.Name))
	backend := s.backend
	s.mu.Unlock()
	if stale {
		_ = backend.Close()
	}
	return stale
}

// closeEnding ends the session's context (idempotent).
func (s *session) closeEnding() {
	s.stop()
}

// fail ends the session with reason (unless another reason came first). The client hears the
// reason from the backend→client relay, which is woken by closing the backend connection or,
// when it is parked, by the end of the session.
func (s *session) fail(reason *clientError) {
	s.mu.Lock()
	if s.reason == nil && !s.clientGone {
		s.reason = reason
	}
	s.transitionLocked(evClose)
	backend := s.backend
	s.mu.Unlock()
	s.closeNow(backend)
}

// forceClose closes both connections now (Shutdown's deadline passed).
func (s *session) forceClose(reason *clientError) {
	s.mu.Lock()
	inStartup := s.phase == phaseStartup
	s.mu.Unlock()
	s.fail(reason)
	_ = s.conn.SetDeadline(time.Now().Add(errorWriteTimeout))
	if inStartup {
		// Unblock the startup goroutine's reads; it reports the shutdown itself (startRelay
		// refuses a closed session).
		_ = s.conn.Close()
	}
}

// startRelay starts the two relay goroutines. leftovers are bytes already read from each side
// during startup; params are the ParameterStatus values the client was sent. It returns
// errShuttingDown, and starts nothing, when the session was drained or closed meanwhile.
func (s *session) startRelay(clientLeftover, backendLeftover []byte, params map[string]string) error {
	s.serverParams = maps.Clone(params) // startupParams keeps what the session started with
	s.backslashQuotes.Store(params["standard_conforming_strings"] == "off")
	s.mu.Lock()
	if !s.transitionLocked(evRelayStarted) {
		s.mu.Unlock()
		return errShuttingDown
	}
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
	return nil
}

// runClientToBackend is the client→backend relay goroutine. Its frame, and the frames of
// what it calls while the session is idle, are kept tiny because they sit at the bottom of the
// stack of a parked idle session: a stack used below a quarter is one the garbage collector
// shrinks to the minimum (2 KiB), which matters for SPEC §7's memory per idle connection.
func (s *session) runClientToBackend(r *relay) {
	defer s.relayGoroutineDone(false)
	var err error
	for err == nil {
		err = s.clientInterrupted(r, r.run())
	}
	r.c.forgetPortals(s)
	s.clientRelayEnded(err)
}

// clientInterrupted handles what stopped the client→backend relay: a request to hold, a lost
// backend, a wake-up from the other relay. It returns nil when the relay goes on.
func (s *session) clientInterrupted(r *relay, err error) error {
	switch {
	case errors.Is(err, errHold):
		return s.holdRequest(r)
	case errors.Is(err, errDetached), errors.Is(err, errNeedMove):
		return s.detached(r)
	case errors.Is(err, os.ErrDeadlineExceeded) && s.wakeRequested.Swap(false):
		_ = s.conn.SetReadDeadline(time.Time{})
		s.mu.Lock()
		down := !s.phase.linked()
		s.mu.Unlock()
		if !down && !r.c.linkDown {
			return nil // a late wake-up: the verdict was handled and the session moved already
		}
		return s.detached(r)
	case isBackendWriteError(err):
		// The backend connection broke under our write: the backend→client relay sees it
		// too and decides what the client is told.
		s.dropBackend()
		return s.detached(r)
	}
	return err
}

// isBackendWriteError reports whether err is a failed write to the backend.
func isBackendWriteError(err error) bool {
	var writeErr *relayWriteError
	return errors.As(err, &writeErr)
}

// dropBackend closes the backend connection (the backend→client relay then parks).
func (s *session) dropBackend() {
	s.mu.Lock()
	backend := s.backend
	s.mu.Unlock()
	if backend != nil {
		_ = backend.Close()
	}
}

// wakeClientSide makes the client→backend relay's pending read return so that it acts on a
// parked verdict at once (a retry or an eager move) rather than at the client's next message.
func (s *session) wakeClientSide() {
	s.wakeRequested.Store(true)
	_ = s.conn.SetReadDeadline(time.Now())
}

// runBackendToClient is the backend→client relay goroutine: it relays from the current
// backend; when that is lost, it tells the client what happened, parks, and continues with the
// backend the client→backend relay hands it after a move. (Its frame is kept tiny, see
// runClientToBackend.)
func (s *session) runBackendToClient(r *relay) {
	defer s.relayGoroutineDone(true)
	for s.nextBackend(r, r.run()) {
	}
}

// nextBackend handles the end of relaying from a backend and reports whether the relay goes on
// with a new one.
func (s *session) nextBackend(r *relay, err error) bool {
	link, ok := s.backendLost(r, err)
	if ok {
		r.setSource(link.conn, link.leftover)
	}
	return ok
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
	switch {
	case errors.Is(err, errSessionClosing):
	case errors.Is(err, errClientTerminated):
		s.mu.Lock()
		s.clientGone = true
		s.mu.Unlock()
		s.fail(nil)
	case errors.As(err, &protocolErr):
		s.log.Info("closing session: protocol violation by the client", "err", err)
		s.fail(protocolErr)
	default:
		if errors.Is(err, io.EOF) {
			// The client finished sending. Like a direct connection: the backend sees the end
			// of input after the requests already sent, and its answers are still relayed.
			s.mu.Lock()
			s.clientEOF = true
			backend, up := s.backend, s.phase.linked()
			s.mu.Unlock()
			if tcp, ok := backend.(*net.TCPConn); ok && up && tcp.CloseWrite() == nil {
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

// endClientSide ends the session from the backend→client relay: it tells the client reason
// (when there is one, the client is reachable and the stream is at a message boundary) and
// closes the client connection.
func (s *session) endClientSide(reason *clientError, atBoundary bool) {
	s.mu.Lock()
	s.transitionLocked(evClose)
	if s.reason != nil {
		reason = s.reason
	}
	clientGone := s.clientGone
	backend := s.backend
	s.mu.Unlock()
	s.closeEnding()
	if backend != nil {
		_ = backend.Close()
	}
	if reason != nil && !clientGone && atBoundary {
		s.clientWriteMu.Lock()
		_ = s.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
		_, _ = s.client.Write(reason.appendErrorResponse(nil))
		s.clientWriteMu.Unlock()
		if reason.raw == nil {
			s.srv.cfg.Metrics.ClientError(reason.Code)
		}
	}
	_ = s.client.Close()
}

// writeToClient writes proxy-made messages to the client outside the relay loop. It reports
// whether the write succeeded.
func (s *session) writeToClient(out []byte) bool {
	if len(out) == 0 {
		return true
	}
	s.clientWriteMu.Lock()
	defer s.clientWriteMu.Unlock()
	_ = s.conn.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
	_, err := s.client.Write(out)
	_ = s.conn.SetWriteDeadline(time.Time{})
	if err != nil {
		s.mu.Lock()
		s.clientGone = true
		s.mu.Unlock()
		s.fail(nil)
		return false
	}
	return true
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
	s.uncountBackendLocked()
	s.releaseRetryLocked()
	s.mu.Unlock()
	s.closeEnding()
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
	// Under mu, and closed, so that a concurrent drain (Shutdown) cannot set the deadline to
	// now between here and the write.
	s.mu.Lock()
	s.transitionLocked(evClose)
	_ = s.conn.SetDeadline(time.Now().Add(errorWriteTimeout))
	s.mu.Unlock()
	if e.raw == nil {
		s.srv.cfg.Metrics.ClientError(e.Code)
	}
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
