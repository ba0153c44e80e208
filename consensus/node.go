package consensus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// Status is a snapshot of this node's Raft view, published by the Raft loop.
type Status struct {
	ID            uint64
	Leader        uint64 // 0 = none known
	Term          uint64
	Commit        uint64
	Applied       uint64
	SnapshotIndex uint64
	IsLeader      bool
	// Member: this node is in the applied configuration (a fresh learner
	// becomes a member once the leader added it).
	Member bool
	// Voter: this node is a voter in the applied configuration.
	Voter bool
	// TransferringTo is the target of a leadership transfer in progress.
	TransferringTo uint64
	// LeaseValidUntil is the end of the routing lease (zero = none).
	LeaseValidUntil time.Time
	// Stopped: the node was closed, removed, or failed (see Node.Err).
	Stopped bool
}

// Node is one Raft member. Owner: the Raft loop goroutine started by Start
// owns every field in the "loop-owned" group below; other goroutines talk to
// it through the channels and read what it publishes (status, members,
// lease). All exported methods are safe for concurrent use.
type Node struct {
	cfg       Config
	log       *slog.Logger
	selfAddr  string
	startedAt time.Time // monotonic base of leaseUntil

	// Loop-owned.
	rn              *raft.RawNode
	storage         *diskStorage
	transport       Transport
	sm              StateMachine
	book            *addressBook
	confState       *raftpb.ConfState
	applied         uint64
	snapshotIndex   uint64
	snapshotRetryAt uint64
	snapshotSoon    bool // a conf change was applied: snapshot at the next Ready
	lead            uint64
	lease           *leaseTracker
	fence           *fenceTracker
	// confirmed is the highest index whose routing this node confirmed;
	// confirmSent is the one its latest ReadIndex carried (fence.go).
	confirmed      uint64
	confirmSent    uint64
	fenceWaiters   []*fenceRequest
	nextSeq        uint64
	waiters        map[uint64]*proposeRequest
	confQueue      []*confChangeRequest
	lastHeard      map[uint64]time.Time
	removalNotices map[uint64]time.Time // removal notices this node sent, by target
	// removalClaims are the removal notices this node received, by sender;
	// peerRoles the role each peer last authenticated with. See peerauth.go.
	removalClaims map[uint64]time.Time
	peerRoles     map[uint64]PeerRole
	refusals      *logLimiter
	// queuedPeerReads and peerReadBatches: see reads.go.
	queuedPeerReads []*raftpb.Message
	peerReadBatches map[string]peerReadBatch
	ticks           uint64
	removed         bool
	fatal           error // set by a step that found the node cannot go on (ErrLogLost)
	membersDirty    bool
	lastStatus      Status

	// Into the loop.
	proposals   chan *proposeRequest
	confChanges chan *confChangeRequest
	transfers   chan *transferRequest
	incoming    chan inboundMessage
	joins       chan inboundJoin
	reports     chan transportReport
	fences      chan *fenceRequest
	// confirmations wakes the loop after ConfirmRouting stored a higher
	// routingConfirmed.
	confirmations    chan struct{}
	routingConfirmed atomic.Uint64

	// leaseWasValid is whether the lease was valid at the previous tick
	// (loop-owned), to count its expiries.
	leaseWasValid bool
	counts        counters

	// Published by the loop.
	status        atomic.Pointer[Status]
	members       atomic.Pointer[[]Member]
	leaseUntil    atomic.Int64 // since startedAt, in ns; 0 = no lease
	appliedSignal *signal
	statusSignal  *signal
	leaseSignal   *signal // notified when the lease becomes valid after it was not

	// Peer calls (calls.go): guarded by their own mutex, not the loop.
	calls *callTable

	// Lifecycle.
	stopLoop  context.CancelFunc
	done      chan struct{}
	stopErr   error // why the loop stopped; written before done is closed
	closeErr  error // from closing transport and storage; same
	closeOnce sync.Once
}

// Tuning of the loop, in ticks unless noted.
const (
	leaseRenewTicks = 2 // a ReadIndex for the lease every 2 ticks
	joinEveryTicks  = 5 // a fresh learner repeats its Join this often
	// membersRefreshTicks: Members (their Reachable flags) is rebuilt this
	// often even when nothing else changed.
	membersRefreshTicks = 5
	maxStepBatch        = 64 // queued peer messages stepped before handling a Ready
	incomingQueue       = 4096
	reportQueue         = 1024
	joinQueue           = 64
	// closeTransferTimeout bounds the leadership transfer inside Close.
	closeTransferTimeout = 2 * time.Second
)

// Start opens (or creates) the log in cfg.DataDir, recovers the state machine
// from it, starts the transport and the Raft loop, and returns. ctx bounds the
// start only; the node runs until Close (or until it is removed).
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("consensus: invalid config: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("consensus: start: %w", err)
	}
	base := cfg.Logger.With("node", cfg.NodeID)
	log := base.With("component", "consensus")
	storage, err := openDiskStorage(cfg.DataDir, cfg.ClusterName, cfg.NodeID)
	if err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	n := &Node{
		cfg:             cfg,
		log:             log,
		startedAt:       time.Now(),
		storage:         storage,
		sm:              cfg.StateMachine,
		lease:           newLeaseTracker(cfg.LeaseDuration),
		fence:           newFenceTracker(cfg.LeaseDuration),
		nextSeq:         storage.incarnation << 32,
		waiters:         make(map[uint64]*proposeRequest),
		lastHeard:       make(map[uint64]time.Time),
		removalNotices:  make(map[uint64]time.Time),
		removalClaims:   make(map[uint64]time.Time),
		peerRoles:       make(map[uint64]PeerRole),
		refusals:        newLogLimiter(10 * time.Second),
		peerReadBatches: make(map[string]peerReadBatch),
		proposals:       make(chan *proposeRequest),
		confChanges:     make(chan *confChangeRequest),
		transfers:       make(chan *transferRequest),
		incoming:        make(chan inboundMessage, incomingQueue),
		joins:           make(chan inboundJoin, joinQueue),
		reports:         make(chan transportReport, reportQueue),
		fences:          make(chan *fenceRequest),
		confirmations:   make(chan struct{}, 1),
		appliedSignal:   newSignal(),
		statusSignal:    newSignal(),
		leaseSignal:     newSignal(),
		calls:           newCallTable(),
		done:            make(chan struct{}),
	}
	if err := n.restoreFromDisk(); err != nil {
		_ = storage.close()
		return nil, fmt.Errorf("consensus: recover from %s: %w", cfg.DataDir, err)
	}
	transport, err := cfg.Transport(TransportConfig{
		ClusterName:   cfg.ClusterName,
		NodeID:        cfg.NodeID,
		ListenAddr:    cfg.ListenAddr,
		AdvertiseAddr: cfg.AdvertiseAddr,
		Logger:        base,
		TLS:           cfg.PeerTLS,
		Plaintext:     cfg.Plaintext,
		Refusals:      &n.counts.refusals,
	}, nodeInbox{n})
	if err != nil {
		_ = storage.close()
		return nil, fmt.Errorf("consensus: start transport: %w", err)
	}
	n.transport = transport
	n.selfAddr = cfg.AdvertiseAddr
	if n.selfAddr == "" {
		n.selfAddr = transport.Addr()
	}
	for id, addr := range n.book.addrs {
		if id != cfg.NodeID {
			transport.SetPeer(id, addr)
		}
	}
	if err := n.startRaft(base.With("component", "raft")); err != nil {
		_ = transport.Close()
		_ = storage.close()
		return nil, fmt.Errorf("consensus: %w", err)
	}
	n.membersDirty = true
	n.publish()
	log.Info("raft node starting", "addr", n.selfAddr, "voter_config", cfg.Voter,
		"recovered", storage.hasState, "snapshot", n.snapshotIndex)
	loopCtx, stop := context.WithCancel(context.Background())
	n.stopLoop = stop
	go n.run(loopCtx)
	return n, nil
}

// restoreFromDisk rebuilds the state machine and address book from the
// latest snapshot; the committed entries after it are re-applied by the first
// Ready.
func (n *Node) restoreFromDisk() error {
	n.book = newAddressBook()
	n.confState = &raftpb.ConfState{}
	snap := n.storage.snapshot
	if !raft.IsEmptySnap(snap) {
		state, book, err := decodeSnapshotPayload(snap.GetData())
		if err != nil {
			return err
		}
		if err := n.sm.Restore(state); err != nil {
			return fmt.Errorf("restore state machine from snapshot %d: %w", snap.GetMetadata().GetIndex(), err)
		}
		n.book = book
		n.confState = raftpb.EnsureConfState(snap.GetMetadata().GetConfState())
		n.applied = snap.GetMetadata().GetIndex()
		n.snapshotIndex = n.applied
		if book.isRemoved(n.cfg.NodeID) {
			return ErrRemoved
		}
	}
	for _, p := range n.cfg.Peers {
		n.book.setIfMissing(p.ID, p.Addr)
	}
	return nil
}

// startRaft creates the RawNode and, on a fresh voter, bootstraps the
// initial membership from Config.Peers.
func (n *Node) startRaft(raftLog *slog.Logger) (err error) {
	defer func() {
		// raft panics on a log it cannot make sense of (a corrupt DataDir).
		if r := recover(); r != nil {
			err = fmt.Errorf("raft refused the stored state: %v", r)
		}
	}()
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        n.cfg.NodeID,
		ElectionTick:              n.cfg.ElectionTicks,
		HeartbeatTick:             heartbeatTicks,
		Storage:                   n.storage.mem,
		Applied:                   n.applied,
		MaxSizePerMsg:             maxSizePerMsg,
		MaxInflightMsgs:           maxInflightMsgs,
		MaxUncommittedEntriesSize: maxUncommittedBytes,
		CheckQuorum:               true,
		PreVote:                   true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{l: raftLog},
	})
	if err != nil {
		return fmt.Errorf("create raft node: %w", err)
	}
	n.rn = rn
	if n.storage.hasState || !n.cfg.Voter {
		return nil
	}
	peers := slices.Clone(n.cfg.Peers)
	slices.SortFunc(peers, func(a, b Peer) int { return cmp.Compare(a.ID, b.ID) })
	raftPeers := make([]raft.Peer, 0, len(peers))
	for _, p := range peers {
		raftPeers = append(raftPeers, raft.Peer{ID: p.ID, Context: encodeConfChangeContext(confChangeContext{Addr: p.Addr})})
	}
	if err := rn.Bootstrap(raftPeers); err != nil {
		return fmt.Errorf("bootstrap membership: %w", err)
	}
	return nil
}

// Addr is the address peers dial to reach this node (AdvertiseAddr, or the
// actual listen address).
func (n *Node) Addr() string { return n.selfAddr }

// proposeRequest is one Propose call waiting for its entry to be applied.
type proposeRequest struct {
	ctx    context.Context
	data   []byte
	result chan proposeResult // buffered 1; the loop never blocks on it
}

type proposeResult struct {
	data []byte
	err  error
}

// Propose replicates data and returns the StateMachine.Apply result once the
// entry is applied on this node. A follower's proposal is forwarded to the
// leader by raft. Errors: ErrNoLeader, ErrProposalDropped, ErrTooLarge,
// ErrStopped, ErrRemoved (not proposed, safe to retry elsewhere); a context
// error (the outcome is unknown: the entry may still commit); or the state
// machine's error for this entry (committed, but rejected alike on every node).
func (n *Node) Propose(ctx context.Context, data []byte) ([]byte, error) {
	result, err := n.propose1(ctx, data)
	if err != nil {
		n.counts.proposalFailures.Add(1)
	}
	return result, err
}

// propose1 is Propose without the counting.
func (n *Node) propose1(ctx context.Context, data []byte) ([]byte, error) {
	if len(data) > MaxProposalSize {
		return nil, fmt.Errorf("%w: %d bytes (max %d)", ErrTooLarge, len(data), MaxProposalSize)
	}
	req := &proposeRequest{ctx: ctx, data: data, result: make(chan proposeResult, 1)}
	select {
	case n.proposals <- req:
	case <-ctx.Done():
		return nil, fmt.Errorf("consensus: propose: %w", ctx.Err())
	case <-n.done:
		return nil, n.Err()
	}
	select {
	case r := <-req.result:
		return r.data, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("consensus: proposal outcome unknown: %w", ctx.Err())
	case <-n.done:
		select {
		case r := <-req.result:
			return r.data, r.err
		default:
			return nil, n.Err()
		}
	}
}

// Applied returns a channel that is closed after the next batch of entries
// (or a snapshot) is applied, or when the node stops. Take the channel before
// reading the state you care about, then wait on it:
//
//	for {
//		ch := node.Applied()
//		look at the state machine
//		<-ch
//	}
func (n *Node) Applied() <-chan struct{} { return n.appliedSignal.wait() }

// Status returns the latest published status.
func (n *Node) Status() Status { return *n.status.Load() }

// StatusChanged returns a channel that is closed at the next change of
// Status other than the lease, or when the node stops. Take it before
// reading Status, as with Applied.
func (n *Node) StatusChanged() <-chan struct{} { return n.statusSignal.wait() }

// LeaseValid reports whether a quorum confirmed this node's view within the
// lease: the proxy may forward traffic only while it is true.
func (n *Node) LeaseValid(now time.Time) bool {
	until := n.leaseUntil.Load()
	return until != 0 && now.Sub(n.startedAt) < time.Duration(until)
}

// ConfirmedSince reports whether this node's applied state is at least as fresh
// as what a Raft quorum had committed at some moment at or after t: a lease
// renewal (a ReadIndex) sent at or after t was answered and its index applied.
// A caller that saw something happen at t (a PostgreSQL server ending its
// sessions) and waits for ConfirmedSince(t) then reads a state that includes
// every decision committed before that event, such as a failover begun by
// another node. Renewals are sent every two ticks, so this becomes true within
// about two ticks and a round trip while a quorum is reachable.
func (n *Node) ConfirmedSince(t time.Time) bool {
	until := n.leaseUntil.Load()
	if until == 0 {
		return false
	}
	sentAt := time.Duration(until) - n.cfg.LeaseDuration
	return sentAt >= t.Sub(n.startedAt)
}

// LeaseExpiry is when the lease runs out unless it is renewed first (on the
// monotonic clock); zero when there is no lease.
func (n *Node) LeaseExpiry() time.Time {
	until := n.leaseUntil.Load()
	if until == 0 {
		return time.Time{}
	}
	return n.startedAt.Add(time.Duration(until))
}

// LeaseGained returns a channel that is closed the next time the lease
// becomes valid after it was not (gained, or regained after it ran out), or
// when the node stops. Renewals of a valid lease only move LeaseExpiry: a
// reader waits for the expiry, then looks again.
func (n *Node) LeaseGained() <-chan struct{} { return n.leaseSignal.wait() }

// WaitLeader blocks until a leader is known (or ctx ends, or the node stops).
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		changed := n.statusSignal.wait()
		st := n.Status()
		if st.Stopped {
			return n.waitStopped()
		}
		if st.Leader != 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("consensus: wait for leader: %w", ctx.Err())
		}
	}
}

// Members lists the members of the applied configuration, sorted by id.
func (n *Node) Members() []Member { return slices.Clone(*n.members.Load()) }

// Done is closed when the node has stopped: closed, removed from the
// cluster, or failed. Err says which.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is nil while the node runs; after Done it is ErrStopped (closed),
// ErrRemoved, or the storage or state machine failure that stopped it.
func (n *Node) Err() error {
	select {
	case <-n.done:
		return n.stopErr
	default:
		return nil
	}
}

// waitStopped waits for the loop's shutdown to finish (the stopped status is
// published just before) and returns why it stopped.
func (n *Node) waitStopped() error {
	<-n.done
	return n.stopErr
}

// Close transfers leadership first if this node leads (bounded by 2 s), then
// stops the Raft loop and the transport and closes the log. Safe to call more
// than once and after the node stopped by itself.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.Status().IsLeader {
			ctx, cancel := context.WithTimeout(context.Background(), closeTransferTimeout)
			if err := n.TransferLeadership(ctx); err != nil {
				n.log.Warn("leadership transfer before close failed", "err", err)
			}
			cancel()
		}
		n.stopLoop()
		<-n.done
	})
	<-n.done
	return n.closeErr
}

// shutdown runs on the loop goroutine as it exits: it fails what is waiting,
// revokes the lease and releases the transport and the log.
func (n *Node) shutdown(reason error) {
	switch {
	case errors.Is(reason, ErrStopped):
		n.log.Info("raft node stopped")
	case errors.Is(reason, ErrRemoved):
		n.log.Warn("raft node removed from the cluster, stopping")
	default:
		n.log.Error("raft node failed, stopping", "err", reason)
	}
	n.stopErr = reason
	for seq, w := range n.waiters {
		w.result <- proposeResult{err: reason}
		delete(n.waiters, seq)
	}
	for _, c := range n.confQueue {
		c.finish(reason)
	}
	for _, w := range n.fenceWaiters {
		w.result <- fenceResult{err: reason}
	}
	n.fenceWaiters = nil
	n.confQueue = nil
	n.lease.revoke()
	n.leaseUntil.Store(0)
	st := n.buildStatus()
	st.Stopped = true
	st.IsLeader = false
	n.status.Store(&st)
	n.calls.stopCalls()
	n.closeErr = errors.Join(n.transport.Close(), n.storage.close())
	n.appliedSignal.stop()
	n.statusSignal.stop()
	n.leaseSignal.stop()
	close(n.done)
}

// signal is a broadcast: wait returns a channel that the next notify (or
// stop) closes. Safe for concurrent use.
type signal struct {
	mu      sync.Mutex
	ch      chan struct{}
	stopped bool
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}

func (s *signal) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	close(s.ch)
	s.ch = make(chan struct{})
}

// stop closes the current channel for good; later waits return it, closed.
func (s *signal) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stopped {
		s.stopped = true
		close(s.ch)
	}
}
