// Package config loads and validates a pgquorum node's YAML configuration (SPEC §3.2).
//
// Load is strict: unknown keys, missing required keys and bad values fail with an
// error that names the key (for example `listen.postgres: missing port`). A few keys
// that a sidecar needs can be overridden from the environment (see ApplyEnv).
//
// The package only parses and validates; it opens no sockets and starts nothing.
// The cmd/pgquorum wiring turns a Config into the options of each subsystem.
package config

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is one proxy node's configuration.
type Config struct {
	ClusterName string     `yaml:"cluster_name"`
	Node        Node       `yaml:"node"`
	Listen      Listen     `yaml:"listen"`
	Peers       []Peer     `yaml:"peers"`
	Backends    []Backend  `yaml:"backends"`
	Auth        Auth       `yaml:"auth"`
	TLS         *TLS       `yaml:"tls"`
	Backend     BackendTLS `yaml:"backend"`
	Hold        Hold       `yaml:"hold"`
	Health      Health     `yaml:"health"`
	Failover    Failover   `yaml:"failover"`
	PeerTLS     *PeerTLS   `yaml:"peer_tls"`
	Admin       Admin      `yaml:"admin"`
	Security    Security   `yaml:"security"`
	Limits      Limits     `yaml:"limits"`
	Learners    Learners   `yaml:"learners"`
	Shutdown    Shutdown   `yaml:"shutdown"`
	Log         Log        `yaml:"log"`
}

// Node identifies this proxy in the Raft cluster.
type Node struct {
	ID      uint64 `yaml:"id"`       // non-zero, never reused; see AutoID
	DataDir string `yaml:"data_dir"` // Raft log and snapshots
	Voter   *bool  `yaml:"voter"`    // default true; false = learner (sidecar)

	// AutoID is `id: auto` (learners only): the node draws its id from the
	// block of its learner certificate at its first start and keeps it in
	// data_dir (package node). ID is 0 until then.
	AutoID bool `yaml:"-"`
}

// decodeKey reads `id: auto`.
func (n *Node) decodeKey(key string, v *yaml.Node) (bool, error) {
	if key != "id" || v.Kind != yaml.ScalarNode || v.Value != AutoIDValue {
		return false, nil
	}
	n.AutoID, n.ID = true, 0
	return true, nil
}

// AutoIDValue is the value of node.id that makes a learner draw its own id.
const AutoIDValue = "auto"

// IsVoter reports whether the node votes (the default) or is a learner.
func (n Node) IsVoter() bool { return n.Voter == nil || *n.Voter }

// Listen holds this node's listen addresses.
type Listen struct {
	Postgres string `yaml:"postgres"` // client connections (PostgreSQL wire protocol)
	Admin    string `yaml:"admin"`    // admin HTTP
	Raft     string `yaml:"raft"`     // Raft peer transport
}

// Peer is one voting proxy.
type Peer struct {
	ID   uint64 `yaml:"id"`
	Raft string `yaml:"raft"`
}

// Backend is one PostgreSQL node.
type Backend struct {
	Name     string `yaml:"name"`     // the node's application_name in replication
	Address  string `yaml:"address"`  // host:port
	Priority int    `yaml:"priority"` // failover tie-break: higher wins; default 0
}

// Auth says how clients authenticate to the proxy and how the proxy reads verifiers.
type Auth struct {
	Method            string `yaml:"method"`              // trust | md5 | scram-sha-256
	QueryUser         string `yaml:"query_user"`          // reads verifiers, runs probes and admin SQL
	QueryPasswordFile string `yaml:"query_password_file"` // optional; empty = the backend trusts query_user
	QueryDatabase     string `yaml:"query_database"`      // default "postgres"
	// LookupFunction, e.g. pgquorum.get_auth, is a SECURITY DEFINER function
	// that returns a role's verifier, so that query_user needs no superuser
	// (docs/operations.md). Empty = read pg_catalog.pg_authid directly.
	LookupFunction string `yaml:"lookup_function"`
	// Lookup says where the proxy gets verifiers: "query" (the default: the
	// auth query as query_user) or "voters" (learners only: ask the voting
	// proxies over the peer transport; no database password in the pod).
	Lookup string `yaml:"lookup"`
	// MockSecretFile holds the secret that keys the fake SCRAM exchanges of
	// unknown roles (same file on every proxy). Default: derived from the
	// cluster CA (peer_tls.ca).
	MockSecretFile string `yaml:"mock_secret_file"`

	// QueryPassword and MockSecret are read from their files by Load; never from YAML.
	QueryPassword string `yaml:"-"`
	MockSecret    string `yaml:"-"`
}

// Auth.Lookup values.
const (
	LookupQuery  = "query"
	LookupVoters = "voters"
)

// TLS configures TLS towards clients.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// Mode is prefer (the default: TLS for clients that ask for it) or
	// require (sessions without TLS are refused, like hostssl-only pg_hba).
	Mode string `yaml:"mode"`
}

// Client TLS modes (TLS.Mode).
const (
	TLSPrefer  = "prefer"
	TLSRequire = "require"
)

// BackendTLS configures TLS on every connection the proxy opens to
// PostgreSQL (client sessions, the auth query, probes, the coordinator's SQL)
// and in the primary_conninfo it writes when it re-points a standby. The keys
// mean what libpq's do.
type BackendTLS struct {
	SSLMode string `yaml:"sslmode"` // disable (default) | require | verify-ca | verify-full
	CA      string `yaml:"ca"`      // sslrootcert: the CA of the PostgreSQL servers' certificates
	Cert    string `yaml:"cert"`    // sslcert: optional client certificate
	Key     string `yaml:"key"`     // sslkey
	// StandbyCA is the sslrootcert written into re-pointed standbys'
	// primary_conninfo: a path on the database hosts, where the standby reads
	// it. Default: CA (the same path on every host).
	StandbyCA string `yaml:"standby_ca"`
}

// Backend TLS modes (BackendTLS.SSLMode), libpq's names.
const (
	SSLDisable    = "disable"
	SSLRequire    = "require"
	SSLVerifyCA   = "verify-ca"
	SSLVerifyFull = "verify-full"
)

// Limits bound what clients can make the proxy hold. Zero = the proxy's
// default.
type Limits struct {
	// MaxClientConnections bounds the client connections at once (default
	// 10000); past it a new connection gets FATAL 53300 at once.
	MaxClientConnections int `yaml:"max_client_connections"`
	// MaxStartupConnections bounds the connections not yet authenticated
	// (default 1000), so a flood of them cannot crowd out the rest; they never
	// count against hold.max_held.
	MaxStartupConnections int `yaml:"max_startup_connections"`
}

// Hold bounds how long requests wait for a primary.
type Hold struct {
	Timeout            Duration `yaml:"timeout"`             // default 30s
	MaxHeld            int      `yaml:"max_held"`            // requests held at once; default 10000
	ReleaseConcurrency int      `yaml:"release_concurrency"` // backend logins at once when releasing; default 16
}

// Health configures PostgreSQL probes.
type Health struct {
	Interval Duration `yaml:"interval"` // default 500ms
	Timeout  Duration `yaml:"timeout"`  // connect + statement timeout of one probe; default 1s
}

// Failover configures automatic failover.
type Failover struct {
	MinInterval Duration `yaml:"min_interval"` // flap guard between automatic failovers; default 60s
	// AllowAsync: when a failover leaves the new primary without any standby,
	// turn synchronous replication off (commits acknowledged by one node)
	// instead of keeping the lost nodes in synchronous_standby_names (commits
	// wait until one rejoins). Default false. Recorded in the history when used.
	AllowAsync bool `yaml:"allow_async"`
	// ForbidAsyncCommit: the proxies refuse statements and startup parameters
	// that set synchronous_commit to off, local or remote_write (42501).
	// Default false: the client's choice stands, and such sessions are counted.
	ForbidAsyncCommit bool `yaml:"forbid_async_commit"`
}

// PeerTLS is the mutual TLS between proxies (SPEC §3.4): PEM files made by
// `pgquorum cert` (or any CA that writes pgquorum identities).
type PeerTLS struct {
	CA   string `yaml:"ca"`   // the cluster CA (a bundle while rotating the CA)
	Cert string `yaml:"cert"` // this node's certificate: its id and role
	Key  string `yaml:"key"`
}

// Admin configures the admin HTTP API.
type Admin struct {
	TokenFile string    `yaml:"token_file"` // the operators' bearer token for mutating calls
	TLS       *AdminTLS `yaml:"tls"`        // serve HTTPS; accept operators' client certificates

	// Token is read from TokenFile by Load; never from YAML.
	Token string `yaml:"-"`
}

// AdminTLS makes the admin API serve HTTPS.
type AdminTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ClientCA verifies operators' client certificates (`pgquorum cert
	// client`); default peer_tls.ca.
	ClientCA string `yaml:"client_ca"`
}

// Security holds the one switch that turns security off.
type Security struct {
	// Insecure allows plaintext peers (no peer_tls) and an admin API without
	// authentication (no admin.token_file or admin.tls), only when every
	// address is on loopback.
	Insecure bool `yaml:"insecure"`
}

// Learners configures what the Raft leader does about learners (sidecars).
type Learners struct {
	// RemoveAfter: a learner the leader has not heard from for this long is
	// removed from the membership (package learners). Unset: the default
	// (learners.DefaultRemoveAfter); 0s: never.
	RemoveAfter *Duration `yaml:"remove_after"`
}

// Shutdown says how a stopping proxy lets its clients go (SIGTERM, SIGINT or
// POST /drain).
type Shutdown struct {
	// DrainDelay: how long /readyz answers 503 ("draining") while the proxy
	// still accepts connections, before it stops accepting; it lets load
	// balancers and Kubernetes Services take the proxy out first. Default 0.
	DrainDelay Duration `yaml:"drain_delay"`
	// Grace: how long sessions may take to reach their next transaction
	// boundary once the proxy stopped accepting; the rest are closed.
	// Default node.DefaultShutdownGrace.
	Grace Duration `yaml:"grace"`
}

// Log configures logging.
type Log struct {
	Format string `yaml:"format"` // text (default) | json
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
}

// Duration is a time.Duration written in YAML as "500ms", "30s", ...
type Duration struct{ time.Duration }
