package config

import (
	"fmt"
	"net"
	"strings"

	"github.com/pgquorum/pgquorum/pki"
)

// validateSecurity enforces secure by default (SPEC §3.4): peers talk over
// mutual TLS and mutating admin calls are authenticated, unless
// security.insecure is set, which is only accepted on loopback.
func (c *Config) validateSecurity(p *Problems) {
	if c.PeerTLS != nil {
		for _, f := range []keyedAddr{{"peer_tls.ca", c.PeerTLS.CA}, {"peer_tls.cert", c.PeerTLS.Cert}, {"peer_tls.key", c.PeerTLS.Key}} {
			if f.addr == "" {
				p.Add(f.key, "required (a PEM file)")
			}
		}
	}
	if t := c.Admin.TLS; t != nil {
		if t.Cert == "" || t.Key == "" {
			p.Add("admin.tls", "both cert and key are required")
		}
		if t.ClientCA == "" && c.PeerTLS == nil {
			p.Add("admin.tls.client_ca", "required without peer_tls (the CA of the operators' client certificates)")
		}
	}
	if c.Security.Insecure {
		for _, a := range c.allAddrs() {
			if a.addr != "" && !isLoopback(a.addr) {
				p.Add("security.insecure", "only allowed when every address is on loopback, and %s is %q; "+
					"remove security.insecure and configure peer_tls and admin.token_file", a.key, a.addr)
			}
		}
		return
	}
	if c.PeerTLS == nil {
		ids := "N"
		if c.Node.ID != 0 {
			ids = fmt.Sprint(c.Node.ID)
		}
		p.Add("peer_tls", "required: proxies authenticate each other with mutual TLS. Add\n"+
			"  peer_tls: {ca: certs/ca.pem, cert: certs/node-%[1]s.pem, key: certs/node-%[1]s-key.pem}\n"+
			"made with `pgquorum cert ca --dir certs --cluster %[2]s` and `pgquorum cert node --dir certs --id %[1]s%[3]s`, "+
			"or set security.insecure: true if every address is on loopback", ids, orName(c.ClusterName), learnerFlag(c))
	}
	if c.Admin.TokenFile == "" && c.Admin.TLS == nil && c.Node.IsVoter() {
		// A learner (sidecar) needs no token: its admin API refuses every
		// mutating call anyway; operators use a voter's.
		p.Add("admin.token_file", "required: mutating admin calls need the operators' token. Add\n"+
			"  admin: {token_file: admin-token}\n"+
			"with a long random token in that file (`head -c 32 /dev/urandom | base64 > admin-token`), "+
			"or admin.tls to accept operators' client certificates instead, "+
			"or set security.insecure: true if every address is on loopback")
	}
}

func orName(cluster string) string {
	if cluster == "" {
		return "NAME"
	}
	return cluster
}

func learnerFlag(c *Config) string {
	if c.Node.IsVoter() {
		return ""
	}
	return " --learner"
}

// allAddrs are this node's listen addresses and its peers' Raft addresses.
func (c *Config) allAddrs() []keyedAddr {
	addrs := c.listenAddrs()
	for i, peer := range c.Peers {
		addrs = append(addrs, keyedAddr{fmt.Sprintf("peers[%d].raft", i), peer.Raft})
	}
	return addrs
}

// isLoopback reports whether host:port names a loopback host ("localhost" or
// a loopback IP; an empty host means every interface).
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// InsecureParts says what security.insecure actually turns off in this
// configuration (for the warning at start): "plaintext peers",
// "unauthenticated admin API". Empty when nothing is off.
func (c *Config) InsecureParts() []string {
	if !c.Security.Insecure {
		return nil
	}
	var parts []string
	if c.PeerTLS == nil {
		parts = append(parts, "Raft peers in plaintext, unauthenticated")
	}
	if c.Admin.TokenFile == "" && c.Admin.TLS == nil && c.Node.IsVoter() {
		parts = append(parts, "mutating admin calls without authentication")
	}
	return parts
}

// PeerCredentials loads peer_tls (nil, nil without it) and checks that the
// certificate is this node's: its cluster, an id covering node.id, and a voter
// certificate for a voter.
func (c *Config) PeerCredentials() (*pki.Credentials, error) {
	if c.PeerTLS == nil {
		return nil, nil
	}
	creds, err := pki.LoadCredentials(pki.Files{CA: c.PeerTLS.CA, Cert: c.PeerTLS.Cert, Key: c.PeerTLS.Key}, c.checkPeerCertificate)
	if err != nil {
		return nil, fmt.Errorf("peer_tls: %w", err)
	}
	return creds, nil
}

// checkPeerCertificate checks that peer_tls holds this node's certificate (on
// every reload too).
func (c *Config) checkPeerCertificate(id pki.Identity, err error) error {
	if err != nil {
		return fmt.Errorf("%w (make one with `pgquorum cert node`)", err)
	}
	switch {
	case id.Cluster != c.ClusterName:
		return fmt.Errorf("the certificate is for cluster %q, this is %q", id.Cluster, c.ClusterName)
	case c.Node.AutoID && c.Node.ID == 0:
		if id.Role != pki.RoleLearner {
			return fmt.Errorf("node.id: auto needs a learner certificate for a block of ids (pgquorum cert node --id FIRST-LAST --learner), not %s", id)
		}
		return nil
	case !id.Covers(c.Node.ID):
		return fmt.Errorf("the certificate is %s, not node %d's", id, c.Node.ID)
	case c.Node.IsVoter() && id.Role != pki.RoleVoter:
		return fmt.Errorf("node %d is a voter but its certificate is a %s's (make one without --learner)", c.Node.ID, id.Role)
	}
	return nil
}

// AdminCredentials loads admin.tls (nil, nil without it). Operators' client
// certificates are verified against admin.tls.client_ca, else peer_tls.ca.
func (c *Config) AdminCredentials() (*pki.Credentials, error) {
	t := c.Admin.TLS
	if t == nil {
		return nil, nil
	}
	ca := t.ClientCA
	if ca == "" && c.PeerTLS != nil {
		ca = c.PeerTLS.CA
	}
	creds, err := pki.LoadCredentials(pki.Files{CA: ca, Cert: t.Cert, Key: t.Key}, nil)
	if err != nil {
		return nil, fmt.Errorf("admin.tls: %w", err)
	}
	return creds, nil
}
