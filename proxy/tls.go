package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
)

const (
	// alpnPostgreSQL is the ALPN protocol name PostgreSQL 17+ uses for TLS connections.
	alpnPostgreSQL = "postgresql"
	// tlsHandshakeRecord is the first byte of a TLS ClientHello record; a startup packet never
	// starts with it (its length word would exceed every limit).
	tlsHandshakeRecord = 0x16
)

// startTLS runs the server side of the TLS handshake after an SSLRequest was answered 'S' and
// returns the reader for the encrypted stream.
func (s *session) startTLS(conn net.Conn) (*bufio.Reader, error) {
	tlsConn := tls.Server(conn, s.srv.cfg.TLS)
	if err := tlsConn.Handshake(); err != nil {
		return nil, errors.Join(errClientGone, err) // no way to send a readable error now
	}
	s.client = tlsConn
	s.clientTLS = true
	return bufio.NewReaderSize(tlsConn, startupBufferSize), nil
}

// startDirectTLS runs the TLS handshake for a client that started with a ClientHello instead of
// an SSLRequest (PostgreSQL 17's direct TLS). Like PostgreSQL it requires the "postgresql" ALPN
// protocol, so a client of another protocol cannot be confused into talking to us.
func (s *session) startDirectTLS(br *bufio.Reader) (*bufio.Reader, error) {
	tlsConn := tls.Server(&bufferedConn{Conn: s.conn, r: br}, s.srv.cfg.TLS)
	if err := tlsConn.Handshake(); err != nil {
		return nil, errors.Join(errClientGone, err)
	}
	s.client = tlsConn
	s.clientTLS = true
	if tlsConn.ConnectionState().NegotiatedProtocol != alpnPostgreSQL {
		return nil, fatalf(codeProtocolViolation, "received direct SSL connection request without ALPN protocol negotiation extension")
	}
	return bufio.NewReaderSize(tlsConn, startupBufferSize), nil
}

// bufferedConn is a net.Conn whose reads first drain a bufio.Reader that already holds bytes
// read from the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
