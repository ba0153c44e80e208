package consensus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// diskStorage is the durable Raft log: bbolt on disk, mirrored into a
// raft.MemoryStorage that raft reads. Every write goes to bbolt first (one
// transaction, fsynced on commit) and to memory second, so memory never holds
// anything the disk does not. Owner: the Raft loop (raft itself reads mem from
// the same goroutine).
//
// Layout of DataDir/raft.db:
//
//	meta/cluster_name  the cluster this log belongs to
//	meta/node_id       the node this log belongs to (decimal)
//	meta/incarnation   how many times the log was opened (decimal)
//	meta/hard_state    raftpb.HardState
//	meta/snapshot      raftpb.Snapshot (metadata + payload), the latest one
//	entries/<index>    raftpb.Entry, key = 8-byte big-endian index
type diskStorage struct {
	db  *bolt.DB
	mem *raft.MemoryStorage
	// hasState is true when the file held a log at open time.
	hasState bool
	// snapshot is the latest snapshot (loaded or saved); never nil.
	snapshot *raftpb.Snapshot
	// incarnation counts the opens of this log (1 for the first). Proposal
	// sequence numbers start at incarnation<<32, so a proposal id is never
	// reused across restarts.
	incarnation uint64
}

const storageFileName = "raft.db"

// StorageFile is the path of a node's log in its DataDir.
func StorageFile(dataDir string) string { return filepath.Join(dataDir, storageFileName) }

var (
	bucketMeta     = []byte("meta")
	bucketEntries  = []byte("entries")
	keyClusterName = []byte("cluster_name")
	keyNodeID      = []byte("node_id")
	keyHardState   = []byte("hard_state")
	keySnapshot    = []byte("snapshot")
	keyIncarnation = []byte("incarnation")
)

// openDiskStorage opens (or creates) the log in dir and loads it into memory.
// It refuses a log that belongs to another cluster or node.
func openDiskStorage(dir, clusterName string, nodeID uint64) (*diskStorage, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dir, storageFileName)
	// As etcd does: the free page list is not written at every commit (it
	// is rebuilt when the file is opened), and kept as a map.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &diskStorage{db: db, mem: raft.NewMemoryStorage(), snapshot: &raftpb.Snapshot{}}
	if err := s.load(clusterName, nodeID); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return s, nil
}

// load checks the identity keys and reads snapshot, HardState and entries
// into memory.
func (s *diskStorage) load(clusterName string, nodeID uint64) error {
	var (
		hardState *raftpb.HardState
		entries   []*raftpb.Entry
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		ents, err := tx.CreateBucketIfNotExists(bucketEntries)
		if err != nil {
			return err
		}
		wantID := []byte(strconv.FormatUint(nodeID, 10))
		if got := meta.Get(keyClusterName); got != nil && string(got) != clusterName {
			return fmt.Errorf("data dir belongs to cluster %q, not %q", got, clusterName)
		}
		if got := meta.Get(keyNodeID); got != nil && string(got) != string(wantID) {
			return fmt.Errorf("data dir belongs to node %s, not %d", got, nodeID)
		}
		if err := meta.Put(keyClusterName, []byte(clusterName)); err != nil {
			return err
		}
		if err := meta.Put(keyNodeID, wantID); err != nil {
			return err
		}
		if b := meta.Get(keyIncarnation); b != nil {
			n, err := strconv.ParseUint(string(b), 10, 64)
			if err != nil {
				return fmt.Errorf("decode incarnation: %w", err)
			}
			s.incarnation = n
		}
		s.incarnation++
		if err := meta.Put(keyIncarnation, []byte(strconv.FormatUint(s.incarnation, 10))); err != nil {
			return err
		}
		if b := meta.Get(keyHardState); b != nil {
			hardState = &raftpb.HardState{}
			if err := proto.Unmarshal(b, hardState); err != nil {
				return fmt.Errorf("decode hard state: %w", err)
			}
		}
		if b := meta.Get(keySnapshot); b != nil {
			snap := &raftpb.Snapshot{}
			if err := proto.Unmarshal(b, snap); err != nil {
				return fmt.Errorf("decode snapshot: %w", err)
			}
			s.snapshot = snap
		}
		return ents.ForEach(func(k, v []byte) error {
			e := &raftpb.Entry{}
			if err := proto.Unmarshal(v, e); err != nil {
				return fmt.Errorf("decode entry %x: %w", k, err)
			}
			if n := len(entries); n > 0 && e.GetIndex() != entries[n-1].GetIndex()+1 {
				return fmt.Errorf("log has a gap: entry %d follows %d", e.GetIndex(), entries[n-1].GetIndex())
			}
			entries = append(entries, e)
			return nil
		})
	})
	if err != nil {
		return err
	}
	snapIndex := s.snapshot.GetMetadata().GetIndex()
	s.hasState = hardState != nil || snapIndex > 0 || len(entries) > 0
	if snapIndex > 0 {
		if err := s.mem.ApplySnapshot(s.snapshot); err != nil {
			return fmt.Errorf("install snapshot %d: %w", snapIndex, err)
		}
	}
	if hardState != nil {
		if err := s.mem.SetHardState(hardState); err != nil {
			return fmt.Errorf("set hard state: %w", err)
		}
	}
	if len(entries) > 0 {
		if first := entries[0].GetIndex(); first > snapIndex+1 {
			return fmt.Errorf("log starts at %d but the snapshot ends at %d", first, snapIndex)
		}
		if err := s.mem.Append(entries); err != nil {
			return fmt.Errorf("append entries: %w", err)
		}
	}
	return nil
}

// save durably writes what a Ready asks for: a received snapshot (which
// replaces the whole log), new entries (which replace any conflicting suffix)
// and the HardState. Then it mirrors the same into memory.
func (s *diskStorage) save(hardState *raftpb.HardState, entries []*raftpb.Entry, snap *raftpb.Snapshot) error {
	hasSnap := !raft.IsEmptySnap(snap)
	hasHardState := !raft.IsEmptyHardState(hardState)
	if !hasSnap && !hasHardState && len(entries) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if hasSnap {
			if err := putProto(meta, keySnapshot, snap); err != nil {
				return err
			}
			// A snapshot from the leader replaces the whole log.
			if err := tx.DeleteBucket(bucketEntries); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(bucketEntries); err != nil {
				return err
			}
		}
		if len(entries) > 0 {
			ents := tx.Bucket(bucketEntries)
			if err := deleteFrom(ents, entries[0].GetIndex()); err != nil {
				return err
			}
			for _, e := range entries {
				if err := putProto(ents, indexKey(e.GetIndex()), e); err != nil {
					return err
				}
			}
		}
		if hasHardState {
			if err := putProto(meta, keyHardState, hardState); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("persist raft state: %w", err)
	}
	if hasSnap {
		if err := s.mem.ApplySnapshot(snap); err != nil {
			return fmt.Errorf("install snapshot %d: %w", snap.GetMetadata().GetIndex(), err)
		}
		s.snapshot = snap
	}
	if err := s.mem.Append(entries); err != nil {
		return fmt.Errorf("append entries: %w", err)
	}
	if hasHardState {
		if err := s.mem.SetHardState(hardState); err != nil {
			return fmt.Errorf("set hard state: %w", err)
		}
	}
	return nil
}

// createSnapshot records a snapshot of the applied state at index and
// compacts the log up to compactIndex (entries after it stay, so a follower
// that lags a little catches up from the log instead of a snapshot).
func (s *diskStorage) createSnapshot(index uint64, confState *raftpb.ConfState, data []byte, compactIndex uint64) error {
	snap, err := s.mem.CreateSnapshot(index, confState, data)
	if err != nil {
		return fmt.Errorf("create snapshot at %d: %w", index, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := putProto(tx.Bucket(bucketMeta), keySnapshot, snap); err != nil {
			return err
		}
		return deleteThrough(tx.Bucket(bucketEntries), compactIndex)
	})
	if err != nil {
		return fmt.Errorf("persist snapshot at %d: %w", index, err)
	}
	s.snapshot = snap
	if compactIndex > 0 {
		if err := s.mem.Compact(compactIndex); err != nil && !errors.Is(err, raft.ErrCompacted) {
			return fmt.Errorf("compact log through %d: %w", compactIndex, err)
		}
	}
	return nil
}

func (s *diskStorage) close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close raft log: %w", err)
	}
	return nil
}

func indexKey(index uint64) []byte {
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, index)
	return k
}

func putProto(b *bolt.Bucket, key []byte, m proto.Message) error {
	v, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return b.Put(key, v)
}

// deleteFrom deletes every entry with index >= first.
func deleteFrom(b *bolt.Bucket, first uint64) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(indexKey(first)); k != nil; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	return deleteKeys(b, keys)
}

// deleteThrough deletes every entry with index <= last.
func deleteThrough(b *bolt.Bucket, last uint64) error {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) <= last; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	return deleteKeys(b, keys)
}

func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
