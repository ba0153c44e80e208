package clusterstate

import (
	"fmt"
	"time"
)

// Command is a tagged union: exactly one field is set. Build one as
// Command{BeginFailover: &BeginFailover{...}} and propose Encode(cmd).
//
// Commands that change routing (BeginFailover, CompleteFailover, AbortFailover) are
// compare-and-set on Epoch through ExpectEpoch; commands that advance a failover
// (RecordStep, BlockFailover) are also compare-and-set on FailoverProgress.Seq through
// ExpectSeq. The others are idempotent by construction.
type Command struct {
	Bootstrap        *Bootstrap        `json:"bootstrap,omitempty"`
	ReportHealth     *ReportHealth     `json:"report_health,omitempty"`
	ForgetProxy      *ForgetProxy      `json:"forget_proxy,omitempty"`
	SetPaused        *SetPaused        `json:"set_paused,omitempty"`
	Unfence          *Unfence          `json:"unfence,omitempty"`
	BeginFailover    *BeginFailover    `json:"begin_failover,omitempty"`
	RecordStep       *RecordStep       `json:"record_step,omitempty"`
	BlockFailover    *BlockFailover    `json:"block_failover,omitempty"`
	ForceFailover    *ForceFailover    `json:"force_failover,omitempty"`
	AbortFailover    *AbortFailover    `json:"abort_failover,omitempty"`
	CompleteFailover *CompleteFailover `json:"complete_failover,omitempty"`
	// Versions (versions.go).
	ReportVersion       *ReportVersion       `json:"report_version,omitempty"`
	RaiseClusterVersion *RaiseClusterVersion `json:"raise_cluster_version,omitempty"`
}

// CommandType names the set field of a Command; it is the "type" of the encoding.
type CommandType string

const (
	TypeBootstrap           CommandType = "bootstrap"
	TypeReportHealth        CommandType = "report_health"
	TypeForgetProxy         CommandType = "forget_proxy"
	TypeSetPaused           CommandType = "set_paused"
	TypeUnfence             CommandType = "unfence"
	TypeBeginFailover       CommandType = "begin_failover"
	TypeRecordStep          CommandType = "record_step"
	TypeBlockFailover       CommandType = "block_failover"
	TypeForceFailover       CommandType = "force_failover"
	TypeAbortFailover       CommandType = "abort_failover"
	TypeCompleteFailover    CommandType = "complete_failover"
	TypeReportVersion       CommandType = "report_version"
	TypeRaiseClusterVersion CommandType = "raise_cluster_version"
)

// Type returns which command c holds, or an error unless exactly one field is set.
func (c Command) Type() (CommandType, error) {
	var found []CommandType
	add := func(set bool, t CommandType) {
		if set {
			found = append(found, t)
		}
	}
	add(c.Bootstrap != nil, TypeBootstrap)
	add(c.ReportHealth != nil, TypeReportHealth)
	add(c.ForgetProxy != nil, TypeForgetProxy)
	add(c.SetPaused != nil, TypeSetPaused)
	add(c.Unfence != nil, TypeUnfence)
	add(c.BeginFailover != nil, TypeBeginFailover)
	add(c.RecordStep != nil, TypeRecordStep)
	add(c.BlockFailover != nil, TypeBlockFailover)
	add(c.ForceFailover != nil, TypeForceFailover)
	add(c.AbortFailover != nil, TypeAbortFailover)
	add(c.CompleteFailover != nil, TypeCompleteFailover)
	add(c.ReportVersion != nil, TypeReportVersion)
	add(c.RaiseClusterVersion != nil, TypeRaiseClusterVersion)
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("command has no payload")
	default:
		return "", fmt.Errorf("command has %d payloads %v, want exactly one", len(found), found)
	}
}

// Bootstrap sets the initial primary and node set. Applies only at Epoch 0 and moves
// to Epoch 1. Proposing it again is a Duplicate if the node set matches, else Rejected.
type Bootstrap struct {
	Primary string     `json:"primary"` // must be one of Nodes
	Nodes   []NodeSpec `json:"nodes"`   // 1..MaxNodes, distinct names
}

// NodeSpec is one PostgreSQL node as configured (config backends[]).
type NodeSpec struct {
	Name     string `json:"name"`
	Priority int    `json:"priority,omitempty"` // failover tie-break: higher wins
}

// ReportHealth stores one proxy's observation of one node, replacing that proxy's
// previous observation only if this one is strictly later (Observation.At); an older
// or equally old report is Stale.
type ReportHealth struct {
	Node        string      `json:"node"`
	Observation Observation `json:"observation"` // Observation.Proxy identifies the reporter
}

// ForgetProxy drops every observation made by a proxy, e.g. after it was removed from
// the Raft membership. Duplicate if it has none.
type ForgetProxy struct {
	Proxy uint64 `json:"proxy"`
}

// SetPaused pauses or resumes automatic failover. Duplicate if already in that state.
type SetPaused struct {
	Paused bool `json:"paused"`
}

// Unfence allows routing to a fenced old primary again, after `pgquorum rejoin` has
// rewound it and it has streamed as a standby. Duplicate if it is not fenced.
type Unfence struct {
	Node string `json:"node"`
}

// BeginFailover commits "epoch E+1, no primary": proxies stop forwarding to the old
// primary and hold traffic. ExpectEpoch must equal State.Epoch and OldPrimary must be
// the current primary; no other failover may be in progress.
type BeginFailover struct {
	ExpectEpoch uint64       `json:"expect_epoch"`
	OldPrimary  string       `json:"old_primary"`
	Kind        FailoverKind `json:"kind"`
	// Target is the operator's --to: required for a switchover, optional for a manual
	// failover, not allowed for an automatic one. It must be a known node other than
	// OldPrimary and not fenced, unless Forced.
	Target string `json:"target,omitempty"`
	// Forced is --force --allow-data-loss: only for KindManual.
	Forced bool      `json:"forced,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// RecordStep records that the in-progress failover's Next step is done and moves Next
// along. Step must equal FailoverProgress.Next.
type RecordStep struct {
	ExpectEpoch uint64 `json:"expect_epoch"`
	ExpectSeq   uint64 `json:"expect_seq"`
	Step        Step   `json:"step"`
	// Candidate is required for StepChooseCandidate: a known node other than the old
	// primary, not fenced, equal to the target if one was given (fencing and
	// old-primary rules are lifted for a forced failover). For other steps it must be
	// empty or the chosen candidate.
	Candidate string `json:"candidate,omitempty"`
	// LSNTable, when non-empty, replaces FailoverProgress.LSNTable (freeze records the
	// reachable standbys' table). Rows name known nodes, each at most once.
	LSNTable []LSNRow `json:"lsn_table,omitempty"`
	// XidHorizon is recorded with StepPromote: the new primary's transaction id
	// horizon (State.PrimaryXidHorizon); 0 when unknown.
	XidHorizon uint64    `json:"xid_horizon,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	At         time.Time `json:"at"`
}

// BlockFailover reports that the failover cannot safely continue (SPEC §4 step 4), for
// example "1 of 2 standbys reachable, need 2". Allowed until the candidate is
// promoted. It sets Blocked, forgets the candidate, rewinds Next to freeze (or leaves
// it at demote_old_primary/freeze), and adds a History entry when the block begins.
type BlockFailover struct {
	ExpectEpoch uint64    `json:"expect_epoch"`
	ExpectSeq   uint64    `json:"expect_seq"`
	Reason      string    `json:"reason"` // required, for humans
	At          time.Time `json:"at"`
}

// ForceFailover is the operator's `failover --force --allow-data-loss` while a
// failover is blocked: it clears the block and marks the failover Forced, so the
// coordinator proceeds from Next without the reachable-standby check. Not for a
// switchover (abort it instead). Duplicate if already forced and not blocked.
type ForceFailover struct {
	ExpectEpoch uint64    `json:"expect_epoch"`
	Target      string    `json:"target,omitempty"` // optional --to; replaces the failover's Target; any known node
	Reason      string    `json:"reason,omitempty"`
	At          time.Time `json:"at"`
}

// AbortFailover ends a failover that has not promoted anyone and routes to the old
// primary again under a new epoch (E+1 -> E+2). The coordinator must have undone its
// freezing (standbys following the old primary again) before proposing it.
type AbortFailover struct {
	ExpectEpoch uint64    `json:"expect_epoch"`
	Reason      string    `json:"reason"` // required
	At          time.Time `json:"at"`
}

// CompleteFailover commits "epoch E+1, primary = X" once every step is recorded
// (Next == complete). NewPrimary must be the chosen candidate. The old primary is
// fenced and a History entry records the LSN table behind the decision.
type CompleteFailover struct {
	ExpectEpoch uint64    `json:"expect_epoch"`
	NewPrimary  string    `json:"new_primary"`
	At          time.Time `json:"at"`
}

// ResultCode says whether a command changed the state.
type ResultCode string

const (
	// Applied: the command changed the state.
	Applied ResultCode = "applied"
	// Duplicate: the command's effect is already in the state; nothing changed.
	Duplicate ResultCode = "duplicate"
	// Stale: the command was based on a state that has moved on (older epoch or step
	// sequence, older observation); nothing changed. Re-read the state and decide again.
	Stale ResultCode = "stale"
	// Rejected: the command is invalid in this state; nothing changed.
	Rejected ResultCode = "rejected"
)

// Result is what Apply says about one command. Machine.Apply returns it JSON-encoded.
type Result struct {
	Code   ResultCode `json:"code"`
	Reason string     `json:"reason,omitempty"` // what happened, or why nothing did
	Epoch  uint64     `json:"epoch"`            // State.Epoch after the command
}

// OK reports whether the command's effect is in the state (Applied or Duplicate).
func (r Result) OK() bool { return r.Code == Applied || r.Code == Duplicate }

func (r Result) String() string {
	if r.Reason == "" {
		return fmt.Sprintf("%s (epoch %d)", r.Code, r.Epoch)
	}
	return fmt.Sprintf("%s: %s (epoch %d)", r.Code, r.Reason, r.Epoch)
}
