package clusterstate

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// Fixtures shared by the tests: three nodes pg1 (primary), pg2, pg3, a fixed clock,
// short constructors for every command, and applyChecked, which applies one command
// and checks the properties every Apply must keep.

var t0 = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)

// at returns t0 plus n seconds.
func at(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

func bootCmd() Command {
	return Command{Bootstrap: &Bootstrap{Primary: "pg1", Nodes: []NodeSpec{
		{Name: "pg1", Priority: 0}, {Name: "pg3", Priority: 5}, {Name: "pg2", Priority: 10},
	}}}
}

func healthCmd(node string, proxy uint64, up bool, when time.Time) Command {
	return Command{ReportHealth: &ReportHealth{Node: node, Observation: Observation{
		Proxy: proxy, Up: up, InRecovery: node != "pg1", Timeline: 1, ReceiveLSN: 0x3000060, ReplayLSN: 0x3000060, At: when,
	}}}
}

func beginCmd(expect uint64, old string, kind FailoverKind, target string, forced bool) Command {
	return Command{BeginFailover: &BeginFailover{
		ExpectEpoch: expect, OldPrimary: old, Kind: kind, Target: target, Forced: forced,
		Reason: "2 of 3 voting proxies observe " + old + " down", At: at(10),
	}}
}

func stepCmd(expect, seq uint64, step Step, candidate string, table []LSNRow) Command {
	return Command{RecordStep: &RecordStep{
		ExpectEpoch: expect, ExpectSeq: seq, Step: step, Candidate: candidate, LSNTable: table,
		Detail: string(step) + " done", At: at(20 + int(seq)),
	}}
}

func blockCmd(expect, seq uint64, reason string) Command {
	return Command{BlockFailover: &BlockFailover{ExpectEpoch: expect, ExpectSeq: seq, Reason: reason, At: at(40 + int(seq))}}
}

func forceCmd(expect uint64, target string) Command {
	return Command{ForceFailover: &ForceFailover{ExpectEpoch: expect, Target: target, Reason: "operator: --force --allow-data-loss", At: at(60)}}
}

func abortCmd(expect uint64) Command {
	return Command{AbortFailover: &AbortFailover{ExpectEpoch: expect, Reason: "old primary reachable again", At: at(70)}}
}

func completeCmd(expect uint64, primary string) Command {
	return Command{CompleteFailover: &CompleteFailover{ExpectEpoch: expect, NewPrimary: primary, At: at(80)}}
}

// bothStandbys is the LSN table of a freeze that reached pg2 and pg3.
var bothStandbys = []LSNRow{
	{Node: "pg3", Reachable: true, Frozen: true, Timeline: 1, ReceiveLSN: 0x3000060, ReplayLSN: 0x3000000},
	{Node: "pg2", Reachable: true, Frozen: true, Timeline: 1, ReceiveLSN: 0x3000060, ReplayLSN: 0x3000060},
}

// oneStandby is the LSN table of a freeze that reached only pg2.
var oneStandby = []LSNRow{
	{Node: "pg2", Reachable: true, Frozen: true, Timeline: 1, ReceiveLSN: 0x3000060},
	{Node: "pg3", Reachable: false},
}

// applyChecked applies c to s, requires the given result code and checks the
// properties of every Apply: the input is not mutated, the output keeps the
// invariants, a non-applied command returns the input unchanged, and Result.Epoch is
// the output's epoch.
func applyChecked(t testing.TB, s State, c Command, want ResultCode) (State, Result) {
	t.Helper()
	before := s.Clone()
	next, res := Apply(s, c)
	if res.Code != want {
		t.Fatalf("Apply(%s) = %s, want %s", describe(c), res, want)
	}
	if !reflect.DeepEqual(s, before) {
		t.Fatalf("Apply(%s) mutated its input state", describe(c))
	}
	if err := next.Validate(); err != nil {
		t.Fatalf("Apply(%s) broke an invariant: %v", describe(c), err)
	}
	if res.Code != Applied && !reflect.DeepEqual(next, s) {
		t.Fatalf("Apply(%s) returned %s but changed the state", describe(c), res.Code)
	}
	if res.Epoch != next.Epoch {
		t.Fatalf("Result.Epoch = %d, state epoch %d", res.Epoch, next.Epoch)
	}
	if res.Reason == "" {
		t.Fatalf("Apply(%s) gave no reason", describe(c))
	}
	return next, res
}

// run applies cmds from the empty state, each of which must apply.
func run(t testing.TB, cmds ...Command) State {
	t.Helper()
	var s State
	for _, c := range cmds {
		s, _ = applyChecked(t, s, c, Applied)
	}
	return s
}

func describe(c Command) string {
	data, err := json.Marshal(c)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// Commonly used states, each built through Apply.

func bootstrapped(t testing.TB) State { return run(t, bootCmd()) }

// begun: automatic failover away from pg1 at epoch 2, Next = freeze, Seq 0.
func begun(t testing.TB) State {
	return run(t, bootCmd(), beginCmd(1, "pg1", KindAutomatic, "", false))
}

// frozen: both standbys frozen, Next = choose_candidate, Seq 1.
func frozen(t testing.TB) State {
	return run(t, bootCmd(), beginCmd(1, "pg1", KindAutomatic, "", false), stepCmd(2, 0, StepFreeze, "", bothStandbys))
}

// promotedState: pg2 chosen and promoted, Next = repoint, Seq 3.
func promotedState(t testing.TB) State {
	return run(t, bootCmd(), beginCmd(1, "pg1", KindAutomatic, "", false),
		stepCmd(2, 0, StepFreeze, "", bothStandbys),
		stepCmd(2, 1, StepChooseCandidate, "pg2", nil),
		stepCmd(2, 2, StepPromote, "", nil))
}

// ready: every step recorded, Next = complete, Seq 4.
func ready(t testing.TB) State {
	s := promotedState(t)
	s, _ = applyChecked(t, s, stepCmd(2, 3, StepRepoint, "", nil), Applied)
	return s
}

// blocked: only pg2 reachable; blocked at Seq 1, Next = freeze, Seq 2.
func blocked(t testing.TB) State {
	return run(t, bootCmd(), beginCmd(1, "pg1", KindAutomatic, "", false),
		stepCmd(2, 0, StepFreeze, "", oneStandby),
		blockCmd(2, 1, "1 of 2 standbys reachable, need 2"))
}

// completed: pg2 is primary at epoch 2, pg1 fenced.
func completed(t testing.TB) State {
	s := ready(t)
	s, _ = applyChecked(t, s, completeCmd(2, "pg2"), Applied)
	return s
}

// sampleCommands holds commands of every type that apply to (or are refused by) the
// fixture states in interesting ways. Tests and fuzz seeds iterate over it.
func sampleCommands() []Command {
	return []Command{
		bootCmd(),
		healthCmd("pg1", 1, false, at(1)),
		healthCmd("pg2", 2, true, at(2)),
		healthCmd("pg3", 7, true, at(3)),
		{ForgetProxy: &ForgetProxy{Proxy: 1}},
		{SetPaused: &SetPaused{Paused: true}},
		{SetPaused: &SetPaused{Paused: false}},
		{Unfence: &Unfence{Node: "pg1"}},
		beginCmd(1, "pg1", KindAutomatic, "", false),
		beginCmd(1, "pg1", KindSwitchover, "pg3", false),
		beginCmd(2, "pg2", KindManual, "pg1", true),
		stepCmd(2, 0, StepFreeze, "", bothStandbys),
		stepCmd(2, 1, StepChooseCandidate, "pg2", nil),
		stepCmd(2, 2, StepPromote, "", nil),
		stepCmd(2, 2, StepFreeze, "", oneStandby),
		stepCmd(2, 3, StepRepoint, "", nil),
		blockCmd(2, 1, "1 of 2 standbys reachable, need 2"),
		blockCmd(2, 2, "0 of 2 standbys reachable, need 2"),
		forceCmd(2, "pg3"),
		abortCmd(2),
		completeCmd(2, "pg2"),
		completeCmd(2, "pg3"),
		{ReportVersion: &ReportVersion{Proxy: 1, MaxVersion: 1}},
		{RaiseClusterVersion: &RaiseClusterVersion{Version: 1, Voters: []uint64{1, 2, 3}}},
	}
}

// fixtureStates returns every fixture state, by name.
func fixtureStates(t testing.TB) map[string]State {
	return map[string]State{
		"empty":     {},
		"bootstrap": bootstrapped(t),
		"begun":     begun(t),
		"frozen":    frozen(t),
		"promoted":  promotedState(t),
		"ready":     ready(t),
		"blocked":   blocked(t),
		"completed": completed(t),
	}
}
