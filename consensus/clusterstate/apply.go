package clusterstate

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Apply returns the state after command c and a Result saying what happened. It is
// pure and deterministic: s is never modified (the returned State may share unchanged
// slices with s, see the package doc), and equal inputs give equal outputs. A command
// that does not apply returns s itself with a Duplicate, Stale or Rejected Result.
func Apply(s State, c Command) (State, Result) {
	if _, err := c.Type(); err != nil {
		return notApplied(s, Rejected, "%v", err)
	}
	if err := s.Allows(c); err != nil {
		return notApplied(s, Rejected, "%v", err)
	}
	switch {
	case c.Bootstrap != nil:
		return applyBootstrap(s, *c.Bootstrap)
	case c.ReportHealth != nil:
		return applyReportHealth(s, *c.ReportHealth)
	case c.ForgetProxy != nil:
		return applyForgetProxy(s, *c.ForgetProxy)
	case c.SetPaused != nil:
		return applySetPaused(s, *c.SetPaused)
	case c.Unfence != nil:
		return applyUnfence(s, *c.Unfence)
	case c.BeginFailover != nil:
		return applyBeginFailover(s, *c.BeginFailover)
	case c.RecordStep != nil:
		return applyRecordStep(s, *c.RecordStep)
	case c.BlockFailover != nil:
		return applyBlockFailover(s, *c.BlockFailover)
	case c.ForceFailover != nil:
		return applyForceFailover(s, *c.ForceFailover)
	case c.AbortFailover != nil:
		return applyAbortFailover(s, *c.AbortFailover)
	case c.ReportVersion != nil:
		return applyReportVersion(s, *c.ReportVersion)
	case c.RaiseClusterVersion != nil:
		return applyRaiseClusterVersion(s, *c.RaiseClusterVersion)
	default: // c.Type() guarantees this is the only one left
		return applyCompleteFailover(s, *c.CompleteFailover)
	}
}

func applied(next State, format string, args ...any) (State, Result) {
	return next, Result{Code: Applied, Reason: fmt.Sprintf(format, args...), Epoch: next.Epoch}
}

func notApplied(s State, code ResultCode, format string, args ...any) (State, Result) {
	return s, Result{Code: code, Reason: fmt.Sprintf(format, args...), Epoch: s.Epoch}
}

func applyBootstrap(s State, c Bootstrap) (State, Result) {
	if err := checkNodeSpecs(c.Nodes); err != nil {
		return notApplied(s, Rejected, "bootstrap: %v", err)
	}
	if s.Bootstrapped() {
		if sameNodeSet(s.Nodes, c.Nodes) {
			return notApplied(s, Duplicate, "already bootstrapped (epoch %d)", s.Epoch)
		}
		return notApplied(s, Rejected, "already bootstrapped (epoch %d) with a different node set", s.Epoch)
	}
	if !slices.ContainsFunc(c.Nodes, func(n NodeSpec) bool { return n.Name == c.Primary }) {
		return notApplied(s, Rejected, "bootstrap: primary %q is not one of the nodes", c.Primary)
	}
	nodes := make([]NodeState, len(c.Nodes))
	for i, n := range c.Nodes {
		nodes[i] = NodeState{Name: n.Name, Priority: n.Priority}
	}
	slices.SortFunc(nodes, func(a, b NodeState) int { return strings.Compare(a.Name, b.Name) })
	next := State{Epoch: 1, Primary: c.Primary, Nodes: nodes}
	return applied(next, "bootstrapped with primary %s", c.Primary)
}

func checkNodeSpecs(nodes []NodeSpec) error {
	if len(nodes) == 0 || len(nodes) > MaxNodes {
		return fmt.Errorf("%d nodes, want 1..%d", len(nodes), MaxNodes)
	}
	seen := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if err := checkNodeName(n.Name); err != nil {
			return err
		}
		if slices.Contains(seen, n.Name) {
			return fmt.Errorf("node %q listed twice", n.Name)
		}
		seen = append(seen, n.Name)
	}
	return nil
}

// sameNodeSet compares names and priorities, ignoring order.
func sameNodeSet(have []NodeState, want []NodeSpec) bool {
	if len(have) != len(want) {
		return false
	}
	for _, w := range want {
		i := slices.IndexFunc(have, func(h NodeState) bool { return h.Name == w.Name })
		if i < 0 || have[i].Priority != w.Priority {
			return false
		}
	}
	return true
}

func applyReportHealth(s State, c ReportHealth) (State, Result) {
	if !s.Bootstrapped() {
		return notApplied(s, Rejected, "report health: not bootstrapped")
	}
	i, ok := s.nodeIndex(c.Node)
	if !ok {
		return notApplied(s, Rejected, "report health: unknown node %q", c.Node)
	}
	obs := c.Observation
	if obs.Proxy == 0 {
		return notApplied(s, Rejected, "report health: observation has no proxy id")
	}
	if err := checkTime(obs.At); err != nil {
		return notApplied(s, Rejected, "report health: %v", err)
	}
	obs.At = obs.At.UTC()
	node := s.Nodes[i]
	j, exists := observationIndex(node.Observations, obs.Proxy)
	if exists && !obs.At.After(node.Observations[j].At) {
		return notApplied(s, Stale, "observation of %s by proxy %d at %s is not newer than the stored one at %s",
			c.Node, obs.Proxy, obs.At.Format(time.RFC3339Nano), node.Observations[j].At.Format(time.RFC3339Nano))
	}
	if exists {
		node.Observations = slices.Clone(node.Observations)
		node.Observations[j] = obs
	} else {
		node.Observations = slices.Insert(slices.Clone(node.Observations), j, obs)
	}
	next := s
	next.Nodes = replaceNode(s.Nodes, i, node)
	return applied(next, "observation of %s by proxy %d recorded (up=%t)", c.Node, obs.Proxy, obs.Up)
}

// replaceNode returns a copy of nodes with nodes[i] = n.
func replaceNode(nodes []NodeState, i int, n NodeState) []NodeState {
	out := slices.Clone(nodes)
	out[i] = n
	return out
}

func applyForgetProxy(s State, c ForgetProxy) (State, Result) {
	if !s.Bootstrapped() {
		return notApplied(s, Rejected, "forget proxy: not bootstrapped")
	}
	versions, forgotVersion := forgetVersion(s.Versions, c.Proxy)
	var nodes []NodeState
	for i, n := range s.Nodes {
		j, ok := observationIndex(n.Observations, c.Proxy)
		if !ok {
			continue
		}
		if nodes == nil {
			nodes = slices.Clone(s.Nodes)
		}
		nodes[i].Observations = slices.Delete(slices.Clone(n.Observations), j, j+1)
		if len(nodes[i].Observations) == 0 {
			nodes[i].Observations = nil
		}
	}
	if nodes == nil && !forgotVersion {
		return notApplied(s, Duplicate, "proxy %d has no observations", c.Proxy)
	}
	next := s
	if nodes != nil {
		next.Nodes = nodes
	}
	next.Versions = versions
	return applied(next, "observations and version report of proxy %d dropped", c.Proxy)
}

func applySetPaused(s State, c SetPaused) (State, Result) {
	if !s.Bootstrapped() {
		return notApplied(s, Rejected, "set paused: not bootstrapped")
	}
	if s.Paused == c.Paused {
		return notApplied(s, Duplicate, "paused is already %t", c.Paused)
	}
	next := s
	next.Paused = c.Paused
	return applied(next, "paused set to %t", c.Paused)
}

func applyUnfence(s State, c Unfence) (State, Result) {
	if !s.Bootstrapped() {
		return notApplied(s, Rejected, "unfence: not bootstrapped")
	}
	if _, ok := s.nodeIndex(c.Node); !ok {
		return notApplied(s, Rejected, "unfence: unknown node %q", c.Node)
	}
	if !s.IsFenced(c.Node) {
		return notApplied(s, Duplicate, "node %s is not fenced", c.Node)
	}
	next := s
	next.Fenced = withoutName(s.Fenced, c.Node)
	return applied(next, "node %s unfenced", c.Node)
}

// withName returns a sorted copy of names with name added (if missing).
func withName(names []string, name string) []string {
	i, ok := slices.BinarySearch(names, name)
	if ok {
		return names
	}
	return slices.Insert(slices.Clone(names), i, name)
}

// withoutName returns a copy of names without name (nil when it ends up empty).
func withoutName(names []string, name string) []string {
	i, ok := slices.BinarySearch(names, name)
	if !ok {
		return names
	}
	out := slices.Delete(slices.Clone(names), i, i+1)
	if len(out) == 0 {
		return nil
	}
	return out
}

// checkNodeName accepts what PostgreSQL accepts as an application_name we can route by:
// 1..MaxNodeNameBytes bytes of valid UTF-8 without control characters.
func checkNodeName(name string) error {
	if name == "" || len(name) > MaxNodeNameBytes {
		return fmt.Errorf("node name %q must be 1..%d bytes", name, MaxNodeNameBytes)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("node name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("node name %q contains a control character", name)
		}
	}
	return nil
}

// checkTime requires a set timestamp that JSON can encode (years 1..9999 in UTC).
func checkTime(t time.Time) error {
	if t.IsZero() {
		return fmt.Errorf("timestamp missing")
	}
	if y := t.UTC().Year(); y < 1 || y > 9999 {
		return fmt.Errorf("timestamp year %d out of range", y)
	}
	return nil
}

// clipText makes free text canonical: valid UTF-8, at most MaxTextBytes bytes, cut at
// a rune boundary. Every node clips alike, so the state stays deterministic.
func clipText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= MaxTextBytes {
		return s
	}
	cut := MaxTextBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
