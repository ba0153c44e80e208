package metrics

import "github.com/prometheus/client_golang/prometheus"

// asyncCommitEvents count client sessions that lowered synchronous_commit (off, local,
// remote_write): their commits are acknowledged before a synchronous standby has them, so a
// failover can lose them (proxy/asynccommit.go).
type asyncCommitEvents struct {
	sessions prometheus.Counter
	refused  prometheus.Counter
}

func newAsyncCommitEvents() asyncCommitEvents {
	return asyncCommitEvents{
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "async_commit_sessions_total",
			Help: "Client sessions that set synchronous_commit to off, local or remote_write (a failover can lose their acknowledged commits), counted once per session, refused or not.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "proxy", Name: "async_commit_refused_total",
			Help: "Statements and startups refused with 42501 because they lowered synchronous_commit (failover.forbid_async_commit).",
		}),
	}
}

// AsyncCommitSession counts a client session that lowered synchronous_commit.
func (m *Metrics) AsyncCommitSession() {
	if m == nil {
		return
	}
	m.asyncCommit.sessions.Inc()
}

// AsyncCommitRefused counts a statement or startup refused because it lowered
// synchronous_commit.
func (m *Metrics) AsyncCommitRefused() {
	if m == nil {
		return
	}
	m.asyncCommit.refused.Inc()
}
