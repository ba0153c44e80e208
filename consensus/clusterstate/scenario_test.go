package clusterstate

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
)

// nextCommand is what a coordinator that knows nothing but the State proposes to move
// the in-progress failover one step on: the command for FailoverProgress.Next, with
// the compare-and-set tokens taken from the state. freezeTable is what its freeze
// observes; candidate is what its choice picks.
func nextCommand(s State, freezeTable []LSNRow, candidate string) Command {
	f := s.Failover
	switch f.Next {
	case StepFreeze:
		return stepCmd(f.Epoch, f.Seq, StepFreeze, "", freezeTable)
	case StepChooseCandidate:
		return stepCmd(f.Epoch, f.Seq, StepChooseCandidate, candidate, nil)
	case StepComplete:
		return completeCmd(f.Epoch, f.Candidate)
	default:
		return stepCmd(f.Epoch, f.Seq, f.Next, "", nil)
	}
}

// proposeOn applies c through a Machine, as the Raft apply loop would, and decodes the result.
func proposeOn(t testing.TB, m *Machine, index uint64, c Command) Result {
	t.Helper()
	data, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.Apply(index, data)
	if err != nil {
		t.Fatalf("apply entry %d: %v", index, err)
	}
	res, err := DecodeResult(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.State().Validate(); err != nil {
		t.Fatalf("after entry %d: %v", index, err)
	}
	return res
}

// TestNewLeaderResumesFromStateAlone crashes the first coordinator after each possible
// number of steps, moves the state to a new machine through a snapshot (as a new
// leader would hold it), and lets a second coordinator finish from the State alone.
// Every crash point must end in the same state as an uninterrupted failover, and the
// first coordinator's late commands must be harmless.
func TestNewLeaderResumesFromStateAlone(t *testing.T) {
	uninterrupted := NewMachine()
	var index uint64
	drive := func(t *testing.T, m *Machine, maxSteps int) {
		for i := 0; i < maxSteps && m.State().Failover != nil; i++ {
			index++
			if res := proposeOn(t, m, index, nextCommand(m.State(), bothStandbys, "pg2")); res.Code != Applied {
				t.Fatalf("step %d: %s", i, res)
			}
		}
	}
	proposeOn(t, uninterrupted, 1, bootCmd())
	proposeOn(t, uninterrupted, 2, beginCmd(1, "pg1", KindAutomatic, "", false))
	index = 2
	drive(t, uninterrupted, 100)
	want, err := uninterrupted.Snapshot()
	if err != nil {
		t.Fatal(err)
	}

	for crashAfter := 0; crashAfter <= 4; crashAfter++ { // 5 commands finish it: freeze .. repoint, complete
		t.Run(fmt.Sprintf("crash after %d steps", crashAfter), func(t *testing.T) {
			oldLeader := NewMachine()
			proposeOn(t, oldLeader, 1, bootCmd())
			proposeOn(t, oldLeader, 2, beginCmd(1, "pg1", KindAutomatic, "", false))
			index = 2
			drive(t, oldLeader, crashAfter)
			lastSeen := oldLeader.State() // what the old coordinator believed before it stalled

			snap, err := oldLeader.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			newLeader := NewMachine()
			if err := newLeader.Restore(snap); err != nil {
				t.Fatal(err)
			}
			if got := newLeader.State().Failover; got == nil || got.Seq != uint64(crashAfter) {
				t.Fatalf("resumed progress %+v", got)
			}
			drive(t, newLeader, 100)
			got, err := newLeader.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("resumed state differs from uninterrupted:\n got %s\nwant %s", got, want)
			}

			// The old coordinator wakes up and proposes what it was about to.
			before := newLeader.State()
			index++
			res := proposeOn(t, newLeader, index, nextCommand(lastSeen, bothStandbys, "pg2"))
			if res.Code != Stale && res.Code != Duplicate {
				t.Fatalf("late command from the old leader: %s", res)
			}
			if !reflect.DeepEqual(newLeader.State(), before) {
				t.Fatalf("late command changed the state")
			}
		})
	}
}

// TestEveryStepProposedTwice proves retries are harmless: proposing each command a
// second time (a proposer that timed out and retried) is a Duplicate no-op.
func TestEveryStepProposedTwice(t *testing.T) {
	s := run(t, bootCmd())
	c := beginCmd(1, "pg1", KindSwitchover, "pg3", false)
	s, _ = applyChecked(t, s, c, Applied)
	s, _ = applyChecked(t, s, c, Duplicate)
	for s.Failover != nil {
		c := nextCommand(s, bothStandbys, "pg3")
		s, _ = applyChecked(t, s, c, Applied)
		s, _ = applyChecked(t, s, c, Duplicate)
	}
	if s.Primary != "pg3" || !s.IsFenced("pg1") || s.Epoch != 2 {
		t.Fatalf("state %+v", s)
	}
	h := s.History[len(s.History)-1]
	if h.Kind != KindSwitchover || h.Steps[0].Step != StepDemoteOldPrimary || len(h.Steps) != 5 {
		t.Fatalf("history %+v", h)
	}
}

// TestBlockedFailoverCompletesWhenStandbyReturns: blocked with one standby reachable,
// the coordinator re-freezes while blocked (still blocked, no new history entry), then
// the second standby returns and the failover completes with both rows in the table.
func TestBlockedFailoverCompletesWhenStandbyReturns(t *testing.T) {
	s := blocked(t)
	f := s.Failover
	s, _ = applyChecked(t, s, stepCmd(f.Epoch, f.Seq, StepFreeze, "", oneStandby), Applied)
	if !s.Failover.Blocked {
		t.Fatal("re-freeze with too few standbys must not clear the block")
	}
	f = s.Failover
	s, _ = applyChecked(t, s, blockCmd(f.Epoch, f.Seq, "1 of 2 standbys reachable, need 2"), Applied)
	for s.Failover != nil {
		s, _ = applyChecked(t, s, nextCommand(s, bothStandbys, "pg2"), Applied)
		if s.Failover != nil && s.Failover.Next == StepPromote && s.Failover.Blocked {
			t.Fatal("choosing a candidate must clear the block")
		}
	}
	if len(s.History) != 2 || s.History[0].Outcome != OutcomeBlocked || s.History[1].Outcome != OutcomeCompleted {
		t.Fatalf("history %+v", s.History)
	}
	if h := s.History[1]; h.Forced || len(h.LSNTable) != 2 || !h.LSNTable[1].Reachable {
		t.Fatalf("completed entry %+v", h)
	}
}

// TestForcedFailoverRecordsDataLossDecision: the operator forces a blocked failover;
// it completes with one standby and History says forced, with the table behind it.
func TestForcedFailoverRecordsDataLossDecision(t *testing.T) {
	s := blocked(t)
	s, _ = applyChecked(t, s, forceCmd(2, ""), Applied)
	for s.Failover != nil {
		s, _ = applyChecked(t, s, nextCommand(s, oneStandby, "pg2"), Applied)
	}
	h := s.History[len(s.History)-1]
	if !h.Forced || h.Outcome != OutcomeCompleted || h.NewPrimary != "pg2" || h.LSNTable[1].Reachable {
		t.Fatalf("history %+v", h)
	}
}

// TestHistoryIsBounded runs 150 switchovers (unfencing each old primary, as rejoin
// would) and keeps only the last MaxHistory.
func TestHistoryIsBounded(t *testing.T) {
	s := run(t, bootCmd())
	for i := range 150 {
		to := "pg2"
		if s.Primary == "pg2" {
			to = "pg1"
		}
		old := s.Primary
		s, _ = applyChecked(t, s, beginCmd(s.Epoch, old, KindSwitchover, to, false), Applied)
		for s.Failover != nil {
			s, _ = applyChecked(t, s, nextCommand(s, bothStandbys, to), Applied)
		}
		s, _ = applyChecked(t, s, Command{Unfence: &Unfence{Node: old}}, Applied)
		if i < MaxHistory && len(s.History) != i+1 {
			t.Fatalf("after %d switchovers history has %d entries", i+1, len(s.History))
		}
	}
	if len(s.History) != MaxHistory {
		t.Fatalf("history has %d entries, want %d", len(s.History), MaxHistory)
	}
	if first, last := s.History[0].Epoch, s.History[MaxHistory-1].Epoch; first != 52 || last != 151 {
		t.Fatalf("history epochs %d..%d, want 52..151 (the last 100)", first, last)
	}
}

// TestStepRecordsAreBounded: a failover that keeps re-freezing and re-blocking keeps
// counting Seq but stores only the last MaxStepRecords records and one blocked entry.
func TestStepRecordsAreBounded(t *testing.T) {
	s := blocked(t)
	for range 40 {
		f := s.Failover
		s, _ = applyChecked(t, s, stepCmd(f.Epoch, f.Seq, StepFreeze, "", oneStandby), Applied)
		f = s.Failover
		s, _ = applyChecked(t, s, blockCmd(f.Epoch, f.Seq, "1 of 2 standbys reachable, need 2"), Applied)
	}
	f := s.Failover
	if f.Seq != 82 || len(f.Steps) != MaxStepRecords || f.Steps[len(f.Steps)-1].Seq != 81 || len(s.History) != 1 {
		t.Fatalf("seq %d, %d records, last %+v, history %d", f.Seq, len(f.Steps), f.Steps[len(f.Steps)-1], len(s.History))
	}
	// A duplicate whose record has been dropped from the window is stale, not applied.
	s, _ = applyChecked(t, s, stepCmd(f.Epoch, 2, StepFreeze, "", oneStandby), Stale)
}
