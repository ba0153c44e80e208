package proxy

import "fmt"

// The session state machine
//
// A session is always in exactly one phase. The phase says who owns the client and backend
// connections and what a relay may do with the next bytes it reads; it is the only place that
// says so (the relays ask it, they keep no flags of their own about it). It changes only
// through nextPhase, a pure function of the phase and an event, under session.mu:
//
//	phase      owner of the connections           what happens to the next client request
//	---------------------------------------------------------------------------------------------
//	startup    the startup goroutine               (none yet: TLS, authentication, first login)
//	routed     the two relays; link up             forwarded to the backend (held when routing
//	                                               no longer names it, at a safe point)
//	held       the client→backend relay; the old   kept, not sent; waits for a primary
//	           backend is still linked
//	detached   the client→backend relay; no link   answered by the proxy (loss.go modes) or, at a
//	                                               safe point, kept while the session moves
//	moving     the client→backend relay            kept; sent once the new backend is linked
//	resolving  the client→backend relay; no link   not read: the proxy owes the client the answer
//	                                               of a lost COMMIT and asks a primary for it
//	                                               (resolve.go)
//	draining   the two relays; link up             Shutdown asked: the session closes at its
//	                                               next safe point (in startup: it is refused)
//	closed     nobody: the last goroutine frees    dropped
//
// Transitions (anything else is a bug and is refused by nextPhase):
//
//	startup  --relayStarted--> routed      startup --drain--> draining     * --close--> closed
//	routed   --hold----------> held        routed  --lost---> detached     routed --drain--> draining
//	held     --routeBack-----> routed      held    --lost---> detached     held   --drain--> closed
//	detached --moveStarted---> moving      detached --drain-> closed
//	detached --resolveStarted-> resolving  resolving --resolved--> detached   resolving --drain--> closed
//	moving   --moved---------> routed      moving  --moveFailed--> detached   moving --drain--> closed
//	draining --safePoint-----> closed      draining --hold/lost--> closed (a new request, or a loss,
//	                                                                while draining ends the session)
//
// Held, detached, moving and resolving sessions have nothing in flight, so Shutdown closes
// them at once (a resolving one without its COMMIT's answer: the client hears the shutdown);
// a routed session may have requests in flight, so it drains.
//
// A backend terminated by pg_terminate_backend on the healthy primary is not a loss: the
// backend→client relay relays the server's FATAL and closes the session (termination.go).
type sessionPhase uint8

const (
	phaseStartup sessionPhase = iota
	phaseRouted
	phaseHeld
	phaseDetached
	phaseMoving
	phaseDraining
	phaseClosed
	phaseResolving
)

var phaseNames = [...]string{"startup", "routed", "held", "detached", "moving", "draining", "closed", "resolving"}

func (p sessionPhase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// linked reports whether the session has a usable backend connection in this phase (the
// backend→client relay relays from it).
func (p sessionPhase) linked() bool {
	return p == phaseRouted || p == phaseHeld || p == phaseDraining
}

// phaseEvent is what happened to a session.
type phaseEvent uint8

const (
	evRelayStarted   phaseEvent = iota + 1 // startup is done; the relays take over
	evHold                                 // a new request at a safe point may not go to the backend now
	evRouteBack                            // the held request may go to the same backend after all
	evLost                                 // the backend link is gone and the session lives on (loss.go)
	evMoveStarted                          // the client→backend relay starts moving the session
	evMoved                                // the new backend is linked
	evMoveFailed                           // no primary in time: the session stays without a backend
	evDrain                                // Shutdown asks the session to end at its next safe point
	evSafePoint                            // the session reached a safe point (idle between transactions)
	evClose                                // the session ends (failure, client gone, verdict, shutdown)
	evResolveStarted                       // the client→backend relay starts learning a lost COMMIT's outcome
	evResolved                             // the client was told the lost COMMIT's outcome
)

var eventNames = [...]string{"", "relayStarted", "hold", "routeBack", "lost", "moveStarted", "moved",
	"moveFailed", "drain", "safePoint", "close", "resolveStarted", "resolved"}

func (e phaseEvent) String() string {
	if int(e) < len(eventNames) && e != 0 {
		return eventNames[e]
	}
	return fmt.Sprintf("event(%d)", uint8(e))
}

// nextPhase returns the phase after ev, and false when ev is not allowed in p (the phase then
// stays). It is a pure function; see the table above.
func nextPhase(p sessionPhase, ev phaseEvent) (sessionPhase, bool) {
	if ev == evClose {
		return phaseClosed, true
	}
	switch p {
	case phaseStartup:
		switch ev {
		case evRelayStarted:
			return phaseRouted, true
		case evDrain:
			return phaseDraining, true
		}
	case phaseRouted:
		switch ev {
		case evHold:
			return phaseHeld, true
		case evLost:
			return phaseDetached, true
		case evDrain:
			return phaseDraining, true
		case evSafePoint:
			return phaseRouted, true
		}
	case phaseHeld:
		switch ev {
		case evRouteBack:
			return phaseRouted, true
		case evLost:
			return phaseDetached, true
		case evDrain:
			return phaseClosed, true
		}
	case phaseDetached:
		switch ev {
		case evMoveStarted:
			return phaseMoving, true
		case evResolveStarted:
			return phaseResolving, true
		case evDrain:
			return phaseClosed, true
		case evSafePoint:
			return phaseDetached, true
		}
	case phaseMoving:
		switch ev {
		case evMoved:
			return phaseRouted, true
		case evMoveFailed:
			return phaseDetached, true
		case evDrain:
			return phaseClosed, true
		}
	case phaseResolving:
		switch ev {
		case evResolved:
			return phaseDetached, true
		case evDrain:
			return phaseClosed, true
		}
	case phaseDraining:
		switch ev {
		case evSafePoint, evHold, evLost:
			return phaseClosed, true
		case evDrain:
			return phaseDraining, true
		}
	}
	return p, false
}

// transitionLocked applies ev to the session's phase and reports whether it was allowed.
// s.mu is held.
func (s *session) transitionLocked(ev phaseEvent) bool {
	next, ok := nextPhase(s.phase, ev)
	if ok {
		s.phase = next
	}
	return ok
}
