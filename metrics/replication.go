package metrics

import "github.com/prometheus/client_golang/prometheus"

// Redundancy is the agreed primary's synchronous replication in effect
// (health.Redundancy), as this proxy's latest probe of it saw it.
type Redundancy struct {
	// Known is false when this proxy has no answering probe of the agreed
	// primary (or no primary is agreed): the families are left out.
	Known bool
	// InEffect: standbys named in synchronous_standby_names that stream now
	// (they can confirm commits). Configured: the standbys it names (N).
	// Required: how many must confirm each commit (k).
	InEffect, Configured, Required int
}

var redundancyDescs = struct{ inEffect, configured, required *prometheus.Desc }{
	inEffect: desc("synchronous_standbys_in_effect",
		"Standbys named in the agreed primary's synchronous_standby_names that stream now and can confirm commits (this proxy's latest probe of the primary)."),
	configured: desc("synchronous_standbys_configured",
		"Standbys the agreed primary's synchronous_standby_names names (N); in effect below this is a degraded cluster."),
	required: desc("synchronous_standbys_required",
		"Standbys that must confirm each commit (k of ANY k / FIRST k); in effect below this, writes wait."),
}

// redundancyCollector reads Sources.Redundancy on scrape.
type redundancyCollector struct{ source func() Redundancy }

func (c redundancyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- redundancyDescs.inEffect
	ch <- redundancyDescs.configured
	ch <- redundancyDescs.required
}

func (c redundancyCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.source()
	if !r.Known {
		return
	}
	gauge(ch, redundancyDescs.inEffect, float64(r.InEffect))
	gauge(ch, redundancyDescs.configured, float64(r.Configured))
	gauge(ch, redundancyDescs.required, float64(r.Required))
}
