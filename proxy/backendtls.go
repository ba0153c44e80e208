package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// TLS towards PostgreSQL
//
// Every connection the proxy opens to PostgreSQL — a session's backend, the auth query, a
// cancel request — follows Config.BackendTLS, libpq's keywords (sslmode, sslrootcert, sslcert,
// sslkey). The connections made with pgconn (the auth query) take them in their connection
// string; the ones the proxy makes itself (sessions, cancels) take the *tls.Config pgconn derives
// from the same keywords for that host, so both follow exactly libpq's rules (require with a
// root certificate verifies like verify-ca, verify-full checks the host name). The proxy asks
// with an SSLRequest; a server that answers 'N' is refused, like libpq does in these modes.

// backendTLSRefresh is how long a derived *tls.Config is used before the files are read again
// (a rotated backend.ca or client certificate is picked up within it).
const backendTLSRefresh = time.Minute

// backendTLS derives and caches the *tls.Config of each backend address. Safe for concurrent
// use; mu guards byAddress.
type backendTLS struct {
	params conninfo.Params // sslmode and files; never empty (sslmode=disable at least)
	mode   string

	mu        sync.Mutex
	byAddress map[string]cachedBackendTLS
}

type cachedBackendTLS struct {
	config *tls.Config
	loaded time.Time
}

func newBackendTLS(params conninfo.Params) *backendTLS {
	mode, ok := params.Get("sslmode")
	if !ok {
		mode = "disable"
		params = append(conninfo.Params{{Key: "sslmode", Value: mode}}, params...)
	}
	return &backendTLS{params: params, mode: mode, byAddress: make(map[string]cachedBackendTLS)}
}

// enabled reports whether connections use TLS.
func (b *backendTLS) enabled() bool { return b.mode != "disable" }

// config returns the TLS configuration for address (host:port).
func (b *backendTLS) config(address string) (*tls.Config, error) {
	now := time.Now()
	b.mu.Lock()
	c, ok := b.byAddress[address]
	b.mu.Unlock()
	if ok && now.Sub(c.loaded) < backendTLSRefresh {
		return c.config, nil
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("backend address %q: %w", address, err)
	}
	params := append(conninfo.Params{{Key: "host", Value: host}, {Key: "port", Value: port}}, b.params...)
	cfg, err := pgconn.ParseConfig(params.String())
	if err != nil {
		return nil, fmt.Errorf("backend TLS settings: %w", err)
	}
	if cfg.TLSConfig == nil || len(cfg.Fallbacks) > 0 {
		return nil, fmt.Errorf("backend TLS settings: sslmode %q does not always use TLS", b.mode)
	}
	b.mu.Lock()
	b.byAddress[address] = cachedBackendTLS{config: cfg.TLSConfig, loaded: now}
	b.mu.Unlock()
	return cfg.TLSConfig, nil
}

// connStringParams returns the TLS keywords for a pgconn connection string.
func (b *backendTLS) connStringParams() conninfo.Params { return b.params }

// errBackendTLS marks a TLS failure that trying again will not fix: the server does not do
// TLS, or its certificate is not the one configured.
var errBackendTLS = errors.New("TLS with the PostgreSQL server failed")

// dialBackend connects to a PostgreSQL server at address and, unless sslmode is disable,
// negotiates TLS. channelBinding is the tls-server-end-point data of the server's certificate
// (nil without TLS), for SCRAM-SHA-256-PLUS. The connection has no deadline; ctx bounds the
// dial and the handshake.
func (s *Server) dialBackend(ctx context.Context, address string) (conn net.Conn, channelBinding []byte, err error) {
	var dialer net.Dialer
	conn, err = dialer.DialContext(ctx, "tcp", address)
	if err != nil || !s.backendTLS.enabled() {
		return conn, nil, err
	}
	tlsConn, err := s.backendTLS.startTLS(ctx, conn, address)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	leaf := tlsConn.ConnectionState().PeerCertificates[0]
	return tlsConn, pgauth.TLSServerEndPoint(leaf), nil
}

// sslRequest is the 8-byte SSLRequest packet.
var sslRequest = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), sslRequestCode)

// startTLS sends an SSLRequest on conn and runs the TLS handshake.
func (b *backendTLS) startTLS(ctx context.Context, conn net.Conn, address string) (*tls.Conn, error) {
	cfg, err := b.config(address)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errBackendTLS, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := conn.Write(sslRequest); err != nil {
		return nil, fmt.Errorf("send SSLRequest: %w", err)
	}
	// Exactly one byte: anything the server sent after it, before the handshake, would not be
	// protected by TLS (CVE-2021-23214), and the handshake fails on it.
	var answer [1]byte
	if _, err := io.ReadFull(conn, answer[:]); err != nil {
		return nil, fmt.Errorf("read the answer to SSLRequest: %w", err)
	}
	switch answer[0] {
	case 'S':
	case 'N':
		return nil, fmt.Errorf("%w: the server does not support SSL, but backend.sslmode is %s", errBackendTLS, b.mode)
	default:
		return nil, fmt.Errorf("%w: invalid answer %q to SSLRequest", errBackendTLS, answer[0])
	}
	tlsConn := tls.Client(conn, cfg)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		if isCertificateError(err) {
			return nil, fmt.Errorf("%w: %w", errBackendTLS, err)
		}
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	if !stop() {
		return nil, ctx.Err()
	}
	_ = conn.SetDeadline(time.Time{})
	return tlsConn, nil
}

// isCertificateError reports whether a handshake failed on the server's certificate (or a
// protocol disagreement) rather than on the connection.
func isCertificateError(err error) bool {
	var verifyErr *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	return errors.As(err, &verifyErr) || errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &alert)
}
