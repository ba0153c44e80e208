package consensus

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestFenceTracker(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	const lease = time.Second
	bound := time.Duration(float64(lease)*(1+ClockRateBound)) + FenceMargin // 1210 ms
	members := []uint64{1, 2, 3}

	t.Run("every member confirmed", func(t *testing.T) {
		f := newFenceTracker(lease)
		f.becameLeader(at(0))
		f.raise(10)
		f.confirm(1, 10)
		f.renewal(2, 12, at(5))
		f.renewal(3, 10, at(6))
		r := f.check(10, members, at(7))
		if !r.Done() || !slices.Equal(r.Confirmed, members) {
			t.Fatalf("report %+v, want every member confirmed", r)
		}
	})
	t.Run("a silent member runs out from the leader's start", func(t *testing.T) {
		f := newFenceTracker(lease)
		f.becameLeader(at(100))
		f.confirm(1, 10)
		f.confirm(2, 10)
		r := f.check(10, members, at(100).Add(bound-time.Millisecond))
		if r.Done() || !slices.Equal(r.Waiting, []uint64{3}) || !r.WaitUntil.Equal(at(100).Add(bound)) {
			t.Fatalf("report %+v, want waiting for 3 until start + %v", r, bound)
		}
		r = f.check(10, members, at(100).Add(bound))
		if !r.Done() || !slices.Equal(r.Expired, []uint64{3}) {
			t.Fatalf("report %+v, want 3's lease run out", r)
		}
	})
	t.Run("a renewal granted before the fence extends the wait", func(t *testing.T) {
		f := newFenceTracker(lease)
		f.becameLeader(at(0))
		if !f.renewal(3, 5, at(500)) {
			t.Fatal("renewal refused with no fence pending")
		}
		f.raise(10)
		f.confirm(1, 10)
		f.confirm(2, 10)
		if r := f.check(10, members, at(500).Add(bound-time.Millisecond)); r.Done() {
			t.Fatalf("report %+v: done before the renewal granted at 500 ms ran out", r)
		}
		if r := f.check(10, members, at(500).Add(bound)); !r.Done() {
			t.Fatalf("report %+v: not done after the last grant ran out", r)
		}
	})
	t.Run("renewals are withheld from a member that has not confirmed the fence", func(t *testing.T) {
		f := newFenceTracker(lease)
		f.becameLeader(at(0))
		f.raise(10)
		if f.renewal(3, 9, at(300)) {
			t.Fatal("renewal granted to a member that confirmed 9 of fence 10")
		}
		f.confirm(1, 10)
		f.confirm(2, 10)
		if r := f.check(10, members, at(0).Add(bound)); !r.Done() {
			t.Fatalf("report %+v: a withheld renewal extended the wait", r)
		}
		if !f.renewal(3, 10, at(400)) {
			t.Fatal("renewal refused after the member confirmed the fence")
		}
	})
	t.Run("a new term forgets what an earlier one knew", func(t *testing.T) {
		f := newFenceTracker(lease)
		f.becameLeader(at(0))
		f.confirm(3, 10)
		f.steppedDown()
		if f.isLeader() {
			t.Fatal("still leader after stepping down")
		}
		f.becameLeader(at(2000))
		if r := f.check(10, []uint64{3}, at(2001)); r.Done() {
			t.Fatalf("report %+v: a confirmation from an earlier term counted", r)
		}
	})
	t.Run("string", func(t *testing.T) {
		r := FenceReport{Confirmed: []uint64{1, 2}, Expired: []uint64{3}}
		if got, want := r.String(), "confirmed by proxies 1, 2; lease ran out without confirming: 3"; got != want {
			t.Fatalf("String() = %q, want %q", got, want)
		}
	})
}

// TestRoutingFenceWaitsForConfirmationsOrExpiredLeases runs the fence on a
// real three-voter cluster whose routing confirmations the test makes by hand
// (RoutingConfirmation). A fence completes as soon as every member confirmed;
// a member that is cut off, or connected but never confirms, delays it until
// its lease has provably run out, and at that moment its lease is over.
func TestRoutingFenceWaitsForConfirmationsOrExpiredLeases(t *testing.T) {
	t.Parallel()
	const (
		electionTicks = 25 // a busy machine must not starve the majority's renewals
		lease         = 400 * time.Millisecond
	)
	c := newTestCluster(t, 3, func(cfg *Config) {
		cfg.ElectionTicks = electionTicks
		cfg.LeaseDuration = lease
		cfg.RoutingConfirmation = true
	})
	leader := c.waitLeader()
	c.propose(leader, "a=1")
	// confirmAll waits until each of ids has published the leader's applied
	// index (its state machine may be ahead of its published Status by one
	// loop turn), and confirms that index on each.
	confirmAll := func(ids ...uint64) uint64 {
		index := c.get(leader).node.Status().Applied
		for _, id := range ids {
			n := c.get(id).node
			waitFor(t, testWait, func() bool { return n.Status().Applied >= index }, "node %d to apply %d", id, index)
			n.ConfirmRouting(index)
		}
		return index
	}
	for _, id := range c.running() {
		confirmAll(id)
		waitFor(t, testWait, func() bool { return c.get(id).node.LeaseValid(time.Now()) }, "lease on node %d", id)
	}
	fence := func(index uint64) (FenceReport, time.Duration) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), testWait)
		defer cancel()
		started := time.Now()
		r, err := c.get(leader).node.FenceRouting(ctx, index)
		if err != nil {
			t.Fatalf("fence at %d: %v", index, err)
		}
		return r, time.Since(started)
	}

	t.Run("confirmed by everyone", func(t *testing.T) {
		c.propose(leader, "b=2")
		c.waitValues([]string{"a=1", "b=2"})
		index := confirmAll(c.running()...)
		r, took := fence(index)
		if !slices.Equal(r.Confirmed, c.running()) {
			t.Fatalf("report %v, want confirmed by every node", r)
		}
		t.Logf("fence at %d confirmed by everyone in %v", index, took)
	})

	followers := without(c.running(), leader)
	t.Run("a member that never confirms loses its lease first", func(t *testing.T) {
		silent := followers[0]
		c.propose(leader, "c=3")
		c.waitValues([]string{"a=1", "b=2", "c=3"})
		index := confirmAll(leader, followers[1])
		r, took := fence(index)
		if !slices.Equal(r.Expired, []uint64{silent}) {
			t.Fatalf("report %v, want node %d's lease run out", r, silent)
		}
		if c.get(silent).node.LeaseValid(time.Now()) {
			t.Fatalf("node %d still holds a lease when the fence completes", silent)
		}
		if took < lease {
			t.Fatalf("fence done in %v, before a lease of %v could have run out", took, lease)
		}
		t.Logf("fence at %d done in %v: %v", index, took, r)
		// Once it confirms, its renewals are granted again.
		confirmAll(silent)
		waitFor(t, testWait, func() bool { return c.get(silent).node.LeaseValid(time.Now()) }, "lease on node %d after confirming", silent)
	})

	t.Run("a cut-off member cannot block the fence", func(t *testing.T) {
		cut := followers[1]
		c.net.isolate(cut)
		defer c.net.heal()
		c.propose(leader, "d=4")
		c.waitValues([]string{"a=1", "b=2", "c=3", "d=4"}, leader, followers[0])
		index := confirmAll(leader, followers[0])
		r, took := fence(index)
		if !slices.Equal(r.Expired, []uint64{cut}) {
			t.Fatalf("report %v, want node %d's lease run out", r, cut)
		}
		if c.get(cut).node.LeaseValid(time.Now()) {
			t.Fatalf("cut-off node %d still holds a lease when the fence completes", cut)
		}
		t.Logf("fence at %d done in %v: %v", index, took, r)
	})

	t.Run("a cut-off learner cannot block the fence either", func(t *testing.T) {
		c.start(4, false)
		c.propose(leader, "e=5")
		want := []string{"a=1", "b=2", "c=3", "d=4", "e=5"}
		c.waitValues(want)
		confirmAll(c.running()...)
		waitFor(t, testWait, func() bool { return c.get(4).node.LeaseValid(time.Now()) }, "lease on learner 4")
		c.net.isolate(4)
		defer c.net.heal()
		c.propose(leader, "f=6")
		want = append(want, "f=6")
		c.waitValues(want, without(c.running(), 4)...)
		index := confirmAll(without(c.running(), 4)...)
		r, took := fence(index)
		if !slices.Contains(r.Expired, 4) || c.get(4).node.LeaseValid(time.Now()) {
			t.Fatalf("report %v: want learner 4's lease run out, and over", r)
		}
		t.Logf("fence at %d done in %v: %v", index, took, r)
	})

	t.Run("only the leader fences", func(t *testing.T) {
		_, err := c.get(followers[0]).node.FenceRouting(context.Background(), 1)
		if !errors.Is(err, ErrNotLeader) {
			t.Fatalf("fence on a follower: %v, want ErrNotLeader", err)
		}
	})
}
