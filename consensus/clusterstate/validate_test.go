package clusterstate

import (
	"strings"
	"testing"
	"time"
)

// TestValidateCatchesBrokenInvariants breaks one invariant at a time in a valid state
// (what a corrupt or hostile snapshot could contain) and expects Validate to say so.
func TestValidateCatchesBrokenInvariants(t *testing.T) {
	base := func(t testing.TB) State {
		s := run(t, bootCmd(), healthCmd("pg1", 1, false, at(1)), healthCmd("pg1", 2, false, at(1)),
			beginCmd(1, "pg1", KindAutomatic, "", false), stepCmd(2, 0, StepFreeze, "", oneStandby),
			blockCmd(2, 1, "1 of 2 standbys reachable, need 2"), abortCmd(2))
		return run2(t, s, beginCmd(3, "pg1", KindAutomatic, "", false), stepCmd(4, 0, StepFreeze, "", bothStandbys),
			stepCmd(4, 1, StepChooseCandidate, "pg2", nil))
	}
	if err := base(t).Validate(); err != nil {
		t.Fatalf("base state invalid: %v", err)
	}
	cases := []struct {
		name    string
		corrupt func(s *State)
		errPart string
	}{
		{"epoch 0 with content", func(s *State) { *s = State{Paused: true} }, "epoch 0"},
		{"no nodes", func(s *State) { s.Nodes = nil }, "0 nodes"},
		{"unsorted nodes", func(s *State) { s.Nodes[0], s.Nodes[1] = s.Nodes[1], s.Nodes[0] }, "not sorted"},
		{"bad node name", func(s *State) { s.Nodes[0].Name = "" }, "must be 1.."},
		{"observation without proxy", func(s *State) { s.Nodes[0].Observations[0].Proxy = 0 }, "without proxy"},
		{"unsorted observations", func(s *State) { s.Nodes[0].Observations[0].Proxy = 5 }, "observations not sorted"},
		{"observation without time", func(s *State) { s.Nodes[0].Observations[0].At = time.Time{} }, "timestamp missing"},
		{"primary and failover both set", func(s *State) { s.Primary = "pg1" }, "exactly one"},
		{"neither primary nor failover", func(s *State) { s.Failover = nil }, "exactly one"},
		{"unknown primary", func(s *State) { s.Failover = nil; s.Primary = "pg9" }, "not a known node"},
		{"fenced primary", func(s *State) { s.Failover = nil; s.Primary = "pg1"; s.Fenced = []string{"pg1"} }, "is fenced"},
		{"unknown fenced node", func(s *State) { s.Fenced = []string{"pg9"} }, "not a known node"},
		{"unsorted fenced", func(s *State) { s.Fenced = []string{"pg3", "pg1"} }, "not sorted"},
		{"failover of another epoch", func(s *State) { s.Failover.Epoch = 3 }, "state epoch"},
		{"unknown kind", func(s *State) { s.Failover.Kind = "x" }, "unknown kind"},
		{"forced switchover", func(s *State) { s.Failover.Kind = KindSwitchover; s.Failover.Forced = true }, "cannot be forced"},
		{"unknown candidate", func(s *State) { s.Failover.Candidate = "pg9" }, "unknown node"},
		{"no old primary", func(s *State) { s.Failover.OldPrimary = "" }, "old primary missing"},
		{"invalid next", func(s *State) { s.Failover.Next = "x" }, "invalid next"},
		{"demote outside a switchover", func(s *State) { s.Failover.Next = StepDemoteOldPrimary }, "invalid next"},
		{"candidate before choosing", func(s *State) { s.Failover.Next = StepFreeze }, "inconsistent"},
		{"no candidate after choosing", func(s *State) { s.Failover.Candidate = "" }, "inconsistent"},
		{"blocked without reason", func(s *State) { s.Failover.Blocked = true }, "without a reason"},
		{"reason while not blocked", func(s *State) { s.Failover.BlockedReason = "x" }, "while not blocked"},
		{"text too long", func(s *State) { s.Failover.Reason = strings.Repeat("x", MaxTextBytes+1) }, "exceeds"},
		{"missing start time", func(s *State) { s.Failover.StartedAt = time.Time{} }, "timestamp missing"},
		{"unsorted lsn table", func(s *State) {
			s.Failover.LSNTable = []LSNRow{{Node: "pg3"}, {Node: "pg2"}}
		}, "lsn table not sorted"},
		{"steps out of sequence", func(s *State) { s.Failover.Steps[1].Seq = 0 }, "not in sequence"},
		{"steps beyond the failover sequence", func(s *State) { s.Failover.Seq = 1 }, "not below"},
		{"too many step records", func(s *State) {
			for range MaxStepRecords {
				last := s.Failover.Steps[len(s.Failover.Steps)-1]
				last.Seq++
				s.Failover.Steps = append(s.Failover.Steps, last)
			}
			s.Failover.Seq = s.Failover.Steps[len(s.Failover.Steps)-1].Seq + 1
		}, "step records, limit"},
		{"history too long", func(s *State) {
			for range MaxHistory {
				s.History = append(s.History, s.History[0])
			}
		}, "history has"},
		{"history with unknown outcome", func(s *State) { s.History[0].Outcome = "x" }, "unknown outcome"},
		{"history without time", func(s *State) { s.History[1].At = time.Time{} }, "timestamp missing"},
		{"history step without time", func(s *State) { s.History[1].Steps[0].At = time.Time{} }, "timestamp missing"},
		{"time JSON cannot encode", func(s *State) { s.History[1].At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "out of range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base(t)
			tc.corrupt(&s)
			err := s.Validate()
			if err == nil {
				t.Fatal("Validate accepted a broken state")
			}
			if !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("error %q does not mention %q", err, tc.errPart)
			}
		})
	}
}

func TestResultString(t *testing.T) {
	if got := (Result{Code: Stale, Reason: "epoch moved on", Epoch: 3}).String(); got != "stale: epoch moved on (epoch 3)" {
		t.Errorf("String = %q", got)
	}
	if got := (Result{Code: Applied, Epoch: 1}).String(); got != "applied (epoch 1)" {
		t.Errorf("String = %q", got)
	}
}
