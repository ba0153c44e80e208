package config

import (
	"errors"
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

// Validate checks every key and returns the first problem found, naming the key.
func (c *Config) Validate() error {
	if !clusterNamePattern.MatchString(c.ClusterName) {
		if c.ClusterName == "" {
			return errors.New("cluster_name: required")
		}
		return fmt.Errorf("cluster_name: %q must be 1-63 letters, digits, '_', '.' or '-'", c.ClusterName)
	}
	if c.Node.ID == 0 {
		return errors.New("node.id: required and must be non-zero")
	}
	if c.Node.DataDir == "" {
		return errors.New("node.data_dir: required")
	}
	for key, addr := range map[string]string{
		"listen.postgres": c.Listen.Postgres,
		"listen.admin":    c.Listen.Admin,
		"listen.raft":     c.Listen.Raft,
	} {
		if err := checkHostPort(addr); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	if err := c.validatePeers(); err != nil {
		return err
	}
	if err := c.validateBackends(); err != nil {
		return err
	}
	switch c.Auth.Method {
	case "trust", "md5", "scram-sha-256":
	case "":
		return errors.New("auth.method: required (trust, md5 or scram-sha-256)")
	default:
		return fmt.Errorf("auth.method: %q is not one of trust, md5, scram-sha-256", c.Auth.Method)
	}
	if c.Auth.QueryUser == "" {
		return errors.New("auth.query_user: required (the role that reads password verifiers and runs health probes)")
	}
	if c.TLS != nil && (c.TLS.Cert == "" || c.TLS.Key == "") {
		return errors.New("tls: both cert and key are required")
	}
	switch c.Backend.SSLMode {
	case "disable":
	default:
		return fmt.Errorf("backend.sslmode: %q is not supported yet (only disable; run the proxy next to PostgreSQL or on a trusted network)", c.Backend.SSLMode)
	}
	if c.Hold.Timeout.Duration < 10*time.Millisecond {
		return fmt.Errorf("hold.timeout: %s is too short (minimum 10ms)", c.Hold.Timeout)
	}
	if c.Hold.MaxHeld < 1 {
		return fmt.Errorf("hold.max_held: %d must be at least 1", c.Hold.MaxHeld)
	}
	if c.Hold.ReleaseConcurrency < 1 {
		return fmt.Errorf("hold.release_concurrency: %d must be at least 1", c.Hold.ReleaseConcurrency)
	}
	if c.Health.Interval.Duration < 10*time.Millisecond {
		return fmt.Errorf("health.interval: %s is too short (minimum 10ms)", c.Health.Interval)
	}
	if c.Health.Timeout.Duration < 10*time.Millisecond {
		return fmt.Errorf("health.timeout: %s is too short (minimum 10ms)", c.Health.Timeout)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not one of text, json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	return nil
}

func (c *Config) validatePeers() error {
	if len(c.Peers) == 0 {
		return errors.New("peers: at least one voter is required")
	}
	seen := map[uint64]bool{}
	self := false
	for i, p := range c.Peers {
		key := fmt.Sprintf("peers[%d]", i)
		if p.ID == 0 {
			return fmt.Errorf("%s.id: required and must be non-zero", key)
		}
		if seen[p.ID] {
			return fmt.Errorf("%s.id: %d appears twice", key, p.ID)
		}
		seen[p.ID] = true
		if err := checkHostPort(p.Raft); err != nil {
			return fmt.Errorf("%s.raft: %w", key, err)
		}
		if p.ID == c.Node.ID {
			self = true
		}
	}
	if c.Node.IsVoter() && !self {
		return fmt.Errorf("peers: node.id %d is a voter but is not listed in peers (set node.voter: false for a learner)", c.Node.ID)
	}
	if !c.Node.IsVoter() && self {
		return fmt.Errorf("node.voter: node %d is listed in peers, so it cannot be a learner", c.Node.ID)
	}
	return nil
}

func (c *Config) validateBackends() error {
	if len(c.Backends) == 0 {
		return errors.New("backends: at least one PostgreSQL node is required")
	}
	names := map[string]bool{}
	addrs := map[string]bool{}
	for i, b := range c.Backends {
		key := fmt.Sprintf("backends[%d]", i)
		if !backendNamePattern.MatchString(b.Name) {
			return fmt.Errorf("%s.name: %q must be a lower-case identifier (it is the node's application_name)", key, b.Name)
		}
		if names[b.Name] {
			return fmt.Errorf("%s.name: %q appears twice", key, b.Name)
		}
		names[b.Name] = true
		if err := checkHostPort(b.Address); err != nil {
			return fmt.Errorf("%s.address: %w", key, err)
		}
		if addrs[b.Address] {
			return fmt.Errorf("%s.address: %q appears twice", key, b.Address)
		}
		addrs[b.Address] = true
	}
	return nil
}

func checkHostPort(addr string) error {
	if addr == "" {
		return errors.New("required (host:port)")
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
