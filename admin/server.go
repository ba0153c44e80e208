// Package admin is pgquorum's HTTP control plane (SPEC §3.3): cluster status,
// routing readiness for Kubernetes probes, and membership changes. Responses
// are JSON; errors are JSON objects {"error": "..."} with a fitting status code.
//
// Read-only calls are open. Mutating calls (POST, DELETE) must be
// authenticated (auth.go): by the operators' bearer token
// ("Authorization: Bearer <token>", admin.token_file) or, over HTTPS, by an
// operator's client certificate signed by the cluster CA. A node without a
// token refuses them unless it runs with security.insecure; a learner refuses
// them always (operators use a voter's API). They take JSON bodies only
// ("Content-Type: application/json"), so a browser cannot be tricked into
// sending one with a plain form. The API serves HTTPS when TLS is set.
//
// The package only reads state and forwards requests to the Raft member; it
// decides nothing itself.
package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/pgquorum/pgquorum/consensus"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/routing"
)

// Raft is what the admin API needs from the local Raft member (*consensus.Node).
type Raft interface {
	Status() consensus.Status
	Members() []consensus.Member
	AddMember(ctx context.Context, id uint64, addr string, learner bool) error
	RemoveMember(ctx context.Context, id uint64) error
	Propose(ctx context.Context, data []byte) ([]byte, error)
}

// StateSource gives the applied replicated state (*clusterstate.Machine).
type StateSource interface {
	State() clusterstate.State
}

// RoutingView gives this proxy's routing decision (*routing.ConsensusRouter).
type RoutingView interface {
	Current() routing.View
}

// Backend is a configured PostgreSQL node.
type Backend struct {
	Name    string
	Address string
}

// Server serves the admin API. Its fields are set before Serve and not changed after.
type Server struct {
	ClusterName string
	NodeID      uint64
	Backends    []Backend
	Raft        Raft
	State       StateSource
	Routing     RoutingView
	Operator    Operator
	// Health is this proxy's health monitor (*health.Monitor); POST /rejoin
	// verifies with it that a node streams before unfencing it.
	Health HealthView
	// Metrics serves GET /metrics (Prometheus); nil answers 404.
	Metrics http.Handler
	// Drainer, if set, serves POST /drain.
	Drainer Drainer
	// Readiness, if set, adds its conditions to GET /readyz.
	Readiness Readiness
	// Token, if not empty, is the operators' bearer token for mutating
	// calls. SetToken replaces it while serving (configuration reload).
	Token string
	// Operators, if set, verifies operators' client certificates (HTTPS
	// only): a certificate of role client for ClusterName authenticates a
	// mutating call without the token. *pki.Credentials implements it.
	Operators CertificateVerifier
	// TLS, if set, makes the API serve HTTPS.
	TLS *tls.Config
	// Insecure lets mutating calls through without authentication while no
	// token is set (security.insecure, loopback only).
	Insecure bool
	// Refused, if set, is called for every mutating call refused for want of
	// authentication (401) or JSON (415), with the reason (metrics).
	Refused func(reason string)
	Logger  *slog.Logger

	httpServer *http.Server
	listener   net.Listener
	token      atomic.Pointer[string] // set by SetToken; overrides Token
	refusals   refusalLog
}

// SetToken replaces the bearer token required on mutating calls ("" = none).
// Safe to call while serving.
func (s *Server) SetToken(token string) { s.token.Store(&token) }

func (s *Server) currentToken() string {
	if t := s.token.Load(); t != nil {
		return *t
	}
	return s.Token
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /primary", s.primary)
	mux.HandleFunc("GET /cluster", s.cluster)
	if s.Metrics != nil {
		mux.Handle("GET /metrics", s.Metrics)
	}
	mux.HandleFunc("GET /replica", s.replica)
	mux.HandleFunc("GET /history", s.history)
	mux.HandleFunc("POST /switchover", s.mutating(s.switchover))
	mux.HandleFunc("POST /failover", s.mutating(s.failover))
	mux.HandleFunc("POST /pause", s.mutating(s.pause))
	mux.HandleFunc("POST /resume", s.mutating(s.resume))
	mux.HandleFunc("POST /drain", s.mutating(s.drain))
	mux.HandleFunc("POST /rejoin/{node}", s.mutating(s.rejoin(s.Health, s.Raft)))
	mux.HandleFunc("GET /members", s.listMembers)
	mux.HandleFunc("POST /members", s.mutating(s.addMember))
	mux.HandleFunc("DELETE /members/{id}", s.mutating(s.removeMember))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Anything the patterns above did not take: a known path with the
		// wrong method, or an unknown path. Both answer JSON.
		probe := r.Clone(r.Context())
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "/" {
				writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path))
				return
			}
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// Listen binds addr so that Addr is known before Serve.
func (s *Server) Listen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", addr, err)
	}
	s.listener = l
	return nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// URL is the API's base URL (https:// when TLS is set).
func (s *Server) URL() string {
	if s.TLS != nil {
		return "https://" + s.Addr().String()
	}
	return "http://" + s.Addr().String()
}

// Serve serves until ctx ends, then shuts down within 5 s.
func (s *Server) Serve(ctx context.Context) error {
	s.httpServer = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		// TLS handshake failures (scanners, clients without the CA) at debug.
		ErrorLog: slog.NewLogLogger(s.logger().Handler(), slog.LevelDebug),
	}
	listener := s.listener
	if s.TLS != nil {
		listener = tls.NewListener(listener, s.TLS)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.httpServer.Serve(listener) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.httpServer.Shutdown(shutdownCtx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}
