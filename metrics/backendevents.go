package metrics

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The proxy's data-path metrics that need a call from package proxy
// (issue 13, item 4). The proxy holds a *Metrics already (proxy.Config.Metrics),
// so the hook is these nil-safe methods; each is an atomic update that never
// blocks or allocates on the relay's path. Who calls what:
//
//   - AddQueries(n): once per simple-protocol Query message and per
//     extended-protocol Sync relayed to the backend (batched per read is
//     fine); AddTransactions(n): once per ReadyForQuery whose status moves
//     from 'T' or 'E' to 'I', and once per autocommit statement ('I' to 'I').
//   - QueryFinished(d): when the backend's ReadyForQuery answers a Query or a
//     Sync, with the time since that request was relayed (pipelined requests:
//     each from its own send time, FIFO).
//   - BackendConnected(node, d): a backend login as the client's role
//     succeeded, d from dial to ReadyForQuery; BackendSessionClosed(node)
//     when that backend connection closes (exactly once per
//     BackendConnected, a moved session included: closed on the old node,
//     connected on the new).
//   - BackendConnectFailed(node, reason): a dial or login to a backend
//     failed, with a ConnectFailure.
//   - AuthFailed(reason): a client's authentication failed, with an
//     AuthFailure (before any backend login).
//
// node is a configured backend name (Options.Backends); any other value is
// counted as "other", so a label value never comes from outside.

// ConnectFailure says why a backend dial or login failed (the "reason"
// label of pgquorum_proxy_backend_connect_errors_total).
type ConnectFailure string

const (
	ConnectRefused      ConnectFailure = "refused"       // dial failed: nothing listens, host unreachable
	ConnectTimeout      ConnectFailure = "timeout"       // no answer within the bound (dial or login)
	ConnectAuth         ConnectFailure = "auth"          // the server refused the credentials (28P01, 28000)
	ConnectNotAccepting ConnectFailure = "not_accepting" // starting up or shutting down (57P01, 57P02, 57P03)
	ConnectTooMany      ConnectFailure = "too_many"      // max_connections or a role's limit (53300)
	ConnectProtocol     ConnectFailure = "protocol"      // a malformed answer
	ConnectOther        ConnectFailure = "other"
)

var connectFailures = []ConnectFailure{ConnectRefused, ConnectTimeout, ConnectAuth, ConnectNotAccepting, ConnectTooMany, ConnectProtocol, ConnectOther}

// AuthFailure says why a client's authentication failed (the "reason" label
// of pgquorum_proxy_auth_failures_total).
type AuthFailure string

const (
	AuthBadPassword AuthFailure = "bad_password" // wrong password or SCRAM proof (also an unknown role, on the wire indistinguishable)
	AuthNoVerifier  AuthFailure = "no_verifier"  // the role has no usable password verifier for the configured method
	AuthTimeout     AuthFailure = "timeout"      // the client did not finish within the startup timeout
	AuthProtocol    AuthFailure = "protocol"     // a malformed or unexpected message during authentication
	AuthTLSRequired AuthFailure = "tls_required" // the client did not use TLS where it is required
	AuthLookup      AuthFailure = "lookup"       // the verifier could not be read (no primary, the query user refused)
	AuthOther       AuthFailure = "other"
)

var authFailures = []AuthFailure{AuthBadPassword, AuthNoVerifier, AuthTimeout, AuthProtocol, AuthTLSRequired, AuthLookup, AuthOther}

// otherBackend labels a backend name that is not configured.
const otherBackend = "other"

// Buckets, in seconds: logins over a network take milliseconds; queries
// through a proxy range from 100 µs to minutes.
var (
	connectBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	queryBuckets   = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
)

// backendEvents are the families of the hooks above.
type backendEvents struct {
	backends        map[string]bool // configured names
	sessions        *prometheus.GaugeVec
	connectErrors   *prometheus.CounterVec
	connectDuration *prometheus.HistogramVec
	queryDuration   prometheus.Histogram
	authFailures    *prometheus.CounterVec
}

func newBackendEvents(backends []string) backendEvents {
	e := backendEvents{
		backends: map[string]bool{},
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "backend_sessions",
			Help: "Backend connections of client sessions open now, by PostgreSQL node.",
		}, []string{"node"}),
		connectErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "backend_connect_errors_total",
			Help: "Failed dials or logins of client sessions to a PostgreSQL node, by node and reason (refused, timeout, auth, not_accepting, too_many, protocol, other).",
		}, []string{"node", "reason"}),
		connectDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "backend_connect_duration_seconds",
			Help:    "Time from dial to ReadyForQuery of the successful backend logins of client sessions, by node.",
			Buckets: connectBuckets,
		}, []string{"node"}),
		queryDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "query_duration_seconds",
			Help:    "Time from relaying a Query or Sync to the backend to its ReadyForQuery, through this proxy.",
			Buckets: queryBuckets,
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "auth_failures_total",
			Help: "Client authentications that failed, by reason (bad_password, no_verifier, timeout, protocol, tls_required, lookup, other).",
		}, []string{"reason"}),
	}
	names := append(append([]string(nil), backends...), otherBackend)
	for _, b := range names {
		e.backends[b] = true
		e.sessions.WithLabelValues(b)
		e.connectDuration.WithLabelValues(b)
		for _, r := range connectFailures {
			e.connectErrors.WithLabelValues(b, string(r))
		}
	}
	for _, r := range authFailures {
		e.authFailures.WithLabelValues(string(r))
	}
	return e
}

func (e *backendEvents) collectors() []prometheus.Collector {
	return []prometheus.Collector{e.sessions, e.connectErrors, e.connectDuration, e.queryDuration, e.authFailures}
}

// node bounds a backend name to the configured ones.
func (e *backendEvents) node(name string) string {
	if e.backends[name] {
		return name
	}
	return otherBackend
}

// BackendConnected counts a client session's backend login to node that
// succeeded after d; pair it with BackendSessionClosed.
func (m *Metrics) BackendConnected(node string, d time.Duration) {
	if m == nil {
		return
	}
	node = m.backend.node(node)
	m.backend.sessions.WithLabelValues(node).Inc()
	m.backend.connectDuration.WithLabelValues(node).Observe(seconds(d))
}

// BackendSessionClosed counts the end of a backend connection that
// BackendConnected counted.
func (m *Metrics) BackendSessionClosed(node string) {
	if m == nil {
		return
	}
	m.backend.sessions.WithLabelValues(m.backend.node(node)).Dec()
}

// BackendConnectFailed counts a failed dial or login to node. An unknown
// reason is counted as ConnectOther.
func (m *Metrics) BackendConnectFailed(node string, reason ConnectFailure) {
	if m == nil {
		return
	}
	if !slices.Contains(connectFailures, reason) {
		reason = ConnectOther
	}
	m.backend.connectErrors.WithLabelValues(m.backend.node(node), string(reason)).Inc()
}

// QueryFinished observes one request's time from relay to ReadyForQuery.
func (m *Metrics) QueryFinished(d time.Duration) {
	if m == nil {
		return
	}
	m.backend.queryDuration.Observe(seconds(d))
}

// AuthFailed counts a client authentication that failed. An unknown reason
// is counted as AuthOther.
func (m *Metrics) AuthFailed(reason AuthFailure) {
	if m == nil {
		return
	}
	if !slices.Contains(authFailures, reason) {
		reason = AuthOther
	}
	m.backend.authFailures.WithLabelValues(string(reason)).Inc()
}
