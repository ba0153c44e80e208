package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/coordinator"
)

// Operator runs the operator's requests (*coordinator.Coordinator). Calls
// reach the Raft leader through proposals, so any proxy can serve them.
type Operator interface {
	Failover(ctx context.Context, req coordinator.FailoverRequest) (clusterstate.HistoryEntry, error)
	Switchover(ctx context.Context, to string) (clusterstate.HistoryEntry, error)
	SetPaused(ctx context.Context, paused bool) error
	Safety() coordinator.Safety
}

// SwitchoverRequest is the body of POST /switchover.
type SwitchoverRequest struct {
	To string `json:"to"`
}

// FailoverRequestBody is the body of POST /failover.
type FailoverRequestBody struct {
	To            string `json:"to,omitempty"`
	Force         bool   `json:"force,omitempty"`
	AllowDataLoss bool   `json:"allow_data_loss,omitempty"`
}

// operationTimeout bounds how long a switchover or failover call waits for the
// outcome; the operation itself goes on in the Raft log if the call times out.
const operationTimeout = 60 * time.Second

func (s *Server) history(w http.ResponseWriter, _ *http.Request) {
	h := s.State.State().History
	if h == nil {
		h = []clusterstate.HistoryEntry{}
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) switchover(w http.ResponseWriter, r *http.Request) {
	var req SwitchoverRequest
	if !decodeBody(w, r, &req, `{"to": "pg2"}`) {
		return
	}
	if req.To == "" {
		writeError(w, http.StatusBadRequest, `to: required (the standby to promote)`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), operationTimeout)
	defer cancel()
	s.logger().Info("switchover requested", "to", req.To, "remote", r.RemoteAddr)
	entry, err := s.Operator.Switchover(ctx, req.To)
	if err != nil {
		writeOperationError(w, "switchover", err)
		return
	}
	writeJSON(w, http.StatusOK, entry)
}

func (s *Server) failover(w http.ResponseWriter, r *http.Request) {
	var req FailoverRequestBody
	if !decodeBody(w, r, &req, `{"to": "pg2", "force": false, "allow_data_loss": false}`) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), operationTimeout)
	defer cancel()
	s.logger().Warn("failover requested", "to", req.To, "force", req.Force, "allow_data_loss", req.AllowDataLoss, "remote", r.RemoteAddr)
	entry, err := s.Operator.Failover(ctx, coordinator.FailoverRequest{To: req.To, Force: req.Force, AllowDataLoss: req.AllowDataLoss})
	if err != nil {
		writeOperationError(w, "failover", err)
		return
	}
	writeJSON(w, http.StatusOK, entry)
}

func (s *Server) pause(w http.ResponseWriter, r *http.Request)  { s.setPaused(w, r, true) }
func (s *Server) resume(w http.ResponseWriter, r *http.Request) { s.setPaused(w, r, false) }

func (s *Server) setPaused(w http.ResponseWriter, r *http.Request, paused bool) {
	ctx, cancel := context.WithTimeout(r.Context(), membershipTimeout)
	defer cancel()
	if err := s.Operator.SetPaused(ctx, paused); err != nil {
		writeOperationError(w, "pause", err)
		return
	}
	s.logger().Info("automatic failover paused", "paused", paused, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]bool{"paused": paused})
}

// replica answers GET /replica?lag=BYTES: 200 when this proxy's health view has
// at least one streaming standby whose receive lag is at most lag bytes (any
// lag when absent), for load balancers that send read-only traffic to replicas.
func (s *Server) replica(w http.ResponseWriter, r *http.Request) {
	maxLag := int64(-1)
	if q := r.URL.Query().Get("lag"); q != "" {
		v, err := strconv.ParseInt(q, 10, 64)
		if err != nil || v < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("lag: %q is not a number of bytes", q))
			return
		}
		maxLag = v
	}
	view := s.clusterView()
	var primaryLSN uint64
	for _, n := range view.Nodes {
		if n.Role == "primary" {
			if o, ok := latest(n.Observations); ok && o.Up {
				primaryLSN = o.ReceiveLSN
			}
		}
	}
	type replicaInfo struct {
		Name     string `json:"name"`
		Address  string `json:"address"`
		LagBytes int64  `json:"lag_bytes"`
	}
	var ok []replicaInfo
	for _, n := range view.Nodes {
		o, seen := latest(n.Observations)
		if n.Role != "standby" || !seen || !o.Up || !o.InRecovery {
			continue
		}
		lag := int64(primaryLSN) - int64(o.ReceiveLSN)
		if lag < 0 || primaryLSN == 0 {
			lag = 0
		}
		if maxLag >= 0 && (primaryLSN == 0 || lag > maxLag) {
			continue
		}
		ok = append(ok, replicaInfo{Name: n.Name, Address: n.Address, LagBytes: lag})
	}
	if len(ok) == 0 {
		writeError(w, http.StatusServiceUnavailable, "no streaming standby within the requested lag")
		return
	}
	writeJSON(w, http.StatusOK, ok)
}

// latest is the most recent observation by any proxy.
func latest(obs []clusterstate.Observation) (clusterstate.Observation, bool) {
	var best clusterstate.Observation
	for _, o := range obs {
		if o.At.After(best.At) {
			best = o
		}
	}
	return best, !best.At.IsZero()
}

// decodeBody decodes a small JSON body strictly; an empty body is allowed and
// leaves v zero. It answers 400 itself and returns false on a bad body.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, example string) bool {
	body := http.MaxBytesReader(w, r.Body, 64<<10)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error()+" (want "+example+")")
		return false
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	return true
}

// writeOperationError maps the coordinator's errors to status codes.
func writeOperationError(w http.ResponseWriter, what string, err error) {
	var outcome *coordinator.OutcomeError
	switch {
	case errors.Is(err, coordinator.ErrBadRequest):
		writeError(w, http.StatusBadRequest, what+": "+err.Error())
	case errors.As(err, &outcome), errors.Is(err, coordinator.ErrConflict):
		writeError(w, http.StatusConflict, what+": "+err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, what+": no outcome yet ("+err.Error()+"); it goes on in the background, watch GET /cluster")
	default:
		writeError(w, http.StatusServiceUnavailable, what+": "+err.Error())
	}
}
