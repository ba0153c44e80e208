package metrics

import "github.com/prometheus/client_golang/prometheus"

// The label values of pgquorum_admin_refused_requests_total: the reasons
// the admin API refuses a call that changes the cluster (admin.Refused*).
var adminRefusedReasons = []string{"unauthorized", "unsupported_media_type"}

// adminEvents are the admin API's metrics.
type adminEvents struct {
	refused *prometheus.CounterVec
}

func newAdminEvents() adminEvents {
	e := adminEvents{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "admin", Name: "refused_requests_total",
			Help: "Calls to the admin API that would change the cluster and were refused, by reason: " +
				"unauthorized (401: no valid token or operator certificate), unsupported_media_type (415: not JSON).",
		}, []string{"reason"}),
	}
	for _, r := range adminRefusedReasons {
		e.refused.WithLabelValues(r)
	}
	return e
}

// AdminRefused counts a refused admin call (admin.Server.Refused). An unknown
// reason is counted as "unknown".
func (m *Metrics) AdminRefused(reason string) {
	if m == nil {
		return
	}
	m.admin.refused.WithLabelValues(oneOf(reason, adminRefusedReasons)).Inc()
}
