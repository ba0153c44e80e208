package health

import (
	"testing"
)

func TestChangeQueueCoalescesPerNode(t *testing.T) {
	up := NodeState{Health: HealthUp, InRecovery: true, Timeline: 1}
	down := NodeState{Health: HealthDown, InRecovery: true, Timeline: 1}
	upPrimary := NodeState{Health: HealthUp, Timeline: 2}
	unknown := NodeState{}

	var q changeQueue
	q.push(Change{Node: "pg1", From: unknown, To: up, Reason: "a"})
	q.push(Change{Node: "pg2", From: up, To: down, Reason: "b"})
	q.push(Change{Node: "pg1", From: up, To: down, Reason: "c"})
	q.push(Change{Node: "pg1", From: down, To: upPrimary, Reason: "d"})
	if q.len() != 2 {
		t.Fatalf("len = %d, want 2 (one per node)", q.len())
	}

	// pg1 keeps its place in line and reports the net change.
	c, ok := q.peek()
	if !ok || c.Node != "pg1" || c.From != unknown || c.To != upPrimary || c.Reason != "d" || c.Coalesced != 2 {
		t.Fatalf("first = %+v, %v", c, ok)
	}
	q.pop()

	// pg2 went down and came back before delivery: nothing is left to say.
	q.push(Change{Node: "pg2", From: down, To: up, Reason: "e"})
	if _, ok := q.peek(); ok || q.len() != 0 {
		t.Fatalf("queue not empty after a net-zero change: %+v", q)
	}

	// A delivered change is not merged with later ones.
	q.push(Change{Node: "pg3", From: unknown, To: up})
	q.pop()
	q.push(Change{Node: "pg3", From: up, To: down})
	if c, ok := q.peek(); !ok || c.From != up || c.To != down || c.Coalesced != 0 {
		t.Fatalf("after delivery = %+v, %v", c, ok)
	}
	q.pop()
	q.pop() // popping an empty queue is harmless
	if q.len() != 0 {
		t.Fatalf("len = %d", q.len())
	}
}
