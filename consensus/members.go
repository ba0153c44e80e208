package consensus

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Member is one member of the cluster as this node sees it.
type Member struct {
	ID    uint64
	Addr  string
	Voter bool // false = learner
	// Reachable: this node received a Raft message from the member within the
	// last election timeout (always true for itself), as of the last refresh
	// of Members (at most membersRefreshTicks old). The leader hears from
	// every member; a follower usually hears only from the leader.
	Reachable bool
	// LastHeard is when this node last received a Raft message from the
	// member; zero if never since this node started (and for itself). Only
	// the leader hears from every member.
	LastHeard time.Time
}

// addressBook maps member ids to raft addresses and remembers removed ids.
// It is replicated state: it changes only when the Raft loop applies a conf
// change or installs a snapshot, so every node derives the same book from the
// same log. Config.Peers only fill in addresses that are missing. Owner: the
// Raft loop.
type addressBook struct {
	addrs   map[uint64]string
	removed map[uint64]bool
}

func newAddressBook() *addressBook {
	return &addressBook{addrs: make(map[uint64]string), removed: make(map[uint64]bool)}
}

// set records addr for id (an empty addr keeps the known one).
func (b *addressBook) set(id uint64, addr string) {
	if addr != "" {
		b.addrs[id] = addr
	}
}

// setIfMissing records addr for id only when no address is known.
func (b *addressBook) setIfMissing(id uint64, addr string) {
	if _, ok := b.addrs[id]; !ok && addr != "" {
		b.addrs[id] = addr
	}
}

// markRemoved remembers that id left the cluster. The address is kept so the
// node can still be told it was removed.
func (b *addressBook) markRemoved(id uint64) { b.removed[id] = true }

func (b *addressBook) isRemoved(id uint64) bool { return b.removed[id] }

func (b *addressBook) addr(id uint64) string { return b.addrs[id] }

// snapshotMember is one address book entry inside a snapshot.
type snapshotMember struct {
	ID      uint64 `json:"id"`
	Addr    string `json:"addr,omitempty"`
	Removed bool   `json:"removed,omitempty"`
}

// snapshotPayload is the Data of every raft snapshot this package writes: the
// state machine's snapshot plus the address book.
type snapshotPayload struct {
	Version int              `json:"version"`
	Members []snapshotMember `json:"members"`
	State   []byte           `json:"state"`
}

const snapshotPayloadVersion = 1

// encodeSnapshotPayload serializes the state machine snapshot and the book.
func encodeSnapshotPayload(state []byte, b *addressBook) ([]byte, error) {
	p := snapshotPayload{Version: snapshotPayloadVersion, State: state}
	ids := make([]uint64, 0, len(b.addrs)+len(b.removed))
	for id := range b.addrs {
		ids = append(ids, id)
	}
	for id := range b.removed {
		if _, ok := b.addrs[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		p.Members = append(p.Members, snapshotMember{ID: id, Addr: b.addrs[id], Removed: b.removed[id]})
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot payload: %w", err)
	}
	return data, nil
}

// decodeSnapshotPayload is the inverse of encodeSnapshotPayload.
func decodeSnapshotPayload(data []byte) (state []byte, book *addressBook, err error) {
	var p snapshotPayload
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, nil, fmt.Errorf("decode snapshot payload: %w", err)
	}
	if p.Version != snapshotPayloadVersion {
		return nil, nil, fmt.Errorf("decode snapshot payload: unknown version %d", p.Version)
	}
	book = newAddressBook()
	for _, m := range p.Members {
		book.set(m.ID, m.Addr)
		if m.Removed {
			book.markRemoved(m.ID)
		}
	}
	return p.State, book, nil
}
