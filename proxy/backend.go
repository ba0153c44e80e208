package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// maxBackendStartupMessageBody bounds a message the backend sends during its startup phase.
const maxBackendStartupMessageBody = 1 << 20

// backendStartup is what a backend login learned.
type backendStartup struct {
	cancelKey      backendCancelKey
	statusMessages []byte            // ParameterStatus and NoticeResponse messages, to relay to the client
	params         map[string]string // the ParameterStatus values (startup, then replay)
	txStatus       byte              // from the backend's ReadyForQuery
	leftover       []byte            // bytes read past the ReadyForQuery
	loginTook      time.Duration     // from the dial to the ReadyForQuery (replay not included)
}

// connectPrimary logs in to the primary as the client's user, waiting while no primary is
// agreed, and replays the session's state (replay, a SQL text; "" for none). A primary that
// cannot be reached or refuses connections for now (shutting down, starting up: 57P01, 57P02,
// 57P03) is tried again only after routing names another one, or after a pause; everything is
// bounded by ctx. held says the wait counts as a held request; cancel, when not nil, ends it.
// Logins take one of the proxy's login slots (Config.ReleaseConcurrency).
func (s *session) connectPrimary(ctx context.Context, held bool, cancel <-chan struct{}, replay string) (net.Conn, Target, backendStartup, error) {
	hold := s.srv.newHold(held)
	defer hold.finish(ctx)
	var avoid Target
	var lastErr error
	for {
		target, err := s.srv.waitRoute(ctx, avoid, hold, cancel)
		if err != nil {
			if lastErr != nil && !errors.Is(err, errHoldCancelled) && !errors.Is(err, errTooManyHeld) {
				err = fmt.Errorf("%w (last attempt: %v)", err, lastErr)
			}
			return nil, Target{}, backendStartup{}, err
		}
		release, err := s.srv.acquireLogin(ctx)
		if err != nil {
			return nil, Target{}, backendStartup{}, err
		}
		loginStart := time.Now()
		conn, ready, err := s.loginBackend(ctx, target)
		ready.loginTook = time.Since(loginStart)
		if err != nil {
			s.srv.cfg.Metrics.BackendConnectFailed(target.Name, connectFailure(err))
		}
		if err == nil && replay != "" {
			err = s.replayState(ctx, conn, replay, &ready)
		}
		release()
		if err == nil {
			hold.routed()
			return conn, target, ready, nil
		}
		if conn != nil {
			_ = conn.Close()
		}
		if !retryableLoginError(err) || ctx.Err() != nil {
			return nil, Target{}, backendStartup{}, err
		}
		s.log.Debug("primary not usable; waiting for routing to change", "backend", target.Name, "err", err)
		s.srv.cfg.Router.BackendFailed(target)
		avoid, lastErr = target, err
	}
}

// retryableLoginError reports whether a failed login may succeed on another (or a restarted)
// primary: the connection failed, or the server refused connections for now.
func retryableLoginError(err error) bool {
	var ce *clientError
	if !errors.As(err, &ce) {
		return true // dial or I/O error
	}
	switch ce.Code {
	case codeAdminShutdown, codeCrashShutdown, codeCannotConnectNow, codeReadOnlyTransaction, codeConnectionFailure:
		return true
	}
	return false
}

// loginBackend connects to target and logs in as the client's user with the session's
// credentials, forwarding every startup parameter. The returned connection has no deadline.
//
// The backend's startup phase is read with a small framing reader of our own rather than
// pgproto3.Frontend, so that bytes read past ReadyForQuery are handed to the relay exactly.
func (s *session) loginBackend(ctx context.Context, target Target) (net.Conn, backendStartup, error) {
	conn, channelBinding, err := s.srv.dialBackend(ctx, target.Address)
	if errors.Is(err, errBackendTLS) {
		// Trying again will not help: the server does not do TLS, or its certificate is not
		// the configured one (backend.sslmode, backend.ca).
		return nil, backendStartup{}, fatalf(codeUnableToConnect, "could not establish TLS with the primary PostgreSQL server %s", target.Name).
			withDetail(err.Error()).withCause(err)
	}
	if err != nil {
		return nil, backendStartup{}, fatalf(codeConnectionFailure, "could not connect to the primary PostgreSQL server %s", target.Name).
			withCause(err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	ready, err := s.backendStartup(conn, target, channelBinding)
	if err != nil {
		_ = conn.Close()
		var ce *clientError
		if !errors.As(err, &ce) {
			err = fatalf(codeConnectionFailure, "lost connection to the primary PostgreSQL server %s during startup", target.Name).
				withCause(err)
		}
		return nil, backendStartup{}, err
	}
	if !stop() {
		_ = conn.Close()
		return nil, backendStartup{}, fatalf(codeCannotConnectNow, "timed out logging in to the primary PostgreSQL server %s", target.Name).
			withCause(ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	ready.cancelKey.address = target.Address
	return conn, ready, nil
}

// backendStartup sends the startup message and answers the backend until ReadyForQuery.
// channelBinding is the TLS connection's tls-server-end-point data (nil without TLS).
func (s *session) backendStartup(conn net.Conn, target Target, channelBinding []byte) (backendStartup, error) {
	if _, err := conn.Write(s.appendBackendStartupMessage(nil)); err != nil {
		return backendStartup{}, fmt.Errorf("send startup message: %w", err)
	}
	br := bufio.NewReaderSize(conn, startupBufferSize)
	auth := pgauth.NewBackendAuth(s.creds, nil)
	auth.SetChannelBinding(channelBinding)
	ready := backendStartup{params: make(map[string]string)}
	for {
		typ, body, err := readMessage(br, maxBackendStartupMessageBody)
		if err != nil {
			return backendStartup{}, err
		}
		switch typ {
		case 'R':
			msg, err := decodeAuthenticationMessage(body)
			if err != nil {
				return backendStartup{}, fatalf(codeProtocolViolation, "invalid authentication request from the PostgreSQL server").withCause(err)
			}
			reply, err := auth.Handle(msg)
			if err != nil {
				return backendStartup{}, fatalf(codeInvalidAuthSpec, "the proxy could not log in to the PostgreSQL server as user %q", s.user).
					withDetail(err.Error()).withCause(err)
			}
			if reply != nil {
				out, err := reply.Encode(nil)
				if err != nil {
					return backendStartup{}, fmt.Errorf("encode authentication reply: %w", err)
				}
				if _, err := conn.Write(out); err != nil {
					return backendStartup{}, fmt.Errorf("send authentication reply: %w", err)
				}
			}
		case 'S', 'N':
			ready.statusMessages = appendMessage(ready.statusMessages, typ, body)
			if typ == 'S' {
				name, rest := splitCString(body)
				ready.params[string(name)] = string(cstring(rest))
			}
		case 'K':
			if len(body) < 4+minCancelKeyLength || len(body) > 4+maxCancelKeyLength {
				return backendStartup{}, fatalf(codeProtocolViolation, "invalid BackendKeyData from the PostgreSQL server")
			}
			ready.cancelKey.processID = binary.BigEndian.Uint32(body)
			ready.cancelKey.secret = body[4:]
		case 'v':
			// The backend speaks an older minor version (PostgreSQL before 18 and protocol
			// 3.2): the proxy speaks 3.2 to the client either way, the difference (key length)
			// is the proxy's own business.
		case 'E':
			return backendStartup{}, s.backendStartupError(body, target)
		case 'Z':
			if len(body) != 1 {
				return backendStartup{}, fatalf(codeProtocolViolation, "invalid ReadyForQuery from the PostgreSQL server")
			}
			if !auth.Done() {
				return backendStartup{}, fatalf(codeProtocolViolation, "the PostgreSQL server skipped authentication")
			}
			ready.txStatus = body[0]
			ready.leftover = bufferedBytes(br)
			return ready, nil
		default:
			return backendStartup{}, fatalf(codeProtocolViolation, "unexpected message type %q from the PostgreSQL server during startup", typ)
		}
	}
}

// replayState runs the session's replay SQL on a freshly logged-in backend and collects the
// ParameterStatus values it changes. Any error fails the move: a session whose state cannot be
// restored must not continue without it.
func (s *session) replayState(ctx context.Context, conn net.Conn, replay string, ready *backendStartup) error {
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	query := appendMessage(nil, 'Q', append([]byte(replay), 0))
	if _, err := conn.Write(query); err != nil {
		return fmt.Errorf("send the session's state: %w", err)
	}
	br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(ready.leftover), conn), startupBufferSize)
	var failure *clientError
	for {
		typ, body, err := readMessage(br, maxBackendStartupMessageBody)
		if err != nil {
			return fmt.Errorf("replay the session's state: %w", err)
		}
		switch typ {
		case 'S':
			name, rest := splitCString(body)
			ready.params[string(name)] = string(cstring(rest))
		case 'E':
			var msg pgproto3.ErrorResponse
			_ = msg.Decode(body)
			if failure == nil {
				failure = fatalf(msg.Code, "%s", msg.Message)
			}
		case 'Z':
			if failure != nil {
				return fmt.Errorf("replay the session's state: %w", failure)
			}
			if len(body) != 1 || body[0] != 'I' {
				return errors.New("replay the session's state: the backend is not idle after it")
			}
			ready.leftover = bufferedBytes(br)
			if !stop() {
				return fmt.Errorf("replay the session's state: %w", ctx.Err())
			}
			_ = conn.SetDeadline(time.Time{})
			return nil
		}
	}
}

// backendStartupError passes the backend's ErrorResponse to the client unchanged and tells the
// router when the backend said it cannot accept connections (shutting down, starting up,
// recovering).
func (s *session) backendStartupError(body []byte, target Target) error {
	var msg pgproto3.ErrorResponse
	_ = msg.Decode(body)
	return &clientError{
		Severity: msg.Severity,
		Code:     msg.Code,
		Message:  msg.Message,
		raw:      appendMessage(nil, 'E', body),
		cause:    fmt.Errorf("PostgreSQL server %s refused the session: %s (SQLSTATE %s)", target.Name, msg.Message, msg.Code),
	}
}

// appendBackendStartupMessage appends the StartupMessage for the backend: the client's
// parameters in the client's order, protocol 3.2 when the client speaks it.
func (s *session) appendBackendStartupMessage(dst []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	version := uint32(protocolMajor3 << 16)
	if s.protocolMinor >= latestProtocolMinor {
		version |= latestProtocolMinor
	}
	dst = binary.BigEndian.AppendUint32(dst, version)
	for _, p := range s.params {
		dst = append(dst, p.Name...)
		dst = append(dst, 0)
		dst = append(dst, p.Value...)
		dst = append(dst, 0)
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// decodeAuthenticationMessage decodes the body of an 'R' message into the pgproto3 message
// its authentication type names.
func decodeAuthenticationMessage(body []byte) (pgproto3.BackendMessage, error) {
	if len(body) < 4 {
		return nil, errors.New("authentication message too short")
	}
	var msg pgproto3.BackendMessage
	switch binary.BigEndian.Uint32(body) {
	case pgproto3.AuthTypeOk:
		msg = &pgproto3.AuthenticationOk{}
	case pgproto3.AuthTypeCleartextPassword:
		msg = &pgproto3.AuthenticationCleartextPassword{}
	case pgproto3.AuthTypeMD5Password:
		msg = &pgproto3.AuthenticationMD5Password{}
	case pgproto3.AuthTypeGSS:
		msg = &pgproto3.AuthenticationGSS{}
	case pgproto3.AuthTypeGSSCont:
		msg = &pgproto3.AuthenticationGSSContinue{}
	case pgproto3.AuthTypeSASL:
		msg = &pgproto3.AuthenticationSASL{}
	case pgproto3.AuthTypeSASLContinue:
		msg = &pgproto3.AuthenticationSASLContinue{}
	case pgproto3.AuthTypeSASLFinal:
		msg = &pgproto3.AuthenticationSASLFinal{}
	default:
		return nil, fmt.Errorf("unsupported authentication type %d", binary.BigEndian.Uint32(body))
	}
	if err := msg.Decode(body); err != nil {
		return nil, err
	}
	return msg, nil
}
