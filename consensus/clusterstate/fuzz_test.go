package clusterstate

import (
	"bytes"
	"encoding/json"
	"sort"
	"testing"
)

// FuzzDecodeApply decodes arbitrary bytes and, when they decode, applies the command
// to every fixture state. It must never panic, never mutate the input state, keep
// every invariant, change nothing unless it reports Applied, and produce a state whose
// snapshot restores to the same bytes. The seed corpus (every sample command plus
// near-misses) runs in every plain `go test`; run
// `go test -fuzz=FuzzDecodeApply ./consensus/clusterstate/` to explore further.
func FuzzDecodeApply(f *testing.F) {
	for _, c := range sampleCommands() {
		data, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, seed := range []string{
		``, `null`, `{}`, `[]`, `{"version":1}`,
		`{"version":1,"type":"bootstrap","bootstrap":{"primary":"a","nodes":[{"name":"a"},{"name":"a"}]}}`,
		`{"version":1,"type":"report_health","report_health":{"node":"pg1","observation":{"proxy":1,"at":"0000-01-01T00:30:00+01:00"}}}`,
		`{"version":1,"type":"report_health","report_health":{"node":"pg1","observation":{"proxy":1,"at":"9999-12-31T23:59:59-01:00"}}}`,
		`{"version":1,"type":"begin_failover","begin_failover":{"expect_epoch":18446744073709551615,"old_primary":"pg1","kind":"manual","at":"2025-01-01T00:00:00Z"}}`,
		`{"version":1,"type":"record_step","record_step":{"expect_epoch":2,"step":"freeze","detail":"\ud800 broken surrogate","at":"2025-01-01T00:00:00Z"}}`,
		`{"version":1,"type":"record_step","record_step":{"expect_epoch":2,"step":"freeze","lsn_table":[{"node":"pg2"},{"node":"pg2"}],"at":"2025-01-01T00:00:00Z"}}`,
	} {
		f.Add([]byte(seed))
	}

	states := fixtureStates(f)
	names := make([]string, 0, len(states))
	for name := range states {
		names = append(names, name)
	}
	sort.Strings(names)
	encoded := make(map[string][]byte, len(states))
	for _, name := range names {
		encoded[name] = mustMarshal(f, states[name])
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		m := NewMachine()
		_, _ = m.Apply(1, data) // never panics, whatever the bytes

		c, err := Decode(data)
		if err != nil {
			return
		}
		if _, err := Encode(c); err != nil {
			t.Fatalf("decoded command does not encode: %v", err)
		}
		for _, name := range names {
			s := states[name]
			next, res := Apply(s, c)
			if !bytes.Equal(mustMarshal(t, s), encoded[name]) {
				t.Fatalf("%s: Apply mutated its input", name)
			}
			if err := next.Validate(); err != nil {
				t.Fatalf("%s: invariant broken by %s: %v", name, data, err)
			}
			nextBytes := mustMarshal(t, next)
			if res.Code != Applied && !bytes.Equal(nextBytes, encoded[name]) {
				t.Fatalf("%s: %s but the state changed", name, res.Code)
			}
			snap, err := encodeSnapshot(1, next)
			if err != nil {
				t.Fatalf("%s: snapshot: %v", name, err)
			}
			_, restored, err := decodeSnapshot(snap)
			if err != nil {
				t.Fatalf("%s: restore of own snapshot: %v", name, err)
			}
			if !bytes.Equal(mustMarshal(t, restored), nextBytes) {
				t.Fatalf("%s: restored state encodes differently", name)
			}
		}
	})
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
