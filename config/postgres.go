package config

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/pgquorum/pgquorum/conninfo"
)

// This file holds the keys about PostgreSQL-facing security: TLS towards
// PostgreSQL (backend.*), TLS towards clients (tls.mode), how verifiers are
// read (auth.lookup, auth.lookup_function, auth.mock_secret_file), and the
// client connection limits (limits.*).

// lookupFunctionPattern is a schema-qualified function name of plain
// lower-case identifiers (pgquorum.get_auth): always qualified, so that no
// search_path can change which function runs, and never quoted, so that it
// can be put into SQL as it is.
var lookupFunctionPattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$`)

// MinMockSecretBytes is the shortest auth.mock_secret_file accepted.
const MinMockSecretBytes = 16

func (c *Config) validatePostgresSecurity(p *Problems) {
	c.validateBackendTLS(p)
	if c.TLS != nil {
		switch c.TLS.Mode {
		case "", TLSPrefer, TLSRequire:
		default:
			p.Add("tls.mode", "%q is not one of prefer, require", c.TLS.Mode)
		}
	}
	switch c.Auth.Lookup {
	case "", LookupQuery:
		if c.Auth.QueryUser == "" {
			p.Add("auth.query_user", "required (the role that reads password verifiers and runs health probes), "+
				"unless a learner sets auth.lookup: voters")
		}
	case LookupVoters:
		if c.Node.IsVoter() {
			p.Add("auth.lookup", "voters is for learners (sidecars); a voter reads verifiers itself with auth.query_user")
		}
		if c.PeerTLS == nil {
			p.Add("auth.lookup", "voters needs peer_tls: voters hand verifiers only to members that proved who they are")
		}
		if c.Auth.LookupFunction != "" {
			p.Add("auth.lookup_function", "not used with auth.lookup: voters (the voters use their own)")
		}
	default:
		p.Add("auth.lookup", "%q is not one of query, voters", c.Auth.Lookup)
	}
	if f := c.Auth.LookupFunction; f != "" && !lookupFunctionPattern.MatchString(f) {
		p.Add("auth.lookup_function", "%q must be a schema-qualified function name of lower-case identifiers, e.g. pgquorum.get_auth", f)
	}
	if c.Limits.MaxClientConnections < 0 {
		p.Add("limits.max_client_connections", "%d must not be negative", c.Limits.MaxClientConnections)
	}
	if c.Limits.MaxStartupConnections < 0 {
		p.Add("limits.max_startup_connections", "%d must not be negative", c.Limits.MaxStartupConnections)
	}
	if c.Limits.MaxClientConnections > 0 && c.Limits.MaxStartupConnections > c.Limits.MaxClientConnections {
		p.Add("limits.max_startup_connections", "%d is more than limits.max_client_connections (%d)",
			c.Limits.MaxStartupConnections, c.Limits.MaxClientConnections)
	}
}

func (c *Config) validateBackendTLS(p *Problems) {
	b := c.Backend
	switch b.SSLMode {
	case SSLDisable:
		for _, f := range []keyedAddr{{"backend.ca", b.CA}, {"backend.cert", b.Cert}, {"backend.key", b.Key}, {"backend.standby_ca", b.StandbyCA}} {
			if f.addr != "" {
				p.Add(f.key, "set but backend.sslmode is disable; set backend.sslmode to require, verify-ca or verify-full")
			}
		}
		return
	case SSLRequire:
	case SSLVerifyCA, SSLVerifyFull:
		if b.CA == "" {
			p.Add("backend.ca", "required with backend.sslmode: %s (the CA that signed the PostgreSQL servers' certificates)", b.SSLMode)
		}
	default:
		p.Add("backend.sslmode", "%q is not one of disable, require, verify-ca, verify-full", b.SSLMode)
		return
	}
	if (b.Cert == "") != (b.Key == "") {
		p.Add("backend.cert", "backend.cert and backend.key go together")
	}
	if b.StandbyCA != "" && !filepath.IsAbs(b.StandbyCA) {
		p.Add("backend.standby_ca", "%q must be an absolute path (it is read by the standbys on the database hosts)", b.StandbyCA)
	}
}

// checkBackendFiles loads the backend TLS files, so that a bad one fails at
// start rather than at the first connection.
func (c *Config) checkBackendFiles(p *Problems) {
	b := c.Backend
	if b.CA != "" {
		pem, err := os.ReadFile(b.CA)
		switch {
		case err != nil:
			p.Add("backend.ca", "%v", err)
		case !x509.NewCertPool().AppendCertsFromPEM(pem):
			p.Add("backend.ca", "%s holds no PEM certificate", b.CA)
		}
	}
	if b.Cert != "" && b.Key != "" {
		if _, err := tls.LoadX509KeyPair(b.Cert, b.Key); err != nil {
			p.Add("backend.cert", "%v", err)
		}
	}
}

// BackendTLSParams are the libpq keywords (sslmode, sslrootcert, sslcert,
// sslkey) of every connection the proxy opens to PostgreSQL.
func (c *Config) BackendTLSParams() conninfo.Params {
	b := c.Backend
	mode := b.SSLMode
	if mode == "" {
		mode = SSLDisable
	}
	params := conninfo.Params{{Key: "sslmode", Value: mode}}
	for _, f := range []conninfo.Param{{Key: "sslrootcert", Value: b.CA}, {Key: "sslcert", Value: b.Cert}, {Key: "sslkey", Value: b.Key}} {
		if f.Value != "" && mode != SSLDisable {
			params = append(params, f)
		}
	}
	return params
}

// StandbyTLSParams are the sslmode and sslrootcert the coordinator puts into
// a re-pointed standby's primary_conninfo; nil with backend.sslmode: disable
// (the standby's own settings are kept then). sslrootcert is
// backend.standby_ca, else backend.ca: a path the standby reads on its own
// host.
func (c *Config) StandbyTLSParams() conninfo.Params {
	b := c.Backend
	if b.SSLMode == "" || b.SSLMode == SSLDisable {
		return nil
	}
	params := conninfo.Params{{Key: "sslmode", Value: b.SSLMode}}
	root := b.StandbyCA
	if root == "" {
		root = b.CA
	}
	if root != "" {
		params = append(params, conninfo.Param{Key: "sslrootcert", Value: root})
	}
	return params
}

// UnencryptedBackends lists the backends reached in plaintext over a network
// (backend.sslmode: disable and an address that is not loopback), for the
// warning at start.
func (c *Config) UnencryptedBackends() []string {
	if c.Backend.SSLMode != "" && c.Backend.SSLMode != SSLDisable {
		return nil
	}
	var names []string
	for _, b := range c.Backends {
		if !isLoopback(b.Address) {
			names = append(names, fmt.Sprintf("%s (%s)", b.Name, b.Address))
		}
	}
	return names
}

// MockSecret is the secret that keys the fake SCRAM exchanges of unknown roles
// (proxy.Config.MockSecret): auth.mock_secret_file's contents, else a digest of
// the cluster name and the public key of the first certificate in peer_tls.ca
// (the same on every proxy of the cluster, and across restarts), else nil (no
// peer_tls: a per-process secret).
func (c *Config) MockSecret() ([]byte, error) {
	if c.Auth.MockSecret != "" {
		return []byte(c.Auth.MockSecret), nil
	}
	if c.PeerTLS == nil || c.PeerTLS.CA == "" {
		return nil, nil
	}
	data, err := os.ReadFile(c.PeerTLS.CA)
	if err != nil {
		return nil, fmt.Errorf("peer_tls.ca: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("peer_tls.ca: %s holds no PEM certificate", c.PeerTLS.CA)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("peer_tls.ca: %w", err)
	}
	sum := sha256.Sum256(append([]byte("pgquorum mock secret\x00"+c.ClusterName+"\x00"), ca.RawSubjectPublicKeyInfo...))
	return sum[:], nil
}
