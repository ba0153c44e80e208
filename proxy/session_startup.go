package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/metrics"
)

// startupBufferSize is the read buffer of the startup phase (a typical startup packet is well
// under 200 bytes; larger ones are read through it).
const startupBufferSize = 1024

// errStartupDone ends the startup goroutine without an error for the client (cancel requests,
// clients that went away).
var errStartupDone = errors.New("connection handled")

// serveConn runs the startup phase of one client connection and, when it succeeds, hands the
// session to its relay goroutines.
func (s *Server) serveConn(ctx context.Context, conn net.Conn) {
	defer s.goroutines.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.counters.totalClientConnections.Add(1)
	sess := newSession(s, conn, cancel)
	sess.startupDeadline = time.Now().Add(s.cfg.StartupTimeout)
	_ = conn.SetDeadline(sess.startupDeadline)
	refusal := s.admit()
	if refusal == nil {
		sess.startupPlace = true
		s.sessions.add(sess)
	}
	if refusal != nil {
		s.counters.refusedConnections.Add(1)
		sess.writeFinalError(refusal)
		_ = conn.Close()
		return
	}
	sess.log = s.log.With("session", sess.id, "client", conn.RemoteAddr().String())
	relaying := sess.runStartupRecovering(ctx)
	sess.endStartup()
	if !relaying {
		sess.finish()
	}
}

// runStartupRecovering runs the startup phase with a last-resort recovery: a panic (a bug) is
// logged, and the client gets an internal error instead of the process crashing.
func (s *session) runStartupRecovering(ctx context.Context) (relaying bool) {
	defer func() {
		if v := recover(); v != nil {
			s.logPanic("startup", v)
			s.mu.Lock()
			relaying = s.phase != phaseStartup && s.running.Load() > 0
			s.mu.Unlock()
			if relaying {
				s.fail(fatalf(codeInternalError, "internal error in the pgquorum proxy"))
				return
			}
			s.srv.counters.startupFailures.Add(1)
			s.writeFinalError(fatalf(codeInternalError, "internal error in the pgquorum proxy"))
		}
	}()
	return s.runStartup(ctx)
}

// runStartup runs the startup phase and reports whether the relay took over the session.
func (s *session) runStartup(ctx context.Context) bool {
	s.client = s.conn
	clientLeftover, backendLeftover, err := s.startup(ctx)
	if err == nil {
		_ = s.conn.SetDeadline(time.Time{})
		err = s.startRelay(clientLeftover, backendLeftover, s.startupParams)
	}
	if err != nil {
		s.reportStartupError(err)
		return false
	}
	return true
}

var errShuttingDown = errors.New("proxy is shutting down")

// reportStartupError logs a failed startup and tells the client when there is something to say.
func (s *session) reportStartupError(err error) {
	if errors.Is(err, errStartupDone) || errors.Is(err, errClientGone) {
		return
	}
	s.srv.counters.startupFailures.Add(1)
	var ce *clientError
	switch {
	case s.srv.shuttingDown.Load() || errors.Is(err, errShuttingDown):
		ce = fatalf(codeCannotConnectNow, "the pgquorum proxy is shutting down")
	case errors.Is(err, os.ErrDeadlineExceeded):
		ce = fatalf(codeProtocolViolation, "canceling authentication due to timeout")
	case errors.As(err, &ce):
	default:
		s.log.Debug("startup failed", "err", err)
		return // the connection failed; nobody to tell
	}
	s.log.Info("startup failed", "user", s.user, "err", err)
	s.writeFinalError(ce)
}

// startup performs the whole startup phase: TLS and protocol negotiation, client
// authentication, backend connection. It returns the bytes already read past the end of the
// startup phase on each side.
func (s *session) startup(ctx context.Context) (clientLeftover, backendLeftover []byte, err error) {
	br := bufio.NewReaderSize(s.conn, startupBufferSize)
	pkt, br, err := s.negotiate(ctx, br)
	if err != nil {
		return nil, nil, err
	}
	if s.srv.shuttingDown.Load() {
		return nil, nil, errShuttingDown
	}

	var out []byte // messages for the client, written when the proxy next waits for it
	newest := uint16(0)
	if pkt.ProtocolMinor > 0 || len(pkt.UnknownProtocolOptions) > 0 {
		// Answer as the primary would (protocol.go).
		user, _ := pkt.param("user")
		database, _ := pkt.param("database")
		newest = s.srv.primaryProtocolMinor(ctx, user, database)
	}
	s.protocolMinor = min(pkt.ProtocolMinor, newest)
	if pkt.ProtocolMinor > newest || len(pkt.UnknownProtocolOptions) > 0 {
		// Like PostgreSQL: name the newest version we speak and the options we ignored, then
		// go on with the downgraded version.
		msg := pgproto3.NegotiateProtocolVersion{
			NewestMinorProtocol: protocolMajor3<<16 | uint32(newest),
			UnrecognizedOptions: pkt.UnknownProtocolOptions,
		}
		out, _ = msg.Encode(out)
	}
	for _, p := range pkt.Params {
		if p.Name == "replication" {
			continue // a false value; PostgreSQL's default anyway
		}
		s.params = append(s.params, p)
	}
	s.user, _ = pkt.param("user")
	s.log = s.log.With("user", s.user)
	if s.srv.cfg.TLSRequired && !s.clientTLS {
		// Like a hostssl-only pg_hba.conf: refused before any authentication.
		database, ok := pkt.param("database")
		if !ok {
			database = s.user
		}
		s.srv.cfg.Metrics.AuthFailed(metrics.AuthTLSRequired)
		return nil, nil, fatalf(codeInvalidAuthSpec, "connection without encryption refused for user %q, database %q: the pgquorum proxy requires TLS", s.user, database).
			withHint("Connect with sslmode=require (or verify-ca, verify-full).")
	}

	creds, out, err := s.authenticateClient(ctx, br, out)
	if err != nil {
		if reason, ok := authFailure(err); ok {
			s.srv.cfg.Metrics.AuthFailed(reason)
		}
		return nil, nil, err
	}
	s.endStartup() // authenticated: waiting for the primary now counts as held (MaxHeld)
	s.creds = creds
	if err := s.checkStartupSyncCommit(); err != nil {
		return nil, nil, err
	}
	out, _ = (&pgproto3.AuthenticationOk{}).Encode(out)

	var backendReady backendStartup
	err = s.waitOnServer(func() error {
		var err error
		backendReady, err = s.connectFirstBackend(ctx)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	secret, err := newSecretKey(s.srv.cfg.NodeID, s.protocolMinor)
	if err != nil {
		return nil, nil, err
	}
	// The client gets its backend's real process id (cancel.go).
	pid := backendReady.cancelKey.processID
	s.srv.sessions.setCancelKey(s, pid, secret, backendReady.cancelKey)
	out = append(out, backendReady.statusMessages...)
	out, _ = (&pgproto3.BackendKeyData{ProcessID: pid, SecretKey: secret}).Encode(out)
	out, _ = (&pgproto3.ReadyForQuery{TxStatus: backendReady.txStatus}).Encode(out)
	if _, err := s.client.Write(out); err != nil {
		return nil, nil, errors.Join(errClientGone, err)
	}
	s.log.Debug("session started", "backend", s.target.Name, "protocol_minor", s.protocolMinor, "tls", s.clientTLS)
	s.startupParams = backendReady.params
	return bufferedBytes(br), backendReady.leftover, nil
}

// connectFirstBackend logs in to the primary for a new session, waiting up to the hold timeout
// for one to be agreed and reachable (a new connection during a failover succeeds after it).
func (s *session) connectFirstBackend(ctx context.Context) (backendStartup, error) {
	hold := s.srv.cfg.HoldTimeout
	ctx, cancel := context.WithTimeout(ctx, hold)
	defer cancel()
	conn, target, ready, err := s.connectPrimary(ctx, true, nil, "")
	if err != nil {
		var ce *clientError
		switch {
		case errors.As(err, &ce) && !retryableLoginError(err):
			return backendStartup{}, err // the server's own answer (authentication, database, ...)
		case errors.Is(err, errTooManyHeld):
			return backendStartup{}, fatalf(codeCannotConnectNow, "too many connections are waiting for a primary PostgreSQL server").
				withDetail("The proxy holds at most hold.max_held requests and connections during a failover.").withHint("Retry later.")
		}
		return backendStartup{}, noPrimaryError(err, hold)
	}
	s.mu.Lock()
	s.setBackendLocked(conn, target, ready.loginTook)
	s.mu.Unlock()
	return ready, nil
}

// negotiate reads startup packets until a StartupMessage, answering SSLRequest and
// GSSENCRequest and serving CancelRequest. It returns the StartupMessage and the reader to use
// from then on (a new one over TLS).
func (s *session) negotiate(ctx context.Context, br *bufio.Reader) (startupPacket, *bufio.Reader, error) {
	cfg := s.srv.cfg
	sslDone, gssDone := false, false
	for {
		if !sslDone && cfg.TLS != nil {
			if first, err := br.Peek(1); err == nil && first[0] == tlsHandshakeRecord {
				// Direct TLS (sslnegotiation=direct): a TLS ClientHello instead of SSLRequest.
				var err error
				if br, err = s.startDirectTLS(br); err != nil {
					return startupPacket{}, nil, err
				}
				sslDone = true
				continue
			}
		}
		pkt, err := readStartupPacket(br, cfg.MaxStartupPacket)
		if err != nil {
			return startupPacket{}, nil, err
		}
		switch pkt.Kind {
		case kindStartupMessage:
			return pkt, br, nil
		case kindCancelRequest:
			s.srv.counters.cancelRequests.Add(1)
			s.srv.handleCancel(ctx, pkt)
			return startupPacket{}, nil, errStartupDone
		case kindSSLRequest:
			if sslDone {
				return startupPacket{}, nil, fatalf(codeProtocolViolation, "unexpected SSLRequest: SSL negotiation was already done")
			}
			if br.Buffered() > 0 {
				return startupPacket{}, nil, fatalf(codeProtocolViolation, "received unencrypted data after SSL request").
					withDetail("This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.")
			}
			sslDone = true
			if cfg.TLS == nil {
				if _, err := s.conn.Write([]byte{'N'}); err != nil {
					return startupPacket{}, nil, errors.Join(errClientGone, err)
				}
				continue
			}
			if _, err := s.conn.Write([]byte{'S'}); err != nil {
				return startupPacket{}, nil, errors.Join(errClientGone, err)
			}
			if br, err = s.startTLS(s.conn); err != nil {
				return startupPacket{}, nil, err
			}
		case kindGSSENCRequest:
			if gssDone || s.clientTLS {
				return startupPacket{}, nil, fatalf(codeProtocolViolation, "unexpected GSSENCRequest")
			}
			if br.Buffered() > 0 {
				return startupPacket{}, nil, fatalf(codeProtocolViolation, "received unencrypted data after GSSAPI encryption request").
					withDetail("This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.")
			}
			gssDone = true
			if _, err := s.conn.Write([]byte{'N'}); err != nil {
				return startupPacket{}, nil, errors.Join(errClientGone, err)
			}
		}
	}
}

// waitOnServer runs f, which waits for the router or a PostgreSQL server, without counting that
// time against the client's startup timeout.
func (s *session) waitOnServer(f func() error) error {
	start := time.Now()
	s.mu.Lock()
	_ = s.conn.SetDeadline(time.Time{})
	s.mu.Unlock()
	err := f()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startupDeadline = s.startupDeadline.Add(time.Since(start))
	if s.phase != phaseStartup {
		_ = s.conn.SetDeadline(time.Now())
		if err == nil {
			err = errShuttingDown
		}
	} else {
		_ = s.conn.SetDeadline(s.startupDeadline)
	}
	return err
}

// bufferedBytes returns a copy of the bytes br has read but not consumed.
func bufferedBytes(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	return append([]byte(nil), b...)
}
