package config

import (
	"fmt"
	"strconv"
)

// EnvOverrides lists the environment variables that override configuration keys.
// They are the keys a sidecar typically sets per pod (its id, data dir, addresses).
var EnvOverrides = []struct {
	Env string
	Key string
	set func(c *Config, v string) error
}{
	{"PGQUORUM_CLUSTER_NAME", "cluster_name", func(c *Config, v string) error { c.ClusterName = v; return nil }},
	{"PGQUORUM_NODE_ID", "node.id", func(c *Config, v string) error {
		if v == AutoIDValue {
			c.Node.AutoID, c.Node.ID = true, 0
			return nil
		}
		id, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a positive integer", v)
		}
		c.Node.ID, c.Node.AutoID = id, false
		return nil
	}},
	{"PGQUORUM_NODE_DATA_DIR", "node.data_dir", func(c *Config, v string) error { c.Node.DataDir = v; return nil }},
	{"PGQUORUM_NODE_VOTER", "node.voter", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		c.Node.Voter = &b
		return nil
	}},
	{"PGQUORUM_LISTEN_POSTGRES", "listen.postgres", func(c *Config, v string) error { c.Listen.Postgres = v; return nil }},
	{"PGQUORUM_LISTEN_ADMIN", "listen.admin", func(c *Config, v string) error { c.Listen.Admin = v; return nil }},
	{"PGQUORUM_LISTEN_RAFT", "listen.raft", func(c *Config, v string) error { c.Listen.Raft = v; return nil }},
	{"PGQUORUM_AUTH_QUERY_PASSWORD_FILE", "auth.query_password_file", func(c *Config, v string) error { c.Auth.QueryPasswordFile = v; return nil }},
	{"PGQUORUM_ADMIN_TOKEN_FILE", "admin.token_file", func(c *Config, v string) error { c.Admin.TokenFile = v; return nil }},
	{"PGQUORUM_PEER_TLS_CA", "peer_tls.ca", func(c *Config, v string) error { peerTLS(c).CA = v; return nil }},
	{"PGQUORUM_PEER_TLS_CERT", "peer_tls.cert", func(c *Config, v string) error { peerTLS(c).Cert = v; return nil }},
	{"PGQUORUM_PEER_TLS_KEY", "peer_tls.key", func(c *Config, v string) error { peerTLS(c).Key = v; return nil }},
	{"PGQUORUM_LOG_FORMAT", "log.format", func(c *Config, v string) error { c.Log.Format = v; return nil }},
	{"PGQUORUM_LOG_LEVEL", "log.level", func(c *Config, v string) error { c.Log.Level = v; return nil }},
}

// peerTLS returns c.PeerTLS, creating it for an override.
func peerTLS(c *Config) *PeerTLS {
	if c.PeerTLS == nil {
		c.PeerTLS = &PeerTLS{}
	}
	return c.PeerTLS
}

// ApplyEnv applies the EnvOverrides that lookup finds (os.LookupEnv in production).
func ApplyEnv(c *Config, lookup func(string) (string, bool)) error {
	for _, o := range EnvOverrides {
		v, ok := lookup(o.Env)
		if !ok {
			continue
		}
		if err := o.set(c, v); err != nil {
			return fmt.Errorf("%s (from %s): %w", o.Key, o.Env, err)
		}
	}
	return nil
}
