package localcluster

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgquorum/pgquorum/pki"
)

// Certificate files of Options.TLS. The server's are in each data directory (pg_basebackup
// copies them), the rest in Dir/tls, readable by everyone (they hold no secret but the client
// key, which is only a test's).
const (
	serverCertFile = "server.crt"
	serverKeyFile  = "server.key"
	serverCAFile   = "root.crt" // verifies clients' certificates (clientcert=verify-ca)
	tlsDirName     = "tls"
)

// tlsCertDays is the lifetime of the test certificates.
const tlsCertDays = 7

// TLSFiles are the PEM files of a cluster started with Options.TLS.
type TLSFiles struct {
	// CA signed the servers' certificate (for 127.0.0.1 and localhost): a client's sslrootcert.
	CA string
	// ClientCert and ClientKey are a client certificate signed by the same CA (for
	// pg_hba.conf's clientcert=verify-ca).
	ClientCert, ClientKey string
}

// makeTLS makes the cluster's CA, the server certificate and key in dataDir (owned by the
// server's OS user, 0600, as PostgreSQL demands, with the CA that verifies client
// certificates) and a client certificate in Dir/tls. The CA
// comes from package pki: its certificates carry a pgquorum identity, which PostgreSQL ignores.
func (c *Cluster) makeTLS(dataDir string) error {
	ca, err := pki.NewCA("localcluster", tlsCertDays)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	server, err := ca.IssueNode(1, 1, pki.RoleVoter, []string{"127.0.0.1", "localhost"}, tlsCertDays)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	client, err := ca.IssueClient("localcluster-client", tlsCertDays)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := c.run.writeFile(filepath.Join(dataDir, serverCertFile), server.CertPEM); err != nil {
		return err
	}
	if err := c.run.writeFile(filepath.Join(dataDir, serverKeyFile), server.KeyPEM); err != nil {
		return err
	}
	if err := c.run.writeFile(filepath.Join(dataDir, serverCAFile), ca.CertPEM()); err != nil {
		return err
	}
	dir := filepath.Join(c.dir, tlsDirName)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	files := &TLSFiles{
		CA:         filepath.Join(dir, "ca.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
	for path, data := range map[string][]byte{files.CA: ca.CertPEM(), files.ClientCert: client.CertPEM, files.ClientKey: client.KeyPEM} {
		// Readable by the standbys (sslrootcert of primary_conninfo) and by tests.
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	c.TLS = files
	return nil
}

// caFile is the CA file standbys verify the primary with ("" without Options.TLS).
func (c *Cluster) caFile() string {
	if c.TLS == nil {
		return ""
	}
	return c.TLS.CA
}
