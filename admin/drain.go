package admin

import (
	"net"
	"net/http"
	"time"
)

// Drainer stops this proxy serving clients without dropping them
// (*node.Node): /readyz turns 503, the proxy stops accepting after a delay,
// and each session ends at its next transaction boundary within a grace
// period. The Raft member and this API go on until the process stops.
type Drainer interface {
	// StartDrain begins draining in the background; calling it again
	// changes nothing.
	StartDrain() DrainInfo
}

// DrainInfo is the body of POST /drain.
type DrainInfo struct {
	Draining   bool      `json:"draining"`
	Since      time.Time `json:"since"`
	DrainDelay string    `json:"drain_delay"` // shutdown.drain_delay: /readyz is 503 while the proxy still accepts
	Grace      string    `json:"grace"`       // shutdown.grace: then sessions have this long to finish
}

// Readiness is what, besides routing, this proxy needs to be ready
// (*node.Node): it is not draining, and it can log in to the agreed primary.
type Readiness interface {
	// Ready says whether this proxy can serve clients now, and if not why;
	// it must answer quickly (no I/O).
	Ready() (ok bool, reason string)
}

// drain answers POST /drain: 202 with how the proxy drains.
func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	if s.Drainer == nil {
		writeError(w, http.StatusNotImplemented, "this node cannot drain")
		return
	}
	info := s.Drainer.StartDrain()
	s.logger().Warn("drain requested", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, info)
}

// UseListener makes Serve use l instead of a listener of its own (Listen).
func (s *Server) UseListener(l net.Listener) { s.listener = l }
