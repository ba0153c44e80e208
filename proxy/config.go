package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/metrics"
	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// Target is where the proxy may send traffic: the agreed primary.
type Target struct {
	Name    string // backend name (application_name in replication), e.g. "pg1"
	Address string // host:port
	Epoch   uint64 // fencing token; 0 when discovered by probing (before consensus)
	// XidHorizon, when not 0, is the primary's transaction id horizon recorded at its
	// promotion in this epoch: transaction ids below it were assigned by the previous
	// primary, and none at or above it committed there (resolve.go).
	XidHorizon uint64
}

// Router tells the proxy where traffic may go now, and when that changes: the proxy holds
// requests at a transaction boundary while no primary is agreed, moves sessions to a new
// primary and fails closed when the lease expires (route.go). It is implemented outside this
// package (routing.ConsensusRouter, from the Raft view). Its methods are called concurrently
// from many sessions.
type Router interface {
	// Route returns the current decision and a channel that is closed at the next change.
	// It must not block.
	Route() (Route, <-chan struct{})
	// BackendFailed tells the router that connecting to, or talking to, t failed; a consensus
	// router may ignore it (the agreed state, not one connection, decides).
	BackendFailed(t Target)
}

// VerifierSource reads a role's password verifier elsewhere than on the primary: a learner
// asks the voting proxies (package authlookup). The error wraps pgauth.ErrNoVerifier for a
// role without a usable verifier. It must be safe for concurrent use.
type VerifierSource interface {
	LookupVerifier(ctx context.Context, user string) (pgauth.Verifier, error)
}

// Authentication methods the proxy can ask clients for (Config.AuthMethod).
const (
	AuthTrust       = "trust"
	AuthMD5         = "md5"
	AuthSCRAMSHA256 = "scram-sha-256"
)

// Defaults for the zero values of Config.
const (
	DefaultHoldTimeout        = 30 * time.Second
	DefaultMaxHeld            = 10000
	DefaultReleaseConcurrency = 16
	DefaultStartupTimeout     = 10 * time.Second
	DefaultMaxClients         = 10000
	DefaultMaxStartups        = 1000
	DefaultQueryDatabase      = "postgres"
	DefaultMaxStartupPacket   = 10000 // bytes of startup packet body, like PostgreSQL's MAX_STARTUP_PACKET_LENGTH
)

// Config configures a Server. The zero value of every optional field has a documented default.
type Config struct {
	// NodeID is this proxy's node id; it is encoded in the BackendKeyData handed to clients so a
	// cancel request can be routed to the proxy that owns the session (see cancel.go).
	NodeID uint64
	// ListenAddr is the TCP address to listen on, e.g. "127.0.0.1:6432"; port 0 picks a free
	// port (see Server.Addr).
	ListenAddr string
	// Router names the primary. Required.
	Router Router
	// AuthMethod is what the proxy asks clients for: "trust", "md5" or "scram-sha-256".
	// Empty means "scram-sha-256".
	AuthMethod string
	// QueryUser is the role used for the auth query (reads password verifiers on the primary).
	// Required for md5 and scram-sha-256.
	QueryUser string
	// Verifiers, when set, is where the proxy reads verifiers instead of the auth query (a
	// learner with auth.lookup: voters); QueryUser is then optional.
	Verifiers VerifierSource
	// QueryPassword is QueryUser's password; "" when the backend trusts QueryUser.
	QueryPassword string
	// QueryDatabase is the database the auth query connects to. Default "postgres".
	QueryDatabase string
	// LookupFunction, when set, is a schema-qualified SECURITY DEFINER function (for example
	// pgquorum.get_auth) that returns a role's verifier or NULL; the auth query calls it instead
	// of reading pg_authid, so QueryUser needs no superuser (pgauth.LookupWithFunction).
	LookupFunction string
	// MockSecret keys the fake SCRAM exchanges of unknown roles (pgauth.NewMockKey): the same
	// on every proxy of the cluster, so that the salt announced for a role that does not exist
	// is the same everywhere and across restarts. nil = a per-process secret.
	MockSecret []byte
	// BackendTLS are the libpq TLS keywords (sslmode, sslrootcert, sslcert, sslkey) of every
	// connection the proxy opens to PostgreSQL: sessions' backends, the auth query, cancel
	// requests (backendtls.go). Empty = sslmode=disable.
	BackendTLS conninfo.Params
	// TLS enables SSLRequest (and direct TLS) for clients; nil answers SSLRequest with 'N'.
	TLS *tls.Config
	// TLSRequired refuses sessions that did not negotiate TLS (FATAL 28000), like a
	// hostssl-only pg_hba.conf. Needs TLS.
	TLSRequired bool

	// ForbidAsyncCommit (failover.forbid_async_commit) refuses statements and startup
	// parameters that set synchronous_commit to off, local or remote_write (asynccommit.go).
	ForbidAsyncCommit bool
	// MaxClientConnections bounds the client connections at once; past it a new connection gets
	// FATAL 53300 at once. Default 10000.
	MaxClientConnections int
	// MaxStartupConnections bounds the connections not yet authenticated; past it a new
	// connection gets FATAL 53300 at once. Their waits for a primary (the auth query during a
	// failover) never count against MaxHeld. Default 1000 (at most MaxClientConnections).
	MaxStartupConnections int
	// HoldTimeout bounds how long a request or a new connection waits for a primary (and
	// connecting to it); past it the client gets 57P03 and the request is not sent. Default 30s.
	HoldTimeout time.Duration
	// MaxHeld bounds the requests and authenticated new connections waiting for a primary at
	// once (MaxStartupConnections bounds the others); past it
	// they are refused at once with 57P03. A held request costs only the bytes already read
	// from its client (the client is not read while it waits). Default 10000.
	MaxHeld int
	// ReleaseConcurrency bounds the backend logins in progress at once (new sessions and moved
	// ones), so that the requests released after a failover reach the new primary at a
	// bounded pace. Default 16.
	ReleaseConcurrency int
	// Metrics receives the proxy's events (held requests, hold durations, moved sessions,
	// errors sent to clients); nil records nothing.
	Metrics *metrics.Metrics
	// StartupTimeout bounds the time a client may take to finish startup and authentication
	// (time the proxy itself waits for the primary is not counted). Default 10s.
	StartupTimeout time.Duration
	// MaxStartupPacket bounds the startup packet body in bytes. Default 10000, like PostgreSQL.
	MaxStartupPacket int
	// CancelForwarder carries cancel requests whose key names another proxy node to that
	// node (cancel.go); nil drops them (counted as unknown keys).
	CancelForwarder CancelForwarder
	// Logger receives the proxy's logs; nil discards them.
	Logger *slog.Logger
}

// withDefaults validates c and fills in the defaults of its zero fields.
func (c Config) withDefaults() (Config, error) {
	if c.Router == nil {
		return c, errors.New("proxy: config: Router is required")
	}
	if c.ListenAddr == "" {
		return c, errors.New("proxy: config: ListenAddr is required")
	}
	if c.AuthMethod == "" {
		c.AuthMethod = AuthSCRAMSHA256
	}
	switch c.AuthMethod {
	case AuthTrust:
	case AuthMD5, AuthSCRAMSHA256:
		if c.QueryUser == "" && c.Verifiers == nil {
			return c, fmt.Errorf("proxy: config: QueryUser is required for auth method %q", c.AuthMethod)
		}
	default:
		return c, fmt.Errorf("proxy: config: unknown AuthMethod %q (want trust, md5 or scram-sha-256)", c.AuthMethod)
	}
	if c.HoldTimeout < 0 || c.StartupTimeout < 0 || c.MaxStartupPacket < 0 || c.MaxHeld < 0 || c.ReleaseConcurrency < 0 ||
		c.MaxClientConnections < 0 || c.MaxStartupConnections < 0 {
		return c, errors.New("proxy: config: negative timeout or size")
	}
	if c.TLSRequired && c.TLS == nil {
		return c, errors.New("proxy: config: TLSRequired needs TLS")
	}
	if c.MaxClientConnections == 0 {
		c.MaxClientConnections = DefaultMaxClients
	}
	if c.MaxStartupConnections == 0 {
		c.MaxStartupConnections = min(DefaultMaxStartups, c.MaxClientConnections)
	}
	if c.MaxStartupConnections > c.MaxClientConnections {
		return c, fmt.Errorf("proxy: config: MaxStartupConnections %d is more than MaxClientConnections %d",
			c.MaxStartupConnections, c.MaxClientConnections)
	}
	if c.QueryDatabase == "" {
		c.QueryDatabase = DefaultQueryDatabase
	}
	if c.HoldTimeout == 0 {
		c.HoldTimeout = DefaultHoldTimeout
	}
	if c.MaxHeld == 0 {
		c.MaxHeld = DefaultMaxHeld
	}
	if c.ReleaseConcurrency == 0 {
		c.ReleaseConcurrency = DefaultReleaseConcurrency
	}
	if c.StartupTimeout == 0 {
		c.StartupTimeout = DefaultStartupTimeout
	}
	if c.MaxStartupPacket == 0 {
		c.MaxStartupPacket = DefaultMaxStartupPacket
	}
	if c.MaxStartupPacket < 64 {
		return c, fmt.Errorf("proxy: config: MaxStartupPacket %d is too small (minimum 64)", c.MaxStartupPacket)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TLS != nil {
		// Direct TLS (PostgreSQL 17's sslnegotiation=direct) requires the "postgresql" ALPN
		// protocol; advertising it is also what PostgreSQL does on the SSLRequest path.
		c.TLS = c.TLS.Clone()
		if !slices.Contains(c.TLS.NextProtos, alpnPostgreSQL) {
			c.TLS.NextProtos = append(c.TLS.NextProtos, alpnPostgreSQL)
		}
	}
	return c, nil
}
