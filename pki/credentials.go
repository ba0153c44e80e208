package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// Files names the PEM files of a node's TLS credentials.
type Files struct {
	// CA holds the certificate(s) that verify the other side: the cluster CA
	// (several during a CA rotation). "" = verify no one (an HTTPS server
	// that does not accept client certificates).
	CA string
	// Cert and Key are this side's certificate (chain) and private key.
	Cert, Key string
}

// Credentials are a certificate, its key and the CA pool that verifies the
// other side, loaded from Files. Reload re-reads the files; every TLS
// configuration made here picks up the latest credentials at its next
// handshake, so certificates rotate without a restart. Safe for concurrent
// use; the current credentials are an immutable value swapped atomically.
type Credentials struct {
	files   Files // "" when made in memory by NewCredentials
	check   func(Identity, error) error
	current atomic.Pointer[loadedCredentials]
}

type loadedCredentials struct {
	cert        tls.Certificate // Leaf is set
	identity    Identity        // zero when identityErr is set
	identityErr error
	roots       *x509.CertPool // nil = no CA
}

// LoadCredentials reads f. check, if set, vets the certificate's identity
// (or the error reading it) on the first load and on every Reload; a
// certificate it refuses is never used.
func LoadCredentials(f Files, check func(Identity, error) error) (*Credentials, error) {
	c := &Credentials{files: f, check: check}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// NewCredentials makes credentials from PEM bytes (tests, the demo). Reload
// keeps them as they are.
func NewCredentials(caPEM, certPEM, keyPEM []byte) (*Credentials, error) {
	l, err := parseCredentials(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	c := &Credentials{}
	c.current.Store(l)
	return c, nil
}

// Reload re-reads the files. On error the previous credentials stay in use.
func (c *Credentials) Reload() error {
	if c.files.Cert == "" {
		return nil // made in memory
	}
	var caPEM []byte
	if c.files.CA != "" {
		var err error
		if caPEM, err = os.ReadFile(c.files.CA); err != nil {
			return err
		}
	}
	certPEM, err := os.ReadFile(c.files.Cert)
	if err != nil {
		return err
	}
	keyPEM, err := os.ReadFile(c.files.Key)
	if err != nil {
		return err
	}
	l, err := parseCredentials(caPEM, certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("%s, %s: %w", c.files.Cert, c.files.Key, err)
	}
	if c.check != nil {
		if err := c.check(l.identity, l.identityErr); err != nil {
			return err
		}
	}
	c.current.Store(l)
	return nil
}

func parseCredentials(caPEM, certPEM, keyPEM []byte) (*loadedCredentials, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	l := &loadedCredentials{cert: cert}
	l.identity, l.identityErr = IdentityOf(cert.Leaf)
	if len(caPEM) > 0 {
		cas, err := parseCerts(caPEM)
		if err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		l.roots = x509.NewCertPool()
		for _, ca := range cas {
			l.roots.AddCert(ca)
		}
	}
	return l, nil
}

// Files are the files the credentials are read from (zero when made in
// memory).
func (c *Credentials) Files() Files { return c.files }

// Identity is the identity of this side's own certificate (ErrNoIdentity for
// a certificate the cluster CA did not make, e.g. an admin HTTPS certificate).
func (c *Credentials) Identity() (Identity, error) {
	l := c.current.Load()
	return l.identity, l.identityErr
}

// NotAfter is when this side's certificate expires.
func (c *Credentials) NotAfter() time.Time { return c.current.Load().cert.Leaf.NotAfter }

// Verify checks that chain (leaf first) was signed by the current CA pool for
// usage, and returns the leaf's identity.
func (c *Credentials) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (Identity, error) {
	l := c.current.Load()
	if l.roots == nil {
		return Identity{}, errors.New("no CA configured to verify certificates")
	}
	if len(chain) == 0 {
		return Identity{}, errors.New("no certificate presented")
	}
	intermediates := x509.NewCertPool()
	for _, ic := range chain[1:] {
		intermediates.AddCert(ic)
	}
	opts := x509.VerifyOptions{Roots: l.roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{usage}}
	if _, err := chain[0].Verify(opts); err != nil {
		return Identity{}, fmt.Errorf("certificate %q is not valid for the cluster CA: %w", chain[0].Subject.CommonName, err)
	}
	return IdentityOf(chain[0])
}

func (c *Credentials) certificate() *tls.Certificate { return &c.current.Load().cert }

// PeerServerConfig is the TLS configuration of the peer transport's listener:
// TLS 1.3, and a client certificate signed by the cluster CA is required.
// The caller reads the peer's identity from the verified connection
// (PeerIdentity).
func (c *Credentials) PeerServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		GetCertificate:         func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.certificate(), nil },
		ClientAuth:             tls.RequireAnyClientCert, // verified by VerifyConnection against the current pool
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := c.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// PeerClientConfig is the TLS configuration of the peer transport's dialer:
// TLS 1.3, this node's certificate, and a server certificate signed by the
// cluster CA. Host names are not checked: the caller checks the peer's
// identity (its node id) instead.
func (c *Credentials) PeerClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c.certificate(), nil },
		// The chain is verified in VerifyConnection against the current pool;
		// the standard verification would also demand a host name match.
		InsecureSkipVerify:     true,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := c.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// HTTPSServerConfig is the TLS configuration of an HTTPS server (the admin
// API): TLS 1.2 or later (for scrapers and probes), and an optional client
// certificate that must be signed by the CA pool when one is presented.
func (c *Credentials) HTTPSServerConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.certificate(), nil },
	}
	if c.current.Load().roots != nil {
		cfg.ClientAuth = tls.RequestClientCert
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // no client certificate: the bearer token decides
			}
			_, err := c.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		}
	}
	return cfg
}

// PeerIdentity returns the verified identity of the other side of a TLS
// connection made with one of the configurations above.
func (c *Credentials) PeerIdentity(cs tls.ConnectionState, usage x509.ExtKeyUsage) (Identity, error) {
	return c.Verify(cs.PeerCertificates, usage)
}

// HTTPSClientConfig is the TLS configuration of an HTTPS client (the pgquorum
// CLI calling the admin API): the server's certificate is verified against
// caFile ("" = the system's roots) including its host name, and certFile/keyFile
// (both or neither) are presented as the operator's client certificate.
func HTTPSClientConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		cas, err := readCerts(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		for _, ca := range cas {
			cfg.RootCAs.AddCert(ca)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("a client certificate needs both the certificate and the key file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
