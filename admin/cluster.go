package admin

import (
	"net/http"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/coordinator"
	"github.com/pgquorum/pgquorum/health"
)

// ClusterView is the body of GET /cluster.
type ClusterView struct {
	ClusterName string       `json:"cluster_name"`
	NodeID      uint64       `json:"node_id"` // the proxy that answered
	Raft        RaftView     `json:"raft"`
	Members     []MemberView `json:"members"`
	// MembersSeenBy is the proxy whose view of the members' reachability
	// Members shows: the Raft leader's (asked by a follower), or the
	// answering proxy's own when the leader could not be asked
	// (MembersNote says why).
	MembersSeenBy uint64      `json:"members_seen_by"`
	MembersNote   string      `json:"members_note,omitempty"`
	Epoch         uint64      `json:"epoch"`
	Primary       string      `json:"primary"` // "" = none agreed
	Paused        bool        `json:"paused"`
	Fenced        []string    `json:"fenced,omitempty"`
	Routing       RoutingInfo `json:"routing"`
	Nodes         []NodeView  `json:"nodes"`
	// Failover is the failover or switchover in progress, if any; a blocked
	// one says why in blocked_reason.
	Failover *clusterstate.FailoverProgress `json:"failover,omitempty"`
	// FailoverSafety says whether an automatic failover would be safe if the
	// primary failed now, and why not.
	FailoverSafety coordinator.Safety `json:"failover_safety"`
	// ClusterVersion is the command version every voter understands; each
	// member's own is in Members (clusterstate/versions.go).
	ClusterVersion uint32 `json:"cluster_version"`
	// WritesWait, when set, says that commits on the primary wait for
	// synchronous standbys that are not streaming ("writes wait: no synchronous
	// standby ..."), as this proxy's latest probe of the primary sees it:
	// clients' writes hang, reads work (health.CommitsWait).
	WritesWait string `json:"writes_wait,omitempty"`
	// PrimaryProbe is the answering proxy's latest probe of the agreed
	// primary, which the nodes' WalSender fields come from; nil when it has
	// none (no primary agreed, or this proxy does not probe).
	PrimaryProbe *PrimaryProbeView `json:"primary_probe,omitempty"`
	// Redundancy is the agreed primary's synchronous standbys in effect
	// against those configured, from PrimaryProbe; nil without one.
	Redundancy *RedundancyView `json:"redundancy,omitempty"`
}

// RaftView is this proxy's view of the Raft cluster.
type RaftView struct {
	Leader          uint64    `json:"leader"` // 0 = none known
	Term            uint64    `json:"term"`
	Commit          uint64    `json:"commit"`
	Applied         uint64    `json:"applied"`
	IsLeader        bool      `json:"is_leader"`
	Voter           bool      `json:"voter"`
	LeaseValidUntil time.Time `json:"lease_valid_until,omitzero"`
}

// MemberView is one proxy of the Raft cluster.
type MemberView struct {
	ID        uint64 `json:"id"`
	Addr      string `json:"addr"`
	Voter     bool   `json:"voter"`
	Reachable bool   `json:"reachable"`
	Leader    bool   `json:"leader"`
	// MaxVersion is the highest command version the member reported it
	// understands; 0 = not reported yet.
	MaxVersion uint32 `json:"max_version,omitempty"`
	// LastContactMS is how long ago the proxy of ClusterView.MembersSeenBy
	// last heard from the member, in milliseconds; -1 never.
	LastContactMS int64 `json:"last_contact_ms"`
}

// RoutingInfo says whether this proxy routes, where, and if not, why.
type RoutingInfo struct {
	Routing bool   `json:"routing"`
	Primary string `json:"primary,omitempty"`
	Address string `json:"address,omitempty"`
	Epoch   uint64 `json:"epoch"`
	Reason  string `json:"reason,omitempty"`
}

// NodeView is one PostgreSQL node with the proxies' latest observations.
type NodeView struct {
	Name         string                     `json:"name"`
	Address      string                     `json:"address"`
	Role         string                     `json:"role"` // primary | standby | fenced | old primary (while its failover runs) | unknown
	Priority     int                        `json:"priority,omitempty"`
	Observations []clusterstate.Observation `json:"observations,omitempty"`
	// WalSender is this node's walsender on the agreed primary, from
	// PrimaryProbe; nil when the primary's probe lists none for it (it does
	// not stream) or there is no probe.
	WalSender *WalSenderView `json:"wal_sender,omitempty"`
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
}

// readyz is 200 while this proxy routes to an agreed primary and can serve
// clients there (Readiness: not draining, logins to the primary work): the
// readiness probe of Kubernetes. The body of a 503 says why.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	v := s.Routing.Current()
	if !v.Routing {
		writeError(w, http.StatusServiceUnavailable, "not ready: "+v.Reason)
		return
	}
	if s.Readiness != nil {
		if ok, reason := s.Readiness.Ready(); !ok {
			writeError(w, http.StatusServiceUnavailable, "not ready: "+reason)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "primary": v.Target.Name, "epoch": v.Epoch})
}

// primary is 200 with the agreed primary while this proxy routes to it, else 503.
func (s *Server) primary(w http.ResponseWriter, _ *http.Request) {
	v := s.Routing.Current()
	if !v.Routing {
		writeJSON(w, http.StatusServiceUnavailable, RoutingInfo{Epoch: v.Epoch, Reason: v.Reason})
		return
	}
	writeJSON(w, http.StatusOK, routingInfo(v.Routing, v.Target.Name, v.Target.Address, v.Epoch, ""))
}

func routingInfo(ok bool, name, addr string, epoch uint64, reason string) RoutingInfo {
	return RoutingInfo{Routing: ok, Primary: name, Address: addr, Epoch: epoch, Reason: reason}
}

func (s *Server) cluster(w http.ResponseWriter, r *http.Request) {
	view := s.clusterView()
	view.Members, view.MembersSeenBy, view.MembersNote = s.memberViews(r.Context())
	writeJSON(w, http.StatusOK, view)
}

// clusterView is GET /cluster without the members (memberViews may ask the
// leader).
func (s *Server) clusterView() ClusterView {
	st := s.State.State()
	status := s.Raft.Status()
	v := s.Routing.Current()
	view := ClusterView{
		ClusterName: s.ClusterName,
		NodeID:      s.NodeID,
		Raft: RaftView{Leader: status.Leader, Term: status.Term, Commit: status.Commit, Applied: status.Applied,
			IsLeader: status.IsLeader, Voter: status.Voter, LeaseValidUntil: status.LeaseValidUntil},
		Epoch:    st.Epoch,
		Primary:  st.Primary,
		Paused:   st.Paused,
		Fenced:   st.Fenced,
		Routing:  routingInfo(v.Routing, v.Target.Name, v.Target.Address, v.Epoch, v.Reason),
		Failover: st.Failover,

		ClusterVersion: st.AgreedVersion(),
	}
	if s.Operator != nil {
		view.FailoverSafety = s.Operator.Safety()
	}
	senders := map[string]WalSenderView{}
	if probe, ok := s.primaryProbe(st.Primary); ok {
		view.PrimaryProbe = &PrimaryProbeView{At: probe.At, Reachable: probe.Reachable, Err: probe.Err}
		senders = walSenders(probe)
		_, view.WritesWait = health.CommitsWait(probe)
		view.Redundancy = s.redundancyView(probe)
	}
	for _, b := range s.Backends {
		n := NodeView{Name: b.Name, Address: b.Address, Role: "standby"}
		if ws, ok := senders[b.Name]; ok {
			n.WalSender = &ws
		}
		switch {
		case b.Name == st.Primary:
			n.Role = "primary"
		case st.IsFenced(b.Name):
			n.Role = "fenced"
		case st.Failover != nil && b.Name == st.Failover.OldPrimary:
			n.Role = "old primary" // fenced once the failover completes
		case !st.Bootstrapped():
			n.Role = "unknown"
		}
		if ns, ok := st.Node(b.Name); ok {
			n.Priority = ns.Priority
			n.Observations = ns.Observations
		}
		view.Nodes = append(view.Nodes, n)
	}
	return view
}
