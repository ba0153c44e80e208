package routing

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/proxy"
	"github.com/pgquorum/pgquorum/testenv"
)

// fakeRaft is a Raft member whose lease and applied signal the test controls.
type fakeRaft struct {
	confirmed   atomic.Uint64
	confirmedAt atomic.Int64 // unix nanoseconds of the latest confirmed lease renewal's send time
	mu          sync.Mutex
	applied     chan struct{}
	gained      chan struct{}
	leaseUntil  time.Time
	done        chan struct{}
}

func newFakeRaft() *fakeRaft {
	return &fakeRaft{applied: make(chan struct{}), gained: make(chan struct{}), done: make(chan struct{})}
}
func (f *fakeRaft) LeaseValid(now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return now.Before(f.leaseUntil)
}
func (f *fakeRaft) ConfirmedSince(t time.Time) bool {
	return f.confirmedAt.Load() >= t.UnixNano()
}
func (f *fakeRaft) LeaseExpiry() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leaseUntil
}
func (f *fakeRaft) LeaseGained() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gained
}

// setLease makes the lease run until until (zero: no lease), and signals a
// gain as consensus.Node does: only when it was not valid before.
func (f *fakeRaft) setLease(until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	was := now.Before(f.leaseUntil)
	f.leaseUntil = until
	if !was && now.Before(until) {
		close(f.gained)
		f.gained = make(chan struct{})
	}
}

// grant gives a lease that outlives the test.
func (f *fakeRaft) grant() { f.setLease(time.Now().Add(time.Hour)) }

func (f *fakeRaft) Applied() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}
func (f *fakeRaft) Done() <-chan struct{} { return f.done }
func (f *fakeRaft) ConfirmRouting(index uint64) {
	for {
		old := f.confirmed.Load()
		if index <= old || f.confirmed.CompareAndSwap(old, index) {
			return
		}
	}
}
func (f *fakeRaft) signal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.applied)
	f.applied = make(chan struct{})
}

type fakeState struct {
	mu    sync.Mutex
	st    clusterstate.State
	index uint64
}

func (f *fakeState) State() clusterstate.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}
func (f *fakeState) AppliedIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.index
}
func (f *fakeState) set(st clusterstate.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	f.index++
}

func startRouter(t *testing.T) (*ConsensusRouter, *fakeRaft, *fakeState, chan View) {
	t.Helper()
	raft, state := newFakeRaft(), &fakeState{}
	changes := make(chan View, 100)
	r := &ConsensusRouter{Raft: raft, State: state, Addresses: map[string]string{"pg1": "127.0.0.1:5432", "pg2": "127.0.0.1:5433"},
		OnChange: func(_, v View) { changes <- v }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, raft, state, changes
}

func bootstrapped(primary string, epoch uint64) clusterstate.State {
	st, _ := clusterstate.Apply(clusterstate.State{}, clusterstate.Command{Bootstrap: &clusterstate.Bootstrap{
		Primary: "pg1", Nodes: []clusterstate.NodeSpec{{Name: "pg1"}, {Name: "pg2"}}}})
	st.Primary, st.Epoch = primary, epoch
	return st
}

// waitView waits for a published View satisfying cond.
func waitView(t *testing.T, changes chan View, cond func(View) bool) View {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case v := <-changes:
			if cond(v) {
				return v
			}
		case <-timeout:
			t.Fatal("the expected routing view was never published")
		}
	}
}

func TestRoutesOnlyWithAgreedPrimaryAndLease(t *testing.T) {
	r, raft, state, changes := startRouter(t)
	waitView(t, changes, func(v View) bool { return strings.Contains(v.Reason, "not bootstrapped") })

	state.set(bootstrapped("pg1", 1))
	raft.signal()
	v := waitView(t, changes, func(v View) bool { return strings.Contains(v.Reason, "lease") })
	if v.Routing {
		t.Fatal("routing without a lease")
	}

	raft.grant()
	v = waitView(t, changes, func(v View) bool { return v.Routing })
	if v.Target.Name != "pg1" || v.Target.Address != "127.0.0.1:5432" || v.Target.Epoch != 1 {
		t.Fatalf("target %+v", v.Target)
	}
	got, err := r.Primary(t.Context())
	if err != nil || got != v.Target {
		t.Fatalf("Primary = %+v, %v", got, err)
	}

	// A failover begins: no primary at epoch 2, the old primary is fenced.
	state.set(failingOver("pg1", 2, clusterstate.StepFreeze))
	raft.signal()
	v = waitView(t, changes, func(v View) bool { return !v.Routing && strings.Contains(v.Reason, "pg1 is fenced") })
	if route, _ := r.Route(); !v.Fenced || !route.LeaseExpired || route.Routing {
		t.Fatalf("view %+v gives route %+v; want every backend connection closed", v, route)
	}

	// The lease is lost: fail closed even once a primary is agreed again.
	raft.setLease(time.Time{})
	state.set(bootstrapped("pg2", 2))
	raft.signal()
	waitView(t, changes, func(v View) bool { return strings.Contains(v.Reason, "lease expired") })
}

// failingOver is a state with a failover away from old in progress at epoch, next step next.
func failingOver(old string, epoch uint64, next clusterstate.Step) clusterstate.State {
	st := bootstrapped("", epoch)
	kind := clusterstate.KindAutomatic
	if next == clusterstate.StepDemoteOldPrimary {
		kind = clusterstate.KindSwitchover
	}
	st.Failover = &clusterstate.FailoverProgress{Epoch: epoch, Kind: kind, OldPrimary: old, Next: next}
	return st
}

func TestSwitchoverFencesTheOldPrimaryOnlyAfterDemote(t *testing.T) {
	r, raft, state, changes := startRouter(t)
	raft.grant()
	state.set(failingOver("pg1", 2, clusterstate.StepDemoteOldPrimary))
	raft.signal()
	v := waitView(t, changes, func(v View) bool { return strings.Contains(v.Reason, "no primary agreed at epoch 2") })
	if route, _ := r.Route(); v.Fenced || route.LeaseExpired {
		t.Fatalf("switchover before demote: view %+v, route %+v; want open transactions kept", v, route)
	}
	state.set(failingOver("pg1", 2, clusterstate.StepFreeze))
	raft.signal()
	waitView(t, changes, func(v View) bool { return v.Fenced })
}

func TestRoutingIsConfirmedOnlyOnceTheProxyAppliedTheRoute(t *testing.T) {
	r, raft, state, changes := startRouter(t)
	raft.grant()
	state.set(bootstrapped("pg1", 1)) // index 1
	raft.signal()
	waitView(t, changes, func(v View) bool { return v.Routing })
	routing, _ := r.Route()
	if got := raft.confirmed.Load(); got != 0 {
		t.Fatalf("confirmed index %d before the proxy applied any route", got)
	}
	r.RouteApplied(routing)
	// The router publishes a View before it records the View's index (so an
	// acknowledgement of an older route can never confirm a newer index); an
	// acknowledgement that falls between the two is confirmed as soon as the
	// index is recorded.
	waitFor(t, func() bool { return raft.confirmed.Load() == 1 }, "index 1 confirmed after the proxy applied its route")

	// Entries that do not change the route are confirmed as they are applied.
	st := bootstrapped("pg1", 1)
	st.Paused = true
	state.set(st) // index 2
	raft.signal()
	waitFor(t, func() bool { return raft.confirmed.Load() == 2 }, "index 2 confirmed")

	// A failover: index 3 is not confirmed until the proxy applied the fenced route.
	state.set(failingOver("pg1", 2, clusterstate.StepFreeze))
	raft.signal()
	waitView(t, changes, func(v View) bool { return v.Fenced })
	r.RouteApplied(routing) // a late acknowledgement of the old route confirms nothing new
	if got := raft.confirmed.Load(); got != 2 {
		t.Fatalf("confirmed index %d while the proxy still applies the old route", got)
	}
	fenced, _ := r.Route()
	r.RouteApplied(fenced)
	waitFor(t, func() bool { return raft.confirmed.Load() == 3 }, "index 3 confirmed after the proxy applied the fenced route")
}

// waitFor waits (testenv.Eventually) until cond holds, failing after 5 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	testenv.Eventually(t, t.Context(), 5*time.Second, what, testenv.Cond(cond))
}

func TestPrimaryWaitsForAgreementOrContext(t *testing.T) {
	r, raft, state, _ := startRouter(t)
	raft.grant()

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := r.Primary(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not bootstrapped") {
		t.Fatalf("Primary without a primary: %v", err)
	}

	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		tgt, err := r.Primary(ctx)
		if err == nil && tgt.Name != "pg2" {
			err = errors.New("wrong target " + tgt.Name)
		}
		result <- err
	}()
	state.set(bootstrapped("pg2", 3))
	raft.signal()
	if err := <-result; err != nil {
		t.Fatalf("held Primary call: %v", err)
	}
}

func TestUnknownPrimaryIsNotRouted(t *testing.T) {
	r, raft, state, changes := startRouter(t)
	raft.grant()
	st := bootstrapped("pg9", 5)
	state.set(st)
	raft.signal()
	waitView(t, changes, func(v View) bool { return strings.Contains(v.Reason, `"pg9" is not in this proxy's backends`) })
	if r.Current().Routing {
		t.Fatal("routed to a primary without an address")
	}
}

func TestConfirmedRouteWaitsForAFreshConfirmation(t *testing.T) {
	r, raft, state, changes := startRouter(t)
	raft.grant()
	state.set(bootstrapped("pg1", 1))
	raft.signal()
	waitView(t, changes, func(v View) bool { return v.Routing })

	// Another node began a failover; this node's router has not applied it yet, but the
	// state it applied is newer than what Run last derived.
	state.set(bootstrapped("", 2))
	result := make(chan proxy.Route, 1)
	go func() {
		route, err := r.ConfirmedRoute(context.Background())
		if err != nil {
			t.Error(err)
		}
		result <- route
	}()
	select {
	case <-result:
		t.Fatal("ConfirmedRoute returned before a renewal sent after the call was confirmed")
	case <-time.After(30 * time.Millisecond):
	}
	raft.confirmedAt.Store(time.Now().UnixNano())
	if route := <-result; route.Routing {
		t.Fatalf("confirmed route %+v, want no primary (failover in progress)", route)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.ConfirmedRoute(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ConfirmedRoute without a renewal: %v", err)
	}
}

// The router needs no poll: it stops routing when the lease runs out (a timer
// at its expiry, moved on by renewals) and routes again when it is regained.
func TestRoutingFollowsTheLeaseWithoutPolling(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		raft, state := newFakeRaft(), &fakeState{}
		r := &ConsensusRouter{Raft: raft, State: state, Addresses: map[string]string{"pg1": "127.0.0.1:5432"}}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { r.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
		routing := func(want bool, when string) {
			t.Helper()
			synctest.Wait()
			if v := r.Current(); v.Routing != want || v.LeaseExpired == want {
				t.Fatalf("%s: view %+v, want routing %v", when, v, want)
			}
		}

		state.set(bootstrapped("pg1", 1))
		raft.setLease(time.Now().Add(3 * time.Second))
		raft.signal()
		routing(true, "lease gained")
		time.Sleep(2 * time.Second)
		raft.setLease(time.Now().Add(3 * time.Second)) // a renewal: nothing is signalled
		time.Sleep(2 * time.Second)                    // past the first expiry
		routing(true, "after the first expiry, renewed meanwhile")
		time.Sleep(time.Second) // past the renewed expiry, with no event at all
		routing(false, "the lease ran out")
		raft.setLease(time.Now().Add(3 * time.Second))
		routing(true, "lease regained")
	})
}
