package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// This file ends a failover that promoted no one: a blocked failover whose old
// primary is back, or a switchover that cannot continue.

// oldPrimaryBack reports whether the old primary of a blocked failover is back:
// this leader reaches it as a primary and a majority of voters no longer observe it down.
func (d *driver) oldPrimaryBack(st clusterstate.State) bool {
	if d.c.Health == nil {
		return false
	}
	old := st.Failover.OldPrimary
	status, ok := d.c.Health.Snapshot()[old]
	if !ok || status.State.Health != health.HealthUp || status.State.InRecovery {
		return false
	}
	notBefore := d.c.now().Add(-orDefault(d.c.ObservationMaxAge, DefaultObservationMaxAge))
	return !st.MajorityDownSince(old, d.c.voters(), notBefore)
}

// abort ends a failover that promoted no one: it unfreezes the standbys (they
// follow the old primary again), makes the old primary of a switchover read-write,
// and proposes AbortFailover. Failures to undo are logged; reconcile heals them.
func (d *driver) abort(ctx context.Context, st clusterstate.State, reason string) (time.Duration, error) {
	f := st.Failover
	d.logger.Warn("aborting failover: routing returns to the old primary", "epoch", f.Epoch, "kind", f.Kind,
		"old_primary", f.OldPrimary, "reason", reason)
	type job struct {
		node, conninfo string
		err            error
	}
	var jobs []*job
	for _, node := range standbysOf(st, f.OldPrimary) {
		conninfo, err := d.conninfoFor(st, node, f.OldPrimary)
		jobs = append(jobs, &job{node: node, conninfo: conninfo, err: err})
	}
	done := make(chan struct{}, len(jobs)+1)
	readWrite := errors.New("not needed")
	for _, j := range jobs {
		go func() {
			defer func() { done <- struct{}{} }()
			if j.err != nil {
				return
			}
			actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
			defer cancel()
			_, j.err = d.pg.SetPrimaryConninfo(actx, j.node, j.conninfo, true)
		}()
	}
	if f.Kind == clusterstate.KindSwitchover {
		go func() {
			defer func() { done <- struct{}{} }()
			actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
			defer cancel()
			readWrite = d.pg.MakeReadWrite(actx, f.OldPrimary)
		}()
	} else {
		done <- struct{}{}
	}
	for range len(jobs) + 1 {
		<-done
	}
	for _, j := range jobs {
		if j.err != nil {
			d.logger.Warn("cannot unfreeze standby now; the leader retries later", "node", j.node, "err", j.err)
		}
	}
	switch {
	case f.Kind != clusterstate.KindSwitchover:
	case readWrite != nil:
		d.logger.Warn("cannot make the old primary read-write now; the leader retries later", "node", f.OldPrimary, "err", readWrite)
	default:
		d.readWriteEpoch = f.Epoch + 1
	}
	// The undo took time: propose only if this node still leads and the failover
	// has not moved on (AbortFailover is compare-and-set on the epoch only).
	if !d.c.Raft.Status().IsLeader {
		return d.c.interval(), nil
	}
	if now := d.c.State.State(); now.Failover == nil || now.Failover.Epoch != f.Epoch || now.Failover.Seq != f.Seq {
		return 0, nil
	}
	res, err := d.c.propose(ctx, clusterstate.Command{AbortFailover: &clusterstate.AbortFailover{
		ExpectEpoch: f.Epoch, Reason: reason, At: d.c.now(),
	}})
	if err != nil {
		return 0, err
	}
	if res.Code == clusterstate.Applied {
		d.logger.Warn("failover aborted", "epoch", f.Epoch, "primary", f.OldPrimary, "new_epoch", res.Epoch, "reason", reason)
		d.nextReconcile = time.Time{}
	}
	return 0, nil
}
