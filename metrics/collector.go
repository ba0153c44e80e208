package metrics

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// The families read from Sources on scrape, grouped by source.
var (
	proxyDescs = struct {
		connectionsOpen, connectionsAccepted, sessionsActive, sessionsStarted,
		startupFailures, cancelRequests, cancelUnknown, cancelRefused, cancelForwarded, receivedBytes, sentBytes,
		connectionsStarting, connectionsRefused, namedPortals *prometheus.Desc
	}{
		connectionsOpen:     desc("proxy_client_connections_open", "Client connections open now (in startup or relaying)."),
		connectionsAccepted: desc("proxy_client_connections_accepted_total", "Client connections accepted since start."),
		sessionsActive:      desc("proxy_sessions_active", "Client sessions relaying now (startup and authentication done)."),
		sessionsStarted:     desc("proxy_sessions_started_total", "Client sessions that reached the relay since start."),
		startupFailures:     desc("proxy_startup_failures_total", "Client connections closed during startup with an error (bad input, authentication, backend)."),
		cancelRequests:      desc("proxy_cancel_requests_total", "CancelRequest packets received."),
		cancelUnknown:       desc("proxy_cancel_requests_unknown_total", "Cancel requests whose key matched no session of this proxy (not logged one by one)."),
		cancelRefused:       desc("proxy_cancel_requests_refused_total", "Cancel requests not sent because the backend waited for synchronous replication of its commit."),
		cancelForwarded:     desc("proxy_cancel_requests_forwarded_total", "Cancel requests forwarded to the proxy node that owns the session."),
		receivedBytes:       desc("proxy_client_received_bytes_total", "Bytes read from clients and relayed."),
		sentBytes:           desc("proxy_client_sent_bytes_total", "Bytes relayed and written to clients."),
		connectionsStarting: desc("proxy_client_connections_starting", "Client connections not authenticated yet (bounded by limits.max_startup_connections)."),
		connectionsRefused:  desc("proxy_client_connections_refused_total", "Client connections refused at once by limits.max_client_connections or limits.max_startup_connections."),
		namedPortals:        desc("proxy_named_portals", "Named portals the proxy tracks for its sessions now (forgotten when PostgreSQL forgets them)."),
	}

	raftDescs = struct {
		term, leaderID, isLeader, isVoter, commitIndex, appliedIndex,
		members, reachableMembers, leaseValid,
		leaderChanges, leaseExpiries, proposalFailures, peerRefusals *prometheus.Desc
	}{
		term:             desc("raft_term", "Current Raft term."),
		leaderID:         desc("raft_leader_id", "Node id of the Raft leader this node knows of; 0 = none."),
		isLeader:         desc("raft_is_leader", "1 if this node is the Raft leader."),
		isVoter:          desc("raft_is_voter", "1 if this node votes in the applied Raft configuration (0 = learner)."),
		commitIndex:      desc("raft_commit_index", "Raft commit index."),
		appliedIndex:     desc("raft_applied_index", "Raft index applied to the cluster state."),
		members:          desc("raft_members", "Raft members as this node sees them, by role (voter, learner).", "role"),
		reachableMembers: desc("raft_reachable_members", "Raft members this node heard from within an election timeout, by role (a follower mostly hears only the leader).", "role"),
		leaseValid:       desc("raft_lease_valid", "1 if this node's routing lease is confirmed by a Raft quorum."),
		leaderChanges:    desc("raft_leader_changes_total", "Times this node learned of a new Raft leader (elections), the first one after start included."),
		leaseExpiries:    desc("raft_lease_expiries_total", "Times this node's routing lease ran out without a renewal (cut off from the quorum): the proxy stopped forwarding."),
		peerRefusals:     desc("raft_peer_refusals_total", "Connections, frames and messages from Raft peers that this node refused, by reason (connection_limit, tls_handshake, handshake, malformed_frame, forged_sender, not_allowed).", "reason"),
		proposalFailures: desc("raft_proposal_failures_total", "Raft proposals of this node that failed: not proposed (no leader, dropped), outcome unknown (timed out) or refused."),
	}

	clusterDescs = struct {
		epoch, primary, paused, failoverInProgress, failoverBlocked, fenced *prometheus.Desc
	}{
		epoch:              desc("cluster_epoch", "Epoch (fencing token) of the agreed cluster state; 0 = not bootstrapped."),
		primary:            desc("cluster_primary", "1 for the agreed primary, 0 for every other PostgreSQL node; all 0 while no primary is agreed.", "node"),
		paused:             desc("cluster_paused", "1 if automatic failovers are paused."),
		failoverInProgress: desc("cluster_failover_in_progress", "1 while a failover or switchover is in progress."),
		failoverBlocked:    desc("cluster_failover_blocked", "1 while the failover in progress is blocked (too few standbys reachable); GET /cluster and pgquorum list say why."),
		fenced:             desc("cluster_fenced", "1 for an old primary that is fenced until it rejoins.", "node"),
	}

	backendDescs = struct {
		up, inRecovery, timeline, probeSuccess, probeDuration,
		currentLSN, receiveLSN, replayLSN, receiveLag, replayLag *prometheus.Desc
	}{
		up:            desc("backend_up", "1 if this proxy's failure detector sees the PostgreSQL node up.", "node"),
		inRecovery:    desc("backend_in_recovery", "1 if the PostgreSQL node was a standby at its last successful probe, 0 if a primary.", "node"),
		timeline:      desc("backend_timeline", "Timeline of the PostgreSQL node at its last successful probe.", "node"),
		probeSuccess:  desc("backend_last_probe_success", "1 if the most recent health probe of the PostgreSQL node answered.", "node"),
		probeDuration: desc("backend_last_probe_duration_seconds", "Duration of the most recent health probe, connect included.", "node"),
		currentLSN:    desc("backend_current_lsn_bytes", "pg_current_wal_lsn() of a primary as a byte position.", "node"),
		receiveLSN:    desc("backend_receive_lsn_bytes", "pg_last_wal_receive_lsn() of a standby as a byte position.", "node"),
		replayLSN:     desc("backend_replay_lsn_bytes", "pg_last_wal_replay_lsn() of a standby as a byte position.", "node"),
		receiveLag:    desc("backend_receive_lag_bytes", "WAL the standby has not yet received: the agreed primary's current LSN minus the standby's receive LSN (probes up to one health interval apart).", "node"),
		replayLag:     desc("backend_replay_lag_bytes", "WAL the standby has not yet replayed: the agreed primary's current LSN minus the standby's replay LSN (probes up to one health interval apart).", "node"),
	}

	routingDescs = struct{ ready, target *prometheus.Desc }{
		ready:  desc("routing_ready", "1 if this proxy forwards traffic: a primary is agreed and its lease is confirmed (as GET /readyz)."),
		target: desc("routing_target", "1 for the PostgreSQL node this proxy forwards traffic to.", "node"),
	}

	failoverSafeDesc = desc("failover_safe", "1 if an automatic failover would be safe now; when 0, GET /cluster (failover_safety) says why not.")

	writesWaitDesc = desc("writes_wait_for_standby", "1 while commits on the agreed primary wait for synchronous standbys that are not streaming (writes hang, reads work); GET /cluster (writes_wait) and pgquorum list say which setting.")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}

// sourceCollector reads Sources on every scrape. It holds no state of its
// own; Collect may run concurrently for concurrent scrapes.
type sourceCollector struct {
	sources Sources
}

// descs lists the families of the non-nil sources.
func (c *sourceCollector) descs() []*prometheus.Desc {
	var d []*prometheus.Desc
	s := c.sources
	if s.Proxy != nil {
		p := proxyDescs
		d = append(d, p.connectionsOpen, p.connectionsAccepted, p.sessionsActive, p.sessionsStarted,
			p.startupFailures, p.cancelRequests, p.cancelUnknown, p.cancelRefused, p.cancelForwarded, p.receivedBytes, p.sentBytes,
			p.connectionsStarting, p.connectionsRefused, p.namedPortals)
	}
	if s.Raft != nil {
		r := raftDescs
		d = append(d, r.term, r.leaderID, r.isLeader, r.isVoter, r.commitIndex, r.appliedIndex,
			r.members, r.reachableMembers, r.leaseValid, r.leaderChanges, r.leaseExpiries, r.proposalFailures)
	}
	if s.Cluster != nil {
		cl := clusterDescs
		d = append(d, cl.epoch, cl.primary, cl.paused, cl.failoverInProgress, cl.failoverBlocked, cl.fenced)
	}
	if s.Backends != nil {
		b := backendDescs
		d = append(d, b.up, b.inRecovery, b.timeline, b.probeSuccess, b.probeDuration,
			b.currentLSN, b.receiveLSN, b.replayLSN, b.receiveLag, b.replayLag)
	}
	if s.Routing != nil {
		d = append(d, routingDescs.ready, routingDescs.target)
	}
	if s.WritesWait != nil {
		d = append(d, writesWaitDesc)
	}
	if s.FailoverSafety != nil {
		d = append(d, failoverSafeDesc)
	}
	return d
}

// Describe implements prometheus.Collector.
func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one call of each source.
func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.sources
	if s.Proxy != nil {
		collectProxy(ch, s.Proxy())
	}
	if s.Raft != nil {
		collectRaft(ch, s.Raft())
	}
	if s.Cluster != nil {
		collectCluster(ch, s.Cluster())
	}
	if s.Backends != nil {
		collectBackends(ch, s.Backends())
	}
	if s.Routing != nil {
		collectRouting(ch, s.Routing())
	}
	if s.FailoverSafety != nil {
		f := s.FailoverSafety()
		gauge(ch, failoverSafeDesc, boolValue(f.Safe))
	}
	if s.WritesWait != nil {
		w := s.WritesWait()
		gauge(ch, writesWaitDesc, boolValue(w.Waiting))
	}
}

func collectProxy(ch chan<- prometheus.Metric, p ProxyStats) {
	d := proxyDescs
	gauge(ch, d.connectionsOpen, float64(p.ClientConnections))
	counter(ch, d.connectionsAccepted, float64(p.TotalClientConnections))
	gauge(ch, d.sessionsActive, float64(p.Sessions))
	counter(ch, d.sessionsStarted, float64(p.TotalSessions))
	counter(ch, d.startupFailures, float64(p.StartupFailures))
	counter(ch, d.cancelRequests, float64(p.CancelRequests))
	counter(ch, d.cancelUnknown, float64(p.CancelUnknown))
	counter(ch, d.cancelRefused, float64(p.CancelRefused))
	counter(ch, d.cancelForwarded, float64(p.CancelForwarded))
	counter(ch, d.receivedBytes, float64(p.BytesFromClients))
	counter(ch, d.sentBytes, float64(p.BytesToClients))
	gauge(ch, d.connectionsStarting, float64(p.StartupConnections))
	counter(ch, d.connectionsRefused, float64(p.RefusedConnections))
	gauge(ch, d.namedPortals, float64(p.NamedPortals))
}

func collectRaft(ch chan<- prometheus.Metric, r RaftStatus) {
	d := raftDescs
	gauge(ch, d.term, float64(r.Term))
	gauge(ch, d.leaderID, float64(r.Leader))
	gauge(ch, d.isLeader, boolValue(r.IsLeader))
	gauge(ch, d.isVoter, boolValue(r.Voter))
	gauge(ch, d.commitIndex, float64(r.Commit))
	gauge(ch, d.appliedIndex, float64(r.Applied))
	gauge(ch, d.leaseValid, boolValue(r.LeaseValid))
	counter(ch, d.leaderChanges, float64(r.LeaderChanges))
	counter(ch, d.leaseExpiries, float64(r.LeaseExpiries))
	counter(ch, d.proposalFailures, float64(r.ProposalFailures))
	for _, reason := range slices.Sorted(maps.Keys(r.PeerRefusals)) {
		counter(ch, d.peerRefusals, float64(r.PeerRefusals[reason]), reason)
	}
	var voters, learners, reachableVoters, reachableLearners int
	seen := map[uint64]bool{}
	for _, m := range r.Members {
		if seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		switch {
		case m.Voter:
			voters++
			if m.Reachable {
				reachableVoters++
			}
		default:
			learners++
			if m.Reachable {
				reachableLearners++
			}
		}
	}
	gauge(ch, d.members, float64(voters), "voter")
	gauge(ch, d.members, float64(learners), "learner")
	gauge(ch, d.reachableMembers, float64(reachableVoters), "voter")
	gauge(ch, d.reachableMembers, float64(reachableLearners), "learner")
}

func collectCluster(ch chan<- prometheus.Metric, s ClusterState) {
	d := clusterDescs
	gauge(ch, d.epoch, float64(s.Epoch))
	gauge(ch, d.paused, boolValue(s.Paused))
	gauge(ch, d.failoverInProgress, boolValue(s.FailoverInProgress))
	gauge(ch, d.failoverBlocked, boolValue(s.FailoverBlocked))

	// Every known node gets a 0/1 series; the primary and fenced nodes are
	// known even if Nodes misses them.
	fenced := map[string]bool{}
	for _, f := range s.Fenced {
		fenced[f] = true
	}
	nodes := uniqueNames(s.Nodes, append([]string{s.Primary}, s.Fenced...)...)
	for _, n := range nodes {
		gauge(ch, d.primary, boolValue(n == s.Primary), labelValue(n))
		gauge(ch, d.fenced, boolValue(fenced[n]), labelValue(n))
	}
}

func collectBackends(ch chan<- prometheus.Metric, v BackendsView) {
	d := backendDescs
	byName := map[string]BackendStatus{}
	for _, b := range v.Nodes {
		if _, dup := byName[b.Name]; dup || b.Name == "" {
			continue
		}
		byName[b.Name] = b
	}
	// The reference for lag: the agreed primary's current LSN, if its latest
	// probe answered and it reports one.
	var primaryLSN uint64
	if p, ok := byName[v.Primary]; ok && p.LastProbeOK {
		primaryLSN = p.CurrentLSN
	}
	for _, name := range uniqueNames(nameList(v.Nodes)) {
		b := byName[name]
		node := labelValue(name)
		gauge(ch, d.up, boolValue(b.Up), node)
		if b.Timeline != 0 {
			gauge(ch, d.inRecovery, boolValue(b.InRecovery), node)
			gauge(ch, d.timeline, float64(b.Timeline), node)
		}
		gauge(ch, d.probeSuccess, boolValue(b.LastProbeOK), node)
		gauge(ch, d.probeDuration, seconds(b.LastProbeDuration), node)
		if !b.LastProbeOK {
			continue
		}
		if b.CurrentLSN != 0 {
			gauge(ch, d.currentLSN, float64(b.CurrentLSN), node)
		}
		if b.ReceiveLSN != 0 {
			gauge(ch, d.receiveLSN, float64(b.ReceiveLSN), node)
		}
		if b.ReplayLSN != 0 {
			gauge(ch, d.replayLSN, float64(b.ReplayLSN), node)
		}
		if primaryLSN == 0 || name == v.Primary {
			continue
		}
		if b.ReceiveLSN != 0 {
			gauge(ch, d.receiveLag, lagBytes(primaryLSN, b.ReceiveLSN), node)
		}
		if b.ReplayLSN != 0 {
			gauge(ch, d.replayLag, lagBytes(primaryLSN, b.ReplayLSN), node)
		}
	}
}

func collectRouting(ch chan<- prometheus.Metric, r RoutingStatus) {
	gauge(ch, routingDescs.ready, boolValue(r.Routing))
	if r.Routing && r.Target != "" {
		gauge(ch, routingDescs.target, 1, labelValue(r.Target))
	}
}

// lagBytes is how far behind position is from the primary's. A standby probed
// after the primary can be ahead of the primary's (older) reading: that is no
// lag, not a negative one.
func lagBytes(primary, position uint64) float64 {
	if position >= primary {
		return 0
	}
	return float64(primary - position)
}

// uniqueNames returns the non-empty names of lists in order of first
// appearance, each once.
func uniqueNames(first []string, more ...string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range append(append([]string(nil), first...), more...) {
		if n == "" || seen[n] {
			continue
		}
		seen[n] = true
		out = append(out, n)
	}
	return out
}

func nameList(nodes []BackendStatus) []string {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return names
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	constMetric(ch, d, prometheus.GaugeValue, v, labels)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	constMetric(ch, d, prometheus.CounterValue, v, labels)
}

// constMetric sends one sample, or an invalid metric (reported by the
// registry as a scrape error, the rest of /metrics still served) if the
// sample cannot be built. It never panics.
func constMetric(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		m = prometheus.NewInvalidMetric(d, err)
	}
	ch <- m
}
