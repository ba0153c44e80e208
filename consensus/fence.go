package consensus

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/raft/v3/raftpb"
)

// Routing fences: how the leader proves that no proxy can still route by a
// state older than a given log index (SPEC §4: "a failover is complete only
// when no proxy can still be routing to the old primary").
//
// Member side. The routing layer calls ConfirmRouting(i) once the proxy acts
// as the replicated state at applied index i says (for a failover: it has
// closed every backend connection to the old primary). Every ReadIndex a
// member sends for its lease carries the highest index it confirmed, and a new
// confirmation sends one at once.
//
// Leader side. The leader receives every member's lease renewal (see
// reads.go), so it knows two things per member: the highest index the member
// confirmed, and when it last agreed to renew the member's lease. A member's
// lease runs from its send time, which is before the leader received the
// request, for at most LeaseDuration of the member's clock; so the leader
// knows the lease is over leaseBound (LeaseDuration·(1+ClockRateBound) +
// FenceMargin, by its own clock) after it received the last renewal it
// granted. Leases that an earlier leader granted were all confirmed by a
// quorum before this node was elected (a quorum that voted for a newer term
// confirms nothing for an older one), so they are over leaseBound after this
// node became leader.
//
// FenceRouting(i) is done when every member either confirmed i or provably
// lost its lease. While a fence at i is pending, the leader withholds lease
// renewals from members that have not confirmed i, so a member that is cut
// off, stuck or dead delays the fence by at most leaseBound and never blocks
// it.
//
// The assumption behind leaseBound: the monotonic clocks of any two proxies
// advance at rates within ClockRateBound of each other (NTP slews by at most
// 0.05 %), and a proxy acts on the expiry of its lease within FenceMargin (the
// router's timer fires at the lease's expiry and the proxy closes its backend
// connections at once). A proxy process paused for longer than FenceMargin
// between checking its lease and using a backend connection (a stopped VM, a
// SIGSTOP) breaks it, as it breaks every lease.
const (
	// ClockRateBound is the largest relative difference between the rates of
	// two proxies' monotonic clocks that the fence tolerates.
	ClockRateBound = 0.01
	// FenceMargin is added to every lease bound: the time a member takes to
	// act on the expiry of its lease.
	FenceMargin = 200 * time.Millisecond
)

// FenceReport says how a routing fence stands: which members confirmed the
// index, which lost their lease without confirming, and which the leader is
// still waiting for.
type FenceReport struct {
	Index     uint64
	Confirmed []uint64 // routing confirmed at or past Index
	Expired   []uint64 // did not confirm, but their lease provably ran out
	Waiting   []uint64 // neither yet
	// WaitUntil is when the last waiting member's lease runs out at the
	// latest, by the leader's clock (zero when nothing is waiting).
	WaitUntil time.Time
}

// Done reports whether no member can still route by a state older than Index.
func (r FenceReport) Done() bool { return len(r.Waiting) == 0 }

// String describes the report for logs and failover records:
// "confirmed by 1, 2; lease ran out: 3".
func (r FenceReport) String() string {
	ids := func(list []uint64) string {
		parts := make([]string, len(list))
		for i, id := range list {
			parts[i] = fmt.Sprint(id)
		}
		return strings.Join(parts, ", ")
	}
	var parts []string
	if len(r.Confirmed) > 0 {
		parts = append(parts, "confirmed by proxies "+ids(r.Confirmed))
	}
	if len(r.Expired) > 0 {
		parts = append(parts, "lease ran out without confirming: "+ids(r.Expired))
	}
	if len(r.Waiting) > 0 {
		parts = append(parts, "waiting for "+ids(r.Waiting))
	}
	if len(parts) == 0 {
		return "no member"
	}
	return strings.Join(parts, "; ")
}

// fenceTracker is the leader's account of its members' routing confirmations
// and lease renewals. Pure logic: callers pass the time. Owner: the Raft loop.
type fenceTracker struct {
	// leaseBound is how long after a granted renewal the member's lease can
	// last, measured by this node's clock.
	leaseBound time.Duration
	// leaderSince is when this node became leader; zero while it is not.
	leaderSince time.Time
	// target is the highest index a fence was asked for in this term.
	target  uint64
	members map[uint64]memberRouting
}

// memberRouting is what the leader knows of one member.
type memberRouting struct {
	confirmed uint64    // highest index whose routing the member confirmed
	granted   time.Time // receipt of the latest renewal this leader agreed to answer
}

func newFenceTracker(leaseDuration time.Duration) *fenceTracker {
	bound := time.Duration(float64(leaseDuration)*(1+ClockRateBound)) + FenceMargin
	return &fenceTracker{leaseBound: bound, members: make(map[uint64]memberRouting)}
}

// becameLeader starts a new account: nothing this node knew in an earlier
// term says what other leaders granted since.
func (f *fenceTracker) becameLeader(now time.Time) {
	f.leaderSince = now
	f.target = 0
	clear(f.members)
}

// steppedDown forgets the account.
func (f *fenceTracker) steppedDown() {
	f.leaderSince = time.Time{}
	f.target = 0
	clear(f.members)
}

// isLeader reports whether the tracker keeps an account.
func (f *fenceTracker) isLeader() bool { return !f.leaderSince.IsZero() }

// confirm records that member confirmed routing at index.
func (f *fenceTracker) confirm(member, index uint64) {
	m := f.members[member]
	m.confirmed = max(m.confirmed, index)
	f.members[member] = m
}

// renewal handles a lease renewal request from member, received at now,
// carrying the index the member confirmed. It reports whether the leader
// grants it: not while a fence is pending that the member has not confirmed.
func (f *fenceTracker) renewal(member, confirmed uint64, now time.Time) bool {
	f.confirm(member, confirmed)
	m := f.members[member]
	if m.confirmed < f.target {
		return false
	}
	m.granted = now
	f.members[member] = m
	return true
}

// raise makes index the fence target, unless a higher one is pending.
func (f *fenceTracker) raise(index uint64) { f.target = max(f.target, index) }

// check reports the fence at index over members (the applied configuration,
// this node included).
func (f *fenceTracker) check(index uint64, members []uint64, now time.Time) FenceReport {
	r := FenceReport{Index: index}
	for _, id := range slices.Sorted(slices.Values(members)) {
		m := f.members[id]
		if m.confirmed >= index {
			r.Confirmed = append(r.Confirmed, id)
			continue
		}
		until := f.leaderSince
		if m.granted.After(until) {
			until = m.granted
		}
		until = until.Add(f.leaseBound)
		if !now.Before(until) {
			r.Expired = append(r.Expired, id)
			continue
		}
		r.Waiting = append(r.Waiting, id)
		if until.After(r.WaitUntil) {
			r.WaitUntil = until
		}
	}
	return r
}

// ConfirmRouting tells the Raft member that this proxy now routes as the
// replicated state at applied index says: every backend connection that state
// forbids is closed. Indexes only grow; a smaller one is ignored. Safe for
// concurrent use; it never blocks. Used when Config.RoutingConfirmation is set
// (otherwise the member confirms each index as it applies it).
func (n *Node) ConfirmRouting(index uint64) {
	for {
		old := n.routingConfirmed.Load()
		if index <= old {
			return
		}
		if n.routingConfirmed.CompareAndSwap(old, index) {
			break
		}
	}
	select {
	case n.confirmations <- struct{}{}:
	default: // a wake-up is already queued; the loop reads the latest value
	}
}

// fenceRequest is one FenceRouting call waiting on the Raft loop.
type fenceRequest struct {
	ctx    context.Context
	index  uint64
	result chan fenceResult // buffered 1; the loop never blocks on it
}

type fenceResult struct {
	report FenceReport
	err    error
}

// FenceRouting waits until no member can still route by a state older than
// index: each member (voters and learners, this node included) confirmed
// routing at index or later (ConfirmRouting), or its lease provably ran out
// (see the fence notes at the top of this file). Meanwhile members that have
// not confirmed get no lease renewals, so the wait is bounded by about one
// lease. Only the leader can fence: ErrNotLeader when this node is not the
// leader or stops leading while waiting.
func (n *Node) FenceRouting(ctx context.Context, index uint64) (FenceReport, error) {
	req := &fenceRequest{ctx: ctx, index: index, result: make(chan fenceResult, 1)}
	select {
	case n.fences <- req:
	case <-ctx.Done():
		return FenceReport{}, fmt.Errorf("consensus: fence routing at %d: %w", index, ctx.Err())
	case <-n.done:
		return FenceReport{}, n.Err()
	}
	select {
	case r := <-req.result:
		return r.report, r.err
	case <-ctx.Done():
		return FenceReport{}, fmt.Errorf("consensus: fence routing at %d: %w", index, ctx.Err())
	case <-n.done:
		return FenceReport{}, n.Err()
	}
}

// onConfirmations takes up a new routing confirmation. Runs on the Raft loop.
func (n *Node) onConfirmations(now time.Time) {
	c := n.routingConfirmed.Load()
	if c <= n.confirmed {
		return
	}
	n.confirmed = c
	if n.fence.isLeader() {
		n.fence.confirm(n.cfg.NodeID, c)
		return
	}
	if c > n.confirmSent {
		n.issueRead(now) // tell the leader at once: it may be waiting on a fence
	}
}

// addFence registers a FenceRouting call. Runs on the Raft loop.
func (n *Node) addFence(req *fenceRequest, now time.Time) {
	if !n.fence.isLeader() {
		req.result <- fenceResult{err: ErrNotLeader}
		return
	}
	n.fence.raise(req.index)
	n.fenceWaiters = append(n.fenceWaiters, req)
	n.checkFences(now)
}

// checkFences answers the FenceRouting calls that are done. Runs on the Raft
// loop after anything that can complete a fence (a renewal, a confirmation, a
// tick).
func (n *Node) checkFences(now time.Time) {
	if len(n.fenceWaiters) == 0 {
		return
	}
	members := allMembers(n.confState)
	kept := n.fenceWaiters[:0]
	for _, w := range n.fenceWaiters {
		if w.ctx.Err() != nil {
			continue // the caller gave up
		}
		report := n.fence.check(w.index, members, now)
		if report.Done() {
			w.result <- fenceResult{report: report}
			continue
		}
		kept = append(kept, w)
	}
	clear(n.fenceWaiters[len(kept):])
	n.fenceWaiters = kept
}

// leadershipChanged starts or drops the leader's fence account. Runs on the
// Raft loop when the known leader changes.
func (n *Node) leadershipChanged(now time.Time) {
	if n.lead == n.cfg.NodeID {
		n.fence.becameLeader(now)
		n.fence.confirm(n.cfg.NodeID, n.confirmed)
		return
	}
	n.fence.steppedDown()
	for _, w := range n.fenceWaiters {
		w.result <- fenceResult{err: ErrNotLeader}
	}
	n.fenceWaiters = nil
}

// allMembers lists every voter and learner of cs, without duplicates.
func allMembers(cs *raftpb.ConfState) []uint64 {
	ids := slices.Concat(cs.GetVoters(), cs.GetVotersOutgoing(), cs.GetLearners(), cs.GetLearnersNext())
	slices.Sort(ids)
	return slices.Compact(ids)
}
