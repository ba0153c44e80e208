package consensus

import (
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

func entry(index, term uint64, data string) *raftpb.Entry {
	return &raftpb.Entry{Index: new(index), Term: new(term), Type: raftpb.EntryNormal.Enum(), Data: []byte(data)}
}

func hardState(term, vote, commit uint64) *raftpb.HardState {
	return &raftpb.HardState{Term: new(term), Vote: new(vote), Commit: new(commit)}
}

// logOf reads [first, last] back from the in-memory mirror as "index/term/data".
func logOf(t *testing.T, s *diskStorage) []string {
	t.Helper()
	first, _ := s.mem.FirstIndex()
	last, _ := s.mem.LastIndex()
	if last < first {
		return nil
	}
	ents, err := s.mem.Entries(first, last+1, 1<<30)
	if err != nil {
		t.Fatalf("entries: %v", err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, string(e.GetData()))
	}
	return out
}

func reopen(t *testing.T, s *diskStorage, dir string) *diskStorage {
	t.Helper()
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	s2, err := openDiskStorage(dir, "c", 1)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { _ = s2.close() })
	return s2
}

func TestStorageSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := openDiskStorage(dir, "c", 1)
	if err != nil {
		t.Fatal(err)
	}
	if s.hasState || s.incarnation != 1 {
		t.Fatalf("fresh storage: hasState %v incarnation %d", s.hasState, s.incarnation)
	}
	must(t, s.save(hardState(1, 1, 2), []*raftpb.Entry{entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")}, nil))
	// A new leader overwrites the conflicting suffix from index 3.
	must(t, s.save(hardState(2, 2, 3), []*raftpb.Entry{entry(3, 2, "c2"), entry(4, 2, "d")}, nil))

	s = reopen(t, s, dir)
	if !s.hasState || s.incarnation != 2 {
		t.Fatalf("reopened storage: hasState %v incarnation %d", s.hasState, s.incarnation)
	}
	if got := strings.Join(logOf(t, s), ","); got != "a,b,c2,d" {
		t.Fatalf("log after reopen: %s", got)
	}
	hs, _, err := s.mem.InitialState()
	if err != nil || hs.GetTerm() != 2 || hs.GetVote() != 2 || hs.GetCommit() != 3 {
		t.Fatalf("hard state after reopen: %v, %v", hs, err)
	}
}

func TestStorageSnapshotCompactsAndReloads(t *testing.T) {
	dir := t.TempDir()
	s, err := openDiskStorage(dir, "c", 1)
	if err != nil {
		t.Fatal(err)
	}
	var ents []*raftpb.Entry
	for i := uint64(1); i <= 10; i++ {
		ents = append(ents, entry(i, 1, string(rune('a'+i-1))))
	}
	must(t, s.save(hardState(1, 1, 10), ents, nil))
	cs := &raftpb.ConfState{Voters: []uint64{1, 2, 3}}
	must(t, s.createSnapshot(8, cs, []byte("snap@8"), 5))
	if first, _ := s.mem.FirstIndex(); first != 6 {
		t.Fatalf("first index after compaction through 5: %d", first)
	}

	s = reopen(t, s, dir)
	if got := s.snapshot.GetMetadata().GetIndex(); got != 8 || string(s.snapshot.GetData()) != "snap@8" {
		t.Fatalf("snapshot after reopen: index %d data %q", got, s.snapshot.GetData())
	}
	// Memory starts at the snapshot; the entries after it are back.
	if got := strings.Join(logOf(t, s), ","); got != "i,j" {
		t.Fatalf("log after reopen: %s", got)
	}
	_, gotCS, _ := s.mem.InitialState()
	if len(gotCS.GetVoters()) != 3 {
		t.Fatalf("conf state after reopen: %v", gotCS)
	}

	// A snapshot from the leader replaces the whole log.
	leaderSnap := &raftpb.Snapshot{Data: []byte("snap@20"), Metadata: &raftpb.SnapshotMetadata{
		Index: new(uint64(20)), Term: new(uint64(3)), ConfState: cs,
	}}
	must(t, s.save(hardState(3, 0, 20), []*raftpb.Entry{entry(21, 3, "u")}, leaderSnap))
	s = reopen(t, s, dir)
	if got := s.snapshot.GetMetadata().GetIndex(); got != 20 {
		t.Fatalf("snapshot index after install and reopen: %d", got)
	}
	if got := strings.Join(logOf(t, s), ","); got != "u" {
		t.Fatalf("log after install and reopen: %s", got)
	}
}

func TestStorageRefusesAnotherClusterOrNode(t *testing.T) {
	dir := t.TempDir()
	s, err := openDiskStorage(dir, "c", 1)
	if err != nil {
		t.Fatal(err)
	}
	must(t, s.close())
	if _, err := openDiskStorage(dir, "other", 1); err == nil || !strings.Contains(err.Error(), "cluster") {
		t.Fatalf("other cluster: %v", err)
	}
	if _, err := openDiskStorage(dir, "c", 2); err == nil || !strings.Contains(err.Error(), "node") {
		t.Fatalf("other node: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
