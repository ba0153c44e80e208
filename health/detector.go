package health

import (
	"fmt"
	"sort"
	"time"
)

// Defaults of DetectorConfig. A Monitor derives DownAfter from its probe
// interval and timeout instead (see MonitorConfig.Detector).
const (
	DefaultFailAfter    = 3
	DefaultDownAfter    = 1500 * time.Millisecond
	DefaultRecoverAfter = 2
)

// Health is the detector's verdict on a node.
type Health int

const (
	// HealthUnknown: not enough probes yet to say.
	HealthUnknown Health = iota
	// HealthUp: the node answers probes.
	HealthUp
	// HealthDown: the node stopped answering probes.
	HealthDown
)

// String returns "unknown", "up" or "down".
func (h Health) String() string {
	switch h {
	case HealthUnknown:
		return "unknown"
	case HealthUp:
		return "up"
	case HealthDown:
		return "down"
	}
	return fmt.Sprintf("Health(%d)", int(h))
}

// NodeState is the part of a node's condition that is worth a Raft
// proposal: whether it is up, its role and its timeline. LSNs are not part
// of it; they move with every commit.
//
// InRecovery and Timeline come from the last successful probe the detector
// accepted; a Down node keeps the values it had when it was last up.
type NodeState struct {
	Health     Health
	InRecovery bool
	Timeline   uint32
}

// String renders s for logs, for example "up standby timeline 2".
func (s NodeState) String() string {
	if s.Health == HealthUnknown {
		return "unknown"
	}
	role := "primary"
	if s.InRecovery {
		role = "standby"
	}
	return fmt.Sprintf("%s %s timeline %d", s.Health, role, s.Timeline)
}

// Change is one state change of one node.
type Change struct {
	Node   string
	From   NodeState
	To     NodeState
	At     time.Time // the detector's clock when it decided
	Reason string    // why, for logs and the history: "3 consecutive failed probes: ..."
	// Probe is the probe that caused the change: the latest successful one
	// for a change to Up or of role or timeline, the latest failed one for a
	// change to Down (zero when no probe has answered at all).
	Probe Probe
	// Coalesced counts the undelivered changes that were merged into this
	// one because the consumer was slow (Monitor only); 0 normally.
	Coalesced int
}

// DetectorConfig configures a Detector. Zero or negative fields take the
// defaults.
type DetectorConfig struct {
	// FailAfter: a node is down after this many consecutive failed probes.
	FailAfter int
	// DownAfter: a node is also down when it has had no successful probe
	// for this long, even if fewer probes have failed (hung probes).
	DownAfter time.Duration
	// RecoverAfter: a node that is down (or not yet known) is up after this
	// many consecutive successful probes.
	RecoverAfter int
	// Now is the clock; nil means time.Now. Tests inject a fake one.
	Now func() time.Time
}

// Detector is a failure detector with hysteresis. It turns probes into
// Up/Down verdicts per node and reports a Change only when a node's
// NodeState changes: short flaps produce nothing, a sustained failure
// produces exactly one change to Down, a recovery exactly one change to Up.
// Role or timeline changes of an up node are reported at once: they come
// from a successful probe and need no hysteresis.
//
// A Detector does no I/O and starts no goroutines. It is owned by one
// goroutine (the Monitor's detector loop): its methods must not be called
// concurrently.
//
// The detector tells "the node did not answer" from "this process could not
// run": after Stalled(until), a failed probe that started before until does
// not count, and a node's silence is measured from until at the earliest.
type Detector struct {
	config DetectorConfig
	nodes  map[string]*nodeTrack
	// stalledUntil is the end of the latest stretch in which this process
	// could not run (Stalled); zero when there was none.
	stalledUntil time.Time
}

// nodeTrack is what the detector remembers about one node.
type nodeTrack struct {
	state       NodeState
	since       time.Time // when state last changed, or when tracking began
	lastSuccess time.Time // last successful probe, or when tracking began
	failures    int       // consecutive failed probes
	successes   int       // consecutive successful probes
	lastFailure Probe     // the latest failed probe, for reasons
	lastGood    Probe     // the latest successful probe
}

// NewDetector returns a detector that tracks nodes from now on: a node that
// has no successful probe within DownAfter of this call goes down. Nodes
// not listed here are tracked from their first observed probe.
func NewDetector(config DetectorConfig, nodes ...string) *Detector {
	if config.FailAfter <= 0 {
		config.FailAfter = DefaultFailAfter
	}
	if config.DownAfter <= 0 {
		config.DownAfter = DefaultDownAfter
	}
	if config.RecoverAfter <= 0 {
		config.RecoverAfter = DefaultRecoverAfter
	}
	if config.Now == nil {
		config.Now = time.Now
	}
	d := &Detector{config: config, nodes: map[string]*nodeTrack{}}
	for _, node := range nodes {
		d.track(node)
	}
	return d
}

func (d *Detector) track(node string) *nodeTrack {
	t, ok := d.nodes[node]
	if !ok {
		now := d.config.Now()
		t = &nodeTrack{since: now, lastSuccess: now}
		d.nodes[node] = t
	}
	return t
}

// Observe feeds one probe of p.Node and returns the change it causes, if
// any.
func (d *Detector) Observe(p Probe) (Change, bool) {
	t := d.track(p.Node)
	now := d.config.Now()
	if p.Reachable {
		t.failures = 0
		t.successes++
		t.lastSuccess = now
		t.lastGood = p
		observed := NodeState{Health: HealthUp, InRecovery: p.InRecovery, Timeline: p.Timeline}
		switch {
		case t.state.Health == HealthUp && observed != t.state:
			return d.change(p.Node, t, observed, now, describeStateChange(t.state, observed), p), true
		case t.state.Health != HealthUp && t.successes >= d.config.RecoverAfter:
			reason := fmt.Sprintf("%d consecutive successful probes", t.successes)
			return d.change(p.Node, t, observed, now, reason, p), true
		}
		return Change{}, false
	}

	if p.At.Before(d.stalledUntil) {
		// In flight while this process could not run: the probe may have
		// timed out because nobody read the answer. It says nothing.
		return Change{}, false
	}
	t.successes = 0
	t.failures++
	t.lastFailure = p
	if t.state.Health == HealthDown {
		return Change{}, false
	}
	var reason string
	switch silent := d.silence(t, now); {
	case t.failures >= d.config.FailAfter:
		reason = fmt.Sprintf("%d consecutive failed probes: %s", t.failures, p.Err)
	case silent >= d.config.DownAfter:
		reason = fmt.Sprintf("no successful probe for %v: %s", silent.Round(time.Millisecond), p.Err)
	default:
		return Change{}, false
	}
	down := t.state
	down.Health = HealthDown
	return d.change(p.Node, t, down, now, reason, p), true
}

// Check applies the time rule without a new probe: every node that is not
// already down and has had no successful probe for DownAfter goes down.
// The Monitor calls it on a timer so that a probe that hangs until its
// timeout cannot delay the verdict. Changes are ordered by node name.
func (d *Detector) Check() []Change {
	now := d.config.Now()
	var changes []Change
	for _, node := range d.sortedNodes() {
		t := d.nodes[node]
		silent := d.silence(t, now)
		if t.state.Health == HealthDown || silent < d.config.DownAfter {
			continue
		}
		reason := fmt.Sprintf("no successful probe for %v", silent.Round(time.Millisecond))
		if t.lastFailure.Err != "" {
			reason += ": " + t.lastFailure.Err
		}
		down := t.state
		down.Health = HealthDown
		changes = append(changes, d.change(node, t, down, now, reason, t.lastFailure))
	}
	return changes
}

// Stalled tells the detector that this process could not run (it was
// stopped, or starved of CPU) until until: the probes in flight then may have
// failed for that reason alone, and the nodes had no chance to answer. Failed
// probes that started before until are ignored, and each node's silence
// starts again at until.
func (d *Detector) Stalled(until time.Time) {
	if until.After(d.stalledUntil) {
		d.stalledUntil = until
	}
}

// silence is how long t's node has gone without a successful probe that this
// process was able to take: since its last success or the end of the latest
// stall, whichever is later.
func (d *Detector) silence(t *nodeTrack, now time.Time) time.Duration {
	since := t.lastSuccess
	if d.stalledUntil.After(since) {
		since = d.stalledUntil
	}
	return now.Sub(since)
}

func (d *Detector) change(node string, t *nodeTrack, to NodeState, now time.Time, reason string, p Probe) Change {
	c := Change{Node: node, From: t.state, To: to, At: now, Reason: reason, Probe: p}
	t.state = to
	t.since = now
	return c
}

// describeStateChange explains a role or timeline change of an up node.
func describeStateChange(from, to NodeState) string {
	role := func(inRecovery bool) string {
		if inRecovery {
			return "standby"
		}
		return "primary"
	}
	switch {
	case from.InRecovery != to.InRecovery && from.Timeline != to.Timeline:
		return fmt.Sprintf("role %s -> %s, timeline %d -> %d", role(from.InRecovery), role(to.InRecovery), from.Timeline, to.Timeline)
	case from.InRecovery != to.InRecovery:
		return fmt.Sprintf("role %s -> %s", role(from.InRecovery), role(to.InRecovery))
	default:
		return fmt.Sprintf("timeline %d -> %d", from.Timeline, to.Timeline)
	}
}

// NodeVerdict is the detector's view of one node.
type NodeVerdict struct {
	State                NodeState
	Since                time.Time // when State last changed, or when tracking began
	LastSuccess          time.Time // last successful probe, or when tracking began
	ConsecutiveFailures  int
	ConsecutiveSuccesses int
	LastGood             Probe // the latest successful probe; zero if none
}

// Verdict returns the detector's view of node; false if it is not tracked.
func (d *Detector) Verdict(node string) (NodeVerdict, bool) {
	t, ok := d.nodes[node]
	if !ok {
		return NodeVerdict{}, false
	}
	return NodeVerdict{
		State:                t.state,
		Since:                t.since,
		LastSuccess:          t.lastSuccess,
		ConsecutiveFailures:  t.failures,
		ConsecutiveSuccesses: t.successes,
		LastGood:             t.lastGood,
	}, true
}

func (d *Detector) sortedNodes() []string {
	nodes := make([]string, 0, len(d.nodes))
	for node := range d.nodes {
		nodes = append(nodes, node)
	}
	sort.Strings(nodes)
	return nodes
}
