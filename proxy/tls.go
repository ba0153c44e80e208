package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
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
	var served *tls.Certificate
	tlsConn := tls.Server(conn, s.srv.sessionTLSConfig(&served))
	if err := tlsConn.Handshake(); err != nil {
		return nil, errors.Join(errClientGone, err) // no way to send a readable error now
	}
	s.tlsEstablished(tlsConn, served)
	return bufio.NewReaderSize(tlsConn, startupBufferSize), nil
}

// tlsEstablished records the client's TLS connection and the channel binding data of the
// certificate it was served.
func (s *session) tlsEstablished(tlsConn *tls.Conn, served *tls.Certificate) {
	s.client = tlsConn
	s.clientTLS = true
	if served == nil || len(served.Certificate) == 0 {
		return
	}
	leaf := served.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(served.Certificate[0]); err != nil {
			return // no channel binding: SCRAM-SHA-256-PLUS is not offered
		}
	}
	s.clientBinding = pgauth.TLSServerEndPoint(leaf)
}

// sessionTLSConfig returns the TLS configuration of one client connection: Config.TLS, with
// the certificate it serves written to *served, for channel binding.
func (srv *Server) sessionTLSConfig(served **tls.Certificate) *tls.Config {
	base := srv.cfg.TLS
	cfg := base.Clone()
	cfg.Certificates = nil // crypto/tls asks GetCertificate only without them (or with SNI)
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert, err := chooseCertificate(base, hello)
		*served = cert
		return cert, err
	}
	return cfg
}

// chooseCertificate picks the certificate for a ClientHello as crypto/tls would: the
// configuration's GetCertificate, else the first of Certificates that fits the hello (its
// name, its signature algorithms), else the first.
func chooseCertificate(cfg *tls.Config, hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cfg.GetCertificate != nil {
		return cfg.GetCertificate(hello)
	}
	if len(cfg.Certificates) == 0 {
		return nil, errors.New("no TLS certificate configured")
	}
	for i := range cfg.Certificates {
		if hello.SupportsCertificate(&cfg.Certificates[i]) == nil {
			return &cfg.Certificates[i], nil
		}
	}
	return &cfg.Certificates[0], nil
}

// startDirectTLS runs the TLS handshake for a client that started with a ClientHello instead of
// an SSLRequest (PostgreSQL 17's direct TLS). Like PostgreSQL it requires the "postgresql" ALPN
// protocol, so a client of another protocol cannot be confused into talking to us.
func (s *session) startDirectTLS(br *bufio.Reader) (*bufio.Reader, error) {
	var served *tls.Certificate
	tlsConn := tls.Server(&bufferedConn{Conn: s.conn, r: br}, s.srv.sessionTLSConfig(&served))
	if err := tlsConn.Handshake(); err != nil {
		return nil, errors.Join(errClientGone, err)
	}
	s.tlsEstablished(tlsConn, served)
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
