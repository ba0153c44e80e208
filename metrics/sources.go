package metrics

import "time"

// Sources are the read-only views that Metrics reads on every scrape. Each is a
// func the wiring code builds from a component (see AddSources); a nil func
// leaves its families out of /metrics.
//
// Contract for every source: it is called from the HTTP handler's goroutine,
// possibly from several concurrent scrapes, so it must be safe for concurrent
// use; it must return quickly and never do I/O (return what the component has
// already published); and it must not keep or modify what it returns after
// returning it.
type Sources struct {
	// Proxy reports the PostgreSQL listener's counters (proxy.Server.Stats).
	Proxy func() ProxyStats
	// Raft reports this node's Raft view (consensus.Node.Status and Members).
	Raft func() RaftStatus
	// Cluster reports the agreed cluster state (clusterstate.Machine.State).
	Cluster func() ClusterState
	// Backends reports the health monitor's view of each PostgreSQL node
	// (health.Monitor.Snapshot) and which one is the agreed primary.
	Backends func() BackendsView
	// Routing reports this proxy's routing decision (routing.View).
	Routing func() RoutingStatus
	// FailoverSafety says whether an automatic failover would be safe now
	// (SPEC §4: reachable standbys and the hazards of health.FailoverHazards).
	FailoverSafety func() FailoverSafety
	// WritesWait says whether commits on the agreed primary wait for
	// synchronous standbys that are not streaming (health.CommitsWait).
	WritesWait func() WritesWait
	// Redundancy is the agreed primary's synchronous standbys in effect
	// (health.Redundancy of this proxy's latest probe of it).
	Redundancy func() Redundancy
	// History is the replicated failover history (clusterstate.State.History,
	// oldest first), which pgquorum_failovers_total counts.
	History func() []FailoverRecord
}

// ProxyStats are the PostgreSQL listener's counters. The fields mirror
// proxy.Stats one for one, so the wiring can convert with
// metrics.ProxyStats(server.Stats()). Current values go up and down; Total
// values only go up.
type ProxyStats struct {
	ClientConnections      int64  // client connections open now (in startup or relaying)
	TotalClientConnections uint64 // client connections accepted since start
	StartupConnections     int64  // client connections not authenticated yet, now
	RefusedConnections     uint64 // connections refused at once by the limits since start
	NamedPortals           int64  // named portals the sessions track now
	Sessions               int64  // sessions relaying now (startup and authentication done)
	TotalSessions          uint64 // sessions that reached the relay since start
	StartupFailures        uint64 // connections closed during startup with an error
	CancelRequests         uint64 // CancelRequest packets received
	CancelUnknown          uint64 // cancel requests whose key matched no session
	CancelRefused          uint64 // cancel requests not sent: the backend waited for synchronous replication
	CancelForwarded        uint64 // cancel requests forwarded to the proxy node that owns the session
	BytesFromClients       uint64 // relayed bytes read from clients
	BytesToClients         uint64 // relayed bytes written to clients
}

// RaftStatus is this node's view of Raft.
type RaftStatus struct {
	Term     uint64
	Leader   uint64 // the leader's node id; 0 = none known
	IsLeader bool
	Voter    bool   // this node votes in the applied configuration
	Commit   uint64 // commit index
	Applied  uint64 // applied index
	// LeaseValid: this node's routing lease is confirmed by a quorum now
	// (consensus.Node.LeaseValid(time.Now())).
	LeaseValid bool
	// Members is the membership as this node sees it.
	Members []RaftMember
	// Counts since the node started (consensus.Counters).
	LeaderChanges, LeaseExpiries, ProposalFailures uint64
	// PeerRefusals counts refused peer connections, frames and messages by
	// reason (consensus.RefusalReason names: a fixed set).
	PeerRefusals map[string]uint64
}

// RaftMember is one Raft member as this node sees it.
type RaftMember struct {
	ID        uint64
	Voter     bool // false = learner
	Reachable bool // heard from within an election timeout (a follower mostly hears only the leader)
}

// ClusterState is the part of the agreed cluster state that metrics show.
type ClusterState struct {
	Epoch   uint64   // fencing token; 0 = not bootstrapped
	Primary string   // the agreed primary; "" = none (proxies hold traffic)
	Nodes   []string // the PostgreSQL node names known to the cluster
	Paused  bool     // automatic failovers are paused
	// FailoverInProgress: a failover or switchover has begun and not finished.
	FailoverInProgress bool
	// FailoverBlocked: the failover in progress cannot continue safely
	// (SPEC §4 step 4). Why is free text, in GET /cluster, never a label.
	FailoverBlocked bool
	// Fenced are old primaries never routed to until they rejoin.
	Fenced []string
}

// BackendsView is the health monitor's view of every configured PostgreSQL
// node, plus the agreed primary that replication lag is measured against.
type BackendsView struct {
	// Primary is the agreed primary (ClusterState.Primary). Lag is reported
	// only while it is set and its latest probe answered.
	Primary string
	Nodes   []BackendStatus
}

// BackendStatus is one PostgreSQL node as this proxy's health monitor sees it
// (health.NodeStatus).
type BackendStatus struct {
	Name string // the configured backend name
	// Up is the failure detector's verdict (health.HealthUp). Down and
	// not-yet-known are both false.
	Up bool
	// InRecovery and Timeline are the role and timeline of the detector's last
	// accepted successful probe; Timeline 0 means never seen (both are then
	// left out of /metrics).
	InRecovery bool
	Timeline   uint32
	// LastProbeOK says whether the most recent probe answered;
	// LastProbeDuration is how long it took, connect included.
	LastProbeOK       bool
	LastProbeDuration time.Duration
	// WAL positions of the most recent probe, as byte offsets (health.LSN).
	// They are used only when LastProbeOK; 0 = not applicable or unknown.
	CurrentLSN uint64 // pg_current_wal_lsn(): primary only
	ReceiveLSN uint64 // pg_last_wal_receive_lsn(): standby
	ReplayLSN  uint64 // pg_last_wal_replay_lsn(): standby
}

// RoutingStatus is this proxy's routing decision.
type RoutingStatus struct {
	// Routing: a primary is agreed and this proxy's lease is confirmed, so it
	// forwards traffic (the same condition as GET /readyz).
	Routing bool
	// Target is the backend name routed to, when Routing.
	Target string
}

// FailoverSafety says whether an automatic failover away from the current
// primary could lose an acknowledged commit.
// Why not is free text, in GET /cluster (failover_safety), never a label.
type FailoverSafety struct {
	Safe bool
}

// WritesWait says whether commits on the agreed primary are held because
// fewer synchronous standbys stream than synchronous_standby_names needs (SPEC
// §4: pgquorum never switches synchronous replication off, so after losing
// every standby writes wait until one rejoins).
// Which setting is free text, in GET /cluster (writes_wait), never a label.
type WritesWait struct {
	Waiting bool
}
