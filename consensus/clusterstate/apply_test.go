package clusterstate

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// applyCase applies cmd to state() and expects the code, a substring of the reason,
// and whatever check says about the resulting state.
type applyCase struct {
	name   string
	state  func(testing.TB) State
	cmd    Command
	want   ResultCode
	reason string
	check  func(t *testing.T, s State)
}

func runCases(t *testing.T, cases []applyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			if tc.state != nil {
				s = tc.state(t)
			}
			next, res := applyChecked(t, s, tc.cmd, tc.want)
			if !strings.Contains(res.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", res.Reason, tc.reason)
			}
			if tc.check != nil {
				tc.check(t, next)
			}
		})
	}
}

func empty(testing.TB) State { return State{} }

func TestApplyUnionShape(t *testing.T) {
	runCases(t, []applyCase{
		{name: "no payload is rejected", state: bootstrapped, cmd: Command{}, want: Rejected, reason: "no payload"},
		{name: "two payloads are rejected", state: bootstrapped,
			cmd: Command{SetPaused: &SetPaused{Paused: true}, Unfence: &Unfence{Node: "pg1"}}, want: Rejected, reason: "exactly one"},
	})
}

func TestApplyBootstrap(t *testing.T) {
	withNodes := func(primary string, names ...string) Command {
		var nodes []NodeSpec
		for _, n := range names {
			nodes = append(nodes, NodeSpec{Name: n})
		}
		return Command{Bootstrap: &Bootstrap{Primary: primary, Nodes: nodes}}
	}
	tooMany := make([]string, MaxNodes+1)
	for i := range tooMany {
		tooMany[i] = "pg" + strings.Repeat("x", i%10) + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	runCases(t, []applyCase{
		{name: "first bootstrap sets epoch 1, primary and sorted nodes", state: empty, cmd: bootCmd(), want: Applied,
			check: func(t *testing.T, s State) {
				if s.Epoch != 1 || s.Primary != "pg1" || s.Failover != nil {
					t.Fatalf("state %+v", s)
				}
				var names []string
				for _, n := range s.Nodes {
					names = append(names, n.Name)
				}
				if !slices.Equal(names, []string{"pg1", "pg2", "pg3"}) {
					t.Fatalf("nodes %v, want sorted", names)
				}
				if n, _ := s.Node("pg2"); n.Priority != 10 {
					t.Fatalf("pg2 priority %d, want 10", n.Priority)
				}
			}},
		{name: "same bootstrap again is a duplicate", state: bootstrapped, cmd: bootCmd(), want: Duplicate, reason: "already bootstrapped"},
		{name: "bootstrap after a failover is still a duplicate", state: completed, cmd: bootCmd(), want: Duplicate},
		{name: "different node set after bootstrap is rejected", state: bootstrapped, cmd: withNodes("pg1", "pg1", "pg2"),
			want: Rejected, reason: "different node set"},
		{name: "primary must be a node", state: empty, cmd: withNodes("pg9", "pg1", "pg2"), want: Rejected, reason: "not one of the nodes"},
		{name: "no nodes", state: empty, cmd: withNodes("pg1"), want: Rejected, reason: "0 nodes"},
		{name: "duplicate node names", state: empty, cmd: withNodes("pg1", "pg1", "pg1"), want: Rejected, reason: "listed twice"},
		{name: "empty node name", state: empty, cmd: withNodes("pg1", "pg1", ""), want: Rejected, reason: "must be 1.."},
		{name: "name too long", state: empty, cmd: withNodes("pg1", "pg1", strings.Repeat("n", 64)), want: Rejected, reason: "must be 1.."},
		{name: "control character in name", state: empty, cmd: withNodes("pg1", "pg1", "pg\n2"), want: Rejected, reason: "control character"},
		{name: "invalid UTF-8 name", state: empty, cmd: withNodes("pg1", "pg1", "pg\xff"), want: Rejected, reason: "UTF-8"},
		{name: "too many nodes", state: empty, cmd: withNodes(tooMany[0], tooMany...), want: Rejected, reason: "nodes, want 1.."},
	})
}

func TestApplyReportHealth(t *testing.T) {
	observed := func(t testing.TB) State {
		return run(t, bootCmd(), healthCmd("pg1", 3, true, at(5)), healthCmd("pg1", 1, true, at(5)))
	}
	obsOf := func(t *testing.T, s State, node string, proxy uint64) Observation {
		t.Helper()
		n, ok := s.Node(node)
		if !ok {
			t.Fatalf("no node %s", node)
		}
		o, ok := n.Observation(proxy)
		if !ok {
			t.Fatalf("no observation of %s by %d", node, proxy)
		}
		return o
	}
	runCases(t, []applyCase{
		{name: "not bootstrapped", state: empty, cmd: healthCmd("pg1", 1, true, at(1)), want: Rejected, reason: "not bootstrapped"},
		{name: "unknown node", state: bootstrapped, cmd: healthCmd("pg9", 1, true, at(1)), want: Rejected, reason: "unknown node"},
		{name: "proxy id 0", state: bootstrapped, cmd: healthCmd("pg1", 0, true, at(1)), want: Rejected, reason: "no proxy id"},
		{name: "missing timestamp", state: bootstrapped, cmd: healthCmd("pg1", 1, true, time.Time{}), want: Rejected, reason: "timestamp missing"},
		{name: "timestamp JSON cannot encode", state: bootstrapped, cmd: healthCmd("pg1", 1, true, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)),
			want: Rejected, reason: "out of range"},
		{name: "first observations are kept sorted by proxy", state: observed, cmd: healthCmd("pg1", 2, false, at(6)), want: Applied,
			check: func(t *testing.T, s State) {
				n, _ := s.Node("pg1")
				var proxies []uint64
				for _, o := range n.Observations {
					proxies = append(proxies, o.Proxy)
				}
				if !slices.Equal(proxies, []uint64{1, 2, 3}) {
					t.Fatalf("proxies %v", proxies)
				}
			}},
		{name: "newer observation replaces the stored one", state: observed, cmd: healthCmd("pg1", 3, false, at(6)), want: Applied,
			check: func(t *testing.T, s State) {
				if o := obsOf(t, s, "pg1", 3); o.Up || !o.At.Equal(at(6)) {
					t.Fatalf("observation %+v", o)
				}
			}},
		{name: "older observation arriving late is stale", state: observed, cmd: healthCmd("pg1", 3, false, at(4)), want: Stale, reason: "not newer"},
		{name: "equally old observation is stale", state: observed, cmd: healthCmd("pg1", 3, false, at(5)), want: Stale},
		{name: "time zone is normalised to UTC", state: bootstrapped,
			cmd: healthCmd("pg2", 1, true, at(5).In(time.FixedZone("CET", 3600))), want: Applied,
			check: func(t *testing.T, s State) {
				if o := obsOf(t, s, "pg2", 1); o.At.Location() != time.UTC {
					t.Fatalf("location %v", o.At.Location())
				}
			}},
	})
}

func TestApplyForgetProxy(t *testing.T) {
	observed := func(t testing.TB) State {
		return run(t, bootCmd(), healthCmd("pg1", 1, true, at(5)), healthCmd("pg2", 1, true, at(5)), healthCmd("pg2", 2, true, at(5)))
	}
	runCases(t, []applyCase{
		{name: "drops the proxy's observations of every node", state: observed, cmd: Command{ForgetProxy: &ForgetProxy{Proxy: 1}}, want: Applied,
			check: func(t *testing.T, s State) {
				for _, n := range s.Nodes {
					if _, ok := n.Observation(1); ok {
						t.Fatalf("node %s still has proxy 1", n.Name)
					}
				}
				if n, _ := s.Node("pg2"); len(n.Observations) != 1 {
					t.Fatalf("pg2 observations %+v", n.Observations)
				}
			}},
		{name: "nothing to forget is a duplicate", state: observed, cmd: Command{ForgetProxy: &ForgetProxy{Proxy: 9}}, want: Duplicate},
		{name: "not bootstrapped", state: empty, cmd: Command{ForgetProxy: &ForgetProxy{Proxy: 1}}, want: Rejected},
	})
}

func TestApplySetPaused(t *testing.T) {
	paused := func(t testing.TB) State { return run(t, bootCmd(), Command{SetPaused: &SetPaused{Paused: true}}) }
	runCases(t, []applyCase{
		{name: "pause", state: bootstrapped, cmd: Command{SetPaused: &SetPaused{Paused: true}}, want: Applied,
			check: func(t *testing.T, s State) {
				if !s.Paused {
					t.Fatal("not paused")
				}
			}},
		{name: "pause twice is a duplicate", state: paused, cmd: Command{SetPaused: &SetPaused{Paused: true}}, want: Duplicate},
		{name: "resume", state: paused, cmd: Command{SetPaused: &SetPaused{Paused: false}}, want: Applied,
			check: func(t *testing.T, s State) {
				if s.Paused {
					t.Fatal("still paused")
				}
			}},
		{name: "resume when running is a duplicate", state: bootstrapped, cmd: Command{SetPaused: &SetPaused{}}, want: Duplicate},
		{name: "not bootstrapped", state: empty, cmd: Command{SetPaused: &SetPaused{Paused: true}}, want: Rejected},
		{name: "pause during a failover does not stop it", state: begun, cmd: Command{SetPaused: &SetPaused{Paused: true}}, want: Applied,
			check: func(t *testing.T, s State) {
				if s.Failover == nil {
					t.Fatal("failover dropped")
				}
			}},
	})
}

func TestApplyUnfence(t *testing.T) {
	runCases(t, []applyCase{
		{name: "unfence the old primary after rejoin", state: completed, cmd: Command{Unfence: &Unfence{Node: "pg1"}}, want: Applied,
			check: func(t *testing.T, s State) {
				if s.IsFenced("pg1") || s.Fenced != nil {
					t.Fatalf("fenced %v", s.Fenced)
				}
			}},
		{name: "unfence a node that is not fenced is a duplicate", state: completed, cmd: Command{Unfence: &Unfence{Node: "pg3"}}, want: Duplicate},
		{name: "unknown node", state: completed, cmd: Command{Unfence: &Unfence{Node: "pg9"}}, want: Rejected, reason: "unknown node"},
		{name: "not bootstrapped", state: empty, cmd: Command{Unfence: &Unfence{Node: "pg1"}}, want: Rejected},
	})
}
