package coordinator

import (
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
	"github.com/pgquorum/pgquorum/metrics"
)

// observePhases records how long each phase of a completed failover took
// (pgquorum_failover_phase_duration_seconds), from the steps recorded in the
// Raft log and, for detect and decide of an automatic failover, this leader's
// own failure detector: detect runs from the old primary's last successful
// probe to the detector declaring it down, decide from there to
// BeginFailover.
func (d *driver) observePhases(f *clusterstate.FailoverProgress, completedAt time.Time) {
	m := d.c.Metrics
	if m == nil {
		return
	}
	stepAt := func(s clusterstate.Step) (time.Time, bool) {
		for _, r := range f.Steps {
			if r.Step == s {
				return r.At, true
			}
		}
		return time.Time{}, false
	}
	since := func(from, to time.Time) time.Duration { return max(to.Sub(from), 0) }
	if f.Kind == clusterstate.KindAutomatic && d.c.Health != nil {
		if v, ok := d.c.Health.Snapshot()[f.OldPrimary]; ok && v.State.Health == health.HealthDown && !v.LastSuccess.IsZero() {
			m.ObserveFailoverPhase(metrics.PhaseDetect, since(v.LastSuccess, v.Since))
			m.ObserveFailoverPhase(metrics.PhaseDecide, since(v.Since, f.StartedAt))
		}
	}
	freeze, okFreeze := stepAt(clusterstate.StepFreeze)
	promote, okPromote := stepAt(clusterstate.StepPromote)
	if okFreeze {
		m.ObserveFailoverPhase(metrics.PhaseFreeze, since(f.StartedAt, freeze))
	}
	if okFreeze && okPromote {
		m.ObserveFailoverPhase(metrics.PhasePromote, since(freeze, promote))
	}
	if okPromote {
		m.ObserveFailoverPhase(metrics.PhaseReroute, since(promote, completedAt))
	}
}
