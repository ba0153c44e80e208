package consensus

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Disaster recovery of the Raft log, offline (the node must not run).
//
// Losing a majority of the voters stops the cluster: nothing can be committed,
// so no failover can happen and every lease runs out. The way back, as etcd's
// --force-new-cluster, is to make one survivor the only voter of a new
// configuration that keeps its log: ForceNewCluster. Pick the survivor whose
// log goes furthest (InspectLog on each: the highest last term, then index),
// because whatever the lost voters had committed beyond it is gone.
//
// Unlike etcd, every entry the survivor has is kept and applied, not only
// those it knew to be committed: an entry it has may have been committed by the
// lost majority (a failover step, a fence), and forgetting it could undo a
// fence; an entry that was never committed is a command the leader of the time
// proposed, and the state machine validates it like any other. The replicated
// state is otherwise kept as it is: the same epoch, primary, fenced nodes and
// failover in progress (a new leader resumes it), so no node is ever unfenced
// by a recovery.
//
// The other voters are marked removed in the address book: one that comes
// back with its old log is refused by the recovered node and never gets a
// lease (its removal notice is not believed from a node that is not its
// leader, so it keeps trying until it is stopped). Learners stay
// learners; one whose log went further than the survivor's cannot follow the
// new log and stops with an error (replace it with a new id). The lost voters
// must never run again with their old data: two of them together would still
// form a majority of the old configuration.

// LogInfo describes a Raft log on disk (InspectLog).
type LogInfo struct {
	ClusterName   string
	NodeID        uint64
	SnapshotIndex uint64
	FirstIndex    uint64 // first entry after the snapshot (0 when none)
	LastIndex     uint64 // last entry, or the snapshot's index
	LastTerm      uint64
	Commit        uint64 // the commit index this node knew
	Term          uint64 // the HardState's term
	Voters        []uint64
	Learners      []uint64
	Removed       []uint64
}

// RecoverOptions say which log to recover and how to read its entries.
type RecoverOptions struct {
	ClusterName string
	NodeID      uint64
	DataDir     string
	// StateMachine receives the snapshot and every entry of the log; after
	// ForceNewCluster it holds the state the new cluster starts from.
	StateMachine StateMachine
}

// ErrNoLog means the data directory holds no Raft log to recover.
var ErrNoLog = errors.New("consensus: no Raft log in the data directory")

// InspectLog reads the log in opts.DataDir, replays it into opts.StateMachine
// (every entry, as ForceNewCluster would) and describes it. Read-only.
func InspectLog(opts RecoverOptions) (LogInfo, error) {
	info, _, err := replayLog(opts, false)
	return info, err
}

// ForceNewCluster rewrites the log in opts.DataDir so that this node is the
// only voter of the cluster: every entry is kept and applied, the other voters
// are removed, learners stay. Start the node afterwards; it elects itself and
// resumes. See the notes at the top of this file for what it keeps and what
// the operator must make sure of. It returns the log as it was before.
func ForceNewCluster(opts RecoverOptions) (LogInfo, error) {
	info, _, err := replayLog(opts, true)
	return info, err
}

// replayLog opens the log, replays it into the state machine and, when
// rewrite is set, replaces it with a snapshot of the result whose membership
// is this node alone (plus the learners).
func replayLog(opts RecoverOptions, rewrite bool) (LogInfo, *addressBook, error) {
	path := filepath.Join(opts.DataDir, storageFileName)
	if _, err := os.Stat(path); err != nil {
		return LogInfo{}, nil, fmt.Errorf("%w: %s: %v", ErrNoLog, opts.DataDir, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: !rewrite})
	if err != nil {
		return LogInfo{}, nil, fmt.Errorf("open %s (is this pgquorum node still running? stop it first): %w", path, err)
	}
	defer db.Close()
	var (
		meta      logMeta
		entries   []*raftpb.Entry
		readError error
	)
	readError = db.View(func(tx *bolt.Tx) error {
		var err error
		meta, entries, err = readLog(tx)
		return err
	})
	if readError != nil {
		return LogInfo{}, nil, fmt.Errorf("read %s: %w", path, readError)
	}
	if meta.clusterName != opts.ClusterName || meta.nodeID != fmt.Sprint(opts.NodeID) {
		return LogInfo{}, nil, fmt.Errorf("%s belongs to cluster %q node %s, not cluster %q node %d",
			path, meta.clusterName, meta.nodeID, opts.ClusterName, opts.NodeID)
	}
	if meta.hardState == nil && raft.IsEmptySnap(meta.snapshot) && len(entries) == 0 {
		return LogInfo{}, nil, fmt.Errorf("%w: %s is empty", ErrNoLog, path)
	}

	// Replay: the snapshot, then every entry.
	book := newAddressBook()
	members := replayMembers{voters: map[uint64]bool{}, learners: map[uint64]bool{}}
	info := LogInfo{ClusterName: meta.clusterName, NodeID: opts.NodeID}
	snap := meta.snapshot
	if !raft.IsEmptySnap(snap) {
		state, b, err := decodeSnapshotPayload(snap.GetData())
		if err != nil {
			return LogInfo{}, nil, err
		}
		if err := opts.StateMachine.Restore(state); err != nil {
			return LogInfo{}, nil, fmt.Errorf("restore the snapshot at %d: %w", snap.GetMetadata().GetIndex(), err)
		}
		book = b
		cs := snap.GetMetadata().GetConfState()
		for _, id := range slices.Concat(cs.GetVoters(), cs.GetVotersOutgoing()) {
			members.voters[id] = true
		}
		for _, id := range slices.Concat(cs.GetLearners(), cs.GetLearnersNext()) {
			members.learners[id] = true
		}
		info.SnapshotIndex = snap.GetMetadata().GetIndex()
		info.LastIndex, info.LastTerm = info.SnapshotIndex, snap.GetMetadata().GetTerm()
	}
	for _, e := range entries {
		if e.GetIndex() <= info.SnapshotIndex {
			continue
		}
		if info.FirstIndex == 0 {
			info.FirstIndex = e.GetIndex()
		}
		if err := members.apply(e, opts.StateMachine, book); err != nil {
			return LogInfo{}, nil, err
		}
		info.LastIndex, info.LastTerm = e.GetIndex(), e.GetTerm()
	}
	if meta.hardState != nil {
		info.Commit, info.Term = meta.hardState.GetCommit(), meta.hardState.GetTerm()
	}
	info.Voters, info.Learners = members.sorted()
	for id := range book.removed {
		info.Removed = append(info.Removed, id)
	}
	slices.Sort(info.Removed)
	if !rewrite {
		return info, book, nil
	}

	if !members.voters[opts.NodeID] && !members.learners[opts.NodeID] {
		return info, nil, fmt.Errorf("node %d is not a member of the configuration in its own log (voters %v, learners %v)",
			opts.NodeID, info.Voters, info.Learners)
	}
	for id := range members.voters {
		if id != opts.NodeID {
			book.markRemoved(id)
		}
	}
	learners := slices.DeleteFunc(slices.Clone(info.Learners), func(id uint64) bool { return id == opts.NodeID })
	state, err := opts.StateMachine.Snapshot()
	if err != nil {
		return info, nil, fmt.Errorf("snapshot the replayed state: %w", err)
	}
	data, err := encodeSnapshotPayload(state, book)
	if err != nil {
		return info, nil, err
	}
	newSnap := &raftpb.Snapshot{
		Data: data,
		Metadata: &raftpb.SnapshotMetadata{
			ConfState: &raftpb.ConfState{Voters: []uint64{opts.NodeID}, Learners: learners},
			Index:     new(info.LastIndex),
			Term:      new(info.LastTerm),
		},
	}
	hs := &raftpb.HardState{Term: new(max(info.Term, info.LastTerm)), Vote: new(uint64(0)), Commit: new(info.LastIndex)}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := putProto(tx.Bucket(bucketMeta), keySnapshot, newSnap); err != nil {
			return err
		}
		if err := putProto(tx.Bucket(bucketMeta), keyHardState, hs); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketEntries); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bucketEntries)
		return err
	})
	if err != nil {
		return info, nil, fmt.Errorf("rewrite %s: %w", path, err)
	}
	return info, book, nil
}

// logMeta is the meta bucket of a log.
type logMeta struct {
	clusterName string
	nodeID      string
	hardState   *raftpb.HardState
	snapshot    *raftpb.Snapshot
}

// readLog reads the meta bucket and the entries in a read transaction.
func readLog(tx *bolt.Tx) (logMeta, []*raftpb.Entry, error) {
	m := logMeta{snapshot: &raftpb.Snapshot{}}
	meta, ents := tx.Bucket(bucketMeta), tx.Bucket(bucketEntries)
	if meta == nil || ents == nil {
		return m, nil, nil
	}
	m.clusterName, m.nodeID = string(meta.Get(keyClusterName)), string(meta.Get(keyNodeID))
	if b := meta.Get(keyHardState); b != nil {
		m.hardState = &raftpb.HardState{}
		if err := proto.Unmarshal(b, m.hardState); err != nil {
			return m, nil, fmt.Errorf("decode hard state: %w", err)
		}
	}
	if b := meta.Get(keySnapshot); b != nil {
		if err := proto.Unmarshal(b, m.snapshot); err != nil {
			return m, nil, fmt.Errorf("decode snapshot: %w", err)
		}
	}
	var entries []*raftpb.Entry
	err := ents.ForEach(func(k, v []byte) error {
		e := &raftpb.Entry{}
		if err := proto.Unmarshal(v, e); err != nil {
			return fmt.Errorf("decode entry %x: %w", k, err)
		}
		entries = append(entries, e)
		return nil
	})
	return m, entries, err
}

// replayMembers follows the membership through the conf changes of a log.
type replayMembers struct {
	voters, learners map[uint64]bool
}

// apply replays one entry: a normal entry into the state machine, a conf
// change into the membership and the address book (as the Raft loop does).
func (m replayMembers) apply(e *raftpb.Entry, sm StateMachine, book *addressBook) error {
	switch e.GetType() {
	case raftpb.EntryNormal:
		if len(e.GetData()) == 0 {
			return nil
		}
		_, payload, err := decodeEnvelope(e.GetData())
		if err != nil {
			return nil // skipped on every node alike
		}
		_, _ = sm.Apply(e.GetIndex(), payload) // a rejected command is rejected on every node alike
		return nil
	case raftpb.EntryConfChange, raftpb.EntryConfChangeV2:
		var cc raftpb.ConfChangeI
		if e.GetType() == raftpb.EntryConfChange {
			v1 := &raftpb.ConfChange{}
			if err := proto.Unmarshal(e.GetData(), v1); err != nil {
				return fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
			}
			cc = v1
		} else {
			v2 := &raftpb.ConfChangeV2{}
			if err := proto.Unmarshal(e.GetData(), v2); err != nil {
				return fmt.Errorf("decode conf change at %d: %w", e.GetIndex(), err)
			}
			cc = v2
		}
		v2 := cc.AsV2()
		ctx, _ := decodeConfChangeContext(v2.GetContext())
		for _, ch := range v2.GetChanges() {
			id := ch.GetNodeId()
			switch ch.GetType() {
			case raftpb.ConfChangeAddNode, raftpb.ConfChangeAddLearnerNode:
				if book.isRemoved(id) {
					continue // refused by the Raft loop too
				}
				voter := ch.GetType() == raftpb.ConfChangeAddNode
				m.voters[id], m.learners[id] = voter, !voter
				if len(v2.GetChanges()) == 1 {
					book.set(id, ctx.Addr)
				}
			case raftpb.ConfChangeRemoveNode:
				delete(m.voters, id)
				delete(m.learners, id)
				book.markRemoved(id)
			}
		}
	}
	return nil
}

func (m replayMembers) sorted() (voters, learners []uint64) {
	for id, ok := range m.voters {
		if ok {
			voters = append(voters, id)
		}
	}
	for id, ok := range m.learners {
		if ok {
			learners = append(learners, id)
		}
	}
	slices.Sort(voters)
	slices.Sort(learners)
	return voters, learners
}
