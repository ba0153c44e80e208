// Package rejoin brings a former primary, or any node that no longer follows the
// agreed primary, back into the cluster as a standby: `pgquorum rejoin --pgdata
// DIR` (SPEC §3.1, §4 step 9). It runs on the database host, next to the data
// directory, and talks to the cluster through a pgquorum node's admin API.
//
// Run goes through these steps; the first three change nothing:
//
//  1. GET /cluster: the agreed primary, and which backend this data directory is
//     (the one whose address has the port in the data directory's configuration).
//  2. Refuse when no primary is agreed, when this node is the agreed primary, or
//     when the data directory belongs to the running primary: the primary is
//     never stopped or rewound.
//  3. Connect to the primary as a superuser (pg_rewind needs one) and work out the
//     replication credentials of the new primary_conninfo.
//  4. Stop the local server (pg_ctl stop -m fast). A postmaster.pid left by a
//     killed server whose postmaster is gone or an unreaped zombie is removed
//     once no process works in the data directory any more (PostgreSQL would
//     take it for a live server and refuse to recover).
//  5. pg_rewind from the primary, after a CHECKPOINT there if it was promoted so
//     recently that its control file still names the old timeline. With Reclone,
//     move the data directory aside and copy the primary with pg_basebackup
//     instead. Both copy the primary's configuration files, so the node's own
//     (every *.conf at the top of the data directory) are saved before and put
//     back after.
//  6. Make it a standby: standby.signal, and in postgresql.auto.conf a
//     primary_conninfo with application_name = the node's name, without the
//     default_transaction_read_only a switchover leaves on an old primary.
//  7. Start it (pg_ctl start) and wait until the primary's pg_stat_replication
//     shows it streaming.
//  8. POST /rejoin/{node}: the admin API checks the streaming with its own health
//     probes and proposes clusterstate.Unfence, after which the node may be
//     chosen in a failover again.
//
// When pg_rewind cannot rewind (the WAL it needs is gone, no wal_log_hints, a
// different system, a damaged data directory), Run returns a *RewindError that
// says why and tells the operator to run again with --reclone.
//
// What this package must not do: stop, rewind or change the agreed primary (it
// only reads there, and runs a CHECKPOINT); delete a data directory (Reclone
// moves it aside); change the replicated cluster state other than through the
// admin API; run PostgreSQL programs as root (they run as the data directory's
// owner); put a password on a command line or in a log.
package rejoin
