package clusterstate

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// This file applies the failover commands; see the sequence in the package doc.
// Each function validates the command's own fields, then the compare-and-set tokens
// (ExpectEpoch, ExpectSeq), then the rules that depend on the state, and only then
// builds the next state from copies.

func applyBeginFailover(s State, c BeginFailover) (State, Result) {
	if !s.Bootstrapped() {
		return notApplied(s, Rejected, "begin failover: not bootstrapped")
	}
	switch c.Kind {
	case KindAutomatic, KindManual, KindSwitchover:
	default:
		return notApplied(s, Rejected, "begin failover: unknown kind %q", c.Kind)
	}
	if c.Forced && c.Kind != KindManual {
		return notApplied(s, Rejected, "begin failover: only a manual failover can be forced, not %s", c.Kind)
	}
	if err := checkTime(c.At); err != nil {
		return notApplied(s, Rejected, "begin failover: %v", err)
	}
	if c.ExpectEpoch > s.Epoch {
		return notApplied(s, Rejected, "begin failover: expected epoch %d is ahead of epoch %d", c.ExpectEpoch, s.Epoch)
	}
	if c.ExpectEpoch < s.Epoch {
		if f := s.Failover; f != nil && f.Epoch == c.ExpectEpoch+1 && f.Kind == c.Kind &&
			f.OldPrimary == c.OldPrimary && f.Target == c.Target && f.Forced == c.Forced {
			return notApplied(s, Duplicate, "failover of epoch %d already begun", f.Epoch)
		}
		return notApplied(s, Stale, "begin failover: expected epoch %d, state is at epoch %d", c.ExpectEpoch, s.Epoch)
	}
	if s.Failover != nil {
		return notApplied(s, Rejected, "begin failover: a %s failover is already in progress at epoch %d", s.Failover.Kind, s.Epoch)
	}
	if s.Epoch == math.MaxUint64 {
		return notApplied(s, Rejected, "begin failover: epoch exhausted")
	}
	if c.OldPrimary != s.Primary {
		return notApplied(s, Rejected, "begin failover: old primary %q is not the primary %q", c.OldPrimary, s.Primary)
	}
	if c.Kind == KindAutomatic && s.Paused {
		return notApplied(s, Rejected, "begin failover: automatic failover is paused")
	}
	switch {
	case c.Kind == KindAutomatic && c.Target != "":
		return notApplied(s, Rejected, "begin failover: an automatic failover cannot name a target")
	case c.Kind == KindSwitchover && c.Target == "":
		return notApplied(s, Rejected, "begin failover: a switchover needs a target")
	case c.Target != "":
		if err := checkCandidate(s, c.Target, c.OldPrimary, c.Forced); err != nil {
			return notApplied(s, Rejected, "begin failover: target: %v", err)
		}
	}

	first := StepFreeze
	if c.Kind == KindSwitchover {
		first = StepDemoteOldPrimary
	}
	next := s
	next.Epoch = s.Epoch + 1
	next.Primary, next.PrimaryXidHorizon = "", 0
	next.Failover = &FailoverProgress{
		Epoch:      next.Epoch,
		Kind:       c.Kind,
		Forced:     c.Forced,
		OldPrimary: c.OldPrimary,
		Target:     c.Target,
		Reason:     clipText(c.Reason),
		StartedAt:  c.At.UTC(),
		Next:       first,
	}
	return applied(next, "%s failover began: epoch %d, no primary, old primary %s", c.Kind, next.Epoch, c.OldPrimary)
}

// checkCandidate says whether name may become the primary of a failover away from
// oldPrimary. A forced failover may pick a fenced node or the old primary itself.
func checkCandidate(s State, name, oldPrimary string, forced bool) error {
	if _, ok := s.nodeIndex(name); !ok {
		return fmt.Errorf("unknown node %q", name)
	}
	if forced {
		return nil
	}
	if name == oldPrimary {
		return fmt.Errorf("%s is the old primary", name)
	}
	if s.IsFenced(name) {
		return fmt.Errorf("%s is fenced until it rejoins", name)
	}
	return nil
}

// inProgress returns the in-progress failover a command for expectEpoch is about.
// When ok is false, res is the no-op answer to return with s unchanged.
func inProgress(s State, what string, expectEpoch uint64) (f FailoverProgress, res Result, ok bool) {
	switch {
	case !s.Bootstrapped():
		_, res = notApplied(s, Rejected, "%s: not bootstrapped", what)
	case expectEpoch > s.Epoch:
		_, res = notApplied(s, Rejected, "%s: expected epoch %d is ahead of epoch %d", what, expectEpoch, s.Epoch)
	case s.Failover == nil:
		_, res = notApplied(s, Stale, "%s: no failover in progress (epoch %d)", what, s.Epoch)
	case expectEpoch < s.Failover.Epoch:
		_, res = notApplied(s, Stale, "%s: expected epoch %d, failover in progress is epoch %d", what, expectEpoch, s.Failover.Epoch)
	default:
		return *s.Failover, Result{}, true
	}
	return FailoverProgress{}, res, false
}

// checkSeq compares a step command's ExpectSeq with the failover's Seq. A command for
// an earlier Seq is a Duplicate when the record made at that Seq is the same step,
// else Stale.
func checkSeq(s State, f FailoverProgress, what string, expectSeq uint64, step Step, candidate string) (Result, bool) {
	switch {
	case expectSeq > f.Seq:
		_, res := notApplied(s, Rejected, "%s: expected step sequence %d is ahead of %d", what, expectSeq, f.Seq)
		return res, false
	case expectSeq < f.Seq:
		i := slices.IndexFunc(f.Steps, func(r StepRecord) bool { return r.Seq == expectSeq })
		if i >= 0 && f.Steps[i].Step == step && f.Steps[i].Candidate == candidate {
			_, res := notApplied(s, Duplicate, "%s: step %s already recorded at sequence %d", what, step, expectSeq)
			return res, false
		}
		_, res := notApplied(s, Stale, "%s: expected step sequence %d, failover is at %d", what, expectSeq, f.Seq)
		return res, false
	}
	return Result{}, true
}

func applyRecordStep(s State, c RecordStep) (State, Result) {
	const what = "record step"
	if i := stepIndex(c.Step); i < 0 || c.Step == StepComplete {
		return notApplied(s, Rejected, "%s: unknown step %q", what, c.Step)
	}
	if err := checkTime(c.At); err != nil {
		return notApplied(s, Rejected, "%s: %v", what, err)
	}
	f, res, ok := inProgress(s, what, c.ExpectEpoch)
	if !ok {
		return s, res
	}
	recorded := "" // the candidate a record keeps: choose_candidate's only
	if c.Step == StepChooseCandidate {
		recorded = c.Candidate
	}
	if res, ok := checkSeq(s, f, what, c.ExpectSeq, c.Step, recorded); !ok {
		return s, res
	}
	if c.Step != f.Next {
		return notApplied(s, Rejected, "%s: %s is out of order, next step is %s", what, c.Step, f.Next)
	}
	table, err := normalizeLSNTable(s, c.LSNTable)
	if err != nil {
		return notApplied(s, Rejected, "%s: lsn table: %v", what, err)
	}
	if c.Step == StepChooseCandidate {
		if c.Candidate == "" {
			return notApplied(s, Rejected, "%s: choose_candidate needs a candidate", what)
		}
		if err := checkCandidate(s, c.Candidate, f.OldPrimary, f.Forced); err != nil {
			return notApplied(s, Rejected, "%s: candidate: %v", what, err)
		}
		if f.Target != "" && c.Candidate != f.Target {
			return notApplied(s, Rejected, "%s: candidate %s is not the requested target %s", what, c.Candidate, f.Target)
		}
		f.Candidate = c.Candidate
		f.Blocked, f.BlockedReason, f.BlockedAt = false, "", time.Time{}
	} else if c.Candidate != "" && c.Candidate != f.Candidate {
		return notApplied(s, Rejected, "%s: candidate %s is not the chosen candidate %q", what, c.Candidate, f.Candidate)
	}
	if len(table) > 0 {
		f.LSNTable = table
	}
	if c.Step == StepPromote {
		f.XidHorizon = c.XidHorizon
	}
	f.Steps = appendStep(f.Steps, StepRecord{
		Seq: f.Seq, Step: c.Step, Candidate: recorded, Detail: clipText(c.Detail), At: c.At.UTC(),
	})
	f.Seq++
	f.Next = stepOrder[stepIndex(c.Step)+1]
	next := s
	next.Failover = &f
	return applied(next, "step %s recorded for epoch %d, next is %s", c.Step, f.Epoch, f.Next)
}

// normalizeLSNTable checks that rows name known nodes at most once and returns a copy
// sorted by node.
func normalizeLSNTable(s State, rows []LSNRow) ([]LSNRow, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	out := slices.Clone(rows)
	slices.SortFunc(out, func(a, b LSNRow) int { return strings.Compare(a.Node, b.Node) })
	for i, r := range out {
		if _, ok := s.nodeIndex(r.Node); !ok {
			return nil, fmt.Errorf("unknown node %q", r.Node)
		}
		if i > 0 && out[i-1].Node == r.Node {
			return nil, fmt.Errorf("node %q listed twice", r.Node)
		}
	}
	return out, nil
}

// appendStep returns a new slice with rec appended, keeping the last MaxStepRecords.
func appendStep(steps []StepRecord, rec StepRecord) []StepRecord {
	if len(steps) >= MaxStepRecords {
		steps = steps[len(steps)-MaxStepRecords+1:]
	}
	out := make([]StepRecord, 0, len(steps)+1)
	out = append(out, steps...)
	return append(out, rec)
}

// appendHistory returns a new slice with e appended, keeping the last MaxHistory.
func appendHistory(history []HistoryEntry, e HistoryEntry) []HistoryEntry {
	if len(history) >= MaxHistory {
		history = history[len(history)-MaxHistory+1:]
	}
	out := make([]HistoryEntry, 0, len(history)+1)
	out = append(out, history...)
	return append(out, e)
}

// promoted reports whether the candidate has been promoted: from then on the failover
// can only go forward (no block, no abort).
func (f FailoverProgress) promoted() bool {
	return stepIndex(f.Next) > stepIndex(StepPromote)
}

func applyBlockFailover(s State, c BlockFailover) (State, Result) {
	const what = "block failover"
	reason := clipText(c.Reason)
	if reason == "" {
		return notApplied(s, Rejected, "%s: reason missing", what)
	}
	if err := checkTime(c.At); err != nil {
		return notApplied(s, Rejected, "%s: %v", what, err)
	}
	f, res, ok := inProgress(s, what, c.ExpectEpoch)
	if !ok {
		return s, res
	}
	if res, ok := checkSeq(s, f, what, c.ExpectSeq, StepBlocked, ""); !ok {
		return s, res
	}
	if f.promoted() {
		return notApplied(s, Rejected, "%s: %s is already promoted; the failover can only complete", what, f.Candidate)
	}
	wasBlocked := f.Blocked
	at := c.At.UTC()
	f.Blocked, f.BlockedReason, f.BlockedAt = true, reason, at
	f.Candidate = ""
	if stepIndex(f.Next) > stepIndex(StepFreeze) {
		f.Next = StepFreeze
	}
	f.Steps = appendStep(f.Steps, StepRecord{Seq: f.Seq, Step: StepBlocked, Detail: reason, At: at})
	f.Seq++
	next := s
	next.Failover = &f
	if !wasBlocked {
		next.History = appendHistory(s.History, historyEntry(f, OutcomeBlocked, "", reason, at))
	}
	return applied(next, "failover of epoch %d blocked: %s", f.Epoch, reason)
}

func applyForceFailover(s State, c ForceFailover) (State, Result) {
	const what = "force failover"
	if err := checkTime(c.At); err != nil {
		return notApplied(s, Rejected, "%s: %v", what, err)
	}
	f, res, ok := inProgress(s, what, c.ExpectEpoch)
	if !ok {
		return s, res
	}
	if f.Kind == KindSwitchover {
		return notApplied(s, Rejected, "%s: a switchover cannot be forced; abort it instead", what)
	}
	if !f.Blocked {
		if f.Forced {
			return notApplied(s, Duplicate, "failover of epoch %d is already forced", f.Epoch)
		}
		return notApplied(s, Rejected, "%s: failover of epoch %d is not blocked", what, f.Epoch)
	}
	if c.Target != "" {
		if err := checkCandidate(s, c.Target, f.OldPrimary, true); err != nil {
			return notApplied(s, Rejected, "%s: target: %v", what, err)
		}
		f.Target = c.Target
	}
	reason := clipText(c.Reason)
	f.Forced = true
	f.Blocked, f.BlockedReason, f.BlockedAt = false, "", time.Time{}
	f.Steps = appendStep(f.Steps, StepRecord{Seq: f.Seq, Step: StepForced, Detail: reason, At: c.At.UTC()})
	f.Seq++
	next := s
	next.Failover = &f
	return applied(next, "failover of epoch %d forced; data loss allowed", f.Epoch)
}

func applyAbortFailover(s State, c AbortFailover) (State, Result) {
	const what = "abort failover"
	reason := clipText(c.Reason)
	if reason == "" {
		return notApplied(s, Rejected, "%s: reason missing", what)
	}
	if err := checkTime(c.At); err != nil {
		return notApplied(s, Rejected, "%s: %v", what, err)
	}
	if s.Failover == nil && len(s.History) > 0 {
		if last := s.History[len(s.History)-1]; last.Epoch == c.ExpectEpoch && last.Outcome == OutcomeAborted {
			return notApplied(s, Duplicate, "failover of epoch %d already aborted", c.ExpectEpoch)
		}
	}
	f, res, ok := inProgress(s, what, c.ExpectEpoch)
	if !ok {
		return s, res
	}
	if f.promoted() {
		return notApplied(s, Rejected, "%s: %s is already promoted; the failover can only complete", what, f.Candidate)
	}
	if s.Epoch == math.MaxUint64 {
		return notApplied(s, Rejected, "%s: epoch exhausted", what)
	}
	at := c.At.UTC()
	next := s
	next.Epoch = s.Epoch + 1
	next.Primary, next.PrimaryXidHorizon = f.OldPrimary, 0 // its own transactions: nothing to split
	next.Failover = nil
	next.History = appendHistory(s.History, historyEntry(f, OutcomeAborted, f.OldPrimary, reason, at))
	return applied(next, "failover of epoch %d aborted: epoch %d, primary %s again", f.Epoch, next.Epoch, f.OldPrimary)
}

func applyCompleteFailover(s State, c CompleteFailover) (State, Result) {
	const what = "complete failover"
	if err := checkTime(c.At); err != nil {
		return notApplied(s, Rejected, "%s: %v", what, err)
	}
	if s.Failover == nil && s.Bootstrapped() && s.Epoch == c.ExpectEpoch && s.Primary == c.NewPrimary {
		return notApplied(s, Duplicate, "epoch %d already has primary %s", s.Epoch, s.Primary)
	}
	f, res, ok := inProgress(s, what, c.ExpectEpoch)
	if !ok {
		return s, res
	}
	if f.Next != StepComplete {
		return notApplied(s, Rejected, "%s: not ready, next step is %s", what, f.Next)
	}
	if c.NewPrimary != f.Candidate {
		return notApplied(s, Rejected, "%s: new primary %q is not the promoted candidate %q", what, c.NewPrimary, f.Candidate)
	}
	if _, ok := s.nodeIndex(c.NewPrimary); !ok {
		return notApplied(s, Rejected, "%s: unknown node %q", what, c.NewPrimary)
	}
	if s.IsFenced(c.NewPrimary) && !f.Forced {
		return notApplied(s, Rejected, "%s: %s is fenced until it rejoins", what, c.NewPrimary)
	}
	at := c.At.UTC()
	next := s
	next.Primary = c.NewPrimary
	next.PrimaryXidHorizon = f.XidHorizon
	next.Failover = nil
	next.Fenced = withoutName(s.Fenced, c.NewPrimary)
	if f.OldPrimary != c.NewPrimary {
		next.Fenced = withName(next.Fenced, f.OldPrimary)
	}
	next.History = appendHistory(s.History, historyEntry(f, OutcomeCompleted, c.NewPrimary, "", at))
	if f.OldPrimary == c.NewPrimary {
		return applied(next, "failover of epoch %d complete: primary %s", f.Epoch, c.NewPrimary)
	}
	return applied(next, "failover of epoch %d complete: primary %s, %s fenced", f.Epoch, c.NewPrimary, f.OldPrimary)
}

func historyEntry(f FailoverProgress, outcome Outcome, newPrimary, outcomeReason string, at time.Time) HistoryEntry {
	return HistoryEntry{
		Epoch:         f.Epoch,
		Kind:          f.Kind,
		Forced:        f.Forced,
		Outcome:       outcome,
		OldPrimary:    f.OldPrimary,
		NewPrimary:    newPrimary,
		Reason:        f.Reason,
		OutcomeReason: outcomeReason,
		StartedAt:     f.StartedAt,
		At:            at,
		LSNTable:      f.LSNTable,
		Steps:         f.Steps,
	}
}
