package faults

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgquorum/pgquorum/admin"
	"github.com/pgquorum/pgquorum/consensus/clusterstate"
	"github.com/pgquorum/pgquorum/integration/proxies"
)

// testStaleReadUnderPartition is the first hole of issue 10, as a regression
// test: one proxy (a follower, so the others need no election and fail over
// fast) is cut off from the two others but still reaches the primary, which the
// two others cannot reach. They fail over; before the new primary takes a
// write, the cut-off proxy must have stopped serving from the old one (its
// lease ran out, and the leader proved it). Clients on all three proxies read
// and write registers throughout; the history must be linearizable and every
// acknowledged write must survive. Without the fence this history has stale
// reads (checked once by disabling the fence).
func testStaleReadUnderPartition(t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(t.Context(), stepTimeout)
	defer cancel()
	old := s.pg.Node(s.primary)
	w := s.startLoad(t)
	leader := s.leader(t)
	var p1, p2, p3 *proxies.Process // p3 is cut off; p1 leads
	victimIndex := 0
	p1 = leader
	for i, p := range s.running() {
		switch {
		case p == leader:
		case p2 == nil:
			p2 = p
		default:
			p3, victimIndex = p, i
		}
	}

	// Proxy 3 cannot reach proxies 1 and 2, nor they it (silently); proxies 1
	// and 2 are refused by the old primary at once, so they decide within a
	// few probes, while proxy 3 still reaches it.
	for _, rule := range []struct {
		from   uint64
		port   int
		reject bool
	}{
		{p3.ID, raftPort(t, p1), false}, {p3.ID, raftPort(t, p2), false},
		{p1.ID, raftPort(t, p3), false}, {p2.ID, raftPort(t, p3), false},
		{p1.ID, old.Port, true}, {p2.ID, old.Port, true},
	} {
		add := s.fw.Drop
		if rule.reject {
			add = s.fw.Reject
		}
		if err := add(rule.from, rule.port); err != nil {
			t.Fatal(err)
		}
	}
	cutAt := w.History.Now()
	t.Cleanup(func() { _ = s.fw.Heal() })
	t.Logf("partition: %v", s.fw.Rules())

	newName := s.waitFailover(t, old.Name, p1, p2)
	promoted := s.pg.Node(newName)
	if err := w.WaitAcks(ctx, 30); err != nil {
		t.Fatal(err)
	}
	h := s.completed(t, p1)
	fence := stepDetail(h, clusterstate.StepFreeze)
	cutWall := w.History.At(cutAt)
	t.Logf("failover to %s (Raft leader at the cut: proxy %d): began %v after the cut, completed %v after it; freeze step: %s",
		newName, leader.ID, h.StartedAt.Sub(cutWall).Round(time.Millisecond), h.At.Sub(cutWall).Round(time.Millisecond), fence)
	if !strings.Contains(fence, fmt.Sprintf("lease ran out without confirming: %d", p3.ID)) {
		t.Errorf("the fence does not say that proxy %d's lease ran out: %q", p3.ID, fence)
	}

	// What the clients saw, in history time.
	ops := w.History.Ops()
	firstNew, ok := FirstOn(ops, promoted.Port, cutAt, true)
	if !ok {
		t.Fatalf("no write acknowledged by %s after the cut", newName)
	}
	var lastOld Op
	late := 0
	for _, op := range ops {
		if op.Outcome == Ok && op.Port == old.Port && op.Return > lastOld.Return {
			lastOld = op
		}
		if op.Outcome == Ok && op.Port == old.Port && op.Call > firstNew.Return {
			if late++; late <= 5 {
				t.Errorf("client %d's %s was sent %v after %s acknowledged its first write, and answered by the old primary %s",
					op.Client, describe(op), time.Duration(op.Call-firstNew.Return), newName, old.Name)
			}
		}
	}
	if late > 5 {
		t.Errorf("... %d operations in all were answered by the old primary after the new one's first write", late)
	}
	viaP3 := 0
	for _, op := range ops {
		if w.TargetOf(op.Client) == victimIndex && op.Outcome == Ok && op.Port == old.Port && op.Call > cutAt {
			viaP3++
		}
	}
	t.Logf("proxy %d (cut off) served %d operations from %s after the cut, the last one answered %v after it; "+
		"%s acknowledged its first write %v after the cut (write gap with a cut-off proxy)",
		p3.ID, viaP3, old.Name, time.Duration(lastOld.Return-cutAt).Round(time.Millisecond), newName,
		time.Duration(firstNew.Return-cutAt).Round(time.Millisecond))
	if lastOld.Return > firstNew.Return {
		t.Errorf("the old primary answered until %v after the cut, after the new one's first write (%v)",
			time.Duration(lastOld.Return-cutAt), time.Duration(firstNew.Return-cutAt))
	}

	// Heal: the cut-off proxy catches up and routes to the new primary.
	if err := s.fw.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := p3.WaitCluster(ctx, "routing to "+newName, func(v admin.ClusterView) bool {
		return v.Routing.Routing && v.Primary == newName
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.WaitAcks(ctx, 30); err != nil {
		t.Fatal(err)
	}
	s.finishLoad(t, w, promoted)
	s.rejoin(t, old.Name)
}

// describe renders an operation for messages.
func describe(op Op) string {
	if op.Write {
		return "write of k" + strconv.Itoa(op.Key)
	}
	return "read of k" + strconv.Itoa(op.Key)
}
