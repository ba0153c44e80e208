package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// AddMemberRequest is the body of POST /members.
type AddMemberRequest struct {
	ID      uint64 `json:"id"`
	Addr    string `json:"addr"`    // the new member's Raft address
	Learner bool   `json:"learner"` // true: a non-voting sidecar
	// Force adds a voter that cannot be reached now. Without it, a voter is
	// added only if this node can open a TCP connection to Addr: an
	// unreachable voter raises the quorum without adding a member that can
	// acknowledge, and two of them can stop the cluster.
	Force bool `json:"force,omitempty"`
}

// reachTimeout bounds the connection attempt to a voter about to be added.
const reachTimeout = 3 * time.Second

// membershipTimeout bounds a membership change: it needs a Raft leader and a commit.
const membershipTimeout = 10 * time.Second

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	members, _, _ := s.memberViews(r.Context())
	writeJSON(w, http.StatusOK, members)
}

// membersAfterChange is the membership after a change, as this node sees it
// (the reachability of a member just added is not known yet anyway).
func (s *Server) membersAfterChange(r *http.Request) []MemberView {
	members, _, _ := s.memberViews(r.Context())
	return members
}

func (s *Server) addMember(w http.ResponseWriter, r *http.Request) {
	var req AddMemberRequest
	body := http.MaxBytesReader(w, r.Body, 64<<10)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error()+` (want {"id": N, "addr": "host:port", "learner": true})`)
		return
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return
	}
	if req.ID == 0 {
		writeError(w, http.StatusBadRequest, "id: required and must be non-zero")
		return
	}
	if _, _, err := net.SplitHostPort(req.Addr); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("addr: %q is not host:port", req.Addr))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), membershipTimeout)
	defer cancel()
	if !req.Learner && !req.Force && !s.isVoter(req.ID) {
		if err := s.checkReachable(ctx, req.ID, req.Addr); err != nil {
			writeError(w, http.StatusConflict, "add member: "+err.Error())
			return
		}
	}
	if err := s.Raft.AddMember(ctx, req.ID, req.Addr, req.Learner); err != nil {
		writeError(w, membershipErrorStatus(err), "add member: "+err.Error())
		return
	}
	s.logger().Info("member added", "id", req.ID, "addr", req.Addr, "learner", req.Learner)
	writeJSON(w, http.StatusOK, s.membersAfterChange(r))
}

func (s *Server) isVoter(id uint64) bool {
	for _, m := range s.Raft.Members() {
		if m.ID == id {
			return m.Voter
		}
	}
	return false
}

// checkReachable refuses a voter this node cannot reach: a learner member
// this node, the leader, has not heard from lately, or an address that does
// not accept a TCP connection.
func (s *Server) checkReachable(ctx context.Context, id uint64, addr string) error {
	leader := s.Raft.Status().IsLeader
	for _, m := range s.Raft.Members() {
		if m.ID == id && leader && !m.Reachable {
			return fmt.Errorf("learner %d has not been heard from by the leader lately: a voter that cannot acknowledge "+
				"raises the quorum without adding a member; start it (and let it catch up) first, or add it with --force (\"force\": true)", id)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, reachTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("member %d at %s is unreachable from proxy %d (%v): a voter that cannot acknowledge "+
			"raises the quorum without adding a member; start it first (best as a learner that catches up), or add it with --force (\"force\": true)", id, addr, s.NodeID, err)
	}
	_ = conn.Close()
	return nil
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("member id %q is not a positive integer", r.PathValue("id")))
		return
	}
	known := false
	for _, m := range s.Raft.Members() {
		known = known || m.ID == id
	}
	if !known {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no member with id %d", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), membershipTimeout)
	defer cancel()
	if err := s.Raft.RemoveMember(ctx, id); err != nil {
		writeError(w, membershipErrorStatus(err), "remove member: "+err.Error())
		return
	}
	s.logger().Info("member removed", "id", id)
	writeJSON(w, http.StatusOK, s.membersAfterChange(r))
}

// membershipErrorStatus maps a failed membership change to a status code:
// timeouts (no leader, no quorum) are 503, everything else 409.
func membershipErrorStatus(err error) int {
	if errors.Is(err, context.DeadlineExceeded) {
		return http.StatusServiceUnavailable
	}
	return http.StatusConflict
}
