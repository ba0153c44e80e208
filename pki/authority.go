package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// Default lifetimes, in days (`pgquorum cert ... --days`).
const (
	DefaultCADays   = 3650 // ten years: replacing a CA means re-issuing everything
	DefaultCertDays = 730  // two years; rotation is a file copy and SIGHUP
)

// backdate absorbs clock skew between the machine that issues a certificate
// and the machines that verify it.
const backdate = time.Hour

// CA is the cluster's certificate authority. Owner: whoever loaded or made
// it; it is not safe to share while issuing.
type CA struct {
	Cert     *x509.Certificate
	Key      *ecdsa.PrivateKey
	Identity Identity // RoleCA; Cluster names the cluster
}

// KeyPair is an issued certificate with its private key, PEM-encoded.
type KeyPair struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA for cluster, valid for days.
func NewCA(cluster string, days int) (*CA, error) {
	id := Identity{Cluster: cluster, Role: RoleCA}
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if days < 1 {
		return nil, fmt.Errorf("lifetime of %d days: want at least 1", days)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"pgquorum"}, CommonName: "pgquorum CA for cluster " + cluster},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(0, 0, days),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaf certificates only
		URIs:                  []*url.URL{id.URI()},
	}
	cert, err := sign(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Identity: id}, nil
}

// IssueNode signs a node certificate for ids first..last (one id for a voter)
// with role RoleVoter or RoleLearner. hosts (DNS names or IP addresses) only
// matter when the certificate also serves admin HTTPS.
func (ca *CA) IssueNode(first, last uint64, role Role, hosts []string, days int) (*KeyPair, error) {
	if role != RoleVoter && role != RoleLearner {
		return nil, fmt.Errorf("node role %q: want voter or learner", role)
	}
	id := Identity{Cluster: ca.Identity.Cluster, Role: role, FirstID: first, LastID: last}
	return ca.issue(id, hosts, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, days)
}

// IssueClient signs an operator's client certificate for the admin API.
func (ca *CA) IssueClient(name string, days int) (*KeyPair, error) {
	id := Identity{Cluster: ca.Identity.Cluster, Role: RoleClient, Name: name}
	return ca.issue(id, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, days)
}

func (ca *CA) issue(id Identity, hosts []string, usages []x509.ExtKeyUsage, days int) (*KeyPair, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if days < 1 {
		return nil, fmt.Errorf("lifetime of %d days: want at least 1", days)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	now := time.Now()
	notAfter := now.AddDate(0, 0, days)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter // a certificate cannot outlive its CA
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{Organization: []string{"pgquorum"}, CommonName: commonName(id)},
		NotBefore:   now.Add(-backdate),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: usages,
		URIs:        []*url.URL{id.URI()},
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		switch ip := net.ParseIP(h); {
		case h == "":
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := sign(tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, CertPEM: encodeCert(cert), KeyPEM: keyPEM}, nil
}

func commonName(id Identity) string {
	switch id.Role {
	case RoleClient:
		return "pgquorum operator " + id.Name
	default:
		return fmt.Sprintf("pgquorum node %s (%s)", id.IDs(), id.Role)
	}
}

// sign creates the certificate tmpl signed by parent's key.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// checkCA verifies that cert and key make a pgquorum CA.
func checkCA(cert *x509.Certificate, key *ecdsa.PrivateKey) (Identity, error) {
	if !cert.IsCA {
		return Identity{}, errors.New("the certificate is not a CA")
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return Identity{}, errors.New("the key does not belong to the CA certificate")
	}
	id, err := IdentityOf(cert)
	if err != nil {
		return Identity{}, err
	}
	if id.Role != RoleCA {
		return Identity{}, fmt.Errorf("the certificate is a %s's, not a CA's", id.Role)
	}
	return id, nil
}
