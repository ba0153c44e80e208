package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/pgquorum/pgquorum/metrics"
)

// Data-path metrics
//
// The proxy reports what crosses it to metrics.Metrics (Config.Metrics; nil counts nothing):
//
//   - requests (a Query, or the messages up to a Sync) relayed, and transactions that ended
//     (each ReadyForQuery that says idle: an autocommit statement or the end of a transaction),
//     counted per batch by the relays;
//   - each request's latency, from the moment the client→backend relay wrote it to the moment
//     the backend→client relay read its ReadyForQuery. The send times of the requests in flight
//     are kept in a small ring (requestTimes): a client that pipelines more than its size has
//     the excess not measured, never mismeasured;
//   - per backend node, the client sessions whose backend is on it (counted when a session gets
//     a backend, uncounted when it moves away or ends) and how long the login took; failed
//     logins by reason;
//   - failed client authentications by reason.

// requestTimes is the ring of send times of the requests in flight, indexed by request number
// (session.syncsSent at send). Guarded by session.mu.
type requestTimes struct {
	seq [16]uint64
	at  [16]time.Time
}

// noteSentLocked counts the requests of a client batch (from, the number of the first, to n
// of them) and remembers when they were sent. s.mu is held.
func (s *session) noteSentLocked(from, n uint64) {
	m := s.srv.cfg.Metrics
	if m == nil || n == 0 {
		return
	}
	m.AddQueries(int(n))
	now := time.Now()
	ring := &s.requestTimes
	for seq := from; seq < from+n && seq-s.readyReceived < uint64(len(ring.seq)); seq++ {
		i := seq % uint64(len(ring.seq))
		ring.seq[i], ring.at[i] = seq+1, now // +1: a zero entry is never a request
	}
}

// noteAnsweredLocked observes the latency of the requests numbered from .. from+n-1 that the
// backend just answered, and counts the transactions that ended (idles of the answers said
// idle). s.mu is held.
func (s *session) noteAnsweredLocked(from, n, idles uint64) {
	m := s.srv.cfg.Metrics
	if m == nil || n == 0 {
		return
	}
	m.AddTransactions(int(idles))
	now := time.Now()
	ring := &s.requestTimes
	for seq := from; seq < from+n; seq++ {
		i := seq % uint64(len(ring.seq))
		if ring.seq[i] == seq+1 {
			m.QueryFinished(now.Sub(ring.at[i]))
			ring.seq[i] = 0
		}
	}
}

// setBackendLocked makes conn, on target, the session's backend, and counts the session on
// that node (and no longer on the one it had). loginTook is how long the login took. s.mu is
// held.
func (s *session) setBackendLocked(conn net.Conn, target Target, loginTook time.Duration) {
	s.uncountBackendLocked()
	s.backend, s.target = conn, target
	s.countedBackend = target.Name
	s.srv.cfg.Metrics.BackendConnected(target.Name, loginTook)
}

// uncountBackendLocked stops counting the session on its backend's node. s.mu is held.
func (s *session) uncountBackendLocked() {
	if s.countedBackend != "" {
		s.srv.cfg.Metrics.BackendSessionClosed(s.countedBackend)
		s.countedBackend = ""
	}
}

// connectFailure classifies a failed backend login for pgquorum_proxy_backend_connect_errors_total.
func connectFailure(err error) metrics.ConnectFailure {
	var ce *clientError
	var netErr net.Error
	var opErr *net.OpError
	switch {
	case errors.Is(err, errBackendTLS):
		return metrics.ConnectProtocol
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return metrics.ConnectTimeout
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return metrics.ConnectRefused
	case !errors.As(err, &ce):
		return metrics.ConnectOther
	}
	switch ce.Code {
	case codeInvalidPassword, codeInvalidAuthSpec:
		return metrics.ConnectAuth
	case codeAdminShutdown, codeCrashShutdown, codeCannotConnectNow:
		return metrics.ConnectNotAccepting
	case codeTooManyConnections:
		return metrics.ConnectTooMany
	case codeProtocolViolation:
		return metrics.ConnectProtocol
	}
	return metrics.ConnectOther
}

// authFailure classifies a failed client authentication for pgquorum_proxy_auth_failures_total;
// ok is false for what is not an authentication failure (the client went away).
func authFailure(err error) (reason metrics.AuthFailure, ok bool) {
	var ce *clientError
	switch {
	case errors.Is(err, errClientGone), errors.Is(err, errStartupDone):
		return "", false
	case errors.Is(err, os.ErrDeadlineExceeded):
		return metrics.AuthTimeout, true
	case !errors.As(err, &ce):
		return metrics.AuthOther, true
	}
	switch ce.Code {
	case codeInvalidPassword:
		return metrics.AuthBadPassword, true
	case codeProtocolViolation:
		return metrics.AuthProtocol, true
	case codeConnectionFailure, codeCannotConnectNow:
		return metrics.AuthLookup, true
	}
	return metrics.AuthOther, true
}
