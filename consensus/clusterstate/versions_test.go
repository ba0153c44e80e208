package clusterstate

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestUnknownVersionStopsApplyingInsteadOfSkipping(t *testing.T) {
	m := NewMachine()
	ok := mustEncode(t, Command{ReportVersion: &ReportVersion{Proxy: 1, MaxVersion: 1}})
	if _, err := m.Apply(1, ok); err != nil {
		t.Fatal(err)
	}
	next := MaxVersion + 1
	newer := fmt.Appendf(nil, `{"version":%d,"type":"shiny_new_thing","shiny_new_thing":{"x":1}}`, next)
	raise := fmt.Appendf(nil, `{"version":1,"type":"raise_cluster_version","raise_cluster_version":{"version":%d,"voters":[1]}}`, next)
	for _, data := range [][]byte{newer, raise} {
		_, err := m.Apply(2, data)
		var unsupported *UnsupportedVersionError
		if !errors.As(err, &unsupported) || !unsupported.HaltApply() {
			t.Fatalf("Apply(%s): %v, want an *UnsupportedVersionError that halts", data, err)
		}
		if !strings.Contains(err.Error(), "upgrade this node") {
			t.Errorf("the error does not say what to do: %v", err)
		}
		if m.AppliedIndex() != 1 {
			t.Fatalf("applied index moved to %d past an entry this node cannot apply", m.AppliedIndex())
		}
	}
	// A malformed entry of a known version is skipped alike on every node.
	_, err := m.Apply(2, []byte(`{"version":1,"type":"set_paused"}`))
	var unsupported *UnsupportedVersionError
	if err == nil || errors.As(err, &unsupported) || m.AppliedIndex() != 2 {
		t.Fatalf("malformed entry: err %v, applied %d; want skipped", err, m.AppliedIndex())
	}
	// A snapshot of a newer cluster version is refused the same way.
	if err := m.Restore(fmt.Appendf(nil, `{"version":%d,"applied_index":9,"state":{"epoch":0,"cluster_version":%d,"future":true}}`, next, next)); !errors.As(err, &unsupported) {
		t.Fatalf("Restore of a version %d snapshot: %v", next, err)
	}
}

func TestClusterVersionIsTheLowestVoterVersion(t *testing.T) {
	s := State{}
	report := func(proxy uint64, v uint32) {
		t.Helper()
		var res Result
		s, res = Apply(s, Command{ReportVersion: &ReportVersion{Proxy: proxy, MaxVersion: v}})
		if res.Code != Applied {
			t.Fatalf("report %d v%d: %s", proxy, v, res)
		}
	}
	voters := []uint64{1, 2, 3}
	report(1, 3)
	report(2, 2)
	if _, ok := NextClusterVersion(s, voters); ok {
		t.Fatal("raised while voter 3 has not reported")
	}
	report(3, 4)
	report(9, 1) // a learner that has not been upgraded does not hold the voters back
	v, ok := NextClusterVersion(s, voters)
	if !ok || v != 2 {
		t.Fatalf("NextClusterVersion = %d, %v; want 2", v, ok)
	}
	next, res := Apply(s, Command{RaiseClusterVersion: &RaiseClusterVersion{Version: 3, Voters: voters}})
	if res.Code != Rejected || !strings.Contains(res.Reason, "voter 2 understands up to 2") {
		t.Fatalf("raise beyond a voter: %s", res)
	}
	next, res = Apply(next, Command{RaiseClusterVersion: &RaiseClusterVersion{Version: 2, Voters: voters}})
	if res.Code != Applied || next.AgreedVersion() != 2 {
		t.Fatalf("raise to 2: %s, agreed %d", res, next.AgreedVersion())
	}
	if _, res = Apply(next, Command{RaiseClusterVersion: &RaiseClusterVersion{Version: 2, Voters: voters}}); res.Code != Duplicate {
		t.Fatalf("raise again: %s", res)
	}
	if _, res = Apply(next, Command{RaiseClusterVersion: &RaiseClusterVersion{Version: 1, Voters: voters}}); res.Code != Stale {
		t.Fatalf("lower the version: %s", res)
	}
	if _, ok := NextClusterVersion(next, voters); ok {
		t.Fatal("NextClusterVersion proposes the agreed version again")
	}
	if err := next.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, res = Apply(s, Command{ReportVersion: &ReportVersion{Proxy: 1, MaxVersion: 3}}); res.Code != Duplicate {
		t.Fatalf("same report twice: %s", res)
	}
}

func TestApplyRejectsCommandsOfAVersionNotAgreedYet(t *testing.T) {
	// Pretend Unfence came with version 2.
	commandVersions[TypeUnfence] = 2
	t.Cleanup(func() { commandVersions[TypeUnfence] = 1 })
	unfence := Command{Unfence: &Unfence{Node: "pg1"}}
	s := bootstrapped(t)
	if err := s.Allows(unfence); err == nil || !strings.Contains(err.Error(), "upgrade every voter first") {
		t.Fatalf("Allows at cluster version 1: %v", err)
	}
	if _, res := Apply(s, unfence); res.Code != Rejected {
		t.Fatalf("Apply at cluster version 1: %s", res)
	}
	s.ClusterVersion = 2
	if err := s.Allows(unfence); err != nil {
		t.Fatalf("Allows at cluster version 2: %v", err)
	}
}

func TestForgetProxyDropsItsVersionReport(t *testing.T) {
	s := bootstrapped(t)
	s, _ = Apply(s, Command{ReportVersion: &ReportVersion{Proxy: 42, MaxVersion: 1}})
	next, res := Apply(s, Command{ForgetProxy: &ForgetProxy{Proxy: 42}})
	if res.Code != Applied || next.ReportedVersion(42) != 0 {
		t.Fatalf("forget: %s, still reported %d", res, next.ReportedVersion(42))
	}
}

func TestLearnerMayProposeOnlyItsOwnReports(t *testing.T) {
	cases := []struct {
		cmd  Command
		want bool
	}{
		{healthCmd("pg1", 7, true, at(1)), true},
		{healthCmd("pg1", 8, true, at(1)), false},
		{Command{ReportVersion: &ReportVersion{Proxy: 7, MaxVersion: 1}}, true},
		{Command{ReportVersion: &ReportVersion{Proxy: 1, MaxVersion: 1}}, false},
		{Command{SetPaused: &SetPaused{Paused: true}}, false},
		{beginCmd(1, "pg1", KindManual, "", true), false},
		{Command{RaiseClusterVersion: &RaiseClusterVersion{Version: 1, Voters: []uint64{7}}}, false},
	}
	for _, tc := range cases {
		err := LearnerMayPropose(7, mustEncode(t, tc.cmd))
		if (err == nil) != tc.want {
			t.Errorf("learner 7 proposing %s: %v, want allowed=%v", describe(tc.cmd), err, tc.want)
		}
	}
	if err := LearnerMayPropose(7, []byte("garbage")); err == nil {
		t.Error("an undecodable learner proposal was admitted")
	}
}

func mustEncode(t *testing.T, c Command) []byte {
	t.Helper()
	data, err := Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
