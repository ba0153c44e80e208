package localcluster

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// This file renders the configuration files of a node. It is pure: no I/O.

// settingsFile is the file, inside each data directory, holding every setting localcluster
// manages. postgresql.conf includes it at its end, so it overrides initdb's defaults, and
// ALTER SYSTEM (postgresql.auto.conf) still overrides it.
const settingsFile = "pgquorum.conf"

// reservedSettings are managed per node and may not be overridden through Options.ExtraConf.
var reservedSettings = []string{"port", "listen_addresses", "unix_socket_directories"}

var (
	nodeNamePattern    = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	settingNamePattern = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)
)

// nodeSettings is everything that differs between the settings files of two nodes.
type nodeSettings struct {
	name      string
	port      int
	socketDir string
	// syncStandbyNames is set on the primary only, e.g. "ANY 1 (pg2, pg3)".
	syncStandbyNames string
	// primaryConninfo is set on standbys only.
	primaryConninfo string
	fast            bool
	ssl             bool // ssl = on, with server.crt and server.key in the data directory
	extra           map[string]string
}

// renderSettings returns the content of settingsFile for one node.
func renderSettings(s nodeSettings) string {
	role := "primary"
	if s.primaryConninfo != "" {
		role = "standby"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by pgquorum localcluster for node %s (initially %s).\n", s.name, role)
	line := func(name, value string) { fmt.Fprintf(&b, "%s = %s\n", name, quoteConfValue(value)) }
	line("listen_addresses", "127.0.0.1")
	line("port", strconv.Itoa(s.port))
	line("unix_socket_directories", s.socketDir)
	line("password_encryption", "scram-sha-256")
	line("wal_level", "replica")
	line("max_wal_senders", "10")
	line("max_replication_slots", "10")
	line("hot_standby", "on")
	line("wal_log_hints", "on")
	line("synchronous_commit", "on")
	line("synchronous_standby_names", s.syncStandbyNames)
	// A standby that was down or frozen for a while can still catch up by streaming, and
	// pg_rewind finds the WAL back to the last common checkpoint (the prerequisites that
	// `pgquorum agent` and `pgquorum rejoin` check, with wal_log_hints above).
	line("wal_keep_size", "256MB")
	// Three nodes on one machine: keep the memory of each small.
	line("shared_buffers", "32MB")
	line("log_line_prefix", "%m [%p] %q%a ")
	if s.ssl {
		line("ssl", "on")
		line("ssl_cert_file", serverCertFile)
		line("ssl_key_file", serverKeyFile)
		line("ssl_ca_file", serverCAFile)
	}
	if s.primaryConninfo != "" {
		line("primary_conninfo", s.primaryConninfo)
	}
	if s.fast {
		b.WriteString("# Fast: not crash safe against an OS crash; a killed server still recovers.\n")
		line("fsync", "off")
		line("wal_init_zero", "off")
		// Dynamic shared memory in files under the data directory: a killed server leaves
		// nothing behind in /dev/shm.
		line("dynamic_shared_memory_type", "mmap")
	}
	for _, name := range slices.Sorted(maps.Keys(s.extra)) {
		line(name, s.extra[name])
	}
	return b.String()
}

// renderHBA returns pg_hba.conf: the extra lines first, then the defaults of the contract.
// With sslOnly the default TCP rules are hostssl: plaintext TCP connections match none.
func renderHBA(extra []string, sslOnly bool) string {
	host := "host"
	if sslOnly {
		host = "hostssl"
	}
	var b strings.Builder
	b.WriteString("# Written by pgquorum localcluster. First match wins.\n")
	for _, l := range extra {
		b.WriteString(l + "\n")
	}
	b.WriteString("local all all trust\n")
	b.WriteString(host + " replication " + ReplicationUser + " 127.0.0.1/32 trust\n")
	b.WriteString(host + " all " + SuperUser + " 127.0.0.1/32 trust\n")
	// md5 accepts both md5 and SCRAM verifiers; ours are SCRAM (password_encryption above).
	b.WriteString(host + " all all 127.0.0.1/32 md5\n")
	return b.String()
}

// syncStandbyNames returns the synchronous_standby_names value for a primary whose standbys are
// standbys, e.g. "ANY 1 (pg2, pg3)"; "" without standbys.
func syncStandbyNames(quorum int, standbys []string) string {
	if len(standbys) == 0 {
		return ""
	}
	return fmt.Sprintf("ANY %d (%s)", quorum, strings.Join(standbys, ", "))
}

// primaryConninfo is the libpq string a standby streams with; application_name is how the
// primary's synchronous_standby_names recognises it. caFile, when set, makes it verify-full
// TLS against that CA.
func primaryConninfo(standbyName string, primaryPort int, caFile string) string {
	ssl := "sslmode=disable"
	if caFile != "" {
		ssl = "sslmode=verify-full sslrootcert=" + quoteConnValue(caFile)
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d user=%s application_name=%s %s", primaryPort, ReplicationUser, standbyName, ssl)
}

// quoteConfValue quotes a postgresql.conf value. Every setting accepts a quoted value.
func quoteConfValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// quoteConnValue quotes a value of a libpq keyword/value connection string.
func quoteConnValue(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", `\'`) + "'"
}

// quoteSQLLiteral quotes a SQL string literal (standard_conforming_strings is on by default).
func quoteSQLLiteral(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}
