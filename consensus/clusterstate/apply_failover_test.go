package clusterstate

import (
	"testing"
	"time"
)

func TestApplyBeginFailover(t *testing.T) {
	paused := func(t testing.TB) State { return run(t, bootCmd(), Command{SetPaused: &SetPaused{Paused: true}}) }
	noAt := beginCmd(1, "pg1", KindAutomatic, "", false)
	noAt.BeginFailover.At = time.Time{}
	runCases(t, []applyCase{
		{name: "automatic failover: epoch+1, no primary, next is freeze", state: bootstrapped,
			cmd: beginCmd(1, "pg1", KindAutomatic, "", false), want: Applied,
			check: func(t *testing.T, s State) {
				f := s.Failover
				if s.Epoch != 2 || s.Primary != "" || f == nil || f.Epoch != 2 || f.Next != StepFreeze || f.Seq != 0 ||
					f.OldPrimary != "pg1" || f.Kind != KindAutomatic || !f.StartedAt.Equal(at(10)) {
					t.Fatalf("state %+v failover %+v", s, f)
				}
			}},
		{name: "switchover starts by demoting the old primary", state: bootstrapped,
			cmd: beginCmd(1, "pg1", KindSwitchover, "pg2", false), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Failover.Next != StepDemoteOldPrimary || s.Failover.Target != "pg2" {
					t.Fatalf("failover %+v", s.Failover)
				}
			}},
		{name: "the same begin again is a duplicate", state: begun, cmd: beginCmd(1, "pg1", KindAutomatic, "", false), want: Duplicate},
		{name: "a different begin for the same epoch is stale", state: begun, cmd: beginCmd(1, "pg1", KindManual, "pg3", false), want: Stale},
		{name: "a begin from an older epoch is stale", state: completed, cmd: beginCmd(1, "pg1", KindAutomatic, "", false), want: Stale},
		{name: "a begin ahead of the state is rejected", state: bootstrapped, cmd: beginCmd(5, "pg1", KindAutomatic, "", false), want: Rejected, reason: "ahead"},
		{name: "a begin while a failover is in progress is rejected", state: begun, cmd: beginCmd(2, "", KindManual, "", false), want: Rejected, reason: "already in progress"},
		{name: "old primary must be the primary", state: bootstrapped, cmd: beginCmd(1, "pg2", KindAutomatic, "", false), want: Rejected, reason: "is not the primary"},
		{name: "automatic failover is refused while paused", state: paused, cmd: beginCmd(1, "pg1", KindAutomatic, "", false), want: Rejected, reason: "paused"},
		{name: "manual failover is allowed while paused", state: paused, cmd: beginCmd(1, "pg1", KindManual, "", false), want: Applied},
		{name: "switchover is allowed while paused", state: paused, cmd: beginCmd(1, "pg1", KindSwitchover, "pg3", false), want: Applied},
		{name: "automatic failover cannot name a target", state: bootstrapped, cmd: beginCmd(1, "pg1", KindAutomatic, "pg2", false), want: Rejected, reason: "target"},
		{name: "switchover needs a target", state: bootstrapped, cmd: beginCmd(1, "pg1", KindSwitchover, "", false), want: Rejected, reason: "needs a target"},
		{name: "target must be a known node", state: bootstrapped, cmd: beginCmd(1, "pg1", KindManual, "pg9", false), want: Rejected, reason: "unknown node"},
		{name: "target must not be the old primary", state: bootstrapped, cmd: beginCmd(1, "pg1", KindSwitchover, "pg1", false), want: Rejected, reason: "old primary"},
		{name: "target must not be fenced", state: completed, cmd: beginCmd(2, "pg2", KindSwitchover, "pg1", false), want: Rejected, reason: "fenced"},
		{name: "a forced manual failover may target a fenced node", state: completed, cmd: beginCmd(2, "pg2", KindManual, "pg1", true), want: Applied,
			check: func(t *testing.T, s State) {
				if !s.Failover.Forced || s.Failover.Target != "pg1" {
					t.Fatalf("failover %+v", s.Failover)
				}
			}},
		{name: "an automatic failover cannot be forced", state: bootstrapped, cmd: beginCmd(1, "pg1", KindAutomatic, "", true), want: Rejected, reason: "only a manual"},
		{name: "a switchover cannot be forced", state: bootstrapped, cmd: beginCmd(1, "pg1", KindSwitchover, "pg2", true), want: Rejected, reason: "only a manual"},
		{name: "unknown kind", state: bootstrapped, cmd: beginCmd(1, "pg1", "sideways", "", false), want: Rejected, reason: "unknown kind"},
		{name: "missing At", state: bootstrapped, cmd: noAt, want: Rejected, reason: "timestamp missing"},
		{name: "not bootstrapped", state: empty, cmd: beginCmd(0, "", KindManual, "", false), want: Rejected, reason: "not bootstrapped"},
	})
}

func TestApplyRecordStep(t *testing.T) {
	targeted := func(t testing.TB) State {
		return run(t, bootCmd(), beginCmd(1, "pg1", KindManual, "pg3", false), stepCmd(2, 0, StepFreeze, "", bothStandbys))
	}
	fencedPg3 := func(t testing.TB) State {
		// pg3 becomes primary, pg1 fenced; then fail over from pg3 and freeze.
		s := run(t, bootCmd(), beginCmd(1, "pg1", KindSwitchover, "pg3", false),
			stepCmd(2, 0, StepDemoteOldPrimary, "", nil), stepCmd(2, 1, StepFreeze, "", nil),
			stepCmd(2, 2, StepChooseCandidate, "pg3", nil), stepCmd(2, 3, StepPromote, "", nil),
			stepCmd(2, 4, StepRepoint, "", nil), completeCmd(2, "pg3"),
			beginCmd(2, "pg3", KindAutomatic, "", false), stepCmd(3, 0, StepFreeze, "", nil))
		return s
	}
	badTable := []LSNRow{{Node: "pg2"}, {Node: "pg2"}}
	runCases(t, []applyCase{
		{name: "freeze records the LSN table sorted by node", state: begun, cmd: stepCmd(2, 0, StepFreeze, "", bothStandbys), want: Applied,
			check: func(t *testing.T, s State) {
				f := s.Failover
				if f.Next != StepChooseCandidate || f.Seq != 1 || len(f.LSNTable) != 2 || f.LSNTable[0].Node != "pg2" {
					t.Fatalf("failover %+v", f)
				}
				if len(f.Steps) != 1 || f.Steps[0].Step != StepFreeze || f.Steps[0].Seq != 0 || f.Steps[0].Detail != "freeze done" {
					t.Fatalf("steps %+v", f.Steps)
				}
			}},
		{name: "choose_candidate names the candidate", state: frozen, cmd: stepCmd(2, 1, StepChooseCandidate, "pg2", nil), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Failover.Candidate != "pg2" || s.Failover.Next != StepPromote || len(s.Failover.LSNTable) != 2 {
					t.Fatalf("failover %+v", s.Failover)
				}
			}},
		{name: "promote then repoint leads to complete", state: promotedState, cmd: stepCmd(2, 3, StepRepoint, "pg2", nil), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Failover.Next != StepComplete || s.Primary != "" {
					t.Fatalf("failover %+v", s.Failover)
				}
			}},
		{name: "the same step at the same sequence again is a duplicate", state: frozen, cmd: stepCmd(2, 0, StepFreeze, "", bothStandbys), want: Duplicate},
		{name: "an old sequence with another step is stale", state: frozen, cmd: stepCmd(2, 0, StepChooseCandidate, "pg2", nil), want: Stale},
		{name: "a sequence ahead is rejected", state: frozen, cmd: stepCmd(2, 5, StepChooseCandidate, "pg2", nil), want: Rejected, reason: "ahead"},
		{name: "steps out of order are rejected", state: begun, cmd: stepCmd(2, 0, StepPromote, "", nil), want: Rejected, reason: "out of order"},
		{name: "a demote step outside a switchover is out of order", state: begun, cmd: stepCmd(2, 0, StepDemoteOldPrimary, "", nil), want: Rejected, reason: "out of order"},
		{name: "an older epoch is stale", state: completed, cmd: stepCmd(1, 0, StepFreeze, "", nil), want: Stale},
		{name: "no failover in progress is stale", state: completed, cmd: stepCmd(2, 4, StepRepoint, "", nil), want: Stale, reason: "no failover"},
		{name: "an epoch ahead is rejected", state: begun, cmd: stepCmd(3, 0, StepFreeze, "", nil), want: Rejected, reason: "ahead"},
		{name: "unknown step", state: begun, cmd: stepCmd(2, 0, "reboot", "", nil), want: Rejected, reason: "unknown step"},
		{name: "complete is not a step to record", state: ready, cmd: stepCmd(2, 4, StepComplete, "", nil), want: Rejected, reason: "unknown step"},
		{name: "blocked is not a step to record", state: frozen, cmd: stepCmd(2, 1, StepBlocked, "", nil), want: Rejected, reason: "unknown step"},
		{name: "choose without a candidate", state: frozen, cmd: stepCmd(2, 1, StepChooseCandidate, "", nil), want: Rejected, reason: "needs a candidate"},
		{name: "candidate must be known", state: frozen, cmd: stepCmd(2, 1, StepChooseCandidate, "pg9", nil), want: Rejected, reason: "unknown node"},
		{name: "candidate must not be the old primary", state: frozen, cmd: stepCmd(2, 1, StepChooseCandidate, "pg1", nil), want: Rejected, reason: "old primary"},
		{name: "candidate must not be fenced", state: fencedPg3, cmd: stepCmd(3, 1, StepChooseCandidate, "pg1", nil), want: Rejected, reason: "fenced"},
		{name: "candidate must be the requested target", state: targeted, cmd: stepCmd(2, 1, StepChooseCandidate, "pg2", nil), want: Rejected, reason: "target"},
		{name: "the requested target is accepted", state: targeted, cmd: stepCmd(2, 1, StepChooseCandidate, "pg3", nil), want: Applied},
		{name: "a later step naming another candidate is rejected", state: promotedState, cmd: stepCmd(2, 3, StepRepoint, "pg3", nil), want: Rejected, reason: "not the chosen"},
		{name: "lsn table naming an unknown node", state: begun, cmd: stepCmd(2, 0, StepFreeze, "", []LSNRow{{Node: "pg7"}}), want: Rejected, reason: "unknown node"},
		{name: "lsn table naming a node twice", state: begun, cmd: stepCmd(2, 0, StepFreeze, "", badTable), want: Rejected, reason: "listed twice"},
		{name: "a long detail is cut at a rune boundary", state: begun,
			cmd:  Command{RecordStep: &RecordStep{ExpectEpoch: 2, Step: StepFreeze, Detail: "é" + string(make([]byte, 2*MaxTextBytes)), At: at(1)}},
			want: Applied,
			check: func(t *testing.T, s State) {
				if d := s.Failover.Steps[0].Detail; len(d) > MaxTextBytes || d[:2] != "é" {
					t.Fatalf("detail of %d bytes", len(d))
				}
			}},
	})
}

func TestApplyBlockFailover(t *testing.T) {
	const reason = "1 of 2 standbys reachable, need 2"
	choseThenBlocked := func(t testing.TB) State {
		s := frozen(t)
		s, _ = applyChecked(t, s, stepCmd(2, 1, StepChooseCandidate, "pg2", nil), Applied)
		return s
	}
	runCases(t, []applyCase{
		{name: "block after freeze: blocked, history entry, next stays freeze", state: func(t testing.TB) State {
			return run(t, bootCmd(), beginCmd(1, "pg1", KindAutomatic, "", false), stepCmd(2, 0, StepFreeze, "", oneStandby))
		}, cmd: blockCmd(2, 1, reason), want: Applied,
			check: func(t *testing.T, s State) {
				f := s.Failover
				if !f.Blocked || f.BlockedReason != reason || f.Next != StepFreeze || f.Seq != 2 || s.Primary != "" {
					t.Fatalf("failover %+v", f)
				}
				if len(s.History) != 1 || s.History[0].Outcome != OutcomeBlocked || s.History[0].OutcomeReason != reason ||
					len(s.History[0].LSNTable) != 2 || s.History[0].LSNTable[1].Reachable {
					t.Fatalf("history %+v", s.History)
				}
			}},
		{name: "block after choosing forgets the candidate and rewinds to freeze", state: choseThenBlocked, cmd: blockCmd(2, 2, "pg2 unreachable"), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Failover.Candidate != "" || s.Failover.Next != StepFreeze {
					t.Fatalf("failover %+v", s.Failover)
				}
			}},
		{name: "block while blocked updates the reason without a new history entry", state: blocked, cmd: blockCmd(2, 2, "0 of 2 standbys reachable, need 2"), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Failover.BlockedReason != "0 of 2 standbys reachable, need 2" || len(s.History) != 1 {
					t.Fatalf("failover %+v history %d", s.Failover, len(s.History))
				}
			}},
		{name: "the same block again is a duplicate", state: blocked, cmd: blockCmd(2, 1, reason), want: Duplicate},
		{name: "block after promote is rejected", state: promotedState, cmd: blockCmd(2, 3, "pg3 unreachable"), want: Rejected, reason: "already promoted"},
		{name: "block without a reason", state: frozen, cmd: blockCmd(2, 1, ""), want: Rejected, reason: "reason missing"},
		{name: "block of an older epoch is stale", state: completed, cmd: blockCmd(1, 1, reason), want: Stale},
		{name: "block with an old sequence is stale", state: choseThenBlocked, cmd: blockCmd(2, 1, reason), want: Stale},
	})
}

func TestApplyForceFailover(t *testing.T) {
	forced := func(t testing.TB) State {
		s := blocked(t)
		s, _ = applyChecked(t, s, forceCmd(2, ""), Applied)
		return s
	}
	blockedSwitchover := func(t testing.TB) State {
		return run(t, bootCmd(), beginCmd(1, "pg1", KindSwitchover, "pg2", false), blockCmd(2, 0, "pg2 is not catching up"))
	}
	runCases(t, []applyCase{
		{name: "force a blocked failover: forced, unblocked, next unchanged", state: blocked, cmd: forceCmd(2, "pg2"), want: Applied,
			check: func(t *testing.T, s State) {
				f := s.Failover
				if !f.Forced || f.Blocked || f.BlockedReason != "" || f.Next != StepFreeze || f.Target != "pg2" || f.Seq != 3 {
					t.Fatalf("failover %+v", f)
				}
				if last := f.Steps[len(f.Steps)-1]; last.Step != StepForced {
					t.Fatalf("last step %+v", last)
				}
			}},
		{name: "forcing again is a duplicate", state: forced, cmd: forceCmd(2, ""), want: Duplicate},
		{name: "forcing a failover that is not blocked is rejected", state: frozen, cmd: forceCmd(2, ""), want: Rejected, reason: "not blocked"},
		{name: "a switchover cannot be forced", state: blockedSwitchover, cmd: forceCmd(2, ""), want: Rejected, reason: "switchover"},
		{name: "force target must be known", state: blocked, cmd: forceCmd(2, "pg9"), want: Rejected, reason: "unknown node"},
		{name: "force of an older epoch is stale", state: completed, cmd: forceCmd(1, ""), want: Stale},
	})
}

func TestApplyAbortFailover(t *testing.T) {
	aborted := func(t testing.TB) State {
		s := blocked(t)
		s, _ = applyChecked(t, s, abortCmd(2), Applied)
		return s
	}
	runCases(t, []applyCase{
		{name: "abort before promote routes to the old primary under a new epoch", state: blocked, cmd: abortCmd(2), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Epoch != 3 || s.Primary != "pg1" || s.Failover != nil || len(s.Fenced) != 0 {
					t.Fatalf("state %+v", s)
				}
				last := s.History[len(s.History)-1]
				if last.Outcome != OutcomeAborted || last.Epoch != 2 || last.NewPrimary != "pg1" {
					t.Fatalf("history %+v", last)
				}
			}},
		{name: "the same abort again is a duplicate", state: aborted, cmd: abortCmd(2), want: Duplicate},
		{name: "abort after promote is rejected", state: promotedState, cmd: abortCmd(2), want: Rejected, reason: "already promoted"},
		{name: "abort of an older epoch is stale", state: completed, cmd: abortCmd(1), want: Stale},
		{name: "abort without a reason", state: begun,
			cmd: Command{AbortFailover: &AbortFailover{ExpectEpoch: 2, At: at(1)}}, want: Rejected, reason: "reason missing"},
	})
}

func TestApplyCompleteFailover(t *testing.T) {
	forcedToFenced := func(t testing.TB) State {
		// pg2 is primary, pg1 fenced; the operator forces a failover back to pg1.
		s := completed(t)
		return run2(t, s, beginCmd(2, "pg2", KindManual, "pg1", true),
			stepCmd(3, 0, StepFreeze, "", nil), stepCmd(3, 1, StepChooseCandidate, "pg1", nil),
			stepCmd(3, 2, StepPromote, "", nil), stepCmd(3, 3, StepRepoint, "", nil))
	}
	runCases(t, []applyCase{
		{name: "complete sets the primary in the same epoch, fences the old one, records history", state: ready,
			cmd: completeCmd(2, "pg2"), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Epoch != 2 || s.Primary != "pg2" || s.Failover != nil || !s.IsFenced("pg1") {
					t.Fatalf("state %+v", s)
				}
				h := s.History[len(s.History)-1]
				if h.Outcome != OutcomeCompleted || h.NewPrimary != "pg2" || h.OldPrimary != "pg1" || len(h.LSNTable) != 2 ||
					len(h.Steps) != 4 || h.Kind != KindAutomatic || !h.At.Equal(at(80)) {
					t.Fatalf("history %+v", h)
				}
			}},
		{name: "the same complete again is a duplicate", state: completed, cmd: completeCmd(2, "pg2"), want: Duplicate},
		{name: "complete before every step is recorded is rejected", state: promotedState, cmd: completeCmd(2, "pg2"), want: Rejected, reason: "next step is repoint"},
		{name: "complete must name the candidate", state: ready, cmd: completeCmd(2, "pg3"), want: Rejected, reason: "not the promoted candidate"},
		{name: "complete naming an unknown node", state: ready, cmd: completeCmd(2, "pg9"), want: Rejected},
		{name: "complete of an older epoch is stale", state: func(t testing.TB) State {
			return run2(t, completed(t), beginCmd(2, "pg2", KindAutomatic, "", false))
		}, cmd: completeCmd(2, "pg2"), want: Stale},
		{name: "complete for an epoch ahead is rejected", state: ready, cmd: completeCmd(3, "pg2"), want: Rejected, reason: "ahead"},
		{name: "complete with no failover ever begun, other primary, is stale", state: bootstrapped, cmd: completeCmd(1, "pg2"), want: Stale},
		{name: "a forced failover may complete to a fenced node, which is unfenced", state: forcedToFenced,
			cmd: completeCmd(3, "pg1"), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Primary != "pg1" || s.IsFenced("pg1") || !s.IsFenced("pg2") {
					t.Fatalf("primary %s fenced %v", s.Primary, s.Fenced)
				}
				if h := s.History[len(s.History)-1]; !h.Forced {
					t.Fatalf("history entry not marked forced: %+v", h)
				}
			}},
	})
}

// run2 applies cmds to s, each of which must apply.
func run2(t testing.TB, s State, cmds ...Command) State {
	t.Helper()
	for _, c := range cmds {
		s, _ = applyChecked(t, s, c, Applied)
	}
	return s
}

func TestPromotionXidHorizonBecomesThePrimarys(t *testing.T) {
	promote := stepCmd(2, 2, StepPromote, "", nil)
	promote.RecordStep.XidHorizon = 731
	s := run(t, bootCmd(), beginCmd(1, "pg1", KindAutomatic, "", false),
		stepCmd(2, 0, StepFreeze, "", bothStandbys), stepCmd(2, 1, StepChooseCandidate, "pg2", nil),
		promote, stepCmd(2, 3, StepRepoint, "", nil))
	if s.Failover.XidHorizon != 731 || s.PrimaryXidHorizon != 0 {
		t.Fatalf("before completion: failover horizon %d, primary horizon %d", s.Failover.XidHorizon, s.PrimaryXidHorizon)
	}
	s = run2(t, s, completeCmd(2, "pg2"))
	if s.Primary != "pg2" || s.PrimaryXidHorizon != 731 {
		t.Fatalf("after completion: primary %s horizon %d, want pg2 731", s.Primary, s.PrimaryXidHorizon)
	}
	// The next failover forgets it until its own promotion.
	s = run2(t, s, beginCmd(2, "pg2", KindAutomatic, "", false))
	if s.PrimaryXidHorizon != 0 {
		t.Fatalf("horizon %d kept while no primary is agreed", s.PrimaryXidHorizon)
	}
}
