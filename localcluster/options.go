package localcluster

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
)

// Well-known roles created in every cluster.
const (
	// SuperUser is the bootstrap superuser; trusted over the unix socket and loopback TCP, for
	// local administration only.
	SuperUser = "postgres"
	// QueryUser (SUPERUSER LOGIN, password QueryPassword, SCRAM verifier) is pgquorum's
	// auth_query and probe role; the Node SQL helpers connect as it.
	QueryUser     = "pgquorum"
	QueryPassword = "pgquorum-secret"
	// ReplicationUser (REPLICATION LOGIN) is what standbys stream as; trusted over loopback.
	ReplicationUser = "replicator"
)

// Options configures Start. The zero value of every field but Dir is usable.
type Options struct {
	// Dir is the parent directory of everything (data dirs, sockets, logs). Required; created
	// (0755) if missing. When we run as root the postgres OS user must be able to traverse it
	// and its parents. Start creates Dir/<name>/ (socket dir, data dir Dir/<name>/data) and
	// Dir/<name>.log per node, and fails if a node directory exists. Close does not remove Dir.
	Dir string
	// BinDir is the PostgreSQL bin dir; "" = FindBinDir's autodetection.
	BinDir string
	// Names are the node names, used as application_name; default {"pg1","pg2","pg3"}. The
	// first is the initial primary. Lower-case letters, digits and '_', starting with a letter.
	Names []string
	// Quorum is k in synchronous_standby_names = 'ANY k (...)'; default 1. At most the number
	// of standbys.
	Quorum int
	// ExtraHBA are pg_hba.conf lines put before the defaults. They must not shadow the default
	// rules for SuperUser and ReplicationUser on 127.0.0.1, which Start relies on.
	ExtraHBA []string
	// ExtraConf are extra postgresql.conf settings for every node, written after (so they win
	// over) the defaults. port, listen_addresses and unix_socket_directories are reserved.
	ExtraConf map[string]string
	// TLS turns ssl on in every node, with a server certificate for 127.0.0.1 and localhost
	// signed by a CA made for the cluster (Cluster.TLS names the files). The standbys stream
	// with sslmode=verify-full, and the SQL helpers connect with sslmode=require.
	TLS bool
	// HostSSLOnly (needs TLS) writes every TCP rule of pg_hba.conf as hostssl: PostgreSQL then
	// refuses plaintext TCP connections, as a server that requires TLS does.
	HostSSLOnly bool
	// Fast trades durability against an OS crash for speed (fsync=off). Tests set it; the demo
	// leaves it off. A killed PostgreSQL process still recovers without loss either way.
	Fast bool
	// Logger receives progress and lifecycle events; nil = discard.
	Logger *slog.Logger
}

// withDefaults validates opts and fills in defaults; the caller's slices and maps are copied.
func (opts Options) withDefaults() (Options, error) {
	if opts.Dir == "" {
		return opts, fmt.Errorf("options: Dir is required")
	}
	if len(opts.Names) == 0 {
		opts.Names = []string{"pg1", "pg2", "pg3"}
	}
	opts.Names = slices.Clone(opts.Names)
	seen := map[string]bool{}
	for _, name := range opts.Names {
		if !nodeNamePattern.MatchString(name) {
			return opts, fmt.Errorf("options: node name %q: want lower-case letters, digits and '_', starting with a letter", name)
		}
		if seen[name] {
			return opts, fmt.Errorf("options: node name %q given twice", name)
		}
		seen[name] = true
	}
	standbys := len(opts.Names) - 1
	if opts.Quorum == 0 {
		opts.Quorum = 1
	}
	if opts.Quorum < 1 || (standbys > 0 && opts.Quorum > standbys) {
		return opts, fmt.Errorf("options: Quorum %d: want 1..%d (the number of standbys)", opts.Quorum, max(standbys, 1))
	}
	if opts.HostSSLOnly && !opts.TLS {
		return opts, fmt.Errorf("options: HostSSLOnly needs TLS")
	}
	opts.ExtraHBA = slices.Clone(opts.ExtraHBA)
	for _, l := range opts.ExtraHBA {
		if strings.ContainsAny(l, "\r\n") {
			return opts, fmt.Errorf("options: ExtraHBA line %q contains a line break", l)
		}
	}
	opts.ExtraConf = maps.Clone(opts.ExtraConf)
	for name, value := range opts.ExtraConf {
		if !settingNamePattern.MatchString(name) {
			return opts, fmt.Errorf("options: ExtraConf setting name %q is not a valid name", name)
		}
		if slices.Contains(reservedSettings, name) {
			return opts, fmt.Errorf("options: ExtraConf setting %q is managed by localcluster", name)
		}
		if strings.ContainsAny(value, "\r\n\x00") {
			return opts, fmt.Errorf("options: ExtraConf setting %q: value contains a line break or NUL", name)
		}
	}
	binDir, err := FindBinDir(opts.BinDir)
	if err != nil {
		return opts, fmt.Errorf("options: %w", err)
	}
	opts.BinDir = binDir
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return opts, nil
}
