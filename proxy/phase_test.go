package proxy

import (
	"testing"
)

func TestNextPhase(t *testing.T) {
	allowed := map[sessionPhase]map[phaseEvent]sessionPhase{
		phaseStartup:   {evRelayStarted: phaseRouted, evDrain: phaseDraining},
		phaseRouted:    {evHold: phaseHeld, evLost: phaseDetached, evDrain: phaseDraining, evSafePoint: phaseRouted},
		phaseHeld:      {evRouteBack: phaseRouted, evLost: phaseDetached, evDrain: phaseClosed},
		phaseDetached:  {evMoveStarted: phaseMoving, evDrain: phaseClosed, evSafePoint: phaseDetached, evResolveStarted: phaseResolving},
		phaseMoving:    {evMoved: phaseRouted, evMoveFailed: phaseDetached, evDrain: phaseClosed},
		phaseDraining:  {evSafePoint: phaseClosed, evHold: phaseClosed, evLost: phaseClosed, evDrain: phaseDraining},
		phaseClosed:    {},
		phaseResolving: {evResolved: phaseDetached, evDrain: phaseClosed},
	}
	for p := phaseStartup; p <= phaseResolving; p++ {
		for ev := evRelayStarted; ev <= evResolved; ev++ {
			next, ok := nextPhase(p, ev)
			want, wantOK := allowed[p][ev]
			if ev == evClose {
				want, wantOK = phaseClosed, true // every phase can end
			}
			if ok != wantOK || next != want && wantOK {
				t.Errorf("%v --%v--> %v (allowed %v), want %v (allowed %v)", p, ev, next, ok, want, wantOK)
			}
			if !ok && next != p {
				t.Errorf("%v --%v--> refused but changed the phase to %v", p, ev, next)
			}
		}
	}
}

func TestPhaseFacts(t *testing.T) {
	for _, tt := range []struct {
		phase  sessionPhase
		linked bool
	}{
		{phaseStartup, false},
		{phaseRouted, true},
		{phaseHeld, true},
		{phaseDetached, false},
		{phaseMoving, false},
		{phaseDraining, true},
		{phaseClosed, false},
		{phaseResolving, false},
	} {
		if tt.phase.linked() != tt.linked {
			t.Errorf("%v: linked %v, want %v", tt.phase, tt.phase.linked(), tt.linked)
		}
	}
}

// TestStartRelayRacesForceClose: Shutdown's deadline may force-close a session at the moment
// its startup ends. Under the race detector this caught startRelay setting the session's
// context while forceClose read it; now the context is made with the session and startRelay
// refuses a session that was closed meanwhile.
func TestStartRelayRacesForceClose(t *testing.T) {
	srv := newTestServer(t, &fakeRouter{})
	for range 20 {
		client, proxyClientSide := tcpPair(t)
		proxyBackendSide, backend := tcpPair(t)
		sess := newSession(srv, proxyClientSide, nil)
		sess.client = proxyClientSide
		sess.backend = proxyBackendSide
		srv.sessions.add(sess)
		srv.counters.clientConnections.Add(1)
		started := make(chan error, 1)
		go func() { started <- sess.startRelay(nil, nil, nil) }()
		sess.forceClose(fatalf(codeAdminShutdown, "shutting down"))
		if err := <-started; err != nil {
			sess.finish() // refused: the startup goroutine releases the session
		}
		requireClosed(t, client)
		backend.Close()
		srv.waitForSessions(5e9)
	}
	if n := srv.sessions.count(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}
