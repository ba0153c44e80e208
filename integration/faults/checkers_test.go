package faults

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The checkers must be able to fail: each is fed a known-bad history (the
// negative control) as well as a good one.

func TestLinearizabilityCheckerAcceptsAConcurrentHistory(t *testing.T) {
	ops := []Op{
		{Client: 0, Key: 1, Write: true, Value: 10, Call: 0, Return: 10},
		{Client: 1, Key: 1, Value: 0, Call: 5, Return: 15},   // concurrent with the write: may see the old value
		{Client: 2, Key: 1, Value: 10, Call: 20, Return: 30}, // after it: sees it
		{Client: 0, Key: 1, Write: true, Value: 11, Call: 40, Outcome: Unknown, Return: 50},
		{Client: 1, Key: 1, Value: 10, Call: 60, Return: 70}, // the unknown write has not taken effect yet ...
		{Client: 2, Key: 1, Value: 11, Call: 80, Return: 90}, // ... and now it has
		{Client: 1, Key: 2, Write: true, Value: 12, Call: 0, Return: 5, Outcome: Failed},
		{Client: 2, Key: 2, Value: 0, Call: 10, Return: 20}, // a failed write never took effect
	}
	v := CheckLinearizable(ops, 10*time.Second)
	if v.Result != porcupine.Ok {
		t.Fatalf("verdict %v on a linearizable history", v)
	}
	if v.Ops != 7 || v.UnknownWrites != 1 {
		t.Fatalf("verdict %v: want 7 operations, 1 unknown write", v)
	}
}

// TestLinearizabilityCheckerCatchesAStaleRead is the negative control: the
// stale read of issue 10 (a read served by the old primary after the new one
// acknowledged a write) must be found.
func TestLinearizabilityCheckerCatchesAStaleRead(t *testing.T) {
	ops := []Op{
		{Client: 0, Key: 3, Write: true, Value: 1, Call: 0, Return: 10},
		{Client: 1, Key: 3, Write: true, Value: 2, Call: 20, Return: 30}, // acknowledged by the new primary
		{Client: 2, Key: 3, Value: 1, Call: 40, Return: 50},              // served by the old one afterwards
	}
	v := CheckLinearizable(ops, 10*time.Second)
	if v.Result != porcupine.Illegal {
		t.Fatalf("verdict %v on a history with a stale read, want Illegal", v)
	}
	if err := v.Visualize(filepath.Join(t.TempDir(), "stale.html")); err != nil {
		t.Fatalf("visualize: %v", err)
	}
	// A value seen and then lost (a write that "un-happens") is also caught.
	lost := []Op{
		{Client: 0, Key: 4, Write: true, Value: 7, Call: 0, Outcome: Unknown, Return: 5},
		{Client: 1, Key: 4, Value: 7, Call: 10, Return: 20},
		{Client: 2, Key: 4, Value: 0, Call: 30, Return: 40},
	}
	if v := CheckLinearizable(lost, 10*time.Second); v.Result != porcupine.Illegal {
		t.Fatalf("verdict %v on a history where a read value is lost, want Illegal", v)
	}
}

func TestAcknowledgedWritesVerifier(t *testing.T) {
	attempted := []int64{1, 2, 3, 4}
	good := VerifyAcknowledged("pg2", []int64{1, 2}, attempted, map[int64]int{1: 1, 2: 1, 3: 1})
	if !good.OK() || good.Rows != 3 {
		t.Fatalf("verdict %v; want OK (an unacknowledged write may be there)", good)
	}
	// Negative control: a lost commit, a duplicate and a value never written.
	bad := VerifyAcknowledged("pg2", []int64{1, 2}, attempted, map[int64]int{1: 1, 3: 2, 9: 1})
	if bad.OK() || len(bad.Missing) != 1 || bad.Missing[0] != 2 || len(bad.Duplicated) != 1 || bad.Duplicated[0] != 3 ||
		len(bad.Unexpected) != 1 || bad.Unexpected[0] != 9 {
		t.Fatalf("verdict %v; want 2 missing, 3 duplicated, 9 unexpected", bad)
	}
}

// TestDyingServerReadsAreLeftOutOnlyForTheKilledServer: a read that the killed primary answered
// after its kill -9 and that saw a write the cluster then lost (PostgreSQL's own window) is left
// out of the judged history; the same read answered by a server that was not killed (a stale
// read of a cut-off or demoted primary) is still judged, and found Illegal.
func TestDyingServerReadsAreLeftOutOnlyForTheKilledServer(t *testing.T) {
	const oldPrimary, newPrimary = 5001, 5002
	history := func(readPort int, kill bool) *History {
		h := &History{}
		if kill {
			h.kills = map[int]int64{oldPrimary: 100}
		}
		h.ops = []Op{
			{Client: 0, Key: 1, Write: true, Value: 52, Call: 0, Return: 50, Port: oldPrimary},
			{Client: 1, Key: 1, Write: true, Value: 53, Call: 90, Outcome: Unknown, Return: 150}, // cut by the kill
			{Client: 2, Key: 1, Value: 53, Call: 80, Return: 160, Port: readPort},                // saw it
			{Client: 3, Key: 1, Value: 52, Call: 300, Return: 310, Port: newPrimary},             // lost on the new primary
		}
		return h
	}
	judged, left := history(oldPrimary, true).WithoutDyingServerReads()
	if len(left) != 1 || left[0].Value != 53 {
		t.Fatalf("left out %v, want the read of 53 on the killed server", left)
	}
	if v := CheckLinearizable(judged, 10*time.Second); v.Result != porcupine.Ok {
		t.Fatalf("verdict %v without the dying server's read, want Ok", v)
	}
	for _, c := range []struct {
		name string
		h    *History
	}{
		{"no kill noted", history(oldPrimary, false)},
		{"the read came from another server", history(newPrimary+1, true)},
	} {
		judged, left := c.h.WithoutDyingServerReads()
		if len(left) != 0 {
			t.Fatalf("%s: left out %v", c.name, left)
		}
		if v := CheckLinearizable(judged, 10*time.Second); v.Result != porcupine.Illegal {
			t.Fatalf("%s: verdict %v, want Illegal", c.name, v)
		}
	}
}
