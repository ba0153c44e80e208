package coordinator

import (
	"context"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// An automatic failover re-points the other frozen standbys at the candidate while the
// candidate is being promoted, not only after (SPEC §4 step 7 still runs, and finds nothing
// left to change). A standby may stream from the candidate while it is still a standby
// (cascading replication): the candidate holds at least the WAL of every frozen standby it was
// chosen over, and when it is promoted the timeline switch streams over the connection that
// already exists. Without this the standby's WAL receiver connects only after the promote
// step, in the same moment as every session the proxies move to the new primary, and the first
// commit — which waits for a synchronous standby — waits behind that reconnection storm at the
// new primary's postmaster (docs/benchmarks.md, "Where reroute goes").
//
// Only frozen standbys whose primary_conninfo is still empty are touched, and only in a
// failover: a switchover can still be aborted back to its old primary before the promotion,
// and an aborted failover's unfreeze leaves standbys it did not freeze alone. Errors only
// delay the standby: the repoint step and the leader's reconcile retry.

// startEarlyRepoint re-points the other frozen standbys of st's failover at its candidate in
// the background, and returns a function that waits until those attempts have ended.
func (d *driver) startEarlyRepoint(ctx context.Context, st clusterstate.State) (wait func()) {
	f := st.Failover
	if f.Kind == clusterstate.KindSwitchover {
		return func() {}
	}
	var nodes, conninfos []string
	for _, node := range otherFrozenStandbys(f) {
		ci, err := d.conninfoFor(st, node, f.Candidate)
		if err != nil {
			continue // the repoint step reports it
		}
		nodes, conninfos = append(nodes, node), append(conninfos, ci)
	}
	done := make(chan struct{}, len(nodes))
	for i := range nodes {
		go func() {
			defer func() { done <- struct{}{} }()
			actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
			defer cancel()
			changed, err := d.pg.SetPrimaryConninfo(actx, nodes[i], conninfos[i], true)
			d.logger.Debug("standby re-pointed at the candidate before its promotion", "node", nodes[i],
				"candidate", f.Candidate, "changed", changed, "err", err)
		}()
	}
	return func() {
		for range nodes {
			<-done
		}
	}
}
