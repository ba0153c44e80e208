package proxy

import (
	"context"
	"time"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

// trustCheckTimeout bounds the login of checkTrustedQueryUser.
const trustCheckTimeout = 10 * time.Second

// startTrustCheck runs checkTrustedQueryUser in a goroutine of the server, which ends with ctx
// or Shutdown.
func (s *Server) startTrustCheck(ctx context.Context) {
	if s.cfg.AuthMethod != AuthTrust || s.cfg.QueryUser == "" {
		return
	}
	if !s.track() {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer s.goroutines.Done()
		defer cancel()
		go func() {
			select {
			case <-s.stopWatching:
				cancel()
			case <-ctx.Done():
			}
		}()
		s.checkTrustedQueryUser(ctx)
	}()
}

// checkTrustedQueryUser warns when auth.method is trust and the primary lets the query user in
// without a password: the proxy then lets every client that names that user become it (usually
// a superuser). It is detected exactly as such a client would be let in: once, at the first
// agreed primary, the proxy logs in to it as QueryUser (database QueryDatabase) the way it logs
// in a trust session — no password, with the backend TLS settings and client certificate — and
// warns if PostgreSQL accepts. It reports whether the warning was logged. Bounded by ctx and
// trustCheckTimeout.
func (s *Server) checkTrustedQueryUser(ctx context.Context) bool {
	if s.cfg.AuthMethod != AuthTrust || s.cfg.QueryUser == "" {
		return false
	}
	target, err := s.waitRoute(ctx, Target{}, nil, nil)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, trustCheckTimeout)
	defer cancel()
	probe := &session{
		srv:    s,
		log:    s.log,
		user:   s.cfg.QueryUser,
		creds:  credentials{User: s.cfg.QueryUser, Method: pgauth.MethodTrust},
		params: []startupParam{{Name: "user", Value: s.cfg.QueryUser}, {Name: "database", Value: s.cfg.QueryDatabase}},
	}
	conn, _, err := probe.loginBackend(ctx, target)
	if err != nil {
		s.log.Debug("trust check: the query user cannot log in without a password", "backend", target.Name, "err", err)
		return false
	}
	_, _ = conn.Write([]byte{'X', 0, 0, 0, 4}) // Terminate
	_ = conn.Close()
	s.log.Warn("auth.method is trust and PostgreSQL lets the query user log in from this proxy without a password: "+
		"every client of this proxy can connect as that user. Use auth.method scram-sha-256, or make PostgreSQL "+
		"require a password (or certificate) for the query user.", "query_user", s.cfg.QueryUser, "backend", target.Name)
	return true
}
