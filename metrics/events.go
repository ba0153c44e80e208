package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// HoldOutcome says how a held request ended (the "outcome" label of
// pgquorum_proxy_hold_duration_seconds).
type HoldOutcome string

const (
	// HoldRouted: a primary became available and the request went on to it.
	HoldRouted HoldOutcome = "routed"
	// HoldTimedOut: no primary within hold.timeout; the client got 57P03.
	HoldTimedOut HoldOutcome = "timeout"
	// HoldCanceled: the client went away or the proxy shut down first.
	HoldCanceled HoldOutcome = "canceled"
)

var holdOutcomes = []HoldOutcome{HoldRouted, HoldTimedOut, HoldCanceled}

// FailoverPhase names one phase of a failover (the "phase" label of
// pgquorum_failover_phase_duration_seconds). The phases follow SPEC §4.
type FailoverPhase string

const (
	// PhaseDetect: from the primary's last successful probe to this proxy's
	// failure detector declaring it down.
	PhaseDetect FailoverPhase = "detect"
	// PhaseDecide: from the primary declared down to "epoch E+1, no primary"
	// committed (step 1-2: a majority of voters agrees).
	PhaseDecide FailoverPhase = "decide"
	// PhaseFreeze: freezing the reachable standbys until their WAL receivers
	// are confirmed stopped (step 3).
	PhaseFreeze FailoverPhase = "freeze"
	// PhasePromote: choosing the candidate, setting its
	// synchronous_standby_names and pg_promote (steps 4-6).
	PhasePromote FailoverPhase = "promote"
	// PhaseReroute: re-pointing the other standbys and committing
	// "primary = X" until proxies route to X (steps 7-8).
	PhaseReroute FailoverPhase = "reroute"
)

var failoverPhases = []FailoverPhase{PhaseDetect, PhaseDecide, PhaseFreeze, PhasePromote, PhaseReroute}

// The kinds of failover (clusterstate.FailoverKind): the "kind" label of
// pgquorum_failovers_total; anything else is counted as "unknown".
var failoverKinds = []string{"automatic", "manual", "switchover"}

// Histogram buckets, in seconds. Holds last up to hold.timeout (30s by
// default); failover phases are expected well under a second each.
var (
	holdBuckets  = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	phaseBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
)

// events are the metrics components update as things happen.
type events struct {
	queries       prometheus.Counter
	transactions  prometheus.Counter
	clientErrors  *prometheus.CounterVec
	held          prometheus.Gauge
	holdDuration  *prometheus.HistogramVec
	sessionsMoved prometheus.Counter
	phaseDuration *prometheus.HistogramVec
}

func newEvents() events {
	e := events{
		queries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "queries_total",
			Help: "Queries relayed to PostgreSQL: simple-protocol Query messages plus extended-protocol Syncs.",
		}),
		transactions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "transactions_total",
			Help: "Transactions relayed to PostgreSQL that ended (committed or rolled back); an autocommit statement counts as one.",
		}),
		clientErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "client_errors_total",
			Help: "Errors the proxy itself sent to clients, by SQLSTATE (errors relayed from PostgreSQL are not counted).",
		}, []string{"sqlstate"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "held_requests",
			Help: "Requests and new connections waiting for an agreed primary now.",
		}),
		holdDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "hold_duration_seconds",
			Help:    "How long requests waited for an agreed primary, by outcome (routed, timeout, canceled).",
			Buckets: holdBuckets,
		}, []string{"outcome"}),
		sessionsMoved: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "sessions_moved_total",
			Help: "Client sessions moved to a new primary with their session state replayed.",
		}),
		phaseDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "failover_phase_duration_seconds",
			Help:    "Duration of each phase of the failovers this proxy's coordinator completed as the Raft leader (detect, decide, freeze, promote, reroute).",
			Buckets: phaseBuckets,
		}, []string{"phase"}),
	}
	// Create the series of every known label value, so that dashboards and
	// alerts see zeros rather than nothing before the first event.
	for _, o := range holdOutcomes {
		e.holdDuration.WithLabelValues(string(o))
	}
	for _, p := range failoverPhases {
		e.phaseDuration.WithLabelValues(string(p))
	}
	return e
}

func (e *events) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		e.queries, e.transactions, e.clientErrors, e.held, e.holdDuration,
		e.sessionsMoved, e.phaseDuration,
	}
}

// AddQueries counts n queries relayed to PostgreSQL (a simple-protocol Query
// message or an extended-protocol Sync each count as one). A relay loop may
// count in batches. n <= 0 is ignored.
func (m *Metrics) AddQueries(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.events.queries.Add(float64(n))
}

// AddTransactions counts n transactions that ended, committed or rolled back;
// an autocommit statement counts as one. n <= 0 is ignored.
func (m *Metrics) AddTransactions(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.events.transactions.Add(float64(n))
}

// ClientError counts one ErrorResponse the proxy itself sent to a client, by
// its SQLSTATE (57P03 hold timeout, 40001/08007/08006 failover, 08P01
// protocol, 28P01 authentication, ...). A code that is not five digits or
// upper-case letters is counted as "invalid", so bad input cannot create
// series without bound.
func (m *Metrics) ClientError(sqlstate string) {
	if m == nil {
		return
	}
	m.events.clientErrors.WithLabelValues(sqlstateLabel(sqlstate)).Inc()
}

// HoldStarted counts a request or connection that begins waiting for an agreed
// primary. Every HoldStarted must be followed by exactly one HoldFinished.
func (m *Metrics) HoldStarted() {
	if m == nil {
		return
	}
	m.events.held.Inc()
}

// HoldFinished ends a hold begun by HoldStarted: the request waited d and
// ended with outcome. An unknown outcome is recorded as HoldCanceled.
func (m *Metrics) HoldFinished(d time.Duration, outcome HoldOutcome) {
	if m == nil {
		return
	}
	m.events.held.Dec()
	switch outcome {
	case HoldRouted, HoldTimedOut, HoldCanceled:
	default:
		outcome = HoldCanceled
	}
	m.events.holdDuration.WithLabelValues(string(outcome)).Observe(seconds(d))
}

// SessionMoved counts a client session that was moved to a new primary with
// its session state replayed (SPEC §5, first row).
func (m *Metrics) SessionMoved() {
	if m == nil {
		return
	}
	m.events.sessionsMoved.Inc()
}

// ObserveFailoverPhase records that phase took d. An unknown phase is ignored
// (it would be a programming error, not worth a series).
func (m *Metrics) ObserveFailoverPhase(phase FailoverPhase, d time.Duration) {
	if m == nil {
		return
	}
	for _, p := range failoverPhases {
		if p == phase {
			m.events.phaseDuration.WithLabelValues(string(phase)).Observe(seconds(d))
			return
		}
	}
}

// seconds converts d to seconds; a negative duration (a clock step) is 0.
func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}
