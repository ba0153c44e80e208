package clusterstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Version is the encoding version of commands and snapshots. Decode and Restore
// refuse any other version, so a node never half-understands a newer command.
const Version = 1

// MaxCommandBytes bounds an encoded command; Decode refuses longer input.
const MaxCommandBytes = 1 << 20

// MaxSnapshotBytes bounds an encoded snapshot; Restore refuses longer input.
const MaxSnapshotBytes = 64 << 20

// wireCommand is the JSON form of a Command:
//
//	{"version":1,"type":"begin_failover","begin_failover":{...}}
type wireCommand struct {
	Version  int         `json:"version"`
	TypeName CommandType `json:"type"`
	Command
}

// Encode returns the JSON encoding of c, which must hold exactly one command.
func Encode(c Command) ([]byte, error) {
	t, err := c.Type()
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	data, err := json.Marshal(wireCommand{Version: Version, TypeName: t, Command: c})
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", t, err)
	}
	return data, nil
}

// Decode parses an encoded command. It returns an error, never panics, for anything
// but exactly one JSON object of the current Version with no unknown fields and
// exactly one payload matching its "type". It does not check that the command makes
// sense; Apply does that against the state.
func Decode(data []byte) (Command, error) {
	if len(data) > MaxCommandBytes {
		return Command{}, fmt.Errorf("decode command: %d bytes exceeds the limit of %d", len(data), MaxCommandBytes)
	}
	var w wireCommand
	if err := decodeStrict(data, &w); err != nil {
		return Command{}, fmt.Errorf("decode command: %w", err)
	}
	if w.Version != Version {
		return Command{}, fmt.Errorf("decode command: version %d, want %d", w.Version, Version)
	}
	t, err := w.Command.Type()
	if err != nil {
		return Command{}, fmt.Errorf("decode command: %w", err)
	}
	if t != w.TypeName {
		return Command{}, fmt.Errorf("decode command: type %q but payload is %s", w.TypeName, t)
	}
	return w.Command, nil
}

// decodeStrict decodes exactly one JSON value into v, refusing unknown fields and
// trailing data.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

// encodeResult is what Machine.Apply returns to the proposer.
func encodeResult(r Result) []byte {
	data, err := json.Marshal(r)
	if err != nil { // a Result holds only strings and integers
		panic(fmt.Sprintf("clusterstate: encode result: %v", err))
	}
	return data
}

// DecodeResult parses the result bytes that Machine.Apply returned (what the proposer
// gets back from consensus.Node.Propose).
func DecodeResult(data []byte) (Result, error) {
	var r Result
	if err := decodeStrict(data, &r); err != nil {
		return Result{}, fmt.Errorf("decode result: %w", err)
	}
	switch r.Code {
	case Applied, Duplicate, Stale, Rejected:
		return r, nil
	default:
		return Result{}, fmt.Errorf("decode result: unknown code %q", r.Code)
	}
}

// wireSnapshot is the JSON form of a Machine snapshot.
type wireSnapshot struct {
	Version      int    `json:"version"`
	AppliedIndex uint64 `json:"applied_index"`
	State        State  `json:"state"`
}

func encodeSnapshot(appliedIndex uint64, s State) ([]byte, error) {
	data, err := json.Marshal(wireSnapshot{Version: Version, AppliedIndex: appliedIndex, State: s})
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	return data, nil
}

func decodeSnapshot(data []byte) (appliedIndex uint64, s State, err error) {
	if len(data) > MaxSnapshotBytes {
		return 0, State{}, fmt.Errorf("decode snapshot: %d bytes exceeds the limit of %d", len(data), MaxSnapshotBytes)
	}
	var w wireSnapshot
	if err := decodeStrict(data, &w); err != nil {
		return 0, State{}, fmt.Errorf("decode snapshot: %w", err)
	}
	if w.Version != Version {
		return 0, State{}, fmt.Errorf("decode snapshot: version %d, want %d", w.Version, Version)
	}
	if err := w.State.Validate(); err != nil {
		return 0, State{}, fmt.Errorf("decode snapshot: %w", err)
	}
	return w.AppliedIndex, w.State, nil
}
