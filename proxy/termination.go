package proxy

import (
	"context"
	"time"
)

// A backend ended by its server (SPEC §5, §6)
//
// PostgreSQL ends a session with FATAL 57P01 (admin_shutdown: pg_terminate_backend, or a
// smart/fast shutdown), 57P02 (crash_shutdown: another backend crashed) or 57P03
// (cannot_connect_now), and then closes the connection. The same code means two different
// things for a client of the proxy:
//
//   - the server is going away (shutting down, crashed) or is no longer the primary (a
//     switchover ends the old primary's sessions): the session is moved to the new primary as
//     if the connection had failed (loss.go), and a request the old primary provably did not
//     run is retried there (retry.go);
//   - a DBA or the application ended this one session on the healthy primary
//     (pg_terminate_backend, a pool's health check that kills a runaway query): the client
//     gets the FATAL and its connection is closed, exactly as when connected directly, so
//     the DBA's kill works and pools notice.
//
// Two facts tell them apart, both gathered after the FATAL arrived:
//
//  1. the route confirmed by a Raft quorum (RouteConfirmer): the coordinator commits "no
//     primary" before it ends the old primary's sessions in a switchover, so a route confirmed
//     after the FATAL that still names this backend means no failover or switchover was begun;
//  2. a fresh login to the same server with the session's own credentials: a server that
//     shuts down or recovers from a crash refuses it (57P01/57P02/57P03, or the connection
//     fails); a healthy one accepts it.
//
// idle_session_timeout (57P05) and idle_in_transaction_session_timeout (25P03) are never
// mistaken for a server going away: they are relayed as they come, and the session closes.

// terminationFacts is what decides what a FATAL 57P0x from the backend means.
type terminationFacts struct {
	routeNamesBackend bool // the confirmed route still sends traffic to this backend
	serverAccepts     bool // a fresh login to the backend's server was accepted (or refused for a reason of its own)
}

// terminationVerdict says what to do with a session whose backend was ended by its server.
type terminationVerdict uint8

const (
	terminationMove    terminationVerdict = iota + 1 // the server is going away or demoted: move (loss.go)
	terminationDeliver                               // the healthy primary ended this session: tell the client, close
)

// decideTermination returns the verdict for a backend its server ended. It is a pure function
// of the facts.
func decideTermination(f terminationFacts) terminationVerdict {
	if f.routeNamesBackend && f.serverAccepts {
		return terminationDeliver
	}
	return terminationMove
}

// serverLoginTimeout bounds the fresh login that checks whether a server still accepts
// sessions.
const serverLoginTimeout = 3 * time.Second

// terminationFactsFor gathers the facts about target, whose server just ended the session's
// backend. It blocks for at most confirmTimeout + serverLoginTimeout.
func (s *session) terminationFactsFor(target Target) terminationFacts {
	route := s.srv.confirmedRoute(s.ctx)
	f := terminationFacts{routeNamesBackend: route.allows(target)}
	if f.routeNamesBackend {
		f.serverAccepts = s.serverAcceptsLogins(target)
	}
	return f
}

// serverAcceptsLogins reports whether target's server accepts a new session now: a fresh login
// with the session's credentials succeeds, or is refused for a reason that is not the server
// going away (authentication, too many connections, ...).
func (s *session) serverAcceptsLogins(target Target) bool {
	ctx, cancel := context.WithTimeout(s.ctx, serverLoginTimeout)
	defer cancel()
	conn, _, err := s.loginBackend(ctx, target)
	if err != nil {
		return !retryableLoginError(err)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.Write([]byte{'X', 0, 0, 0, 4})
	_ = conn.Close()
	return true
}

// routeMovedAway reports whether routing no longer names the session's backend, as a quorum
// confirms it now: a failover or switchover is in progress or done, or this proxy's lease
// expired. A request the backend rejected before running it (retry.go) is retried only then;
// otherwise the client gets the rejection at once.
func (s *session) routeMovedAway() bool {
	target := s.currentTarget()
	if local, _ := s.srv.cfg.Router.Route(); !local.allows(target) {
		return true
	}
	if route := s.srv.confirmedRoute(s.ctx); route.allows(target) {
		return false
	}
	// A quorum says routing moved; wait (briefly) until this proxy's own view shows it too,
	// so that the retry does not go back to the same backend.
	return s.waitLocalRouteAway(target, confirmTimeout)
}

// waitLocalRouteAway waits up to limit for this proxy's route to stop naming target and
// reports whether it did.
func (s *session) waitLocalRouteAway(target Target, limit time.Duration) bool {
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for {
		r, changed := s.srv.cfg.Router.Route()
		if !r.allows(target) {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		case <-s.ctx.Done():
			return false
		}
	}
}
