package proxy

// CloseBackends ends every relaying session whose backend is t, because the
// proxy may no longer route there (the agreed primary changed, or this proxy's
// view is no longer confirmed by a Raft quorum: fail closed). Each client gets
// FATAL 08006 naming reason. It returns the number of sessions ended.
//
// Sessions still in startup are not touched: they ask the Router again before
// they connect, and the Router no longer returns t.
func (s *Server) CloseBackends(t Target, reason string) int {
	closed := 0
	for _, sess := range s.sessions.all() {
		sess.mu.Lock()
		// target is written during startup, before relaying is set under mu, so
		// it is safe to read once relaying is seen here.
		match := sess.relaying && !sess.closing && sess.target.Address == t.Address
		sess.mu.Unlock()
		if !match {
			continue
		}
		sess.fail(fatalf(codeConnectionFailure,
			"pgquorum: the connection to the primary %s was closed: %s", t.Name, reason).
			withHint("Reconnect; the proxy routes new sessions to the agreed primary."))
		closed++
	}
	if closed > 0 {
		s.log.Warn("closed backend connections", "backend", t.Name, "sessions", closed, "reason", reason)
	}
	return closed
}
