package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/conninfo"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/health"
)

// driver is the leader's side of the Coordinator: it runs the next step of
// whatever the replicated state asks for. Owner: the goroutine running
// Coordinator.Run; nothing else touches it. What it remembers is an optimisation
// (captured credentials, retry timers): a new leader starts with an empty driver
// and resumes from the State alone.
type driver struct {
	c      *Coordinator
	pg     Postgres
	logger *slog.Logger

	// conninfos holds the last non-empty primary_conninfo captured from each
	// standby. It may contain passwords: never log or propose it.
	conninfos map[string]string

	// retry delays the next attempt at the same failover position after a failure.
	retryKey   failoverKey
	retryAt    time.Time
	retryDelay time.Duration

	demoteFailures map[uint64]int // switchover epoch -> failed attempts to demote the old primary

	lastDecision   string    // the last "primary down but ..." reason logged
	nextReconcile  time.Time // when reconcile runs again
	readWriteEpoch uint64    // epoch for which the primary was made read-write after an aborted switchover
}

// failoverKey identifies a failover's position: its epoch and step sequence.
type failoverKey struct{ epoch, seq uint64 }

// Bounds of the retry delay after a failed step.
const (
	minRetryDelay = 50 * time.Millisecond
	maxRetryDelay = 2 * time.Second
	// maxDemoteFailures: a switchover whose old primary cannot be made
	// read-only this many times in a row is aborted.
	maxDemoteFailures = 3
)

func newDriver(c *Coordinator) *driver {
	pg := c.Postgres
	if pg == nil && c.ConnString != nil {
		pg = &SQLActions{Addresses: c.Addresses, ConnString: c.ConnString}
	}
	return &driver{
		c:              c,
		pg:             pg,
		logger:         c.logger(),
		conninfos:      map[string]string{},
		demoteFailures: map[uint64]int{},
	}
}

// leaderStep does what the leader must do now, given the applied state, and
// returns how long to wait before the next call unless something is applied
// meanwhile: 0 means at once (a command was applied).
func (d *driver) leaderStep(ctx context.Context) time.Duration {
	st := d.c.State.State()
	switch {
	case !st.Bootstrapped():
		if err := d.c.bootstrap(ctx); err != nil {
			if ctx.Err() == nil {
				d.logger.Warn("cannot bootstrap the cluster yet", "err", err)
			}
			return time.Second
		}
		return 0
	case st.Failover != nil:
		return d.driveFailover(ctx, st)
	default:
		if d.maybeBeginAutomatic(ctx, st) {
			return 0
		}
		d.reconcile(ctx, st)
		return d.c.interval()
	}
}

// maybeBeginAutomatic begins an automatic failover when decideAutomaticFailover
// says so; it reports whether a command was applied.
func (d *driver) maybeBeginAutomatic(ctx context.Context, st clusterstate.State) bool {
	c := d.c
	dec := decideAutomaticFailover(decisionInput{
		State:             st,
		Voters:            c.voters(),
		Now:               c.now(),
		ObservationMaxAge: orDefault(c.ObservationMaxAge, DefaultObservationMaxAge),
		MinInterval:       orDefault(c.MinInterval, DefaultMinInterval),
	})
	if !dec.Begin {
		if dec.HeldBack && dec.Reason != d.lastDecision {
			d.logger.Warn("primary observed down, automatic failover held back", "reason", dec.Reason)
		}
		d.lastDecision = dec.Reason
		return false
	}
	d.lastDecision = ""
	res, err := c.propose(ctx, clusterstate.Command{BeginFailover: &clusterstate.BeginFailover{
		ExpectEpoch: st.Epoch,
		OldPrimary:  st.Primary,
		Kind:        clusterstate.KindAutomatic,
		Reason:      dec.Reason,
		At:          c.now(),
	}})
	if err != nil {
		d.logger.Warn("cannot begin automatic failover", "primary", st.Primary, "err", err)
		return false
	}
	if res.Code == clusterstate.Applied {
		d.logger.Warn("primary down: automatic failover began; proxies hold traffic",
			"old_primary", st.Primary, "epoch", res.Epoch, "reason", dec.Reason)
	}
	return true
}

// driveFailover runs the in-progress failover's Next step.
func (d *driver) driveFailover(ctx context.Context, st clusterstate.State) time.Duration {
	f := st.Failover
	key := failoverKey{f.Epoch, f.Seq}
	now := d.c.now()
	if key != d.retryKey {
		d.retryKey, d.retryAt, d.retryDelay = key, time.Time{}, 0
	}
	if now.Before(d.retryAt) {
		return d.retryAt.Sub(now)
	}
	if d.pg == nil {
		d.logger.Error("a failover is in progress but the coordinator has no PostgreSQL access (Postgres or ConnString)")
		return maxRetryDelay
	}
	failpoint(ctx, d.logger, "before:"+string(f.Next))
	var wait time.Duration
	var err error
	switch f.Next {
	case clusterstate.StepDemoteOldPrimary:
		wait, err = d.demote(ctx, st)
	case clusterstate.StepFreeze:
		wait, err = d.freeze(ctx, st)
	case clusterstate.StepChooseCandidate:
		wait, err = d.choose(ctx, st)
	case clusterstate.StepPromote:
		wait, err = d.promote(ctx, st)
	case clusterstate.StepRepoint:
		wait, err = d.repoint(ctx, st)
	case clusterstate.StepComplete:
		wait, err = d.complete(ctx, st)
	default:
		err = fmt.Errorf("unknown next step %q", f.Next)
	}
	switch {
	case err == nil:
		if wait > 0 {
			d.retryAt = now.Add(wait)
		}
		return wait
	case ctx.Err() != nil:
		return d.c.interval()
	}
	d.retryDelay = min(max(2*d.retryDelay, minRetryDelay), maxRetryDelay)
	d.retryAt = now.Add(d.retryDelay)
	d.logger.Warn("failover step failed; retrying", "epoch", f.Epoch, "step", f.Next, "retry_in", d.retryDelay, "err", err)
	return d.retryDelay
}

// recordStep proposes RecordStep for the failover's Next step. A Stale result
// (another leader got there first) is not an error: the caller re-reads the state.
func (d *driver) recordStep(ctx context.Context, f *clusterstate.FailoverProgress, step clusterstate.Step,
	candidate string, table []clusterstate.LSNRow, detail string) error {
	return d.recordStepWith(ctx, f, clusterstate.RecordStep{Step: step, Candidate: candidate, LSNTable: table, Detail: detail})
}

// recordStepWith proposes rec (its step's fields) for failover f.
func (d *driver) recordStepWith(ctx context.Context, f *clusterstate.FailoverProgress, rec clusterstate.RecordStep) error {
	failpoint(ctx, d.logger, "after:"+string(rec.Step))
	rec.ExpectEpoch, rec.ExpectSeq, rec.At = f.Epoch, f.Seq, d.c.now()
	res, err := d.c.propose(ctx, clusterstate.Command{RecordStep: &rec})
	if err != nil {
		return err
	}
	if res.Code == clusterstate.Applied {
		d.logger.Info("failover step recorded", "epoch", f.Epoch, "step", rec.Step, "candidate", rec.Candidate,
			"since_begin", d.c.now().Sub(f.StartedAt).Round(time.Millisecond), "detail", rec.Detail)
	}
	return nil
}

// standbysOf returns the agreed nodes other than oldPrimary, sorted: every node
// that may be a standby of it (fenced nodes included: one that rejoined may have
// confirmed commits).
func standbysOf(st clusterstate.State, oldPrimary string) []string {
	var names []string
	for _, n := range st.Nodes {
		if n.Name != oldPrimary {
			names = append(names, n.Name)
		}
	}
	return names
}

// freezeResult is one standby's outcome of FreezeStandby.
type freezeResult struct {
	node string
	pos  StandbyPosition
	err  error
}

// freezeNodes freezes nodes in parallel, each bounded by ActionTimeout, and
// returns their LSN rows (sorted by node). Captured conninfos are remembered.
// Unreachable nodes are logged at warn level unless quiet (a blocked failover's
// re-checks expect them).
func (d *driver) freezeNodes(ctx context.Context, nodes []string, quiet bool) []clusterstate.LSNRow {
	results := make([]freezeResult, len(nodes))
	done := make(chan struct{}, len(nodes))
	for i, node := range nodes {
		go func() {
			defer func() { done <- struct{}{} }()
			actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
			defer cancel()
			pos, err := d.pg.FreezeStandby(actx, node)
			results[i] = freezeResult{node: node, pos: pos, err: err}
		}()
	}
	for range nodes {
		<-done
	}
	rows := make([]clusterstate.LSNRow, 0, len(nodes))
	for _, r := range results {
		row := clusterstate.LSNRow{Node: r.node}
		switch {
		case r.err != nil:
			level := slog.LevelWarn
			if quiet {
				level = slog.LevelDebug
			}
			d.logger.Log(ctx, level, "cannot freeze standby", "node", r.node, "err", r.err)
		case !r.pos.InRecovery:
			d.logger.Error("node is not in recovery: it is a primary that is not agreed; it is not frozen and never a candidate",
				"node", r.node, "timeline", r.pos.Timeline, "lsn", r.pos.ReceiveLSN)
			row.Reachable, row.Timeline, row.ReceiveLSN = true, r.pos.Timeline, uint64(r.pos.ReceiveLSN)
		default:
			if r.pos.PreviousConninfo != "" {
				d.conninfos[r.node] = r.pos.PreviousConninfo
			}
			row = clusterstate.LSNRow{Node: r.node, Reachable: true, Frozen: true, Timeline: r.pos.Timeline,
				ReceiveLSN: uint64(r.pos.ReceiveLSN), ReplayLSN: uint64(r.pos.ReplayLSN)}
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Node < rows[j].Node })
	return rows
}

// fence waits until no proxy can still route to the old primary: every proxy
// (voters and learners) confirmed that it acts on the failover's epoch (it has
// closed its backend connections to the old primary and holds new requests), or
// its routing lease provably ran out (consensus.FenceRouting). It runs first in
// the freeze step, before anything happens to PostgreSQL: from then on no proxy
// reads from the old primary, so no client can read what the old primary
// committed locally but no standby has (a commit waiting for synchronous
// replication is visible on the primary that waits), and nothing the new primary
// acknowledges can be followed by a stale read. It returns a description for the
// step's record.
func (d *driver) fence(ctx context.Context, f *clusterstate.FailoverProgress) (string, error) {
	index := d.c.State.AppliedIndex()
	started := time.Now()
	fctx, cancel := context.WithTimeout(ctx, orDefault(d.c.FenceTimeout, DefaultFenceTimeout))
	defer cancel()
	report, err := d.c.Raft.FenceRouting(fctx, index)
	if err != nil {
		return "", fmt.Errorf("fence the proxies' routing at index %d: %w", index, err)
	}
	took := time.Since(started).Round(time.Millisecond)
	level := slog.LevelInfo
	if len(report.Expired) > 0 {
		level = slog.LevelWarn
	}
	d.logger.Log(ctx, level, "no proxy routes to the old primary any more", "epoch", f.Epoch, "old_primary", f.OldPrimary,
		"index", index, "waited", took, "fence", report.String())
	return fmt.Sprintf("fenced in %v: %s", took, report), nil
}

// freeze runs SPEC §4 step 3, after the routing fence, and records the LSN
// table. While the failover is blocked it first checks whether the new table
// changes anything, so a blocked failover that stays blocked proposes nothing;
// and it aborts the failover when the old primary is back.
func (d *driver) freeze(ctx context.Context, st clusterstate.State) (time.Duration, error) {
	f := st.Failover
	fenced, err := d.fence(ctx, f)
	if err != nil {
		return 0, err
	}
	standbys := standbysOf(st, f.OldPrimary)
	var table []clusterstate.LSNRow
	if f.Kind == clusterstate.KindSwitchover {
		table = d.freezeForSwitchover(ctx, f.Target, standbys)
	} else {
		table = d.freezeNodes(ctx, standbys, f.Blocked)
	}
	if f.Blocked {
		trial := st.Clone()
		trial.Failover.LSNTable = table
		if ch := chooseCandidate(trial, d.c.quorumView(f.OldPrimary)); ch.Block != "" {
			if !f.Forced && d.oldPrimaryBack(st) {
				return d.abort(ctx, st, fmt.Sprintf("%s is reachable again while the failover was blocked (%s)", f.OldPrimary, ch.Block))
			}
			if ch.Block == f.BlockedReason {
				d.logger.Debug("failover still blocked", "epoch", f.Epoch, "reason", ch.Block, "lsn_table", formatLSNTable(table))
				return orDefault(d.c.BlockedRecheck, DefaultBlockedRecheck), nil
			}
		}
	}
	var frozen []string
	for _, r := range table {
		if r.Frozen {
			frozen = append(frozen, r.Node)
		}
	}
	detail := fenced + "; frozen: " + strings.Join(frozen, ", ")
	if len(frozen) == 0 {
		detail = fenced + "; no standby frozen"
	}
	if template, ok := d.template(st, ""); ok {
		detail += "; " + templateDetail(template)
	}
	d.logger.Info("standbys frozen", "epoch", f.Epoch, "lsn_table", formatLSNTable(table))
	return 0, d.recordStep(ctx, f, clusterstate.StepFreeze, "", table, detail)
}

// freezeForSwitchover freezes the standbys other than target first, waits
// (bounded) until target has received as much WAL as the most advanced of them,
// then freezes target: the target ends at the highest position, so every other
// standby can follow it.
func (d *driver) freezeForSwitchover(ctx context.Context, target string, standbys []string) []clusterstate.LSNRow {
	others := slices.DeleteFunc(slices.Clone(standbys), func(n string) bool { return n == target })
	rows := d.freezeNodes(ctx, others, false)
	var highest uint64
	for _, r := range rows {
		if r.Frozen {
			highest = max(highest, r.ReceiveLSN, r.ReplayLSN)
		}
	}
	if highest > 0 {
		wctx, cancel := context.WithTimeout(ctx, orDefault(d.c.CatchUpTimeout, DefaultCatchUpTimeout))
		if reached, err := d.pg.WaitReceived(wctx, target, health.LSN(highest)); err != nil {
			d.logger.Warn("switchover target did not catch up with the other standbys", "target", target,
				"want", health.LSN(highest), "reached", reached, "err", err)
		}
		cancel()
	}
	rows = append(rows, d.freezeNodes(ctx, []string{target}, false)...)
	sort.Slice(rows, func(i, j int) bool { return rows[i].Node < rows[j].Node })
	return rows
}

// choose runs SPEC §4 steps 4 and 5 on the recorded LSN table: block, or record
// the candidate. A switchover that cannot continue is aborted instead of blocked.
func (d *driver) choose(ctx context.Context, st clusterstate.State) (time.Duration, error) {
	f := st.Failover
	q := d.c.quorumView(f.OldPrimary)
	ch := chooseCandidate(st, q)
	if ch.Block != "" {
		if f.Kind == clusterstate.KindSwitchover {
			return d.abort(ctx, st, "switchover cannot continue: "+ch.Block)
		}
		d.logger.Warn("failover blocked: no candidate is promoted, traffic stays held", "epoch", f.Epoch,
			"reason", ch.Block, "quorum", q.Source, "lsn_table", formatLSNTable(f.LSNTable))
		res, err := d.c.propose(ctx, clusterstate.Command{BlockFailover: &clusterstate.BlockFailover{
			ExpectEpoch: f.Epoch, ExpectSeq: f.Seq, Reason: ch.Block, At: d.c.now(),
		}})
		if err == nil && res.Code == clusterstate.Applied {
			return 0, nil
		}
		return 0, err
	}
	d.logger.Info("failover candidate chosen", "epoch", f.Epoch, "candidate", ch.Candidate, "why", ch.Why,
		"quorum", q.Source, "lsn_table", formatLSNTable(f.LSNTable))
	return 0, d.recordStep(ctx, f, clusterstate.StepChooseCandidate, ch.Candidate, nil, ch.Why+"; N and k from "+q.Source)
}

// remainingStandbys are the standbys of a new primary: every agreed node except
// the candidate, the old primary and fenced nodes.
func remainingStandbys(st clusterstate.State, candidate string) []string {
	var names []string
	for _, n := range st.Nodes {
		if n.Name != candidate && n.Name != st.Failover.OldPrimary && !st.IsFenced(n.Name) {
			names = append(names, n.Name)
		}
	}
	return names
}

// promote runs SPEC §4 step 6 on the recorded candidate.
func (d *driver) promote(ctx context.Context, st clusterstate.State) (time.Duration, error) {
	f := st.Failover
	q := d.c.quorumView(f.OldPrimary)
	sync := syncStandbysFor(st, f.Candidate, q.Quorum.K, d.c.AllowAsync)
	if sync.Warning != "" {
		d.logger.Warn(sync.Warning, "candidate", f.Candidate, "synchronous_standby_names", sync.Names)
	}
	pctx, cancel := context.WithTimeout(ctx, orDefault(d.c.PromoteTimeout, DefaultPromoteTimeout))
	defer cancel()
	repointed := d.startEarlyRepoint(ctx, st) // cascade.go
	promoted, err := d.pg.Promote(pctx, f.Candidate, sync.Names)
	repointed()
	if err != nil {
		return 0, fmt.Errorf("promote %s: %w", f.Candidate, err)
	}
	detail := fmt.Sprintf("%s promoted on timeline %d; synchronous_standby_names = '%s'; transaction id horizon %d",
		f.Candidate, promoted.Timeline, sync.Names, promoted.XidHorizon)
	if sync.Warning != "" {
		detail += "; " + sync.Warning
	}
	return 0, d.recordStepWith(ctx, f, clusterstate.RecordStep{Step: clusterstate.StepPromote, Candidate: f.Candidate,
		XidHorizon: promoted.XidHorizon, Detail: detail})
}

// repoint runs SPEC §4 step 7: the other frozen standbys follow the new primary.
// A standby that cannot be re-pointed now does not hold the failover back; the
// leader's reconcile re-points it later.
func (d *driver) repoint(ctx context.Context, st clusterstate.State) (time.Duration, error) {
	f := st.Failover
	type job struct {
		node, conninfo string
		err            error
	}
	var jobs []*job
	for _, node := range otherFrozenStandbys(f) {
		ci, err := d.conninfoFor(st, node, f.Candidate)
		jobs = append(jobs, &job{node: node, conninfo: ci, err: err})
	}
	done := make(chan struct{}, len(jobs))
	for _, j := range jobs {
		go func() {
			defer func() { done <- struct{}{} }()
			if j.err != nil {
				return
			}
			actx, cancel := context.WithTimeout(ctx, orDefault(d.c.ActionTimeout, DefaultActionTimeout))
			defer cancel()
			_, j.err = d.pg.SetPrimaryConninfo(actx, j.node, j.conninfo, false)
		}()
	}
	for range jobs {
		<-done
	}
	var parts []string
	for _, j := range jobs {
		if j.err != nil {
			d.logger.Warn("cannot re-point standby now; the leader retries later", "node", j.node, "primary", f.Candidate, "err", j.err)
			parts = append(parts, fmt.Sprintf("%s not re-pointed: %v", j.node, j.err))
			continue
		}
		d.logger.Info("standby re-pointed", "node", j.node, "primary", f.Candidate, "primary_conninfo", conninfo.Redact(j.conninfo))
		parts = append(parts, j.node+" follows "+f.Candidate)
	}
	detail := strings.Join(parts, "; ")
	if detail == "" {
		detail = "no other standby to re-point"
	}
	return 0, d.recordStep(ctx, f, clusterstate.StepRepoint, f.Candidate, nil, detail)
}

// otherFrozenStandbys are the standbys that follow f's candidate once it is promoted: the
// frozen ones of the LSN table except the candidate and the old primary.
func otherFrozenStandbys(f *clusterstate.FailoverProgress) []string {
	var nodes []string
	for _, r := range f.LSNTable {
		if r.Frozen && r.Node != f.Candidate && r.Node != f.OldPrimary {
			nodes = append(nodes, r.Node)
		}
	}
	return nodes
}

// complete runs SPEC §4 step 8: the candidate becomes the primary at the epoch.
func (d *driver) complete(ctx context.Context, st clusterstate.State) (time.Duration, error) {
	f := st.Failover
	res, err := d.c.propose(ctx, clusterstate.Command{CompleteFailover: &clusterstate.CompleteFailover{
		ExpectEpoch: f.Epoch, NewPrimary: f.Candidate, At: d.c.now(),
	}})
	if err != nil {
		return 0, err
	}
	if res.Code == clusterstate.Applied {
		d.observePhases(f, d.c.now())
		d.logger.Info("failover complete: proxies route to the new primary", "kind", f.Kind, "epoch", f.Epoch,
			"new_primary", f.Candidate, "old_primary", f.OldPrimary, "fenced", f.OldPrimary, "forced", f.Forced,
			"took", d.c.now().Sub(f.StartedAt).Round(time.Millisecond), "lsn_table", formatLSNTable(f.LSNTable))
		d.nextReconcile = time.Time{}
	}
	return 0, nil
}
