package config

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"
)

var (
	clusterNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	// Backend names are used as application_name and inside
	// synchronous_standby_names, so they are restricted to plain identifiers.
	backendNamePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

// Validate checks every key and returns every problem found (a *Problems),
// each naming its key; nil when the configuration is valid. It reads no files.
func (c *Config) Validate() error {
	var p Problems
	c.validate(&p)
	return p.Err()
}

func (c *Config) validate(p *Problems) {
	if !clusterNamePattern.MatchString(c.ClusterName) {
		if c.ClusterName == "" {
			p.Add("cluster_name", "required")
		} else {
			p.Add("cluster_name", "%q must be 1-63 letters, digits, '_', '.' or '-'", c.ClusterName)
		}
	}
	switch {
	case c.Node.AutoID && c.Node.IsVoter():
		p.Add("node.id", "auto is for learners (node.voter: false): a voter's id is in peers")
	case c.Node.AutoID && c.PeerTLS == nil:
		p.Add("node.id", "auto draws the id from the block of ids of the learner certificate (peer_tls.cert): configure peer_tls")
	case c.Node.ID == 0 && !c.Node.AutoID:
		p.Add("node.id", "required and must be non-zero (or auto, for a learner)")
	}
	if c.Node.DataDir == "" {
		p.Add("node.data_dir", "required")
	}
	for _, l := range c.listenAddrs() {
		if err := checkHostPort(l.addr); err != nil {
			p.Add(l.key, "%v", err)
		}
	}
	c.validatePeers(p)
	c.validateBackends(p)
	switch c.Auth.Method {
	case "trust", "md5", "scram-sha-256":
	case "":
		p.Add("auth.method", "required (trust, md5 or scram-sha-256)")
	default:
		p.Add("auth.method", "%q is not one of trust, md5, scram-sha-256", c.Auth.Method)
	}
	if c.TLS != nil && (c.TLS.Cert == "" || c.TLS.Key == "") {
		p.Add("tls", "both cert and key are required")
	}
	c.validatePostgresSecurity(p)
	if c.Hold.Timeout.Duration < 10*time.Millisecond {
		p.Add("hold.timeout", "%s is too short (minimum 10ms)", c.Hold.Timeout)
	}
	if c.Hold.MaxHeld < 1 {
		p.Add("hold.max_held", "%d must be at least 1", c.Hold.MaxHeld)
	}
	if c.Hold.ReleaseConcurrency < 1 {
		p.Add("hold.release_concurrency", "%d must be at least 1", c.Hold.ReleaseConcurrency)
	}
	if c.Health.Interval.Duration < 10*time.Millisecond {
		p.Add("health.interval", "%s is too short (minimum 10ms)", c.Health.Interval)
	}
	if c.Health.Timeout.Duration < 10*time.Millisecond {
		p.Add("health.timeout", "%s is too short (minimum 10ms)", c.Health.Timeout)
	}
	if c.Shutdown.Grace.Duration > time.Hour {
		p.Add("shutdown.grace", "%s is longer than an hour", c.Shutdown.Grace)
	}
	if c.Shutdown.DrainDelay.Duration > time.Hour {
		p.Add("shutdown.drain_delay", "%s is longer than an hour", c.Shutdown.DrainDelay)
	}
	if r := c.Learners.RemoveAfter; r != nil && r.Duration > 0 && r.Duration < 5*time.Second {
		p.Add("learners.remove_after", "%s is too short (minimum 5s, or 0s for never): a learner that restarts would be removed", r)
	}
	c.validateSecurity(p)
	switch c.Log.Format {
	case "text", "json":
	default:
		p.Add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
}

// keyedAddr is an address with the key it comes from.
type keyedAddr struct{ key, addr string }

func (c *Config) listenAddrs() []keyedAddr {
	return []keyedAddr{
		{"listen.postgres", c.Listen.Postgres},
		{"listen.admin", c.Listen.Admin},
		{"listen.raft", c.Listen.Raft},
	}
}

func (c *Config) validatePeers(p *Problems) {
	if len(c.Peers) == 0 {
		p.Add("peers", "at least one voter is required")
		return
	}
	seen := map[uint64]bool{}
	self := false
	selfIndex := -1
	for i, peer := range c.Peers {
		key := fmt.Sprintf("peers[%d]", i)
		if peer.ID == 0 {
			p.Add(key+".id", "required and must be non-zero")
		} else if seen[peer.ID] {
			p.Add(key+".id", "%d appears twice", peer.ID)
		}
		seen[peer.ID] = true
		if err := checkHostPort(peer.Raft); err != nil {
			p.Add(key+".raft", "%v", err)
		}
		if peer.ID == c.Node.ID && !self {
			self, selfIndex = true, i
		}
	}
	if c.Node.ID == 0 {
		return
	}
	if c.Node.IsVoter() && !self {
		p.Add("peers", "node.id %d is a voter but is not listed in peers (set node.voter: false for a learner)", c.Node.ID)
	}
	if !c.Node.IsVoter() && self {
		p.Add("node.voter", "node %d is listed in peers, so it cannot be a learner", c.Node.ID)
	}
	if c.Node.IsVoter() && self {
		own := c.Peers[selfIndex].Raft
		if why := raftAddrMismatch(c.Listen.Raft, own); why != "" {
			p.Add("listen.raft", "%q is not this node's entry in peers (peers[%d].raft: %q): %s; the other voters dial the peers entry",
				c.Listen.Raft, selfIndex, own, why)
		}
	}
}

// raftAddrMismatch says why a voter listening on listen cannot be the peer the
// others reach at advertised, or "" when it can be (or cannot be told without
// resolving names). A listen host of 0.0.0.0, :: or "" serves every address;
// host names are not resolved. Pure.
func raftAddrMismatch(listen, advertised string) string {
	if listen == advertised {
		return ""
	}
	lh, lp, err1 := net.SplitHostPort(listen)
	ah, ap, err2 := net.SplitHostPort(advertised)
	if err1 != nil || err2 != nil {
		return "" // reported as bad host:port already
	}
	if lp != ap {
		return fmt.Sprintf("the ports differ (%s, %s)", lp, ap)
	}
	lip, aip := net.ParseIP(lh), net.ParseIP(ah)
	switch {
	case lh == "" || (lip != nil && lip.IsUnspecified()):
		return "" // every interface
	case lip != nil && aip != nil && !lip.Equal(aip):
		return fmt.Sprintf("the addresses differ (%s, %s)", lh, ah)
	case isLoopback(listen) && aip != nil && !aip.IsLoopback():
		return fmt.Sprintf("it listens on loopback only, where %s cannot reach it", ah)
	case isLoopback(advertised) && lip != nil && !lip.IsLoopback():
		return "it does not listen on loopback, where the peers entry points"
	}
	return ""
}

func (c *Config) validateBackends(p *Problems) {
	if len(c.Backends) == 0 {
		p.Add("backends", "at least one PostgreSQL node is required")
		return
	}
	names := map[string]bool{}
	addrs := map[string]bool{}
	for i, b := range c.Backends {
		key := fmt.Sprintf("backends[%d]", i)
		switch {
		case !backendNamePattern.MatchString(b.Name):
			p.Add(key+".name", "%q must be a lower-case identifier (it is the node's application_name)", b.Name)
		case names[b.Name]:
			p.Add(key+".name", "%q appears twice", b.Name)
		}
		names[b.Name] = true
		if err := checkHostPort(b.Address); err != nil {
			p.Add(key+".address", "%v", err)
		} else if addrs[b.Address] {
			p.Add(key+".address", "%q appears twice", b.Address)
		}
		addrs[b.Address] = true
	}
}

func checkHostPort(addr string) error {
	if addr == "" {
		return fmt.Errorf("required (host:port)")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port must be a number 0-65535", addr)
	}
	return nil
}
