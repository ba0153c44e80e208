// Package clusterstate is pgquorum's replicated cluster state: which PostgreSQL node
// the proxies route to (Primary) under which fencing token (Epoch), what each proxy
// last observed about each node, how far an in-progress failover or switchover has
// got, and the history of past ones with the LSN table behind each decision.
//
// # A pure state machine
//
// Apply(State, Command) returns the next State and a Result. It never reads a clock,
// does no I/O, uses no randomness and keeps no maps, so every node that applies the
// same committed log reaches byte-for-byte the same State. Time enters only as data:
// commands carry the proposer's wall clock (At fields) and health observations carry
// the observing proxy's clock. Apply never mutates its input (copy-on-write): the
// returned State may share unchanged slices with the input, so treat States as
// immutable values and Clone one before changing it.
//
// Every command that changes routing is compare-and-set on Epoch (ExpectEpoch), and
// failover steps are additionally compare-and-set on the failover's step sequence
// (ExpectSeq). A duplicated or stale command is therefore a harmless no-op whose
// Result says why (Duplicate or Stale); a command that is invalid in the current
// state is Rejected. Apply never panics on any input.
//
// # A failover as a series of commands
//
// The failover coordinator (on the Raft leader) drives a failover or switchover by
// proposing these commands. The in-progress FailoverProgress records which step is
// next, the chosen candidate and the LSN table observed, so a new leader resumes from
// the State alone:
//
//	BeginFailover      epoch E -> E+1, Primary "" (proxies hold traffic); Next = freeze
//	                   (a planned switchover starts with demote_old_primary instead)
//	RecordStep demote_old_primary  switchover only: old primary read-only, candidate caught up
//	RecordStep freeze            reachable standbys frozen; carries their LSN table
//	BlockFailover                too few standbys reachable; keeps holding; Next = freeze again
//	ForceFailover                operator override of a block (--force --allow-data-loss)
//	RecordStep choose_candidate  names the candidate; clears a block
//	RecordStep promote           candidate promoted
//	RecordStep repoint           other standbys re-pointed
//	CompleteFailover             Primary = candidate at epoch E+1; old primary fenced; History
//	AbortFailover                (before promote only) epoch E+2, Primary = old primary; History
//
// Health observations (ReportHealth) are per (proxy, node): the latest one each proxy
// reported. MajorityDown decides "a majority of voting proxies observe the node down"
// from them; Raft membership is not part of this state, so the voters are an argument.
//
// # Versions
//
// Every command type belongs to a command version (versions.go). A node that
// meets a command (or a snapshot, or a cluster version) newer than MaxVersion
// does not skip it: Decode returns an *UnsupportedVersionError and the node
// stops applying, failing closed. New command versions are used only once the
// cluster agreed on them: proxies report what they understand (ReportVersion),
// the leader raises the cluster version to the lowest among the voters
// (RaiseClusterVersion, checked against the reports), proposers ask
// State.Allows, and Apply rejects a command of a version not agreed yet.
// LearnerMayPropose says which commands a learner (sidecar) may propose.
//
// # What this package must not do
//
// It does not decide when to fail over, talk to PostgreSQL, read clocks or know Raft
// membership. It does not import package consensus; Machine merely satisfies the
// consensus.StateMachine method set.
package clusterstate
