package clusterstate

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
)

// scriptedLog is a committed log as the Raft layer would hand it to Apply: a full
// failover with health reports, retries, stale and invalid commands, a block, a
// re-freeze, pause/resume, an undecodable entry and a rejoin.
func scriptedLog(t testing.TB) [][]byte {
	t.Helper()
	cmds := []Command{
		bootCmd(),
		bootCmd(), // a second proxy's bootstrap: duplicate
		healthCmd("pg1", 1, true, at(1)), healthCmd("pg1", 2, true, at(1)), healthCmd("pg1", 3, true, at(1)),
		healthCmd("pg1", 1, false, at(5)), healthCmd("pg1", 2, false, at(5)),
		healthCmd("pg1", 2, true, at(4)), // late, older: stale
		{SetPaused: &SetPaused{Paused: true}},
		beginCmd(1, "pg1", KindAutomatic, "", false), // paused: rejected
		{SetPaused: &SetPaused{Paused: false}},
		beginCmd(1, "pg1", KindAutomatic, "", false),
		beginCmd(1, "pg1", KindAutomatic, "", false), // retry: duplicate
		stepCmd(2, 0, StepFreeze, "", oneStandby),
		blockCmd(2, 1, "1 of 2 standbys reachable, need 2"),
		stepCmd(2, 1, StepChooseCandidate, "pg2", nil), // stale sequence
		stepCmd(2, 2, StepFreeze, "", bothStandbys),
		stepCmd(2, 3, StepChooseCandidate, "pg2", nil),
		stepCmd(2, 4, StepPromote, "", nil),
		completeCmd(2, "pg2"), // not ready: rejected
		stepCmd(2, 5, StepRepoint, "", nil),
		completeCmd(2, "pg2"),
		completeCmd(2, "pg2"), // duplicate
		{ForgetProxy: &ForgetProxy{Proxy: 3}},
		{Unfence: &Unfence{Node: "pg1"}},
	}
	var entries [][]byte
	for i, c := range cmds {
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, data)
		if i == 5 {
			entries = append(entries, []byte(`{"version":1,"type":"garbage"}`)) // undecodable on every node
		}
	}
	return entries
}

// TestApplyIsDeterministic applies the same encoded log to two machines and compares
// every result and every snapshot byte for byte; a third machine restored from a
// mid-log snapshot must converge to the same bytes.
func TestApplyIsDeterministic(t *testing.T) {
	entries := scriptedLog(t)
	a, b, c := NewMachine(), NewMachine(), NewMachine()
	for i, data := range entries {
		index := uint64(i + 1)
		ra, errA := a.Apply(index, data)
		rb, errB := b.Apply(index, bytes.Clone(data))
		if (errA == nil) != (errB == nil) || !bytes.Equal(ra, rb) {
			t.Fatalf("entry %d: results differ: %s/%v vs %s/%v", index, ra, errA, rb, errB)
		}
		sa, err := a.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		sb, err := b.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sa, sb) {
			t.Fatalf("entry %d: snapshots differ:\n%s\n%s", index, sa, sb)
		}
		if i == len(entries)/2 {
			if err := c.Restore(sa); err != nil {
				t.Fatal(err)
			}
		} else if i > len(entries)/2 {
			if _, err := c.Apply(index, data); (err == nil) != (errA == nil) {
				t.Fatalf("entry %d: restored machine disagrees on decodability", index)
			}
		}
	}
	final, _ := a.Snapshot()
	restored, _ := c.Snapshot()
	if !bytes.Equal(final, restored) {
		t.Fatalf("machine restored mid-log diverged:\n%s\n%s", final, restored)
	}
	s := a.State()
	if s.Primary != "pg2" || s.Epoch != 2 || len(s.Fenced) != 0 || len(s.History) != 2 {
		t.Fatalf("final state %+v", s)
	}
}

func TestMachineSnapshotRestoreRoundTrip(t *testing.T) {
	m := NewMachine()
	for i, data := range scriptedLog(t) {
		_, _ = m.Apply(uint64(i+1), data)
	}
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	r := NewMachine()
	if err := r.Restore(snap); err != nil {
		t.Fatal(err)
	}
	again, err := r.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap, again) {
		t.Fatalf("snapshot of a restored machine differs:\n%s\n%s", snap, again)
	}
	if r.AppliedIndex() != m.AppliedIndex() || r.AppliedIndex() == 0 {
		t.Fatalf("applied index %d, want %d", r.AppliedIndex(), m.AppliedIndex())
	}
	if err := r.State().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestMachineApplyResults(t *testing.T) {
	m := NewMachine()
	data, _ := Encode(bootCmd())
	out, err := m.Apply(1, data)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := DecodeResult(out); err != nil || res.Code != Applied || res.Epoch != 1 {
		t.Fatalf("result %+v, %v", res, err)
	}

	before, _ := m.Snapshot()
	if _, err := m.Apply(2, []byte("not a command")); err == nil {
		t.Fatal("undecodable entry applied without error")
	}
	after, _ := m.Snapshot()
	if !bytes.Equal(before[bytes.Index(before, []byte(`"state"`)):], after[bytes.Index(after, []byte(`"state"`)):]) {
		t.Fatal("undecodable entry changed the state")
	}
	if m.AppliedIndex() != 2 {
		t.Fatalf("applied index %d: an undecodable entry still counts as handled", m.AppliedIndex())
	}

	pause, _ := Encode(Command{SetPaused: &SetPaused{Paused: true}})
	out, err = m.Apply(2, pause) // a replay of an index already handled
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := DecodeResult(out); res.Code != Stale || m.State().Paused {
		t.Fatalf("replayed entry: %+v, paused %t", res, m.State().Paused)
	}
	if _, err := m.Apply(3, pause); err != nil || !m.State().Paused {
		t.Fatalf("next entry not applied: %v", err)
	}
}

func TestMachineRestoreRefusesBadSnapshots(t *testing.T) {
	m := NewMachine()
	data, _ := Encode(bootCmd())
	if _, err := m.Apply(1, data); err != nil {
		t.Fatal(err)
	}
	good, _ := m.Snapshot()
	bad := []string{
		`garbage`,
		`{"version":99,"applied_index":1,"state":{"epoch":0}}`,
		`{"version":1,"applied_index":1,"state":{"epoch":1}}`,                                                     // no nodes
		`{"version":1,"applied_index":1,"state":{"epoch":0,"primary":"pg1"}}`,                                     // epoch 0 not empty
		`{"version":1,"applied_index":1,"state":{"epoch":1,"primary":"pg9","nodes":[{"name":"pg1"}]}}`,            // unknown primary
		`{"version":1,"applied_index":1,"state":{"epoch":1,"primary":"pg1","nodes":[{"name":"b"},{"name":"a"}]}}`, // unsorted
		`{"version":1,"applied_index":1,"state":{"epoch":1,"nodes":[{"name":"pg1"}]}}`,                            // neither primary nor failover
		`{"version":1,"applied_index":1,"state":{"epoch":1,"primary":"pg1","nodes":[{"name":"pg1"}],"fenced":["pg1"]}}`,
		`{"version":1,"applied_index":1,"state":{"epoch":1,"primary":"pg1","nodes":[{"name":"pg1"}]},"extra":1}`,
	}
	for _, b := range bad {
		if err := m.Restore([]byte(b)); err == nil {
			t.Errorf("Restore(%s) succeeded", b)
		}
	}
	if now, _ := m.Snapshot(); !bytes.Equal(now, good) {
		t.Fatalf("a refused snapshot changed the machine: %s", now)
	}
	if err := m.Restore(nil); err != nil || m.State().Bootstrapped() || m.AppliedIndex() != 0 {
		t.Fatalf("empty snapshot did not reset the machine: %v", err)
	}
}

// TestMachineStateIsACopy: what a reader does with State cannot reach the machine.
func TestMachineStateIsACopy(t *testing.T) {
	m := NewMachine()
	data, _ := Encode(bootCmd())
	_, _ = m.Apply(1, data)
	s := m.State()
	s.Nodes[0].Name = "changed"
	s.Primary = "changed"
	if got := m.State(); got.Nodes[0].Name != "pg1" || got.Primary != "pg1" {
		t.Fatalf("reader's change reached the machine: %+v", got)
	}
}

// TestMachineConcurrentReaders runs the apply loop while readers take States and
// Snapshots; run with -race to check the locking.
func TestMachineConcurrentReaders(t *testing.T) {
	m := NewMachine()
	entries := scriptedLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := m.State().Validate(); err != nil {
					t.Errorf("reader saw an invalid state: %v", err)
					return
				}
				if _, err := m.Snapshot(); err != nil {
					t.Errorf("snapshot: %v", err)
					return
				}
			}
		}()
	}
	for round := range 20 {
		if err := m.Restore(nil); err != nil {
			t.Fatal(err)
		}
		for i, data := range entries {
			_, _ = m.Apply(uint64(round*1000+i+1), data)
		}
	}
	cancel()
	wg.Wait()
	if m.State().Primary != "pg2" {
		t.Fatalf("final primary %q", m.State().Primary)
	}
}

// Machine must satisfy consensus.StateMachine; checked here by its method set, since
// this package must not import consensus.
var _ interface {
	Apply(index uint64, data []byte) (result []byte, err error)
	Snapshot() ([]byte, error)
	Restore(data []byte) error
} = (*Machine)(nil)
