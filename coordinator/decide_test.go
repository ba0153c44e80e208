package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
)

// stateWith bootstraps pg1..pg3 and applies cmds, failing on any that does not apply.
func stateWith(t *testing.T, cmds ...clusterstate.Command) clusterstate.State {
	t.Helper()
	st, res := clusterstate.Apply(clusterstate.State{}, bootCommand())
	if res.Code != clusterstate.Applied {
		t.Fatal(res)
	}
	for _, c := range cmds {
		st, res = clusterstate.Apply(st, c)
		if res.Code != clusterstate.Applied {
			t.Fatalf("setup command not applied: %s", res)
		}
	}
	return st
}

func TestDecideAutomaticFailover(t *testing.T) {
	now := t0.Add(time.Minute)
	fresh := now.Add(-time.Second)
	stale := now.Add(-time.Hour)
	voters := []uint64{1, 2, 3}
	completedAutomatic := func(at time.Time) []clusterstate.Command {
		// pg1 -> pg2 automatically, completed at `at`; pg2 is the primary afterwards.
		return []clusterstate.Command{
			{BeginFailover: &clusterstate.BeginFailover{ExpectEpoch: 1, OldPrimary: "pg1", Kind: clusterstate.KindAutomatic, At: at}},
			{RecordStep: &clusterstate.RecordStep{ExpectEpoch: 2, ExpectSeq: 0, Step: clusterstate.StepFreeze, At: at}},
			{RecordStep: &clusterstate.RecordStep{ExpectEpoch: 2, ExpectSeq: 1, Step: clusterstate.StepChooseCandidate, Candidate: "pg2", At: at}},
			{RecordStep: &clusterstate.RecordStep{ExpectEpoch: 2, ExpectSeq: 2, Step: clusterstate.StepPromote, At: at}},
			{RecordStep: &clusterstate.RecordStep{ExpectEpoch: 2, ExpectSeq: 3, Step: clusterstate.StepRepoint, At: at}},
			{CompleteFailover: &clusterstate.CompleteFailover{ExpectEpoch: 2, NewPrimary: "pg2", At: at}},
		}
	}
	tests := []struct {
		name       string
		cmds       []clusterstate.Command
		voters     []uint64
		wantBegin  bool
		wantReason string
	}{
		{
			name:       "two of three voters observe the primary down",
			cmds:       []clusterstate.Command{reportCommand("pg1", 1, false, fresh), reportCommand("pg1", 2, false, fresh), reportCommand("pg1", 3, true, fresh)},
			wantBegin:  true,
			wantReason: "2 of 3 voting proxies observe pg1 down",
		},
		{
			name:       "one proxy's bad network is not a majority",
			cmds:       []clusterstate.Command{reportCommand("pg1", 1, false, fresh), reportCommand("pg1", 2, true, fresh)},
			wantReason: "1 of 3 voting proxies observe pg1 down",
		},
		{
			name:       "learners do not vote",
			cmds:       []clusterstate.Command{reportCommand("pg1", 1, false, fresh), reportCommand("pg1", 7, false, fresh), reportCommand("pg1", 8, false, fresh)},
			wantReason: "1 of 3 voting proxies observe pg1 down",
		},
		{
			name:       "stale observations of crashed proxies do not count",
			cmds:       []clusterstate.Command{reportCommand("pg1", 1, false, fresh), reportCommand("pg1", 2, false, stale)},
			wantReason: "1 of 3 voting proxies observe pg1 down",
		},
		{
			name:       "a down standby is not a reason",
			cmds:       []clusterstate.Command{reportCommand("pg2", 1, false, fresh), reportCommand("pg2", 2, false, fresh)},
			wantReason: "0 of 3 voting proxies observe pg1 down",
		},
		{
			name: "paused",
			cmds: []clusterstate.Command{{SetPaused: &clusterstate.SetPaused{Paused: true}},
				reportCommand("pg1", 1, false, fresh), reportCommand("pg1", 2, false, fresh)},
			wantReason: "2 of 3 voting proxies observe pg1 down, but automatic failover is paused",
		},
		{
			name: "flap guard after a recent automatic failover",
			cmds: append(completedAutomatic(now.Add(-30*time.Second)),
				reportCommand("pg2", 1, false, fresh), reportCommand("pg2", 2, false, fresh)),
			wantReason: "2 of 3 voting proxies observe pg2 down, but the flap guard holds automatic failover until",
		},
		{
			name: "flap guard passed",
			cmds: append(completedAutomatic(now.Add(-2*time.Minute)),
				reportCommand("pg2", 1, false, fresh), reportCommand("pg2", 2, false, fresh)),
			wantBegin:  true,
			wantReason: "2 of 3 voting proxies observe pg2 down",
		},
		{
			name: "failover already in progress",
			cmds: []clusterstate.Command{
				{BeginFailover: &clusterstate.BeginFailover{ExpectEpoch: 1, OldPrimary: "pg1", Kind: clusterstate.KindManual, At: fresh}},
			},
			wantReason: "a manual failover is in progress",
		},
		{
			name:       "no voters known",
			cmds:       []clusterstate.Command{reportCommand("pg1", 1, false, fresh)},
			voters:     []uint64{},
			wantReason: "no voting proxies are known",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := voters
			if tt.voters != nil {
				v = tt.voters
			}
			got := decideAutomaticFailover(decisionInput{
				State: stateWith(t, tt.cmds...), Voters: v, Now: now,
				ObservationMaxAge: 15 * time.Second, MinInterval: time.Minute,
			})
			heldBack := strings.Contains(tt.wantReason, ", but ")
			if got.Begin != tt.wantBegin || got.HeldBack != heldBack || !strings.HasPrefix(got.Reason, tt.wantReason) {
				t.Errorf("got begin=%t reason %q, want begin=%t reason starting %q", got.Begin, got.Reason, tt.wantBegin, tt.wantReason)
			}
		})
	}
}

func TestDecideNotBootstrapped(t *testing.T) {
	got := decideAutomaticFailover(decisionInput{Voters: []uint64{1}, Now: t0})
	if got.Begin {
		t.Fatal("began a failover before bootstrap")
	}
}
