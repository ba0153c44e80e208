package consensus

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// proposalID names one proposal: the proposing node and its sequence number.
// The proposer keeps a waiter under the sequence number, so the result of
// StateMachine.Apply reaches the caller of Propose on that node.
type proposalID struct {
	Proposer uint64
	Seq      uint64
}

// Normal entries carry an envelope:
//
//	byte 0      envelopeVersion
//	bytes 1-8   proposer node id, big endian
//	bytes 9-16  proposer sequence number, big endian
//	bytes 17-   the payload handed to StateMachine.Apply
const (
	envelopeVersion    = 1
	envelopeHeaderSize = 17
)

// encodeEnvelope wraps payload with its proposal id.
func encodeEnvelope(id proposalID, payload []byte) []byte {
	buf := make([]byte, envelopeHeaderSize+len(payload))
	buf[0] = envelopeVersion
	binary.BigEndian.PutUint64(buf[1:9], id.Proposer)
	binary.BigEndian.PutUint64(buf[9:17], id.Seq)
	copy(buf[envelopeHeaderSize:], payload)
	return buf
}

// decodeEnvelope splits an entry into its proposal id and payload. The payload
// aliases data.
func decodeEnvelope(data []byte) (proposalID, []byte, error) {
	if len(data) < envelopeHeaderSize {
		return proposalID{}, nil, fmt.Errorf("entry of %d bytes is shorter than the %d-byte envelope header", len(data), envelopeHeaderSize)
	}
	if data[0] != envelopeVersion {
		return proposalID{}, nil, fmt.Errorf("unknown envelope version %d", data[0])
	}
	id := proposalID{
		Proposer: binary.BigEndian.Uint64(data[1:9]),
		Seq:      binary.BigEndian.Uint64(data[9:17]),
	}
	return id, data[envelopeHeaderSize:], nil
}

// confChangeContext is the Context of every conf change this package
// proposes: the member's raft address (for additions) and, for changes asked
// for through AddMember/RemoveMember/Join, the proposal id of the waiter. A
// change that adds several learners at once (membership.go) lists each one's
// address and waiter in Added instead, in the order of the changes.
type confChangeContext struct {
	Addr     string        `json:"addr,omitempty"`
	Proposer uint64        `json:"proposer,omitempty"`
	Seq      uint64        `json:"seq,omitempty"`
	Added    []addedMember `json:"added,omitempty"`
}

// addedMember is one learner of a batched addition.
type addedMember struct {
	Addr string `json:"addr,omitempty"`
	Seq  uint64 `json:"seq,omitempty"`
}

// addr returns the address of the i-th of count changes.
func (c confChangeContext) addr(i, count int) string {
	if count == 1 {
		return c.Addr
	}
	if i < len(c.Added) {
		return c.Added[i].Addr
	}
	return ""
}

// seqs returns the waiters the change answers, in the order of the changes.
func (c confChangeContext) seqs() []uint64 {
	if len(c.Added) == 0 {
		return []uint64{c.Seq}
	}
	seqs := make([]uint64, len(c.Added))
	for i, a := range c.Added {
		seqs[i] = a.Seq
	}
	return seqs
}

func encodeConfChangeContext(c confChangeContext) []byte {
	b, err := json.Marshal(c)
	if err != nil {
		// A struct of strings and integers always marshals.
		panic(fmt.Sprintf("consensus: marshal conf change context: %v", err))
	}
	return b
}

// decodeConfChangeContext reads a context; an empty one is valid (no address,
// no waiter).
func decodeConfChangeContext(b []byte) (confChangeContext, error) {
	var c confChangeContext
	if len(b) == 0 {
		return c, nil
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return confChangeContext{}, fmt.Errorf("decode conf change context: %w", err)
	}
	return c, nil
}
