// Package health observes the PostgreSQL nodes and decides, per node, whether
// it is up or down.
//
// It owns four things:
//
//   - Prober: one connection to one PostgreSQL node, and one round trip per
//     probe that reads the node's role, timeline, WAL positions, WAL receiver,
//     walsenders (pg_stat_replication) and synchronous replication settings.
//   - Detector: a pure failure detector with hysteresis. It turns a stream of
//     probes into Up/Down verdicts and emits a Change only when a node's state
//     (up/down, in recovery, timeline) changes, never on mere LSN progress.
//   - Monitor: one probing goroutine per node plus one goroutine that owns the
//     Detector; it publishes the latest probe of every node and a bounded,
//     coalescing stream of Changes.
//   - The synchronous replication rules of SPEC §4: ParseSyncStandbyNames
//     (PostgreSQL's own grammar for synchronous_standby_names), the standby
//     set N and quorum k, the "|R| ≥ |N| − k + 1" reachability rule, and the
//     conditions under which an automatic failover would be unsafe.
//
// What this package must not do: it never changes a PostgreSQL node (no ALTER
// SYSTEM, no promote, no reload), never proposes anything to Raft and never
// decides a failover. It reports what it sees; the failover coordinator on the
// Raft leader decides. A probe never runs longer than its timeout, and nothing
// here blocks on a slow consumer.
package health
