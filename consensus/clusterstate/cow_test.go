package clusterstate

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"testing"
)

// withSpareCapacity returns a deep copy of s whose every slice has room to grow in
// place, so an Apply that appended to a slice of its input instead of copying it
// would write into memory the input (and its other successors) can see.
func withSpareCapacity(s State) State {
	c := s.Clone()
	grow := func(n int) int { return n + 8 }
	if c.Nodes != nil {
		c.Nodes = slices.Grow(c.Nodes, grow(0))
		for i := range c.Nodes {
			c.Nodes[i].Observations = slices.Grow(c.Nodes[i].Observations, 8)
		}
	}
	c.History = slices.Grow(c.History, 8)
	c.Fenced = slices.Grow(c.Fenced, 8)
	if c.Failover != nil {
		c.Failover.Steps = slices.Grow(c.Failover.Steps, 8)
		c.Failover.LSNTable = slices.Grow(c.Failover.LSNTable, 8)
	}
	return c
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestApplyIsCopyOnWrite applies every sample command to every fixture state (with
// spare capacity in every slice) and checks that the input state is untouched, and
// that a second command applied to the same input does not change the result of the
// first: successors of one state never share writes.
func TestApplyIsCopyOnWrite(t *testing.T) {
	states := fixtureStates(t)
	names := make([]string, 0, len(states))
	for name := range states {
		names = append(names, name)
	}
	sort.Strings(names)
	cmds := sampleCommands()
	for _, name := range names {
		base := withSpareCapacity(states[name])
		pristine := base.Clone()
		results := make([]State, len(cmds))
		encoded := make([]string, len(cmds))
		for i, c := range cmds {
			results[i], _ = Apply(base, c)
			encoded[i] = mustJSON(t, results[i])
			if !reflect.DeepEqual(base, pristine) {
				t.Fatalf("%s: Apply(%s) mutated its input", name, describe(c))
			}
		}
		for i := range cmds {
			if got := mustJSON(t, results[i]); got != encoded[i] {
				t.Fatalf("%s: the result of %s changed after later commands were applied to the same input", name, describe(cmds[i]))
			}
		}
	}
}

// TestCloneSharesNothing changes every part of a clone and checks the original.
func TestCloneSharesNothing(t *testing.T) {
	s := run(t, bootCmd(), healthCmd("pg1", 1, true, at(1)))
	s = run2(t, s, beginCmd(1, "pg1", KindAutomatic, "", false), stepCmd(2, 0, StepFreeze, "", oneStandby),
		blockCmd(2, 1, "1 of 2 standbys reachable, need 2"))
	s = run2(t, s, abortCmd(2))
	s = run2(t, s, beginCmd(3, "pg1", KindAutomatic, "", false), stepCmd(4, 0, StepFreeze, "", bothStandbys),
		stepCmd(4, 1, StepChooseCandidate, "pg2", nil))
	before := mustJSON(t, s)
	c := s.Clone()
	c.Nodes[0].Name = "x"
	c.Nodes[0].Observations[0].Up = false
	c.Failover.Steps[0].Detail = "x"
	c.Failover.LSNTable[0].ReceiveLSN = 1
	c.History[0].LSNTable[0].Node = "x"
	c.History[0].Steps[0].Detail = "x"
	c.Failover.Candidate = "x"
	if after := mustJSON(t, s); after != before {
		t.Fatalf("changing a clone changed the original:\nbefore %s\nafter  %s", before, after)
	}
}
