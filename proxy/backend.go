package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// maxBackendStartupMessageBody bounds a message the backend sends during its startup phase.
const maxBackendStartupMessageBody = 1 << 20

// backendStartup is what connectBackend learned from the backend's startup phase.
type backendStartup struct {
	cancelKey      backendCancelKey
	statusMessages []byte // ParameterStatus and NoticeResponse messages, to relay to the client
	txStatus       byte   // from the backend's ReadyForQuery
	leftover       []byte // bytes read past the ReadyForQuery
}

// connectBackend asks the router for the primary, connects to it and logs in as the client's
// user with the session's credentials, forwarding every startup parameter. It stores the
// connection in s.backend. The whole step is bounded by Config.HoldTimeout.
//
// The backend's startup phase is read with a small framing reader of our own rather than
// pgproto3.Frontend, so that bytes read past ReadyForQuery are handed to the relay exactly.
func (s *session) connectBackend(ctx context.Context) (backendStartup, error) {
	cfg := s.srv.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.HoldTimeout)
	defer cancel()
	target, err := cfg.Router.Primary(ctx)
	if err != nil {
		return backendStartup{}, noPrimaryError(err, cfg.HoldTimeout)
	}
	s.target = target
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", target.Address)
	if err != nil {
		cfg.Router.BackendFailed(target)
		return backendStartup{}, fatalf(codeConnectionFailure, "could not connect to the primary PostgreSQL server %s", target.Name).
			withCause(err)
	}
	s.mu.Lock()
	s.backend = conn
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	ready, err := s.backendStartup(conn)
	if err != nil {
		var ce *clientError
		if !errors.As(err, &ce) {
			// The connection failed or timed out during the backend's startup.
			cfg.Router.BackendFailed(target)
			err = fatalf(codeConnectionFailure, "lost connection to the primary PostgreSQL server %s during startup", target.Name).
				withCause(err)
		}
		return backendStartup{}, err
	}
	if !stop() {
		return backendStartup{}, fatalf(codeCannotConnectNow, "timed out logging in to the primary PostgreSQL server %s", target.Name).
			withCause(ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	ready.cancelKey.address = target.Address
	return ready, nil
}

// backendStartup sends the startup message and answers the backend until ReadyForQuery.
func (s *session) backendStartup(conn net.Conn) (backendStartup, error) {
	if _, err := conn.Write(s.appendBackendStartupMessage(nil)); err != nil {
		return backendStartup{}, fmt.Errorf("send startup message: %w", err)
	}
	br := bufio.NewReaderSize(conn, startupBufferSize)
	auth := pgauth.NewBackendAuth(s.creds, nil)
	var ready backendStartup
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
			return backendStartup{}, s.backendStartupError(body)
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

// backendStartupError passes the backend's ErrorResponse to the client unchanged and tells the
// router when the backend said it cannot accept connections (shutting down, starting up,
// recovering).
func (s *session) backendStartupError(body []byte) error {
	var msg pgproto3.ErrorResponse
	_ = msg.Decode(body)
	switch msg.Code {
	case "57P01", "57P02", "57P03":
		s.srv.cfg.Router.BackendFailed(s.target)
	}
	return &clientError{
		Severity: msg.Severity,
		Code:     msg.Code,
		Message:  msg.Message,
		raw:      appendMessage(nil, 'E', body),
		cause:    fmt.Errorf("PostgreSQL server %s refused the session: %s (SQLSTATE %s)", s.target.Name, msg.Message, msg.Code),
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
