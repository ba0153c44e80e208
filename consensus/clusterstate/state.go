package clusterstate

import (
	"slices"
	"sort"
	"time"
)

// Bounds that keep the state small no matter what is proposed.
const (
	MaxNodes         = 64   // PostgreSQL nodes in Bootstrap
	MaxNodeNameBytes = 63   // PostgreSQL's NAMEDATALEN-1: application_name length
	MaxHistory       = 100  // History keeps the last MaxHistory entries
	MaxStepRecords   = 32   // FailoverProgress.Steps keeps the last MaxStepRecords records
	MaxTextBytes     = 1024 // Reason/Detail strings are cut to this many bytes
)

// State is the replicated cluster state. The zero State is the state before Bootstrap.
//
// Slices are kept sorted (Nodes by Name, Observations by Proxy, Fenced by name, LSN
// tables by Node) so encodings are canonical. Empty slices are encoded as absent.
type State struct {
	// Epoch is the fencing token. 0 = not bootstrapped. It bumps on every change of
	// primary, including a change to "no primary" (BeginFailover) and back from it by
	// AbortFailover; CompleteFailover sets the primary within the epoch BeginFailover made.
	Epoch uint64 `json:"epoch"`
	// Primary is the node proxies route to; "" = none agreed (proxies hold traffic).
	// Once bootstrapped, exactly one of Primary and Failover is set.
	Primary string `json:"primary,omitempty"`
	// PrimaryXidHorizon, when not 0, is the transaction id horizon of Primary as
	// its promotion in this epoch recorded it: every transaction id below it was
	// assigned on the previous primary's timeline, and no transaction at or above
	// it committed there. Proxies use it to learn the real outcome of a COMMIT
	// lost with the previous primary (pg_xact_status on the new one). 0 when
	// unknown (bootstrap, a resumed promotion, an aborted failover, or entries
	// written by an older pgquorum, which ignores the field: then the proxies
	// answer such a COMMIT with 08007, as before).
	PrimaryXidHorizon uint64 `json:"primary_xid_horizon,omitempty"`
	// Nodes are the PostgreSQL nodes, sorted by Name, with the proxies' observations.
	Nodes []NodeState `json:"nodes,omitempty"`
	// Paused stops automatic failovers from beginning. Operator-requested failovers,
	// switchovers and a failover already in progress are not affected.
	Paused bool `json:"paused,omitempty"`
	// Failover is non-nil while a failover or switchover is in progress.
	Failover *FailoverProgress `json:"failover,omitempty"`
	// History holds completed, blocked and aborted failovers and switchovers, oldest
	// first, at most MaxHistory.
	History []HistoryEntry `json:"history,omitempty"`
	// Fenced are old primaries that must never be routed to until Unfence (after
	// `pgquorum rejoin`). Sorted; never contains Primary.
	Fenced []string `json:"fenced,omitempty"`
	// ClusterVersion is the command version every voter understands, agreed
	// through RaiseClusterVersion; 0 means 1 (see AgreedVersion, versions.go).
	ClusterVersion uint32 `json:"cluster_version,omitempty"`
	// Versions are the proxies' version reports, sorted by Proxy. Unlike the
	// rest, they may exist before Bootstrap.
	Versions []ProxyVersion `json:"versions,omitempty"`
}

// NodeState is one PostgreSQL node as the cluster agreed on it.
type NodeState struct {
	Name string `json:"name"` // the node's application_name (config backends[].name)
	// Priority breaks ties when choosing a failover candidate: higher wins.
	Priority int `json:"priority,omitempty"`
	// Observations holds the latest observation of this node by each proxy, sorted by
	// Proxy, at most one per proxy.
	Observations []Observation `json:"observations,omitempty"`
}

// Observation is what one proxy's health probe saw of one node.
type Observation struct {
	Proxy      uint64    `json:"proxy"`                 // Raft node ID of the observing proxy; non-zero
	Up         bool      `json:"up"`                    // the probe connected and ran its query
	InRecovery bool      `json:"in_recovery,omitempty"` // pg_is_in_recovery()
	Timeline   uint32    `json:"timeline,omitempty"`
	ReceiveLSN uint64    `json:"receive_lsn,omitempty"` // standby: last WAL received; primary: current WAL LSN
	ReplayLSN  uint64    `json:"replay_lsn,omitempty"`
	At         time.Time `json:"at"` // the observing proxy's clock; required
}

// LSNRow is one node's line in the LSN table behind a failover decision.
type LSNRow struct {
	Node       string `json:"node"`
	Reachable  bool   `json:"reachable"`
	Frozen     bool   `json:"frozen,omitempty"` // primary_conninfo cleared and WAL receiver confirmed stopped
	Timeline   uint32 `json:"timeline,omitempty"`
	ReceiveLSN uint64 `json:"receive_lsn,omitempty"`
	ReplayLSN  uint64 `json:"replay_lsn,omitempty"`
}

// FailoverKind says who asked for a failover.
type FailoverKind string

const (
	// KindAutomatic is started by the coordinator because the primary is down. Not
	// allowed while Paused, cannot be forced at Begin and cannot name a target.
	KindAutomatic FailoverKind = "automatic"
	// KindManual is `pgquorum failover [--to NAME] [--force --allow-data-loss]`.
	KindManual FailoverKind = "manual"
	// KindSwitchover is a planned `pgquorum switchover --to NAME`: zero loss, never forced.
	KindSwitchover FailoverKind = "switchover"
)

// Step names one step of a failover, in the order they must be recorded.
type Step string

const (
	StepDemoteOldPrimary Step = "demote_old_primary" // switchover only: old primary read-only, candidate has its final LSN
	StepFreeze           Step = "freeze"             // reachable standbys frozen; the record carries their LSN table
	StepChooseCandidate  Step = "choose_candidate"   // candidate picked (highest timeline, receive LSN; then priority)
	StepPromote          Step = "promote"            // synchronous_standby_names set on the candidate, pg_promote done
	StepRepoint          Step = "repoint"            // the other standbys follow the new primary
	StepComplete         Step = "complete"           // only as FailoverProgress.Next: ready for CompleteFailover

	// Markers that appear in FailoverProgress.Steps but are never Next.
	StepBlocked Step = "blocked" // a BlockFailover was applied
	StepForced  Step = "forced"  // a ForceFailover was applied
)

// stepOrder lists the runnable steps; Next moves along it.
var stepOrder = []Step{StepDemoteOldPrimary, StepFreeze, StepChooseCandidate, StepPromote, StepRepoint, StepComplete}

func stepIndex(s Step) int { return slices.Index(stepOrder, s) }

// FailoverProgress is an in-progress failover or switchover. A coordinator that
// becomes leader resumes from it: run Next (or, if Blocked, re-check reachability and
// re-run freeze), proposing commands with ExpectEpoch = Epoch and ExpectSeq = Seq.
type FailoverProgress struct {
	Epoch      uint64       `json:"epoch"` // the epoch BeginFailover made; equals State.Epoch
	Kind       FailoverKind `json:"kind"`
	Forced     bool         `json:"forced,omitempty"` // --force --allow-data-loss: skip the reachable-standby check
	OldPrimary string       `json:"old_primary"`
	Target     string       `json:"target,omitempty"` // the operator's --to; "" = the coordinator picks
	Reason     string       `json:"reason,omitempty"` // why it began
	StartedAt  time.Time    `json:"started_at"`

	// Next is the step to run now; StepComplete means "propose CompleteFailover".
	Next Step `json:"next"`
	// Seq counts the step records applied to this failover (RecordStep, BlockFailover,
	// ForceFailover). Step commands carry ExpectSeq = Seq, so a duplicate is a no-op.
	Seq uint64 `json:"seq"`
	// Candidate is the node chosen at StepChooseCandidate; "" before that (and again
	// after a block rewinds the failover to freeze).
	Candidate string `json:"candidate,omitempty"`
	// LSNTable is the latest table recorded by a step (normally freeze): the
	// observation behind the choice of candidate. Sorted by Node.
	LSNTable []LSNRow `json:"lsn_table,omitempty"`
	// XidHorizon is the promoted candidate's transaction id horizon, recorded
	// with StepPromote (0 when unknown); CompleteFailover makes it
	// State.PrimaryXidHorizon.
	XidHorizon uint64 `json:"xid_horizon,omitempty"`

	// Blocked is true after BlockFailover until choose_candidate is recorded or the
	// operator forces the failover; traffic keeps being held meanwhile.
	Blocked       bool      `json:"blocked,omitempty"`
	BlockedReason string    `json:"blocked_reason,omitempty"` // e.g. "1 of 2 standbys reachable, need 2"
	BlockedAt     time.Time `json:"blocked_at,omitzero"`

	// Steps are the last MaxStepRecords step records, oldest first.
	Steps []StepRecord `json:"steps,omitempty"`
}

// StepRecord is one applied step (or block/force marker) of a failover.
type StepRecord struct {
	Seq       uint64    `json:"seq"` // FailoverProgress.Seq before this record
	Step      Step      `json:"step"`
	Candidate string    `json:"candidate,omitempty"` // choose_candidate only
	Detail    string    `json:"detail,omitempty"`
	At        time.Time `json:"at"`
}

// Outcome is how a failover ended up in History.
type Outcome string

const (
	OutcomeCompleted Outcome = "completed" // CompleteFailover: a new primary was agreed
	OutcomeBlocked   Outcome = "blocked"   // BlockFailover: recorded when the block begins; the failover stays in progress
	OutcomeAborted   Outcome = "aborted"   // AbortFailover: routing returned to the old primary
)

// HistoryEntry records one failover or switchover decision with the LSN table behind it.
type HistoryEntry struct {
	Epoch         uint64       `json:"epoch"` // the failover's epoch (FailoverProgress.Epoch)
	Kind          FailoverKind `json:"kind"`
	Forced        bool         `json:"forced,omitempty"`
	Outcome       Outcome      `json:"outcome"`
	OldPrimary    string       `json:"old_primary"`
	NewPrimary    string       `json:"new_primary,omitempty"`    // completed: the new primary; aborted: the old primary again
	Reason        string       `json:"reason,omitempty"`         // why the failover began
	OutcomeReason string       `json:"outcome_reason,omitempty"` // blocked/aborted: why
	StartedAt     time.Time    `json:"started_at"`
	At            time.Time    `json:"at"` // when the outcome was recorded
	LSNTable      []LSNRow     `json:"lsn_table,omitempty"`
	Steps         []StepRecord `json:"steps,omitempty"`
}

// Bootstrapped reports whether Bootstrap has been applied.
func (s State) Bootstrapped() bool { return s.Epoch > 0 }

// Node returns the named node and whether it exists.
func (s State) Node(name string) (NodeState, bool) {
	i, ok := s.nodeIndex(name)
	if !ok {
		return NodeState{}, false
	}
	return s.Nodes[i], true
}

// IsFenced reports whether the named node must not be routed to.
func (s State) IsFenced(name string) bool {
	_, ok := slices.BinarySearch(s.Fenced, name)
	return ok
}

func (s State) nodeIndex(name string) (int, bool) {
	i := sort.Search(len(s.Nodes), func(i int) bool { return s.Nodes[i].Name >= name })
	return i, i < len(s.Nodes) && s.Nodes[i].Name == name
}

// Observation returns the latest observation of node by proxy, if any.
func (n NodeState) Observation(proxy uint64) (Observation, bool) {
	i, ok := observationIndex(n.Observations, proxy)
	if !ok {
		return Observation{}, false
	}
	return n.Observations[i], true
}

func observationIndex(obs []Observation, proxy uint64) (int, bool) {
	i := sort.Search(len(obs), func(i int) bool { return obs[i].Proxy >= proxy })
	return i, i < len(obs) && obs[i].Proxy == proxy
}

// Clone returns a deep copy of s that shares no memory with it.
func (s State) Clone() State {
	c := s
	c.Nodes = nil
	if s.Nodes != nil {
		c.Nodes = make([]NodeState, len(s.Nodes))
		for i, n := range s.Nodes {
			c.Nodes[i] = n
			c.Nodes[i].Observations = slices.Clone(n.Observations)
		}
	}
	if s.Failover != nil {
		f := s.Failover.clone()
		c.Failover = &f
	}
	c.History = nil
	if s.History != nil {
		c.History = make([]HistoryEntry, len(s.History))
		for i, h := range s.History {
			c.History[i] = h
			c.History[i].LSNTable = slices.Clone(h.LSNTable)
			c.History[i].Steps = slices.Clone(h.Steps)
		}
	}
	c.Fenced = slices.Clone(s.Fenced)
	c.Versions = slices.Clone(s.Versions)
	return c
}

// clone deep-copies the progress (its slices hold only values).
func (f FailoverProgress) clone() FailoverProgress {
	f.LSNTable = slices.Clone(f.LSNTable)
	f.Steps = slices.Clone(f.Steps)
	return f
}
