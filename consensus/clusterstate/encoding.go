package clusterstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxCommandBytes bounds an encoded command; Decode refuses longer input.
const MaxCommandBytes = 1 << 20

// MaxSnapshotBytes bounds an encoded snapshot; Restore refuses longer input.
const MaxSnapshotBytes = 64 << 20

// wireCommand is the JSON form of a Command:
//
//	{"version":1,"type":"begin_failover","begin_failover":{...}}
//
// version is the command version of the type (CommandVersion, versions.go).
type wireCommand struct {
	Version  uint32      `json:"version"`
	TypeName CommandType `json:"type"`
	Command
}

// wireVersion is read first, leniently: a newer version may have fields this
// build does not know.
type wireVersion struct {
	Version uint32 `json:"version"`
}

// Encode returns the JSON encoding of c, which must hold exactly one command.
func Encode(c Command) ([]byte, error) {
	t, err := c.Type()
	if err != nil {
		return nil, fmt.Errorf("encode command: %w", err)
	}
	data, err := json.Marshal(wireCommand{Version: CommandVersion(t), TypeName: t, Command: c})
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", t, err)
	}
	return data, nil
}

// Decode parses an encoded command. It returns an error, never panics, for anything
// but exactly one JSON object with no unknown fields, exactly one payload matching
// its "type", and the version of that type. A command of a version above MaxVersion
// (or a RaiseClusterVersion beyond it) is an *UnsupportedVersionError: this build
// must stop applying, not skip it. Decode does not check that the command makes
// sense; Apply does that against the state.
func Decode(data []byte) (Command, error) {
	if len(data) > MaxCommandBytes {
		return Command{}, fmt.Errorf("decode command: %d bytes exceeds the limit of %d", len(data), MaxCommandBytes)
	}
	var v wireVersion
	if err := json.Unmarshal(data, &v); err == nil && v.Version > MaxVersion {
		return Command{}, &UnsupportedVersionError{Version: v.Version, What: "command"}
	}
	var w wireCommand
	if err := decodeStrict(data, &w); err != nil {
		return Command{}, fmt.Errorf("decode command: %w", err)
	}
	t, err := w.Command.Type()
	if err != nil {
		return Command{}, fmt.Errorf("decode command: %w", err)
	}
	if t != w.TypeName {
		return Command{}, fmt.Errorf("decode command: type %q but payload is %s", w.TypeName, t)
	}
	if want := CommandVersion(t); w.Version != want {
		return Command{}, fmt.Errorf("decode command: %s is a version %d command, the entry says version %d", t, want, w.Version)
	}
	if r := w.RaiseClusterVersion; r != nil && r.Version > MaxVersion {
		return Command{}, &UnsupportedVersionError{Version: r.Version, What: "cluster version"}
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

// wireSnapshot is the JSON form of a Machine snapshot. Its version is the
// state's agreed cluster version: a snapshot never holds what the cluster has
// not agreed to understand.
type wireSnapshot struct {
	Version      uint32 `json:"version"`
	AppliedIndex uint64 `json:"applied_index"`
	State        State  `json:"state"`
}

func encodeSnapshot(appliedIndex uint64, s State) ([]byte, error) {
	data, err := json.Marshal(wireSnapshot{Version: s.AgreedVersion(), AppliedIndex: appliedIndex, State: s})
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	return data, nil
}

func decodeSnapshot(data []byte) (appliedIndex uint64, s State, err error) {
	if len(data) > MaxSnapshotBytes {
		return 0, State{}, fmt.Errorf("decode snapshot: %d bytes exceeds the limit of %d", len(data), MaxSnapshotBytes)
	}
	var v wireVersion
	if err := json.Unmarshal(data, &v); err == nil && v.Version > MaxVersion {
		return 0, State{}, &UnsupportedVersionError{Version: v.Version, What: "snapshot"}
	}
	var w wireSnapshot
	if err := decodeStrict(data, &w); err != nil {
		return 0, State{}, fmt.Errorf("decode snapshot: %w", err)
	}
	if w.Version != w.State.AgreedVersion() {
		return 0, State{}, fmt.Errorf("decode snapshot: version %d but the state's cluster version is %d", w.Version, w.State.AgreedVersion())
	}
	if err := w.State.Validate(); err != nil {
		return 0, State{}, fmt.Errorf("decode snapshot: %w", err)
	}
	return w.AppliedIndex, w.State, nil
}
