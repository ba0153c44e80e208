package proxy

// Connection limits
//
// Two bounds protect the proxy, and the sessions it already serves, from a flood of
// connections: Config.MaxClientConnections bounds every client connection, and
// Config.MaxStartupConnections bounds the connections not authenticated yet (startup packet,
// TLS, authentication, the auth query). A connection past either is refused at once with FATAL
// 53300, as PostgreSQL refuses one past max_connections, and costs nothing more. The waits of
// unauthenticated connections for a primary (the auth query during a failover) are bounded by
// MaxStartupConnections and never take one of the MaxHeld places, which belong to clients that
// proved who they are.

// admit reserves a client place and a startup place for a new connection, or returns the
// refusal to send it.
func (s *Server) admit() *clientError {
	if n := s.counters.clientConnections.Add(1); n > int64(s.cfg.MaxClientConnections) {
		s.counters.clientConnections.Add(-1)
		return fatalf(codeTooManyConnections, "sorry, too many clients already").
			withDetail("The pgquorum proxy accepts at most limits.max_client_connections client connections at once.")
	}
	if n := s.counters.startupConnections.Add(1); n > int64(s.cfg.MaxStartupConnections) {
		s.counters.startupConnections.Add(-1)
		s.counters.clientConnections.Add(-1)
		return fatalf(codeTooManyConnections, "sorry, too many clients are connecting already").
			withDetail("The pgquorum proxy authenticates at most limits.max_startup_connections connections at once.").
			withHint("Retry later.")
	}
	return nil
}

// endStartup gives back the session's startup place (once): authentication is done, or the
// startup phase ended. Called by the startup goroutine only.
func (s *session) endStartup() {
	if s.startupPlace {
		s.startupPlace = false
		s.srv.counters.startupConnections.Add(-1)
	}
}
