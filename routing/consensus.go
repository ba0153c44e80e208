package routing

import (
	"context"
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
	// Applied is signalled (coalescing) after committed entries were applied.
	Applied() <-chan struct{}
	// Done is closed when the Raft member stops.
	Done() <-chan struct{}
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
}

// ConsensusRouter routes to the primary agreed through Raft, and only while this
// proxy's view is confirmed by a quorum within its lease (fail closed).
//
// One goroutine (Run) owns the derivation: it recomputes the View when entries
// are applied and at every LeaseCheck tick, publishes it atomically and wakes
// waiting sessions. Primary and Current only read.
type ConsensusRouter struct {
	Raft  RaftView
	State StateSource
	// Addresses maps backend names to host:port (from the configuration).
	Addresses map[string]string
	// LeaseCheck is how often the lease is re-checked; zero means 20ms.
	LeaseCheck time.Duration
	// OnChange, if set, is called from Run's goroutine whenever the View changes
	// (for example to log). It must not block. The proxy learns of changes through
	// Route (proxy.RouteWatcher).
	OnChange func(old, new View)
	Logger   *slog.Logger

	view    atomic.Pointer[View]
	agreed  agreedRouting // Run's goroutine only
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every View change
}

// Run keeps the View current until ctx ends or the Raft member stops.
func (r *ConsensusRouter) Run(ctx context.Context) {
	every := r.LeaseCheck
	if every == 0 {
		every = 20 * time.Millisecond
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		applied := r.Raft.Applied() // before refresh, so no apply is missed
		r.refresh()
		select {
		case <-ctx.Done():
			return
		case <-r.Raft.Done():
			r.publish(View{Reason: "the Raft member stopped"})
			return
		case <-applied:
		case <-ticker.C:
		}
	}
}

// agreedRouting is the part of the replicated state routing depends on, cached
// with the applied index it was read at.
type agreedRouting struct {
	index        uint64
	read         bool
	epoch        uint64
	primary      string
	bootstrapped bool
}

// refresh recomputes the View and publishes it if it changed.
func (r *ConsensusRouter) refresh() {
	// Reading the whole state is a deep copy: do it only when the applied index
	// moved, not at every lease tick.
	if idx := r.State.AppliedIndex(); !r.agreed.read || idx != r.agreed.index {
		st := r.State.State()
		r.agreed = agreedRouting{index: idx, read: true, epoch: st.Epoch, primary: st.Primary, bootstrapped: st.Bootstrapped()}
	}
	a := r.agreed
	leaseOK := r.Raft.LeaseValid(time.Now())
	v := View{Epoch: a.epoch}
	switch {
	case !a.bootstrapped:
		v.Reason = "the cluster is not bootstrapped yet (no primary agreed)"
	case a.primary == "":
		v.Reason = fmt.Sprintf("no primary agreed at epoch %d (failover in progress)", a.epoch)
	case !leaseOK:
		v.Reason = "this proxy's view is not confirmed by a Raft quorum (lease expired)"
		v.LeaseExpired = true
	default:
		addr, ok := r.Addresses[a.primary]
		if !ok {
			v.Reason = fmt.Sprintf("agreed primary %q is not in this proxy's backends", a.primary)
			break
		}
		v.Routing = true
		v.Target = proxy.Target{Name: a.primary, Address: addr, Epoch: a.epoch}
	}
	r.publish(v)
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

// Route implements proxy.RouteWatcher: the current decision, and a channel closed at the next
// change.
func (r *ConsensusRouter) Route() (proxy.Route, <-chan struct{}) {
	ch := r.wait() // before reading the view, so no change is missed
	v := r.Current()
	return proxy.Route{Target: v.Target, Routing: v.Routing, LeaseExpired: v.LeaseExpired}, ch
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
