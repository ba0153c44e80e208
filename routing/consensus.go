package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/proxy"
)

// RaftView is what ConsensusRouter needs from the local Raft member
// (*consensus.Node implements it).
type RaftView interface {
	// LeaseValid reports whether a Raft quorum confirmed this node's view recently.
	LeaseValid(now time.Time) bool
	// LeaseExpiry is when the lease runs out unless it is renewed (zero: no lease).
	LeaseExpiry() time.Time
	// LeaseGained is signalled when the lease becomes valid after it was not.
	// (A renewal of a valid lease is not signalled: it moves LeaseExpiry.)
	LeaseGained() <-chan struct{}
	// Applied is signalled (coalescing) after committed entries were applied.
	Applied() <-chan struct{}
	// Done is closed when the Raft member stops.
	Done() <-chan struct{}
	// ConfirmRouting tells the member that the proxy now routes as the state
	// at the applied index says; the leader's routing fences wait for it.
	ConfirmRouting(index uint64)
	// ConfirmedSince reports whether this node's applied state includes everything a
	// quorum had committed at some moment at or after t.
	ConfirmedSince(t time.Time) bool
}

// StateSource gives the applied replicated state (*clusterstate.Machine).
type StateSource interface {
	State() clusterstate.State
	AppliedIndex() uint64
}

// View is the routing decision derived from the agreed state and the lease.
type View struct {
	Target  proxy.Target // valid when Routing
	Epoch   uint64
	Routing bool   // a primary is agreed and this proxy's lease is confirmed
	Reason  string // why not, when !Routing
	// LeaseExpired: not routing because this proxy's view is not confirmed by a quorum (it
	// may be cut off); the proxy then drops its backend connections (fail closed).
	LeaseExpired bool
	// Fenced: a failover is in progress and the old primary is abandoned; the
	// proxy closes every backend connection, so nothing it holds can still read
	// from or write to the old primary once the new one is released. A
	// switchover is fenced only after its demote step: until then the old
	// primary is still the one writer and its open transactions may finish.
	Fenced bool
}

// ConsensusRouter routes to the primary agreed through Raft, and only while this
// proxy's view is confirmed by a quorum within its lease (fail closed).
//
// One goroutine (Run) owns the derivation: it recomputes the View when entries
// are applied, when the lease is gained, and when it runs out (a timer at the
// lease's expiry, moved on as renewals extend it: one wake-up per lease
// duration, not a poll), publishes it atomically and wakes waiting sessions.
// Primary and Current only read.
//
// Routing confirmations (SPEC §4, fencing): the proxy calls RouteApplied once it
// has acted on a Route (closed the backend connections that Route forbids). The
// router then confirms to the Raft member the applied index that Route was
// derived from, and keeps confirming later indexes as long as they derive the
// same Route. The Raft leader completes a failover only once every proxy
// confirmed the failover's index or provably lost its lease.
type ConsensusRouter struct {
	Raft  RaftView
	State StateSource
	// Addresses maps backend names to host:port (from the configuration).
	Addresses map[string]string
	// OnChange, if set, is called from Run's goroutine whenever the View changes
	// (for example to log). It must not block. The proxy learns of changes through
	// Route (proxy.Router).
	OnChange func(old, new View)
	Logger   *slog.Logger

	view    atomic.Pointer[View]
	agreed  agreedRouting // Run's goroutine only
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every View change

	// Under ackMu: the Route the proxy last said it applied, and the applied
	// index the current View was derived from.
	ackMu     sync.Mutex
	acked     proxy.Route
	hasAcked  bool
	viewIndex uint64
}

// Run keeps the View current until ctx ends or the Raft member stops.
func (r *ConsensusRouter) Run(ctx context.Context) {
	expiry := time.NewTimer(time.Hour)
	expiry.Stop()
	for {
		// Before refresh, so that nothing is missed.
		applied, gained := r.Raft.Applied(), r.Raft.LeaseGained()
		r.refresh()
		// Wake up when the lease runs out, unless a renewal moved it by
		// then (the timer is then set again for the new expiry).
		var expired <-chan time.Time
		if until := r.Raft.LeaseExpiry(); !until.IsZero() {
			if wait := time.Until(until); wait > 0 {
				expiry.Reset(wait)
				expired = expiry.C
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.Raft.Done():
			r.publish(View{Reason: "the Raft member stopped"})
			return
		case <-applied:
		case <-gained:
		case <-expired:
		}
		expiry.Stop()
	}
}

// agreedRouting is the part of the replicated state routing depends on, cached
// with the applied index it was read at.
type agreedRouting struct {
	index        uint64
	read         bool
	epoch        uint64
	primary      string
	xidHorizon   uint64
	bootstrapped bool
	fenced       string // the old primary of a failover that abandoned it; "" when none
}

// fencedPrimary returns the old primary a failover in progress has abandoned:
// at once for a failover, after the demote step for a switchover (until then
// the old primary is still the writer and its open transactions may finish).
func fencedPrimary(st clusterstate.State) string {
	f := st.Failover
	if f == nil || f.Next == clusterstate.StepDemoteOldPrimary {
		return ""
	}
	return f.OldPrimary
}

// refresh recomputes the View and publishes it if it changed.
func (r *ConsensusRouter) refresh() {
	// Reading the whole state is a deep copy: do it only when the applied index
	// moved, not at every lease tick.
	if idx := r.State.AppliedIndex(); !r.agreed.read || idx != r.agreed.index {
		r.agreed = agreedOf(idx, r.State.State())
	}
	a := r.agreed
	v := deriveView(a, r.Raft.LeaseValid(time.Now()), r.Addresses)
	r.publish(v)
	r.confirm(a.index, routeOf(v))
}

// agreedOf is the part of st routing depends on.
func agreedOf(index uint64, st clusterstate.State) agreedRouting {
	return agreedRouting{index: index, read: true, epoch: st.Epoch, primary: st.Primary, xidHorizon: st.PrimaryXidHorizon,
		bootstrapped: st.Bootstrapped(), fenced: fencedPrimary(st)}
}

// deriveView is the routing decision for the agreed state a and the lease.
func deriveView(a agreedRouting, leaseOK bool, addresses map[string]string) View {
	v := View{Epoch: a.epoch}
	switch {
	case !a.bootstrapped:
		v.Reason = "the cluster is not bootstrapped yet (no primary agreed)"
	case a.fenced != "":
		v.Reason = fmt.Sprintf("failover in progress at epoch %d: old primary %s is fenced, no backend connection is kept", a.epoch, a.fenced)
		v.Fenced = true
	case a.primary == "":
		v.Reason = fmt.Sprintf("no primary agreed at epoch %d (failover in progress)", a.epoch)
	case !leaseOK:
		v.Reason = "this proxy's view is not confirmed by a Raft quorum (lease expired)"
		v.LeaseExpired = true
	default:
		addr, ok := addresses[a.primary]
		if !ok {
			v.Reason = fmt.Sprintf("agreed primary %q is not in this proxy's backends", a.primary)
			break
		}
		v.Routing = true
		v.Target = proxy.Target{Name: a.primary, Address: addr, Epoch: a.epoch, XidHorizon: a.xidHorizon}
	}
	return v
}

// confirmPoll is how often ConfirmedRoute looks whether a fresh confirmation arrived.
const confirmPoll = 10 * time.Millisecond

// ConfirmedRoute implements proxy.RouteConfirmer: the route derived from a state that
// includes every decision a Raft quorum had committed when the call was made. It waits for
// the next lease renewal (about two Raft ticks) or until ctx ends. The proxy asks it when
// a PostgreSQL server ends a session or rejects a write as read-only, to tell a failover or
// switchover begun elsewhere (move the session, retry the request) from the server's own
// doing on the healthy agreed primary (tell the client as it is).
func (r *ConsensusRouter) ConfirmedRoute(ctx context.Context) (proxy.Route, error) {
	since := time.Now()
	ticker := time.NewTicker(confirmPoll)
	defer ticker.Stop()
	for !r.Raft.ConfirmedSince(since) {
		select {
		case <-ctx.Done():
			return proxy.Route{}, fmt.Errorf("confirm the route with a Raft quorum: %w", ctx.Err())
		case <-r.Raft.Done():
			return proxy.Route{}, errors.New("confirm the route: the Raft member stopped")
		case <-ticker.C:
		}
	}
	v := deriveView(agreedOf(r.State.AppliedIndex(), r.State.State()), r.Raft.LeaseValid(time.Now()), r.Addresses)
	return routeOf(v), nil
}

// routeOf is what the proxy sees of a View.
func routeOf(v View) proxy.Route {
	return proxy.Route{Target: v.Target, Routing: v.Routing, LeaseExpired: v.LeaseExpired || v.Fenced}
}

// confirm records that the current View was derived at index, and confirms
// index to the Raft member if the proxy already applied the same Route.
func (r *ConsensusRouter) confirm(index uint64, route proxy.Route) {
	r.ackMu.Lock()
	r.viewIndex = index
	ok := r.hasAcked && r.acked == route
	r.ackMu.Unlock()
	if ok {
		r.Raft.ConfirmRouting(index)
	}
}

// RouteApplied is called by the proxy once it has acted on route (see
// proxy.RouteAcknowledger): if route is still the current one, the applied
// index it was derived from is confirmed to the Raft member.
func (r *ConsensusRouter) RouteApplied(route proxy.Route) {
	r.ackMu.Lock()
	current := routeOf(r.Current()) == route
	if current {
		r.acked, r.hasAcked = route, true
	}
	index := r.viewIndex
	r.ackMu.Unlock()
	if current {
		r.Raft.ConfirmRouting(index)
	}
}

func (r *ConsensusRouter) publish(v View) {
	old := r.view.Load()
	if old != nil && *old == v {
		return
	}
	r.view.Store(&v)
	r.mu.Lock()
	if r.changed != nil {
		close(r.changed)
	}
	r.changed = make(chan struct{})
	r.mu.Unlock()
	var prev View
	if old != nil {
		prev = *old
	}
	if prev.Routing != v.Routing || prev.Target != v.Target {
		if v.Routing {
			r.logger().Info("routing to the agreed primary", "primary", v.Target.Name, "epoch", v.Epoch)
		} else {
			r.logger().Warn("not routing", "reason", v.Reason, "epoch", v.Epoch)
		}
	}
	if r.OnChange != nil {
		r.OnChange(prev, v)
	}
}

// Current returns the latest View.
func (r *ConsensusRouter) Current() View {
	if v := r.view.Load(); v != nil {
		return *v
	}
	return View{Reason: "routing not started"}
}

// wait returns a channel closed at the next View change.
func (r *ConsensusRouter) wait() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

// Route implements proxy.Router: the current decision, and a channel closed at the next
// change.
func (r *ConsensusRouter) Route() (proxy.Route, <-chan struct{}) {
	ch := r.wait() // before reading the view, so no change is missed
	return routeOf(r.Current()), ch
}

// Primary returns the agreed primary, waiting while there is none or the lease
// is not confirmed, until ctx ends.
func (r *ConsensusRouter) Primary(ctx context.Context) (proxy.Target, error) {
	for {
		ch := r.wait()
		v := r.Current()
		if v.Routing {
			return v.Target, nil
		}
		select {
		case <-ctx.Done():
			return proxy.Target{}, fmt.Errorf("%s: %w", v.Reason, ctx.Err())
		case <-ch:
		}
	}
}

// BackendFailed is a no-op: the agreed state, not one failed connection,
// decides the primary. Health probes report failures to the Raft log.
func (r *ConsensusRouter) BackendFailed(proxy.Target) {}

func (r *ConsensusRouter) logger() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
