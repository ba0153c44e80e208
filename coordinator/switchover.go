package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// demote runs the first step of a planned switchover (SPEC §4): the proxies
// already hold new requests (BeginFailover made "no primary"); here the old
// primary becomes read-only, transactions that already wrote get SwitchoverGrace
// to finish, every other client session is ended, and the target must receive the
// old primary's final LSN within CatchUpTimeout. Then freeze..complete run with
// zero loss. When the old primary cannot be demoted (maxDemoteFailures attempts)
// or the target does not catch up, the switchover is aborted.
func (d *driver) demote(ctx context.Context, st clusterstate.State) (time.Duration, error) {
	f := st.Failover
	grace := orDefault(d.c.SwitchoverGrace, DefaultSwitchoverGrace)
	actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout)+grace)
	final, err := d.pg.MakeReadOnly(actx, f.OldPrimary, grace)
	cancel()
	if err != nil {
		d.demoteFailures[f.Epoch]++
		if d.demoteFailures[f.Epoch] >= maxDemoteFailures {
			return d.abort(ctx, st, fmt.Sprintf("cannot make %s read-only: %v", f.OldPrimary, err))
		}
		return 0, fmt.Errorf("make %s read-only: %w", f.OldPrimary, err)
	}
	delete(d.demoteFailures, f.Epoch)
	d.logger.Info("old primary is read-only and its sessions are ended", "node", f.OldPrimary, "final_lsn", final)

	timeout := orDefault(d.c.CatchUpTimeout, DefaultCatchUpTimeout)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	reached, err := d.pg.WaitReceived(wctx, f.Target, final)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return d.abort(ctx, st, fmt.Sprintf("%s did not receive the final LSN %s of %s within %s (reached %s): %v",
			f.Target, final, f.OldPrimary, timeout, reached, err))
	}
	detail := fmt.Sprintf("%s read-only, sessions ended, final LSN %s; %s received %s", f.OldPrimary, final, f.Target, reached)
	return 0, d.recordStep(ctx, f, clusterstate.StepDemoteOldPrimary, "", nil, detail)
}
