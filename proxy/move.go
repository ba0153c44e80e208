package proxy

import (
	"context"
	"errors"
	"slices"
	"strings"
)

// Moving a session (SPEC §5, first row)
//
// The client→backend relay moves an idle session whose backend was lost to the primary the
// router names: it waits for a primary (counted as a held request when a client request
// waits), takes a login slot, logs in as the client's user with the credentials kept from the
// client's authentication (SCRAM ClientKey or md5 verifier: the client is not asked again),
// sends the startup parameters, replays the session state (SET, PREPARE, LISTEN) in one query,
// tells the client the ParameterStatus values that differ from what it saw, and hands the new
// connection to the backend→client relay. Named statements prepared with the protocol are
// prepared again lazily, at their next use (statements.go). The client sees no error.
//
// A session that holds state the proxy cannot replay is not moved: it is closed with 08006.
// A replay that fails (a setting the new server rejects) also closes the session, since
// continuing without that state could give wrong results.

// move moves the session to the current primary. urgent says a client request is waiting
// (the wait counts as a held request and may be cancelled by the client); otherwise the move is
// an eager one (a session that listens to channels). It returns a *holdError when no primary
// could be reached within the hold timeout (the session stays without a backend), or
// errSessionClosing when the session ended.
func (s *session) move(r *relay, urgent bool) error {
	c := r.c
	s.mu.Lock()
	if !s.transitionLocked(evMoveStarted) {
		s.mu.Unlock()
		return errSessionClosing
	}
	c.applyResolved(s)
	var unmovable, replay string
	if s.state != nil {
		unmovable, replay = s.state.unmovable, s.state.replaySQL()
	}
	s.mu.Unlock()
	replay += reportedSettingsReplay(s.serverParams, s.startupParams)
	if unmovable != "" {
		s.fail(fatalf(codeConnectionFailure, "the connection to the primary PostgreSQL server was lost, and this session cannot be moved to the new primary").
			withDetail("The session cannot be moved because " + unmovable + ".").
			withHint("Reconnect; session state such as temporary tables must be created again."))
		return errSessionClosing
	}

	var cancel <-chan struct{}
	if urgent {
		cancel = s.startHolding()
		defer s.stopHolding()
	}
	ctx, stop := s.holdContext()
	defer stop()
	conn, target, ready, err := s.connectPrimary(ctx, urgent, cancel, replay)
	if err != nil {
		if s.ctx.Err() != nil {
			return errSessionClosing
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errHoldCancelled) || errors.Is(err, errTooManyHeld) {
			s.mu.Lock()
			moving := s.transitionLocked(evMoveFailed)
			s.mu.Unlock()
			if !moving {
				return errSessionClosing
			}
			return &holdError{err}
		}
		s.log.Warn("cannot move the session to the new primary", "err", err)
		reason := fatalf(codeConnectionFailure, "the connection to the primary PostgreSQL server was lost, and the session could not be restored on the new primary").
			withCause(err)
		var ce *clientError
		if errors.As(err, &ce) {
			reason.Detail = ce.Message
		}
		s.fail(reason)
		return errSessionClosing
	}

	if out := parameterDiffs(s.serverParams, ready.params); !s.writeToClient(out) {
		_ = conn.Close()
		return errSessionClosing
	}
	if s.serverParams == nil {
		s.serverParams = make(map[string]string, len(ready.params))
	}
	for name, value := range ready.params {
		s.serverParams[name] = value
	}
	s.backslashQuotes.Store(s.serverParams["standard_conforming_strings"] == "off")
	c.reg.moved()
	c.unnamed, c.unnamedPortal = stmtClass{}, stmtClass{}
	c.forgetPortals(s)

	s.mu.Lock()
	if !s.transitionLocked(evMoved) {
		s.mu.Unlock()
		_ = conn.Close()
		return errSessionClosing
	}
	from := s.target
	s.setBackendLocked(conn, target, ready.loginTook)
	s.mode = modeIdle
	s.mu.Unlock()
	s.srv.sessions.updateCancelKey(s, ready.cancelKey)
	r.setDestination(conn)
	c.linkDown, c.mode = false, modeIdle
	s.handoffChannels().links <- backendLink{conn: conn, leftover: ready.leftover}
	s.srv.cfg.Metrics.SessionMoved()
	s.log.Info("session moved to the new primary", "from", from.Name, "to", target.Name, "replayed", replay != "")
	return nil
}

// parameterDiffs returns ParameterStatus messages for the values in now that differ from what
// the client saw, in name order.
func parameterDiffs(seen, now map[string]string) []byte {
	var names []string
	for name, value := range now {
		if old, ok := seen[name]; !ok || old != value {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var out []byte
	for _, name := range names {
		out = appendParameterStatus(out, name, now[name])
	}
	return out
}

// replayedReportedSettings are the settings PostgreSQL reports with ParameterStatus that a
// session may change by other means than a SET the proxy reads (set_config() or SET inside a
// function's body): a move sets them again to the value the client last saw, when it differs
// from the one the session started with. default_transaction_read_only is reported too but
// not replayed: a switchover changes it on the old primary by configuration, not the session.
var replayedReportedSettings = []string{"application_name", "DateStyle", "IntervalStyle", "TimeZone"}

// reportedSettingsReplay returns SQL that gives a new backend the reported settings the
// client saw (seen) where they differ from what the session started with (atStartup).
func reportedSettingsReplay(seen, atStartup map[string]string) string {
	var b strings.Builder
	for _, name := range replayedReportedSettings {
		value, ok := seen[name]
		if !ok || value == atStartup[name] || strings.Contains(value, "$pgq$") {
			continue
		}
		b.WriteString("SELECT pg_catalog.set_config('" + name + "', $pgq$" + value + "$pgq$, false);")
	}
	return b.String()
}
