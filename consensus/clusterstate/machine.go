package clusterstate

import (
	"errors"
	"fmt"
	"sync"
)

// Machine adapts State to package consensus's StateMachine interface (Apply, Snapshot,
// Restore), without importing it.
//
// Ownership: the consensus apply loop is the only writer (Apply, Restore); any
// goroutine may read through State, AppliedIndex and Snapshot. A mutex guards the
// current state; readers get deep copies, so nothing they do can reach the machine.
// The zero Machine is not usable; call NewMachine.
type Machine struct {
	mu      sync.RWMutex
	state   State  // replaced, never modified in place (Apply is copy-on-write)
	applied uint64 // index of the last entry applied, 0 before any
}

// NewMachine returns a machine holding the empty (not bootstrapped) state.
func NewMachine() *Machine { return &Machine{} }

// Apply decodes one committed log entry and applies it. It returns the JSON-encoded
// Result (see DecodeResult) for the proposer. err is non-nil when data is not a
// valid command; the state is then unchanged on every node alike. An
// *UnsupportedVersionError is different: the entry is valid but needs a newer
// pgquorum, so the entry is not counted as applied and the caller must stop
// applying (its HaltApply method says so).
//
// An entry whose non-zero index is not above the last applied index (a replay after
// a snapshot that already contains it) is not applied again; the result is Stale.
// Index 0 means "unindexed" and is always applied.
func (m *Machine) Apply(index uint64, data []byte) (result []byte, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if index != 0 && index <= m.applied {
		return encodeResult(Result{
			Code:   Stale,
			Reason: fmt.Sprintf("entry %d already applied (applied index %d)", index, m.applied),
			Epoch:  m.state.Epoch,
		}), nil
	}
	cmd, err := Decode(data)
	var unsupported *UnsupportedVersionError
	if errors.As(err, &unsupported) {
		return nil, fmt.Errorf("entry %d: %w", index, err) // not applied: this node stops here
	}
	if index != 0 {
		m.applied = index // an undecodable entry counts as handled too
	}
	if err != nil {
		return nil, fmt.Errorf("entry %d: %w", index, err)
	}
	next, res := Apply(m.state, cmd)
	m.state = next
	return encodeResult(res), nil
}

// Snapshot returns the state and applied index as JSON (versioned), suitable for
// Restore on any node.
func (m *Machine) Snapshot() ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return encodeSnapshot(m.applied, m.state)
}

// Restore replaces the state with a snapshot made by Snapshot. Empty data (Raft's
// empty initial snapshot) resets to the empty state. Invalid data returns an error and
// leaves the state unchanged.
func (m *Machine) Restore(data []byte) error {
	var applied uint64
	var s State
	if len(data) > 0 {
		var err error
		applied, s, err = decodeSnapshot(data)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state, m.applied = s, applied
	return nil
}

// State returns a deep copy of the current state, safe to use from any goroutine.
func (m *Machine) State() State {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.Clone()
}

// AgreedVersion returns the cluster version (State.AgreedVersion) without
// copying the state.
func (m *Machine) AgreedVersion() uint32 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.AgreedVersion()
}

// AppliedIndex returns the index of the last log entry applied (or restored).
func (m *Machine) AppliedIndex() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.applied
}
