package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// This file holds the operator's entry points, which the admin API calls on
// whichever proxy it runs on. They propose commands through Raft (a follower's
// proposal is forwarded to the leader) and wait for the outcome; the leader's
// driver does the work. They touch no leader memory, so any goroutine may call them.

// FailoverRequest is `pgquorum failover [--to NAME] [--force --allow-data-loss]`.
type FailoverRequest struct {
	// To is the node to promote; "" lets the coordinator choose.
	To string
	// Force skips the reachable-standby check (SPEC §4 step 4) and the hazards;
	// it needs AllowDataLoss too. On a blocked failover it forces that one.
	Force         bool
	AllowDataLoss bool
}

// Errors of the operator entry points. Match them with errors.Is/As.
var (
	// ErrBadRequest: the request is invalid (admin: 400).
	ErrBadRequest = errors.New("bad request")
	// ErrConflict: the cluster is not in a state that allows the request, for
	// example a failover is already in progress (admin: 409).
	ErrConflict = errors.New("conflict")
)

// OutcomeError says that the requested failover or switchover did not complete:
// it is blocked (still in progress, traffic held) or was aborted (routing returned
// to the old primary).
type OutcomeError struct {
	Epoch   uint64
	Outcome clusterstate.Outcome // OutcomeBlocked or OutcomeAborted
	Reason  string
}

func (e *OutcomeError) Error() string {
	if e.Outcome == clusterstate.OutcomeBlocked {
		return fmt.Sprintf("failover of epoch %d is blocked and holds traffic: %s (it proceeds when enough standbys are reachable, "+
			"is aborted if the old primary returns, or can be forced with --force --allow-data-loss)", e.Epoch, e.Reason)
	}
	return fmt.Sprintf("failover of epoch %d was aborted, routing returned to the old primary: %s", e.Epoch, e.Reason)
}

// Failover starts a manual failover (or forces the blocked one) and waits until it
// completes, blocks or is aborted, or ctx ends (the failover then continues). It
// returns the history entry of the completed failover.
func (c *Coordinator) Failover(ctx context.Context, req FailoverRequest) (clusterstate.HistoryEntry, error) {
	if req.Force != req.AllowDataLoss {
		return clusterstate.HistoryEntry{}, fmt.Errorf("%w: --force and --allow-data-loss go together", ErrBadRequest)
	}
	st := c.State.State()
	if err := c.checkTarget(st, req.To, req.Force); err != nil {
		return clusterstate.HistoryEntry{}, err
	}
	now := c.now()
	if f := st.Failover; f != nil {
		if !req.Force {
			return clusterstate.HistoryEntry{}, fmt.Errorf("%w: a %s failover is already in progress (epoch %d, next step %s)",
				ErrConflict, f.Kind, f.Epoch, f.Next)
		}
		if f.Kind == clusterstate.KindSwitchover {
			return clusterstate.HistoryEntry{}, fmt.Errorf("%w: a switchover is in progress and cannot be forced", ErrConflict)
		}
		if !f.Blocked && !f.Forced {
			return clusterstate.HistoryEntry{}, fmt.Errorf("%w: the failover in progress (epoch %d) is not blocked", ErrConflict, f.Epoch)
		}
		_, err := c.propose(ctx, clusterstate.Command{ForceFailover: &clusterstate.ForceFailover{
			ExpectEpoch: f.Epoch, Target: req.To, Reason: "operator: failover --force --allow-data-loss", At: now,
		}})
		if err != nil {
			return clusterstate.HistoryEntry{}, conflictOr(err)
		}
		c.logger().Warn("operator forced the blocked failover; acknowledged commits may be lost", "epoch", f.Epoch, "to", req.To)
		return c.waitOutcome(ctx, f.Epoch)
	}
	reason := "operator: failover"
	if req.To != "" {
		reason += " --to " + req.To
	}
	if req.Force {
		reason += " --force --allow-data-loss"
	}
	res, err := c.propose(ctx, clusterstate.Command{BeginFailover: &clusterstate.BeginFailover{
		ExpectEpoch: st.Epoch, OldPrimary: st.Primary, Kind: clusterstate.KindManual,
		Target: req.To, Forced: req.Force, Reason: reason, At: now,
	}})
	if err != nil {
		return clusterstate.HistoryEntry{}, conflictOr(err)
	}
	if res.Code != clusterstate.Applied {
		return clusterstate.HistoryEntry{}, fmt.Errorf("%w: %s", ErrConflict, res)
	}
	c.logger().Warn("operator started a failover; proxies hold traffic", "old_primary", st.Primary, "to", req.To,
		"forced", req.Force, "epoch", res.Epoch)
	return c.waitOutcome(ctx, res.Epoch)
}

// Switchover performs a planned switchover to the named standby with zero loss
// and waits for its outcome (see Failover).
func (c *Coordinator) Switchover(ctx context.Context, to string) (clusterstate.HistoryEntry, error) {
	if to == "" {
		return clusterstate.HistoryEntry{}, fmt.Errorf("%w: a switchover needs a target (--to NAME)", ErrBadRequest)
	}
	st := c.State.State()
	if err := c.checkTarget(st, to, false); err != nil {
		return clusterstate.HistoryEntry{}, err
	}
	if f := st.Failover; f != nil {
		return clusterstate.HistoryEntry{}, fmt.Errorf("%w: a %s failover is already in progress (epoch %d, next step %s)",
			ErrConflict, f.Kind, f.Epoch, f.Next)
	}
	res, err := c.propose(ctx, clusterstate.Command{BeginFailover: &clusterstate.BeginFailover{
		ExpectEpoch: st.Epoch, OldPrimary: st.Primary, Kind: clusterstate.KindSwitchover,
		Target: to, Reason: "operator: switchover --to " + to, At: c.now(),
	}})
	if err != nil {
		return clusterstate.HistoryEntry{}, conflictOr(err)
	}
	if res.Code != clusterstate.Applied {
		return clusterstate.HistoryEntry{}, fmt.Errorf("%w: %s", ErrConflict, res)
	}
	c.logger().Info("operator started a switchover; proxies hold traffic", "old_primary", st.Primary, "to", to, "epoch", res.Epoch)
	return c.waitOutcome(ctx, res.Epoch)
}

// SetPaused pauses or resumes automatic failover.
func (c *Coordinator) SetPaused(ctx context.Context, paused bool) error {
	_, err := c.propose(ctx, clusterstate.Command{SetPaused: &clusterstate.SetPaused{Paused: paused}})
	return conflictOr(err)
}

// checkTarget validates an operator's target against the state.
func (c *Coordinator) checkTarget(st clusterstate.State, to string, forced bool) error {
	switch {
	case !st.Bootstrapped():
		return fmt.Errorf("%w: the cluster is not bootstrapped yet", ErrConflict)
	case to == "":
		return nil
	}
	if _, ok := st.Node(to); !ok {
		return fmt.Errorf("%w: unknown node %q (configured: %s)", ErrBadRequest, to, strings.Join(c.backendNames(), ", "))
	}
	oldPrimary := st.Primary
	if st.Failover != nil {
		oldPrimary = st.Failover.OldPrimary
	}
	if to == oldPrimary {
		return fmt.Errorf("%w: %s is the primary", ErrBadRequest, to)
	}
	if st.IsFenced(to) && !forced {
		return fmt.Errorf("%w: %s is fenced until `pgquorum rejoin`", ErrBadRequest, to)
	}
	return nil
}

// conflictOr marks a rejected command as a conflict; other errors pass through.
func conflictOr(err error) error {
	if errors.Is(err, errRejected) {
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return err
}

// waitOutcome waits until the failover of epoch completes, blocks or is aborted.
func (c *Coordinator) waitOutcome(ctx context.Context, epoch uint64) (clusterstate.HistoryEntry, error) {
	for {
		applied := c.Raft.Applied()
		st := c.State.State()
		if f := st.Failover; f != nil && f.Epoch == epoch {
			if f.Blocked {
				return clusterstate.HistoryEntry{}, &OutcomeError{Epoch: epoch, Outcome: clusterstate.OutcomeBlocked, Reason: f.BlockedReason}
			}
		} else {
			for i := len(st.History) - 1; i >= 0; i-- {
				h := st.History[i]
				if h.Epoch != epoch {
					continue
				}
				switch h.Outcome {
				case clusterstate.OutcomeCompleted:
					return h, nil
				case clusterstate.OutcomeAborted:
					return h, &OutcomeError{Epoch: epoch, Outcome: clusterstate.OutcomeAborted, Reason: h.OutcomeReason}
				}
			}
			return clusterstate.HistoryEntry{}, fmt.Errorf("the failover of epoch %d ended but its outcome is not in the history", epoch)
		}
		select {
		case <-ctx.Done():
			return clusterstate.HistoryEntry{}, fmt.Errorf("waiting for the failover of epoch %d (it continues): %w", epoch, ctx.Err())
		case <-c.Raft.Done():
			return clusterstate.HistoryEntry{}, fmt.Errorf("waiting for the failover of epoch %d: this proxy's Raft member stopped", epoch)
		case <-applied:
		}
	}
}

// Safety says whether an automatic failover would be safe if the primary failed
// now, judged from this proxy's own probes, and why not. For GET /cluster.
type Safety struct {
	Safe    bool     `json:"safe"`
	Reasons []string `json:"reasons,omitempty"`
	// Quorum says where N and k came from.
	Quorum string `json:"quorum,omitempty"`
}

// Safety reports whether an automatic failover would be safe now. It reads only
// the replicated state and this proxy's health monitor.
func (c *Coordinator) Safety() Safety {
	st := c.State.State()
	var s Safety
	switch {
	case !st.Bootstrapped():
		s.Reasons = append(s.Reasons, "the cluster is not bootstrapped")
		return s
	case st.Failover != nil:
		reason := fmt.Sprintf("a %s failover is in progress (next step %s)", st.Failover.Kind, st.Failover.Next)
		if st.Failover.Blocked {
			reason += ", blocked: " + st.Failover.BlockedReason
		}
		s.Reasons = append(s.Reasons, reason)
		return s
	}
	if st.Paused {
		s.Reasons = append(s.Reasons, "automatic failover is paused")
	}
	if last, ok := lastAutomaticFailover(st.History); ok {
		if until := last.At.Add(orDefault(c.MinInterval, DefaultMinInterval)); c.now().Before(until) {
			s.Reasons = append(s.Reasons, "the flap guard holds automatic failover until "+until.UTC().Format(time.RFC3339))
		}
	}
	q := c.quorumView(st.Primary)
	s.Quorum = q.Source
	s.Reasons = append(s.Reasons, q.Hazards...)
	switch snapshot := healthSnapshot(c.Health); {
	case c.Health == nil:
		s.Reasons = append(s.Reasons, "this proxy has no health monitor to judge the standbys")
	case !probedAny(snapshot):
		s.Reasons = append(s.Reasons, "this proxy has not probed the PostgreSQL nodes (learners never do: ask a voting proxy)")
	default:
		var up []string
		for name, status := range snapshot {
			if status.State.Health == health.HealthUp && status.State.InRecovery {
				up = append(up, name)
			}
		}
		if reach := q.Quorum.CheckReachable(up); !reach.Enough {
			s.Reasons = append(s.Reasons, "if the primary failed now: "+reach.Reason)
		}
	}
	s.Safe = len(s.Reasons) == 0
	return s
}

// healthSnapshot is h's snapshot, nil without a monitor.
func healthSnapshot(h HealthView) map[string]health.NodeStatus {
	if h == nil {
		return nil
	}
	return h.Snapshot()
}

// probedAny reports whether any node of snapshot was probed at least once.
func probedAny(snapshot map[string]health.NodeStatus) bool {
	for _, status := range snapshot {
		if !status.Latest.At.IsZero() {
			return true
		}
	}
	return false
}
