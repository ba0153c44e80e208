// Package coordinator decides and executes failovers and switchovers (SPEC §4).
//
// # Two parts, one of them on every proxy
//
// HealthReporter runs on EVERY proxy, voters and learners alike: it is the one part
// of this package that is not the leader's. It turns the local health.Monitor's
// changes (a node went up or down, changed role or timeline) into ReportHealth
// proposals, and refreshes them slowly (every 5 s by default) so the replicated
// observations carry recent LSNs and timestamps. It never blocks the monitor.
//
// Coordinator runs on every proxy too, but acts only while its Raft member is the
// leader. Its Run loop bootstraps a fresh cluster, begins an automatic failover when
// a majority of the VOTING proxies observe the primary down, drives any failover or
// switchover in progress one step at a time, and heals standbys that do not follow
// the agreed primary. Failover, Switchover and SetPaused are the operator's entry
// points (the admin API calls them on whichever proxy it runs on): they only propose
// commands through Raft and wait for the outcome; the leader does the work.
//
// # A failover is a series of Raft commands
//
// The coordinator keeps nothing a new leader would need: every step is recorded in
// the replicated clusterstate.State (FailoverProgress.Next says what to do next), and
// every PostgreSQL action is idempotent, so a leader that crashes between any two
// actions is replaced by one that resumes from the State and finishes the failover
// exactly once. The steps, each recorded with one command:
//
//	decide     majority of voters observe the primary down (fresh observations only),
//	           not paused, flap guard passed                  -> BeginFailover (epoch E+1, no primary)
//	demote     switchover only: old primary read-only, sessions ended,
//	           candidate received its final LSN                -> RecordStep demote_old_primary
//	freeze     first the routing fence: every proxy confirmed the epoch (closed its
//	           connections to the old primary) or provably lost its lease
//	           (consensus.FenceRouting); then every reachable standby:
//	           primary_conninfo = '', reload, WAL receiver confirmed stopped,
//	           position read                                    -> RecordStep freeze (LSN table;
//	                                                               the detail says how the proxies were fenced)
//	check      |R| >= |N| - k + 1 over the frozen standbys; no hazard (foreign
//	           walsender under "*", synchronous replication off) -> BlockFailover when not
//	choose     highest (timeline, received LSN), then priority, then name
//	                                                           -> RecordStep choose_candidate
//	promote    synchronous_standby_names for the remaining standbys (never empty, see
//	           below), pg_promote                              -> RecordStep promote
//	repoint    the other frozen standbys follow the new primary -> RecordStep repoint
//	complete                                                   -> CompleteFailover (primary = X)
//
// A blocked failover keeps holding traffic and is re-checked every BlockedRecheck: a
// standby that comes back lets it proceed; an old primary that a majority no longer
// observes down (and this leader reaches as a primary) ends it with AbortFailover
// after the standbys were unfrozen. The operator may force it (--force
// --allow-data-loss), which is recorded in the history.
//
// # Why the fence comes first
//
// A proxy that still routes to the old primary could serve reads that a write
// acknowledged by the new primary has already overwritten, and a commit that
// waits for synchronous replication on the old primary is visible on it. So
// nothing happens to PostgreSQL until no proxy can still route to the old
// primary. A leader that resumes a failover before its freeze step was recorded
// fences again (a dead former leader is waited for until its lease ran out).
//
// # Synchronous replication is never switched off
//
// The promote step gives the new primary the remaining standbys. When none
// remains (the second of two failures), it names every other agreed node, the
// lost and fenced ones included (ANY 1 ("pg1", "pg2")): commits wait until one
// of them rejoins and streams, clients see held writes while reads keep
// working, and /cluster, pgquorum list and pgquorum_writes_wait_for_standby say
// "writes wait: no synchronous standby". AllowAsync (failover.allow_async) is
// the explicit opt-out: synchronous_standby_names = ”. Either way the promote
// step's detail, and so the history, says which.
//
// # Where N and k come from
//
// N and k are read from synchronous_standby_names in this leader's latest successful
// probe of the old primary (health.Monitor). When there is none (the leader started
// after the primary died), N is every configured backend except the old primary and
// k is 1: the most demanding assumption, so the rule can only be too strict.
//
// # Replication credentials of re-pointed standbys
//
// A re-pointed standby gets primary_conninfo = host and port of the new primary (from
// the configured backends), application_name = its own name, and every other keyword
// (user, password, sslmode, passfile, ...) from a template: the standby's own
// primary_conninfo captured by this leader before freezing it (SHOW primary_conninfo),
// else any standby's capture, else the template recorded in the freeze step's Detail
// (which never contains a password), else nothing (libpq defaults).
// Coordinator.ReplicationUser and ReplicationPassword, when set, override the template, and
// Coordinator.StandbyTLS (backend.sslmode, backend.standby_ca) makes its TLS no weaker than the
// cluster's: the stronger sslmode wins, and the template's own sslrootcert is kept.
// A leader that takes over between freeze and repoint therefore knows the user but not
// a password: use trust, certificates or a passfile for replication, or configure
// the password.
//
// # What this package must not do
//
// It never routes traffic (package routing derives routing from the State), never
// changes a node without a recorded reason, and never promotes a second node for the
// same epoch: the candidate is recorded before pg_promote is sent, and after that the
// failover can only go forward with that candidate.
package coordinator
