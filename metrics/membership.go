package metrics

import "github.com/prometheus/client_golang/prometheus"

// membershipEvents are the Raft leader's membership housekeeping.
type membershipEvents struct {
	learnersRemoved prometheus.Counter
}

func newMembershipEvents() membershipEvents {
	return membershipEvents{
		learnersRemoved: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "learners_removed_total",
			Help: "Learners (sidecars) this node, as the Raft leader, removed because it had not heard from them for learners.remove_after.",
		}),
	}
}

// LearnerRemoved counts a learner removed for silence (package learners).
func (m *Metrics) LearnerRemoved() {
	if m == nil {
		return
	}
	m.membership.learnersRemoved.Inc()
}
