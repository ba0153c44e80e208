package rejoin

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// Options configure Run (`pgquorum rejoin`) and the agent (`pgquorum agent`,
// AgentOptions). Only PGData and Admin are required.
type Options struct {
	// PGData is the node's data directory (required).
	PGData string
	// ConfigFile is the server's main configuration file when it does not live
	// in PGData (the Debian layout: /etc/postgresql/<version>/<cluster>/postgresql.conf).
	// "" = PGData/postgresql.conf, else the Debian file whose data_directory is
	// PGData. It is passed to the server (-c config_file) and to pg_rewind
	// (--config-file, PostgreSQL 15 or later).
	ConfigFile string
	// BinDir holds pg_ctl, pg_rewind, pg_basebackup and pg_controldata. "" = the
	// bin directory of the data directory's major version
	// (/usr/lib/postgresql/<v>/bin, /usr/pgsql-<v>/bin), then the directory of
	// pg_rewind on PATH.
	BinDir string

	// Admin lists admin APIs of pgquorum nodes (required): host:port or URLs.
	// The first that answers is used; the others are tried when it stops answering.
	Admin []string
	// Token is the admin API's bearer token; "" when none is configured.
	Token string
	// TokenFile, if set, holds the token instead (first line). It is read again
	// before every mutating call, so a rotated token is picked up.
	TokenFile string
	// AdminTLS is the TLS configuration for an HTTPS admin API (the CA that
	// verifies it, and optionally an operator's client certificate); nil for
	// HTTP. With it, an address without a scheme means https://.
	AdminTLS *tls.Config

	// NodeName is this node's backend name. "" = derived: the backend of GET
	// /cluster whose address has the port of the data directory's configuration
	// (among several with that port, the one on this host).
	NodeName string

	// Reclone copies the primary afresh with pg_basebackup instead of rewinding
	// (Run only; the agent's is AgentOptions.RecloneFallback). The data directory
	// is moved aside (Result.OldDataDir), never deleted.
	Reclone bool

	// SourceUser is the superuser role on the primary that pg_rewind connects as
	// (--source-server) and that runs the checks. Default "postgres".
	SourceUser string
	// SourcePassword is SourceUser's password; "" = none (trust, ~/.pgpass of the
	// data directory's owner, certificates). Never logged, never on a command line.
	SourcePassword string
	// SourceDatabase is the database rejoin connects to. Default "postgres".
	SourceDatabase string
	// SSLMode is the sslmode of every connection rejoin opens to the cluster, and
	// of primary_conninfo when its template has none. "" = libpq's default (prefer).
	SSLMode string
	// SSLRootCert is the sslrootcert of those connections (a path on this host), and of
	// primary_conninfo when its template has none. "" = libpq's default.
	SSLRootCert string

	// ReplicationUser and ReplicationPassword are the credentials of the new
	// primary_conninfo (and of pg_basebackup). "" = reuse the node's previous
	// primary_conninfo, else another standby's, else the role other standbys
	// stream as (without a password).
	ReplicationUser     string
	ReplicationPassword string

	// ServerLog is the file the output of the PostgreSQL server started here,
	// and of pg_rewind and pg_basebackup, is appended to. Default: PGData + ".rejoin.log".
	ServerLog string

	// StopTimeout bounds stopping the local server (then it is stopped with -m
	// immediate, bounded again). Default 60s.
	StopTimeout time.Duration
	// StartTimeout bounds starting the server until it accepts connections, and
	// a CHECKPOINT on the primary. Default 2m.
	StartTimeout time.Duration
	// StreamTimeout bounds the wait until the node streams from the primary, and
	// then again the wait until the admin API unfences it. Default 2m.
	StreamTimeout time.Duration

	// Logger receives the steps; nil = discard.
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultSourceUser     = "postgres"
	DefaultSourceDatabase = "postgres"
	DefaultStopTimeout    = 60 * time.Second
	DefaultStartTimeout   = 2 * time.Minute
	DefaultStreamTimeout  = 2 * time.Minute
)

func (o Options) withDefaults() (Options, error) {
	if o.PGData == "" {
		return o, errors.New("the data directory is required (--pgdata DIR)")
	}
	var admins []string
	for _, a := range o.Admin {
		for _, part := range strings.Split(a, ",") {
			if part = strings.TrimSpace(part); part != "" {
				admins = append(admins, part)
			}
		}
	}
	if len(admins) == 0 {
		return o, errors.New("the admin API address is required (--admin ADDR[,ADDR...])")
	}
	o.Admin = admins
	abs, err := filepath.Abs(o.PGData)
	if err != nil {
		return o, fmt.Errorf("data directory %s: %w", o.PGData, err)
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		abs = resolved
	}
	o.PGData = abs
	if o.SourceUser == "" {
		o.SourceUser = DefaultSourceUser
	}
	if o.SourceDatabase == "" {
		o.SourceDatabase = DefaultSourceDatabase
	}
	if o.ServerLog == "" {
		o.ServerLog = o.PGData + ".rejoin.log"
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	if o.StreamTimeout <= 0 {
		o.StreamTimeout = DefaultStreamTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Result says what Run did.
type Result struct {
	Node    string // this node's backend name
	Primary string // the agreed primary it now streams from
	Epoch   uint64 // the epoch of that primary
	// Method is "rewind" (pg_rewind ran), "reclone" (pg_basebackup ran) or ""
	// (neither was needed: the node only had to be started, or already streamed).
	Method string
	// OldDataDir is where a re-clone moved the previous data directory.
	OldDataDir string
	// Started is true when the run started the server (as a standby); with an
	// empty Method and Unfenced false, the node already streamed and nothing was done.
	Started bool
	// Unfenced is true when the admin API lifted the node's fence; false when it
	// was not fenced.
	Unfenced bool
}

// Errors of Run and the agent. Match them with errors.Is / errors.As.
var (
	// ErrNoPrimary: the cluster has no agreed primary (not bootstrapped, or a
	// failover is in progress or blocked). Nothing was changed.
	ErrNoPrimary = errors.New("no agreed primary")
	// ErrIsPrimary: the data directory is the agreed primary's. Nothing was changed.
	ErrIsPrimary = errors.New("this node is the agreed primary; rejoin never rewinds the primary")
	// ErrUnknownNode: the data directory does not match a configured backend, or
	// the given name is not one. Nothing was changed.
	ErrUnknownNode = errors.New("unknown node")
	// ErrAdmin: the admin API could not be reached or refused a call.
	ErrAdmin = errors.New("admin API")
	// ErrPrerequisites: PostgreSQL is not set up so that a node can be rewound
	// and follow a new primary (see Prerequisites). Nothing was changed.
	ErrPrerequisites = errors.New("PostgreSQL prerequisites missing")
)

// RewindError says that pg_rewind could not rewind the data directory onto the
// primary. The way out is to copy the primary afresh (Options.Reclone). The data
// directory may be unusable after a failed pg_rewind; the local server is left
// stopped.
type RewindError struct {
	DataDir string
	Primary string
	// Reason is pg_rewind's own explanation (its error lines).
	Reason string
	// Output is pg_rewind's complete output.
	Output string
	Err    error
}

func (e *RewindError) Error() string {
	hint := ""
	if strings.Contains(e.Reason, "wal_log_hints") {
		hint = " Set wal_log_hints = on (or use data checksums) on every node so that a later rejoin can rewind."
	}
	return fmt.Sprintf("pg_rewind cannot rewind %s onto the primary %s: %s. Re-clone it from the primary with "+
		"`pgquorum rejoin --pgdata %s --reclone` (the data directory is moved aside, not deleted).%s",
		e.DataDir, e.Primary, e.Reason, e.DataDir, hint)
}

func (e *RewindError) Unwrap() error { return e.Err }
