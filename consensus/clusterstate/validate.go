package clusterstate

import (
	"fmt"
	"time"
)

// Validate checks the invariants every State produced by Apply keeps. Restore
// refuses a snapshot that breaks them; tests check them after every command.
//
//   - Epoch 0 is the empty state: nothing else set.
//   - Once bootstrapped: 1..MaxNodes nodes with valid names, sorted and distinct;
//     exactly one of Primary and Failover is set; Primary is a known, unfenced node.
//   - Observations sorted by proxy, distinct, non-zero proxy, encodable timestamps.
//   - Fenced sorted, distinct, known nodes.
//   - An in-progress failover belongs to the current epoch, names known nodes, has a
//     valid Next for its kind, a candidate exactly when one has been chosen, and a
//     bounded, increasing step record.
//   - History holds at most MaxHistory entries; text fields at most MaxTextBytes.
//   - Version reports sorted by proxy, distinct, non-zero (they may exist at
//     epoch 0).
func (s State) Validate() error {
	if err := validateVersions(s); err != nil {
		return err
	}
	if !s.Bootstrapped() {
		if s.Primary != "" || s.Nodes != nil || s.Paused || s.Failover != nil || s.History != nil || s.Fenced != nil {
			return fmt.Errorf("state at epoch 0 must be empty")
		}
		return nil
	}
	if err := s.validateNodes(); err != nil {
		return err
	}
	if (s.Primary == "") == (s.Failover == nil) {
		return fmt.Errorf("exactly one of primary (%q) and an in-progress failover must be set", s.Primary)
	}
	if s.Primary != "" {
		if _, ok := s.nodeIndex(s.Primary); !ok {
			return fmt.Errorf("primary %q is not a known node", s.Primary)
		}
		if s.IsFenced(s.Primary) {
			return fmt.Errorf("primary %q is fenced", s.Primary)
		}
	}
	for i, name := range s.Fenced {
		if _, ok := s.nodeIndex(name); !ok {
			return fmt.Errorf("fenced node %q is not a known node", name)
		}
		if i > 0 && s.Fenced[i-1] >= name {
			return fmt.Errorf("fenced nodes not sorted and distinct at %q", name)
		}
	}
	if s.Failover != nil {
		if err := s.validateFailover(*s.Failover); err != nil {
			return fmt.Errorf("failover: %w", err)
		}
	}
	if len(s.History) > MaxHistory {
		return fmt.Errorf("history has %d entries, limit %d", len(s.History), MaxHistory)
	}
	for i, h := range s.History {
		if err := validateHistoryEntry(h); err != nil {
			return fmt.Errorf("history entry %d: %w", i, err)
		}
	}
	return nil
}

func (s State) validateNodes() error {
	if len(s.Nodes) == 0 || len(s.Nodes) > MaxNodes {
		return fmt.Errorf("%d nodes, want 1..%d", len(s.Nodes), MaxNodes)
	}
	for i, n := range s.Nodes {
		if err := checkNodeName(n.Name); err != nil {
			return err
		}
		if i > 0 && s.Nodes[i-1].Name >= n.Name {
			return fmt.Errorf("nodes not sorted and distinct at %q", n.Name)
		}
		for j, o := range n.Observations {
			if o.Proxy == 0 {
				return fmt.Errorf("node %s: observation without proxy id", n.Name)
			}
			if j > 0 && n.Observations[j-1].Proxy >= o.Proxy {
				return fmt.Errorf("node %s: observations not sorted and distinct at proxy %d", n.Name, o.Proxy)
			}
			if err := checkTime(o.At); err != nil {
				return fmt.Errorf("node %s: observation by proxy %d: %w", n.Name, o.Proxy, err)
			}
		}
	}
	return nil
}

func (s State) validateFailover(f FailoverProgress) error {
	if f.Epoch != s.Epoch {
		return fmt.Errorf("epoch %d, state epoch %d", f.Epoch, s.Epoch)
	}
	switch f.Kind {
	case KindAutomatic, KindManual, KindSwitchover:
	default:
		return fmt.Errorf("unknown kind %q", f.Kind)
	}
	if f.Forced && f.Kind == KindSwitchover {
		return fmt.Errorf("a switchover cannot be forced")
	}
	for _, name := range []string{f.OldPrimary, f.Target, f.Candidate} {
		if _, ok := s.nodeIndex(name); name != "" && !ok {
			return fmt.Errorf("unknown node %q", name)
		}
	}
	if f.OldPrimary == "" {
		return fmt.Errorf("old primary missing")
	}
	next := stepIndex(f.Next)
	if next < 0 || (f.Next == StepDemoteOldPrimary && f.Kind != KindSwitchover) {
		return fmt.Errorf("invalid next step %q for a %s failover", f.Next, f.Kind)
	}
	if chosen := next > stepIndex(StepChooseCandidate); chosen != (f.Candidate != "") {
		return fmt.Errorf("candidate %q inconsistent with next step %s", f.Candidate, f.Next)
	}
	if f.Blocked && (f.BlockedReason == "" || f.BlockedAt.IsZero()) {
		return fmt.Errorf("blocked without a reason or time")
	}
	if !f.Blocked && (f.BlockedReason != "" || !f.BlockedAt.IsZero()) {
		return fmt.Errorf("block reason set while not blocked")
	}
	if err := validateText(f.Reason, f.BlockedReason); err != nil {
		return err
	}
	if err := validateTimes(f.StartedAt); err != nil {
		return err
	}
	if !f.BlockedAt.IsZero() {
		if err := validateTimes(f.BlockedAt); err != nil {
			return err
		}
	}
	if err := validateLSNTable(f.LSNTable); err != nil {
		return err
	}
	if err := validateSteps(f.Steps); err != nil {
		return err
	}
	if n := len(f.Steps); n > 0 && f.Steps[n-1].Seq >= f.Seq {
		return fmt.Errorf("step record sequence %d not below failover sequence %d", f.Steps[n-1].Seq, f.Seq)
	}
	return nil
}

func validateHistoryEntry(h HistoryEntry) error {
	switch h.Outcome {
	case OutcomeCompleted, OutcomeBlocked, OutcomeAborted:
	default:
		return fmt.Errorf("unknown outcome %q", h.Outcome)
	}
	if err := validateText(h.Reason, h.OutcomeReason); err != nil {
		return err
	}
	if err := validateTimes(h.StartedAt, h.At); err != nil {
		return err
	}
	if err := validateLSNTable(h.LSNTable); err != nil {
		return err
	}
	return validateSteps(h.Steps)
}

func validateLSNTable(rows []LSNRow) error {
	for i, r := range rows {
		if i > 0 && rows[i-1].Node >= r.Node {
			return fmt.Errorf("lsn table not sorted and distinct at %q", r.Node)
		}
	}
	return nil
}

func validateSteps(steps []StepRecord) error {
	if len(steps) > MaxStepRecords {
		return fmt.Errorf("%d step records, limit %d", len(steps), MaxStepRecords)
	}
	for i, r := range steps {
		if i > 0 && steps[i-1].Seq >= r.Seq {
			return fmt.Errorf("step records not in sequence at %d", r.Seq)
		}
		if err := validateText(r.Detail); err != nil {
			return err
		}
		if err := validateTimes(r.At); err != nil {
			return fmt.Errorf("step record %d: %w", r.Seq, err)
		}
	}
	return nil
}

func validateText(texts ...string) error {
	for _, t := range texts {
		if len(t) > MaxTextBytes {
			return fmt.Errorf("text of %d bytes exceeds %d", len(t), MaxTextBytes)
		}
	}
	return nil
}

func validateTimes(times ...time.Time) error {
	for _, t := range times {
		if err := checkTime(t); err != nil {
			return err
		}
	}
	return nil
}
