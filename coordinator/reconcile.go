package coordinator

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"

	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// This file holds what the leader does between failovers: it heals what a
// failover could not finish (a standby that was unreachable and still follows the
// old primary, or was left frozen; an old primary left read-only by an aborted
// switchover). It also builds the primary_conninfo of re-pointed standbys.

// template returns the primary_conninfo template for node (see the package doc,
// "Replication credentials"): node's own capture, else any capture, else the
// latest template recorded in a freeze step of the current failover or of the
// history. ok is false when none is known.
func (d *driver) template(st clusterstate.State, node string) (conninfo.Params, bool) {
	captured := func(name string) (conninfo.Params, bool) {
		s, ok := d.conninfos[name]
		if !ok {
			return nil, false
		}
		params, err := conninfo.Parse(s)
		if err != nil {
			return nil, false
		}
		return params.Without(conninfo.AddressingKeys...), true
	}
	if t, ok := captured(node); ok {
		return t, true
	}
	for _, name := range slices.Sorted(maps.Keys(d.conninfos)) {
		if t, ok := captured(name); ok {
			return t, true
		}
	}
	var stepLists [][]clusterstate.StepRecord
	if st.Failover != nil {
		stepLists = append(stepLists, st.Failover.Steps)
	}
	for i := len(st.History) - 1; i >= 0; i-- {
		stepLists = append(stepLists, st.History[i].Steps)
	}
	for _, steps := range stepLists {
		for i := len(steps) - 1; i >= 0; i-- {
			if steps[i].Step != clusterstate.StepFreeze {
				continue
			}
			if t, ok := templateFromDetail(steps[i].Detail); ok {
				return t, true
			}
		}
	}
	return nil, false
}

// conninfoFor returns the primary_conninfo with which standby follows primary.
func (d *driver) conninfoFor(st clusterstate.State, standby, primary string) (string, error) {
	address, ok := d.c.Addresses[primary]
	if !ok {
		return "", fmt.Errorf("no configured address for %s", primary)
	}
	template, _ := d.template(st, standby)
	template = conninfo.WithTLSPolicy(template, d.c.StandbyTLS)
	return standbyConninfo(template, address, standby, d.c.ReplicationUser, d.c.ReplicationPassword), nil
}

// reconcile heals the cluster between failovers, at most every ReconcileEvery.
func (d *driver) reconcile(ctx context.Context, st clusterstate.State) {
	now := d.c.now()
	if now.Before(d.nextReconcile) || d.pg == nil || st.Primary == "" {
		return
	}
	d.nextReconcile = now.Add(orDefault(d.c.ReconcileEvery, DefaultReconcileEvery))
	d.restoreReadWrite(ctx, st)
	d.repointStragglers(ctx, st)
	d.includeStreamingStandbys(ctx, st)
}

// restoreReadWrite makes the primary read-write again when the last history entry
// is a switchover aborted back to it whose undo did not succeed yet.
func (d *driver) restoreReadWrite(ctx context.Context, st clusterstate.State) {
	if len(st.History) == 0 || d.readWriteEpoch == st.Epoch {
		return
	}
	last := st.History[len(st.History)-1]
	if last.Kind != clusterstate.KindSwitchover || last.Outcome != clusterstate.OutcomeAborted ||
		last.OldPrimary != st.Primary || st.Epoch != last.Epoch+1 {
		return
	}
	actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
	defer cancel()
	if err := d.pg.MakeReadWrite(actx, st.Primary); err != nil {
		d.logger.Warn("cannot make the primary read-write after an aborted switchover; retrying later", "node", st.Primary, "err", err)
		return
	}
	d.readWriteEpoch = st.Epoch
	d.logger.Info("primary is read-write again after the aborted switchover", "node", st.Primary, "epoch", st.Epoch)
}

// repointStragglers captures the primary_conninfo of standbys that follow the
// primary (once per leadership) and re-points every standby that this leader's monitor sees up, in
// recovery and not streaming from the agreed primary (not fenced: a fenced node
// waits for `pgquorum rejoin`). Re-pointing a standby that already has the right
// primary_conninfo changes nothing.
func (d *driver) repointStragglers(ctx context.Context, st clusterstate.State) {
	if d.c.Health == nil {
		return
	}
	address, ok := d.c.Addresses[st.Primary]
	if !ok {
		return
	}
	snapshot := d.c.Health.Snapshot()
	for _, n := range st.Nodes {
		if n.Name == st.Primary || st.IsFenced(n.Name) {
			continue
		}
		status, ok := snapshot[n.Name]
		if !ok || status.State.Health != health.HealthUp || !status.Latest.Reachable {
			continue
		}
		if !status.Latest.InRecovery {
			d.logger.Error("a node that is not the agreed primary is not in recovery (a second primary?); not touching it",
				"node", n.Name, "primary", st.Primary)
			continue
		}
		if streamsFrom(status.Latest.WalReceiver, address) {
			if _, known := d.conninfos[n.Name]; !known {
				d.captureConninfo(ctx, n.Name)
			}
			continue
		}
		d.repointStraggler(ctx, st, n.Name)
	}
}

// captureConninfo remembers a healthy standby's primary_conninfo, so that this
// leader knows the replication credentials before a failover freezes it.
func (d *driver) captureConninfo(ctx context.Context, node string) {
	actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
	defer cancel()
	conninfo, err := d.pg.PrimaryConninfo(actx, node)
	if err != nil {
		d.logger.Debug("cannot read primary_conninfo of a standby", "node", node, "err", err)
		return
	}
	if conninfo != "" {
		d.conninfos[node] = conninfo
	}
}

func (d *driver) repointStraggler(ctx context.Context, st clusterstate.State, node string) {
	actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
	defer cancel()
	current, err := d.pg.PrimaryConninfo(actx, node)
	if err != nil {
		d.logger.Warn("cannot read primary_conninfo of a standby that does not follow the primary", "node", node, "err", err)
		return
	}
	if current != "" {
		d.conninfos[node] = current
	}
	primaryConninfo, err := d.conninfoFor(st, node, st.Primary)
	if err != nil {
		d.logger.Warn("cannot re-point standby", "node", node, "err", err)
		return
	}
	changed, err := d.pg.SetPrimaryConninfo(actx, node, primaryConninfo, false)
	if err != nil {
		d.logger.Warn("cannot re-point standby that does not follow the primary", "node", node, "primary", st.Primary, "err", err)
		return
	}
	if changed {
		d.logger.Info("re-pointed a standby that did not follow the primary", "node", node, "primary", st.Primary,
			"was", conninfo.Redact(current), "now", conninfo.Redact(primaryConninfo))
	}
}

// streamsFrom reports whether a WAL receiver streams from address (host:port).
func streamsFrom(w *health.WalReceiver, address string) bool {
	if w == nil {
		return false
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		host, port = address, "5432"
	}
	return w.SenderHost == host && strconv.Itoa(w.SenderPort) == port
}
