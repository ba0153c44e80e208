package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// This file serves POST /rejoin/{node}, the last step of `pgquorum rejoin`
// (SPEC §4 step 9): after the old primary was rewound and started as a standby,
// this proxy checks with its own health probes that the node streams from the
// agreed primary, and only then proposes clusterstate.Unfence through Raft. It
// never trusts the caller's word that the node streams.

// HealthView is this proxy's latest probes of the PostgreSQL nodes (*health.Monitor).
type HealthView interface {
	Latest() map[string]health.Probe
}

// Proposer proposes a command through Raft and returns the state machine's
// result once the entry is applied on this proxy (*consensus.Node).
type Proposer interface {
	Propose(ctx context.Context, data []byte) ([]byte, error)
}

// RejoinRequest is the optional JSON body of POST /rejoin/{node}.
type RejoinRequest struct {
	// CheckOnly asks only whether the call would be accepted: the token (by the
	// time the handler runs it was checked) and the node. Nothing is verified
	// against the health probes and nothing changes. `pgquorum rejoin` and the
	// agent ask this before they stop or rewind anything.
	CheckOnly bool `json:"check_only,omitempty"`
}

// RejoinResult is the body of a successful POST /rejoin/{node}.
type RejoinResult struct {
	Node    string `json:"node"`
	Primary string `json:"primary"`
	Epoch   uint64 `json:"epoch"`
	// Unfenced is true when this call lifted the fence; false when the node was
	// not fenced (nothing to do).
	Unfenced bool   `json:"unfenced"`
	Detail   string `json:"detail"`
}

// rejoinVerifyTimeout bounds how long POST /rejoin waits for probes, taken
// after the request arrived, that show the node streaming.
const rejoinVerifyTimeout = 10 * time.Second

// rejoinPoll is how often POST /rejoin looks at the health view while waiting.
const rejoinPoll = 100 * time.Millisecond

// rejoin returns the handler of POST /rejoin/{node}. Answers: 200 unfenced (or
// was not fenced, or a check_only request that would be accepted), 400 the node
// is the primary or the body is not a RejoinRequest, 404 unknown node, 409 no
// agreed primary or the node is not seen streaming from it (retry later), 503
// no health view or no Raft leader.
func (s *Server) rejoin(healthView HealthView, raft Proposer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("node")
		if _, ok := s.backendAddress(name); !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("unknown node %q (configured: %s)", name, strings.Join(s.backendNames(), ", ")))
			return
		}
		var req RejoinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "the body must be empty or a JSON object like {\"check_only\": true}: "+err.Error())
			return
		}
		if req.CheckOnly {
			st := s.State.State()
			writeJSON(w, http.StatusOK, RejoinResult{Node: name, Primary: st.Primary, Epoch: st.Epoch,
				Detail: fmt.Sprintf("check only: the call is accepted; %s is fenced: %v", name, st.IsFenced(name))})
			return
		}
		if healthView == nil || raft == nil {
			writeError(w, http.StatusServiceUnavailable, "this proxy has no health monitor or Raft member to verify and unfence a node")
			return
		}
		st := s.State.State()
		switch {
		case !st.Bootstrapped():
			writeError(w, http.StatusConflict, "the cluster is not bootstrapped yet")
			return
		case st.Primary == "":
			writeError(w, http.StatusConflict, "no primary is agreed (a failover is in progress); retry once it completes")
			return
		case name == st.Primary:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s is the agreed primary", name))
			return
		case !st.IsFenced(name):
			writeJSON(w, http.StatusOK, RejoinResult{Node: name, Primary: st.Primary, Epoch: st.Epoch, Detail: name + " is not fenced"})
			return
		}
		primaryAddress, ok := s.backendAddress(st.Primary)
		if !ok {
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("the agreed primary %s is not a configured backend of this proxy", st.Primary))
			return
		}

		ctx, cancel := context.WithTimeout(r.Context(), rejoinVerifyTimeout)
		defer cancel()
		if why := waitStreaming(ctx, healthView, name, st.Primary, primaryAddress, time.Now()); why != "" {
			writeError(w, http.StatusConflict, fmt.Sprintf("not unfencing %s: proxy %d does not see it streaming from the primary %s: %s",
				name, s.NodeID, st.Primary, why))
			return
		}
		if now := s.State.State(); now.Primary != st.Primary || now.Epoch != st.Epoch {
			writeError(w, http.StatusConflict, fmt.Sprintf("not unfencing %s: the primary changed from %s (epoch %d) to %q (epoch %d) meanwhile",
				name, st.Primary, st.Epoch, now.Primary, now.Epoch))
			return
		}

		res, err := proposeUnfence(r.Context(), raft, name)
		if err != nil {
			status := http.StatusServiceUnavailable
			if errors.Is(err, context.DeadlineExceeded) {
				status = http.StatusGatewayTimeout
			}
			writeError(w, status, fmt.Sprintf("unfence %s: %v", name, err))
			return
		}
		switch res.Code {
		case clusterstate.Applied:
			s.logger().Info("node unfenced after rejoin: it streams from the primary", "node", name, "primary", st.Primary,
				"epoch", res.Epoch, "remote", r.RemoteAddr)
			writeJSON(w, http.StatusOK, RejoinResult{Node: name, Primary: st.Primary, Epoch: res.Epoch, Unfenced: true, Detail: res.Reason})
		case clusterstate.Duplicate:
			writeJSON(w, http.StatusOK, RejoinResult{Node: name, Primary: st.Primary, Epoch: res.Epoch, Detail: res.Reason})
		default:
			writeError(w, http.StatusConflict, fmt.Sprintf("unfence %s: %s", name, res))
		}
	}
}

// proposeUnfence proposes Unfence{node} and returns its result.
func proposeUnfence(ctx context.Context, raft Proposer, node string) (clusterstate.Result, error) {
	data, err := clusterstate.Encode(clusterstate.Command{Unfence: &clusterstate.Unfence{Node: node}})
	if err != nil {
		return clusterstate.Result{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, membershipTimeout)
	defer cancel()
	out, err := raft.Propose(ctx, data)
	if err != nil {
		return clusterstate.Result{}, fmt.Errorf("propose: %w", err)
	}
	return clusterstate.DecodeResult(out)
}

// waitStreaming polls the health view until streamingEvidence holds for probes
// taken at or after since, or ctx ends. It returns "" on success, else the last
// reason why not.
func waitStreaming(ctx context.Context, healthView HealthView, node, primary, primaryAddress string, since time.Time) string {
	ticker := time.NewTicker(rejoinPoll)
	defer ticker.Stop()
	for {
		why := streamingEvidence(healthView.Latest(), node, primary, primaryAddress, since)
		if why == "" {
			return ""
		}
		select {
		case <-ctx.Done():
			return why
		case <-ticker.C:
		}
	}
}

// streamingEvidence checks that probes taken at or after since show node as a
// standby of primary: the primary answers as a primary and lists node streaming
// in pg_stat_replication; node answers in recovery, on the primary's timeline,
// and its WAL receiver (when the probe can see it) streams from primaryAddress.
// It returns "" when all of that holds, else what does not.
func streamingEvidence(probes map[string]health.Probe, node, primary, primaryAddress string, since time.Time) string {
	p, ok := probes[primary]
	switch {
	case !ok || p.At.Before(since):
		return "waiting for a fresh probe of the primary " + primary
	case !p.Reachable:
		return fmt.Sprintf("the primary %s does not answer probes: %s", primary, p.Err)
	case p.InRecovery:
		return fmt.Sprintf("the primary %s is in recovery", primary)
	}
	state := "absent"
	for _, rep := range p.Replication {
		if rep.ApplicationName == node {
			state = rep.State
			if state == "streaming" {
				break
			}
		}
	}
	if state != "streaming" {
		return fmt.Sprintf("the primary's pg_stat_replication has no streaming walsender for %s (%s)", node, state)
	}
	n, ok := probes[node]
	switch {
	case !ok || n.At.Before(since):
		return "waiting for a fresh probe of " + node
	case !n.Reachable:
		return fmt.Sprintf("%s does not answer probes: %s", node, n.Err)
	case !n.InRecovery:
		return fmt.Sprintf("%s is not in recovery (not a standby)", node)
	case p.Timeline != 0 && n.Timeline != 0 && n.Timeline != p.Timeline:
		return fmt.Sprintf("%s is on timeline %d, the primary on %d", node, n.Timeline, p.Timeline)
	}
	if wr := n.WalReceiver; wr != nil {
		host, port, err := net.SplitHostPort(primaryAddress)
		if err != nil {
			return fmt.Sprintf("bad primary address %q: %v", primaryAddress, err)
		}
		if wr.Status != "streaming" {
			return fmt.Sprintf("the WAL receiver of %s is %s", node, wr.Status)
		}
		if wr.SenderHost != host || strconv.Itoa(wr.SenderPort) != port {
			return fmt.Sprintf("%s streams from %s, not from the primary at %s", node,
				net.JoinHostPort(wr.SenderHost, strconv.Itoa(wr.SenderPort)), primaryAddress)
		}
	}
	return ""
}

func (s *Server) backendAddress(name string) (string, bool) {
	for _, b := range s.Backends {
		if b.Name == name {
			return b.Address, true
		}
	}
	return "", false
}

func (s *Server) backendNames() []string {
	names := make([]string, len(s.Backends))
	for i, b := range s.Backends {
		names[i] = b.Name
	}
	return names
}

// Rejoin calls POST /rejoin/{node}: the API checks that node streams from the
// agreed primary and lifts its fence (with req.CheckOnly, it only says whether
// it would accept the call).
func (c *Client) Rejoin(ctx context.Context, node string, req RejoinRequest) (RejoinResult, error) {
	var v RejoinResult
	return v, c.do(ctx, http.MethodPost, "/rejoin/"+url.PathEscape(node), req, &v)
}
