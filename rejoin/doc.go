// Package rejoin brings a PostgreSQL node back into the cluster as a standby of
// the agreed primary (SPEC §3.1, §4 step 9), once by hand (`pgquorum rejoin
// --pgdata DIR`, Run) or for good (`pgquorum agent`, RunAgent). Both run on the
// database host, next to the data directory, and talk to the cluster through
// the admin API of any listed pgquorum node.
//
// # One decision, two drivers
//
// What to do next is a pure function, decide (decide.go), of three things:
// what the cluster agreed (GET /cluster: primary, epoch, failover in progress,
// fenced nodes, paused), what the data directory and its server show now
// (pg_controldata's cluster state, standby.signal, a postmaster and its SQL
// answers, processes at work in the directory), and what the driver remembers
// (how long the primary has been down, whether it already rewound). Run calls it
// until the node streams and is unfenced, failing instead of waiting for the
// cluster; RunAgent calls it forever, every few seconds. The actions
// (actions.go):
//
//	start-primary  start the data directory as it is: only the agreed primary
//	               (after PrimaryStartDelay, so that the proxies fail over first),
//	               the old primary of a failover blocked before any promotion,
//	               or any node of a cluster that never agreed on a primary
//	start-standby  standby.signal and primary_conninfo of the agreed primary
//	               (empty while a failover is in progress), then pg_ctl start
//	stop           pg_ctl stop -m fast, once the primary answers as a primary
//	rewind         pg_rewind from the primary (a CHECKPOINT there first if it was
//	               promoted so recently that its control file still names the old
//	               timeline), keeping the node's own *.conf, then at once
//	               standby.signal and the new primary_conninfo
//	reclone        pg_basebackup into DIR.pgquorum-clone, then the old directory
//	               moves aside (never deleted) and the copy takes its place
//	unfence        POST /rejoin/{node}: the admin API checks with its own probes
//	               that the node streams from the primary and proposes Unfence
//
// # Resumable without a state file
//
// Every step leaves a trace the next observation reads, so a run killed at any
// point is picked up by the next one (of the agent, or of rejoin):
//
//   - a killed primary's control file says "in production"; pg_rewind's last
//     act writes the primary's control file with "in archive recovery", so a
//     finished rewind is never run again (a second pg_rewind would end the
//     rewound node's recovery and fork it from the primary);
//   - pg_rewind and pg_basebackup run detached with the data directory (or the
//     copy) as working directory: a driver that dies, or is stopped, leaves them
//     to finish, and the next one sees a process at work there and waits;
//   - standby.signal is written before any start of a node the cluster does
//     not name primary, so such a node can only ever come up as a standby;
//   - the re-clone's copy is whole only once DIR.pgquorum-clone.complete exists
//     (reclone.go); a copy without it is partial and is made again.
//
// A pg_rewind interrupted by a kill of the whole process group (a container
// restart) leaves the control file untouched, and is run again. PostgreSQL's
// documentation warns that an interrupted pg_rewind may leave the target
// unusable; a second pg_rewind then reports that it cannot rewind rather than
// guessing, and the node is re-cloned (AgentOptions.RecloneFallback, or by
// hand with --reclone).
//
// # Checks before changes
//
// Before it stops or rewinds anything, Run checks, in order: the admin API
// answers and accepts the token (POST /rejoin with check_only), the node is
// known and is not the agreed primary, the primary answers as a primary as the
// source superuser, and the prerequisites (prereq.go): wal_log_hints or data
// checksums, WAL kept for standbys and rewinds (wal_keep_size, a slot or an
// archive) here and on the primary, and a replication role that can stream
// (IDENTIFY_SYSTEM over a replication connection). The agent runs the same
// checks when it starts and exits when the token is refused or a prerequisite
// is missing (saying exactly which).
//
// When pg_rewind cannot rewind (the WAL it needs is gone, no wal_log_hints, a
// different system, a damaged data directory), Run returns a *RewindError that
// says why and tells the operator to run again with --reclone.
//
// # Configuration outside the data directory
//
// The Debian layout (/etc/postgresql/<version>/<cluster>/postgresql.conf with
// data_directory pointing at PGDATA) is found by itself, or given with
// ConfigFile; the server is then started with -c config_file and pg_rewind
// with --config-file (PostgreSQL 15 or later).
//
// What this package must not do: stop, rewind or change the agreed primary (it
// only reads there, and runs a CHECKPOINT); start a node the cluster does not
// name primary as a primary; act during a failover other than to bring back a
// node the failover is waiting for; delete a data directory (a re-clone moves
// it aside); change the replicated cluster state other than through the admin
// API; run PostgreSQL programs as root (they run as the data directory's
// owner); put a password on a command line or in a log.
package rejoin
