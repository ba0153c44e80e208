package consensus

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// StateMachine is the replicated state the log drives. The Raft loop is its
// only caller; it never calls two methods at the same time.
type StateMachine interface {
	// Apply applies one committed normal entry. Deterministic. err means the
	// entry was undecodable (logged and skipped on every node alike), never an
	// I/O failure, unless err has a method HaltApply() bool that returns true:
	// then this node cannot apply an entry the others do (it needs a newer
	// version), and the node stops with ErrCannotApply instead of skipping it.
	// result is returned to the local proposer, if any.
	Apply(index uint64, data []byte) (result []byte, err error)
	// Snapshot returns the whole state as bytes.
	Snapshot() ([]byte, error)
	// Restore replaces the whole state with one returned by Snapshot.
	Restore(data []byte) error
}

// Peer is one voter of the initial configuration.
type Peer struct {
	ID   uint64
	Addr string // raft listen host:port
}

// Config configures a Node. Zero values of the optional fields get the
// defaults documented on each field.
type Config struct {
	// ClusterName is required; peers reject connections from another cluster.
	ClusterName string
	// NodeID is this node's raft id: non-zero, never reused.
	NodeID uint64
	// DataDir holds raft.db (bbolt); created if missing.
	DataDir string
	// Voter: false means learner. A fresh learner joins through the peers'
	// transport (Join request) and never votes.
	Voter bool
	// ListenAddr is the raft TCP listen address. ":0"/"127.0.0.1:0" are allowed
	// (see Node.Addr). Unused when Transport is set to a factory that does not
	// listen.
	ListenAddr string
	// AdvertiseAddr is what others dial; default is the actual listen address.
	AdvertiseAddr string
	// Peers are the voters, this node included if it is a voter. A fresh voter
	// bootstraps with them; a node whose DataDir has state ignores them except
	// as addresses to fall back on. A learner sends its Join requests to them.
	Peers []Peer
	// TickInterval is the raft tick; default 100ms.
	TickInterval time.Duration
	// ElectionTicks is the election timeout in ticks; default 10 (raft
	// randomizes it to [10, 20) ticks, 1-2 s with the default tick).
	ElectionTicks int
	// LeaseDuration is the routing lease; default 3s. A member renews it every
	// two ticks through ReadIndex, so a member cut off from the quorum loses it
	// at most LeaseDuration after the cut. A failover's routing fence
	// (FenceRouting) waits up to about one LeaseDuration for a member that is
	// cut off or dead while the failover starts; with every member reachable it
	// waits only for their confirmations (milliseconds). It is deliberately
	// longer than a leader election (1-2 s with the default ticks), so that
	// followers keep routing while a crashed leader is replaced. See
	// docs/architecture.md for the trade-off.
	LeaseDuration time.Duration
	// RoutingConfirmation: the routing layer confirms, with ConfirmRouting,
	// each applied index once the proxy acts on it, and the leader's routing
	// fences wait for that (see fence.go). False: the node confirms every
	// index as soon as it applies it (for users whose routing follows the
	// state synchronously, and for tests).
	RoutingConfirmation bool
	// SnapshotEvery is the number of applied entries between snapshots (and
	// log compactions); default 1000.
	SnapshotEvery uint64
	// StateMachine is required.
	StateMachine StateMachine
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Transport builds the peer transport; nil means TCP on ListenAddr.
	// Tests inject an in-process, fault-injecting transport here.
	Transport TransportFactory
	// PeerTLS is the mutual TLS between peers (*pki.Credentials): each
	// peer's node id and role come from its certificate. The TCP transport
	// requires it unless Plaintext is set.
	PeerTLS PeerTLS
	// Plaintext runs the TCP transport without TLS: peers are whoever they
	// claim to be. Only for security.insecure on loopback, and tests.
	Plaintext bool
	// BatchLearners, if set, is asked before the leader proposes a learner
	// addition while more are queued: true lets it add them all in one
	// membership change (a ConfChangeV2 entry listing each learner's address).
	// Builds from before it cannot read those addresses, so the node wiring
	// turns it on only once every voter understands it (the cluster version).
	// nil: one learner per change.
	BatchLearners func() bool
	// LearnerProposals, if set, decides which proposals a peer with a learner
	// certificate may make (the payload is what Propose was given); an error
	// drops the proposal. A learner can never propose a membership change.
	LearnerProposals func(learner uint64, payload []byte) error
}

// Defaults applied by Start to zero-valued fields.
const (
	DefaultTickInterval  = 100 * time.Millisecond
	DefaultElectionTicks = 10
	DefaultLeaseDuration = 3 * time.Second
	DefaultSnapshotEvery = 1000
)

// Fixed raft settings (SPEC §3.3 and the consensus contract).
const (
	heartbeatTicks      = 1
	maxSizePerMsg       = 1 << 20 // 1 MiB of entries per append message
	maxInflightMsgs     = 256
	maxUncommittedBytes = 64 << 20 // proposals are refused beyond this
	// MaxProposalSize is the largest payload Propose accepts.
	MaxProposalSize = 8 << 20
)

// withDefaults returns c with defaults filled in.
func (c Config) withDefaults() Config {
	if c.TickInterval <= 0 {
		c.TickInterval = DefaultTickInterval
	}
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = DefaultElectionTicks
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = DefaultSnapshotEvery
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Transport == nil {
		c.Transport = NewTCPTransport
	}
	return c
}

// validate reports the first problem with a defaulted config.
func (c Config) validate() error {
	if c.ClusterName == "" {
		return errors.New("cluster name is required")
	}
	if c.NodeID == 0 {
		return errors.New("node id must be non-zero")
	}
	if c.DataDir == "" {
		return errors.New("data dir is required")
	}
	if c.StateMachine == nil {
		return errors.New("state machine is required")
	}
	if c.ElectionTicks <= heartbeatTicks {
		return fmt.Errorf("election ticks must be greater than %d, got %d", heartbeatTicks, c.ElectionTicks)
	}
	if c.LeaseDuration < 2*c.TickInterval {
		return fmt.Errorf("lease duration %v must be at least two ticks (%v): leases are renewed every two ticks", c.LeaseDuration, 2*c.TickInterval)
	}
	seen := make(map[uint64]bool, len(c.Peers))
	self := false
	for _, p := range c.Peers {
		if p.ID == 0 {
			return errors.New("peer id must be non-zero")
		}
		if seen[p.ID] {
			return fmt.Errorf("peer id %d listed twice", p.ID)
		}
		seen[p.ID] = true
		if p.Addr == "" {
			return fmt.Errorf("peer %d has no address", p.ID)
		}
		if p.ID == c.NodeID {
			self = true
		}
	}
	if c.Voter && !self {
		return fmt.Errorf("voter %d must be listed in peers", c.NodeID)
	}
	if !c.Voter && self {
		return fmt.Errorf("learner %d must not be listed in peers (peers are the voters)", c.NodeID)
	}
	if !c.Voter && len(c.Peers) == 0 {
		return errors.New("a learner needs at least one peer to join")
	}
	return nil
}

// electionTimeout is the minimum election timeout.
func (c Config) electionTimeout() time.Duration {
	return time.Duration(c.ElectionTicks) * c.TickInterval
}
