package coordinator

import (
	"context"
	"slices"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// includeStreamingStandbys puts a standby back into the primary's
// synchronous_standby_names once it streams again (after `pgquorum rejoin`):
// a failover writes the names for the standbys that remained, and without this
// a rejoined node would stream asynchronously forever, so losing the one
// synchronous standby would stop every commit.
//
// Only configured, unfenced nodes that the primary's pg_stat_replication shows
// streaming are added; nothing is ever removed here. Adding a standby to
// ANY k (...) keeps every commit on k standbys and only makes the failover rule
// |R| >= |N| - k + 1 stricter, so it is always safe. A wildcard or FIRST k setting
// is the operator's and is left alone.
func (d *driver) includeStreamingStandbys(ctx context.Context, st clusterstate.State) {
	if d.c.Health == nil {
		return
	}
	probe, ok := d.c.Health.Snapshot()[st.Primary]
	if !ok || !probe.Latest.Reachable || probe.Latest.InRecovery || probe.Latest.SyncStandbyNamesErr != "" {
		return
	}
	spec := probe.Latest.SyncSpec
	if spec.HasWildcard() || (spec.Method != health.SyncAny && spec.Method != health.SyncOff) {
		return
	}
	names := slices.Clone(spec.Names)
	added := false
	for _, r := range probe.Latest.Replication {
		if r.State != "streaming" || spec.Matches(r.ApplicationName) || st.IsFenced(r.ApplicationName) ||
			r.ApplicationName == st.Primary || slices.Contains(names, r.ApplicationName) {
			continue
		}
		if _, configured := st.Node(r.ApplicationName); !configured {
			continue
		}
		names = append(names, r.ApplicationName)
		added = true
	}
	if !added {
		return
	}
	slices.Sort(names)
	value := newSyncStandbyNames(spec.Num, names)
	actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
	defer cancel()
	// Promote on a node that is already the primary only sets the names.
	if _, err := d.pg.Promote(actx, st.Primary, value); err != nil {
		d.logger.Warn("cannot add streaming standbys to synchronous_standby_names; retrying later",
			"primary", st.Primary, "want", value, "err", err)
		return
	}
	d.logger.Info("streaming standbys added to synchronous_standby_names", "primary", st.Primary,
		"was", spec.String(), "now", value)
}
