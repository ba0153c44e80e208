package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgquorum/pgquorum/metrics"
)

// Route is the router's decision at one moment: where traffic may go now.
type Route struct {
	Target  Target // valid when Routing
	Routing bool   // a primary is agreed and this proxy may route to it
	// LeaseExpired says routing stopped because this proxy's view is no longer confirmed by a
	// quorum (it may be cut off): the proxy then closes its backend connections at once (fail
	// closed, SPEC §4). When routing stops for a failover in progress it only holds new
	// requests, and transactions already open on the old primary may finish there.
	LeaseExpired bool
}

// RouteAcknowledger is implemented by Routers that want to know when the proxy has acted on a
// Route: once RouteApplied(r) is called, every relayed session's backend connection that r
// forbids is closed (LeaseExpired: all of them; a new Target: those to any other server), and no
// session sends a new request to a server r does not route to. The Raft leader waits for this
// before it releases a new primary (SPEC §4: a failover is complete only when no proxy can still
// route to the old primary). It must not block.
type RouteAcknowledger interface {
	RouteApplied(r Route)
}

// RouteConfirmer is implemented by a Router that can confirm its route against the cluster's
// latest agreed state (routing.ConsensusRouter: it waits for a Raft quorum to confirm a state
// at least as new as the call). The proxy asks it when a PostgreSQL server ended a session or
// rejected a write as read-only, to tell a failover or switchover decided elsewhere (which
// this proxy may not have applied yet) from the server's own doing on the healthy agreed
// primary. A Router without it is taken at its word (Route).
type RouteConfirmer interface {
	ConfirmedRoute(ctx context.Context) (Route, error)
}

// confirmTimeout bounds the wait for a confirmed route; past it the proxy uses its own view.
const confirmTimeout = 2 * time.Second

// confirmedRoute returns the route as a quorum confirms it now (see RouteConfirmer), or this
// proxy's own view when the Router cannot confirm or no confirmation came in time.
func (s *Server) confirmedRoute(ctx context.Context) Route {
	if c, ok := s.cfg.Router.(RouteConfirmer); ok {
		ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
		defer cancel()
		r, err := c.ConfirmedRoute(ctx)
		if err == nil {
			return r
		}
		s.log.Warn("cannot confirm the route with the cluster; using this proxy's view", "err", err)
	}
	r, _ := s.cfg.Router.Route()
	return r
}

// errTooManyHeld means the bound on held requests (Config.MaxHeld) is reached.
var errTooManyHeld = errors.New("too many requests are waiting for a primary")

// routeAllows reports whether a new request may go to target now.
func (s *Server) routeAllows(target Target) bool {
	return s.route.Load().allows(target)
}

// allows reports whether r sends new requests to target.
func (r *Route) allows(target Target) bool {
	return r.Routing && r.Target.Address == target.Address && r.Target.Name == target.Name
}

// watchRoutes keeps s.route current and tells sessions about changes, until ctx ends.
// It runs in its own goroutine, started by Serve.
func (s *Server) watchRoutes(ctx context.Context, w Router) {
	defer s.goroutines.Done()
	for {
		r, changed := w.Route()
		old := s.route.Swap(&r)
		if old == nil || *old != r {
			s.routeChanged(r)
		}
		if a, ok := w.(RouteAcknowledger); ok {
			a.RouteApplied(r)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.stopWatching:
			return
		case <-changed:
		}
	}
}

// routeChanged applies a new route to the sessions: a session on a backend that is no longer
// the routed primary (a new primary is agreed), or on any backend when the lease expired, loses
// that backend now; what its client sees depends on where it was (see loss.go). Sessions idle on
// the old primary while no primary is agreed keep their backend: their next request is held
// until a primary is agreed, and goes to the same backend if the failover was aborted.
func (s *Server) routeChanged(r Route) {
	if r.Routing {
		s.log.Info("routing", "primary", r.Target.Name, "epoch", r.Target.Epoch)
	} else {
		s.log.Warn("not routing: holding new requests", "lease_expired", r.LeaseExpired)
	}
	s.protocols.Clear() // the new primary may speak another protocol version
	dropped := 0
	for _, sess := range s.sessions.all() {
		if sess.dropStaleBackend(r) {
			dropped++
		}
	}
	if dropped > 0 {
		s.log.Warn("dropped backend connections to a server that is no longer the routed primary",
			"sessions", dropped, "lease_expired", r.LeaseExpired)
	}
}

// waitRoute returns a target for a new backend connection, waiting while no primary is agreed.
// avoid, when set, is a target that just failed: it is returned again only after a pause
// (routeRetryPause, doubling), in case the route never changes. hold, when not nil, counts the
// wait as a held request (from the first time it has to wait); cancel, when not nil, ends the
// wait (the client cancelled its held request).
func (s *Server) waitRoute(ctx context.Context, avoid Target, hold *holdTicket, cancel <-chan struct{}) (Target, error) {
	pause := routeRetryPause
	for {
		r, changed := s.cfg.Router.Route()
		if r.Routing && r.Target.Address != avoid.Address {
			return r.Target, nil
		}
		if err := hold.start(); err != nil {
			return Target{}, err
		}
		var retry <-chan time.Time
		var timer *time.Timer
		if r.Routing {
			// The routed primary is the one that just failed: try it again after a pause.
			timer = time.NewTimer(pause)
			retry = timer.C
			pause = min(2*pause, maxRouteRetryPause)
		}
		select {
		case <-ctx.Done():
			stopTimer(timer)
			return Target{}, fmt.Errorf("waiting for a primary: %w", ctx.Err())
		case <-cancel:
			stopTimer(timer)
			return Target{}, errHoldCancelled
		case <-changed:
			stopTimer(timer)
		case <-retry:
			return r.Target, nil
		}
	}
}

const (
	routeRetryPause    = 50 * time.Millisecond
	maxRouteRetryPause = time.Second
)

// errHoldCancelled means the client cancelled its held request (CancelRequest).
var errHoldCancelled = errors.New("held request cancelled by the client")

// holdTicket is one held request or connection, across however many waits for a primary it
// needs: counted against Config.MaxHeld from its first wait until finish, and reported to the
// hold metrics once. A nil ticket counts nothing.
type holdTicket struct {
	srv     *Server
	counted bool
	since   time.Time
	outcome metrics.HoldOutcome
}

// newHold returns a ticket for a request that counts as held when it waits (nil when not).
func (s *Server) newHold(counts bool) *holdTicket {
	if !counts {
		return nil
	}
	return &holdTicket{srv: s, outcome: metrics.HoldCanceled}
}

// start counts the request as held, unless it already is; past Config.MaxHeld it refuses.
func (h *holdTicket) start() error {
	if h == nil || h.counted {
		return nil
	}
	if n := h.srv.held.Add(1); n > int64(h.srv.cfg.MaxHeld) {
		h.srv.held.Add(-1)
		return errTooManyHeld
	}
	h.counted, h.since = true, time.Now()
	h.srv.cfg.Metrics.HoldStarted()
	return nil
}

// routed records that the held request reached a primary.
func (h *holdTicket) routed() {
	if h != nil {
		h.outcome = metrics.HoldRouted
	}
}

// finish ends the hold; ctx tells a timeout from a cancellation.
func (h *holdTicket) finish(ctx context.Context) {
	if h == nil || !h.counted {
		return
	}
	if h.outcome != metrics.HoldRouted && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		h.outcome = metrics.HoldTimedOut
	}
	h.counted = false
	h.srv.held.Add(-1)
	h.srv.cfg.Metrics.HoldFinished(time.Since(h.since), h.outcome)
}

// acquireLogin takes one of the Config.ReleaseConcurrency slots for logging in to a backend,
// so that the sessions released after a failover reach the new primary at a bounded pace. The
// returned function gives the slot back.
func (s *Server) acquireLogin(ctx context.Context) (func(), error) {
	select {
	case s.logins <- struct{}{}:
		return func() { <-s.logins }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a backend login slot: %w", ctx.Err())
	}
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
