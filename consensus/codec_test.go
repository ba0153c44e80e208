package consensus

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEnvelopeRoundTripAndRejects(t *testing.T) {
	id := proposalID{Proposer: 7, Seq: 1<<32 | 5}
	for _, payload := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 1000)} {
		gotID, got, err := decodeEnvelope(encodeEnvelope(id, payload))
		if err != nil || gotID != id || !bytes.Equal(got, payload) {
			t.Fatalf("round trip of %d bytes: id %v payload %d bytes err %v", len(payload), gotID, len(got), err)
		}
	}
	bad := []struct {
		name string
		data []byte
	}{
		{"too short", []byte{envelopeVersion, 1, 2}},
		{"unknown version", append([]byte{9}, make([]byte, 20)...)},
	}
	for _, tc := range bad {
		if _, _, err := decodeEnvelope(tc.data); err == nil {
			t.Errorf("%s: decoded without error", tc.name)
		}
	}
}

func TestConfChangeContextRoundTrip(t *testing.T) {
	for _, in := range []confChangeContext{
		{Addr: "10.0.0.1:7001", Proposer: 3, Seq: 9},
		{Proposer: 3, Added: []addedMember{{Addr: "10.0.0.2:7001", Seq: 10}, {Addr: "10.0.0.3:7001", Seq: 11}}},
	} {
		out, err := decodeConfChangeContext(encodeConfChangeContext(in))
		if err != nil || !reflect.DeepEqual(out, in) {
			t.Fatalf("got %+v, %v; want %+v", out, err, in)
		}
	}
	if out, err := decodeConfChangeContext(nil); err != nil || !reflect.DeepEqual(out, confChangeContext{}) {
		t.Fatalf("empty context: %+v, %v", out, err)
	}
	if _, err := decodeConfChangeContext([]byte("{")); err == nil {
		t.Fatal("garbage context decoded")
	}
	batch := confChangeContext{Proposer: 3, Added: []addedMember{{Addr: "a", Seq: 10}, {Addr: "b", Seq: 11}}}
	if got := batch.addr(1, 2); got != "b" {
		t.Errorf("address of the second learner of a batch: %q", got)
	}
	if got := batch.seqs(); !slices.Equal(got, []uint64{10, 11}) {
		t.Errorf("waiters of a batch: %v", got)
	}
	single := confChangeContext{Addr: "a", Seq: 9}
	if got := single.addr(0, 1); got != "a" || !slices.Equal(single.seqs(), []uint64{9}) {
		t.Errorf("single change: address %q, waiters %v", got, single.seqs())
	}
}

func TestSnapshotPayloadCarriesStateAndAddressBook(t *testing.T) {
	book := newAddressBook()
	book.set(1, "a:1")
	book.set(2, "b:2")
	book.markRemoved(2)
	book.markRemoved(9) // removed without a known address
	data, err := encodeSnapshotPayload([]byte("state"), book)
	if err != nil {
		t.Fatal(err)
	}
	state, got, err := decodeSnapshotPayload(data)
	if err != nil {
		t.Fatal(err)
	}
	if string(state) != "state" || got.addr(1) != "a:1" || got.addr(2) != "b:2" ||
		got.isRemoved(1) || !got.isRemoved(2) || !got.isRemoved(9) {
		t.Fatalf("decoded state %q book %+v", state, got)
	}
	if _, _, err := decodeSnapshotPayload([]byte(`{"version":99}`)); err == nil {
		t.Fatal("unknown version decoded")
	}
}

func TestLeaseTracker(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	const d = 100 * time.Millisecond
	type step struct {
		op      string // request, answer, applied, prune
		at      int    // ms, for request and prune
		req     int    // which request (1-based), for answer
		index   uint64 // for answer
		applied uint64 // for answer and applied
	}
	cases := []struct {
		name      string
		steps     []step
		wantUntil int // ms; -1 = no lease
	}{
		{"no answer, no lease", []step{{op: "request", at: 0}}, -1},
		{"answer already applied", []step{
			{op: "request", at: 10}, {op: "answer", req: 1, index: 5, applied: 5},
		}, 110},
		{"answer waits for apply", []step{
			{op: "request", at: 10}, {op: "answer", req: 1, index: 8, applied: 5},
		}, -1},
		{"answer confirmed by a later apply", []step{
			{op: "request", at: 10}, {op: "answer", req: 1, index: 8, applied: 5}, {op: "applied", applied: 8},
		}, 110},
		{"lease runs from the send time, not the answer time", []step{
			{op: "request", at: 10}, {op: "request", at: 50}, {op: "answer", req: 1, index: 1, applied: 1},
		}, 110},
		{"an older answer never shortens the lease", []step{
			{op: "request", at: 10}, {op: "request", at: 50},
			{op: "answer", req: 2, index: 1, applied: 1}, {op: "answer", req: 1, index: 1, applied: 1},
		}, 150},
		{"pruned requests cannot extend", []step{
			{op: "request", at: 0}, {op: "prune", at: 100}, {op: "answer", req: 1, index: 1, applied: 1},
		}, -1},
		{"unknown context ignored", []step{{op: "answer", req: 42, index: 1, applied: 1}}, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newLeaseTracker(d)
			var ctxs [][]byte
			for _, s := range tc.steps {
				switch s.op {
				case "request":
					ctxs = append(ctxs, l.request(at(s.at), 0))
				case "answer":
					ctx := binary.BigEndian.AppendUint64(nil, uint64(s.req))
					ctx = binary.BigEndian.AppendUint64(ctx, 0)
					if s.req <= len(ctxs) {
						ctx = ctxs[s.req-1]
					}
					l.answer(ctx, s.index, s.applied)
				case "applied":
					l.applied(s.applied)
				case "prune":
					l.prune(at(s.at))
				}
			}
			if tc.wantUntil < 0 {
				if !l.validUntil.IsZero() {
					t.Fatalf("lease until %v, want none", l.validUntil.Sub(base))
				}
				return
			}
			if want := at(tc.wantUntil); !l.validUntil.Equal(want) {
				t.Fatalf("lease until %v, want %v", l.validUntil.Sub(base), want.Sub(base))
			}
			if !l.valid(at(tc.wantUntil-1)) || l.valid(at(tc.wantUntil)) {
				t.Fatal("valid() disagrees with validUntil")
			}
		})
	}
}

func TestFramesRoundTripAndRejectBadLengths(t *testing.T) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	frames := []struct {
		kind    byte
		payload []byte
	}{
		{frameRaft, []byte("hello")},
		{frameRemoved, nil},
		{frameJoin, encodeJoin(JoinRequest{NodeID: 4, Addr: "h:1", Forwarded: true})},
		{frameRaft, bytes.Repeat([]byte{7}, keptBufferSize+10)}, // larger than the kept buffer
	}
	for _, f := range frames {
		if err := writeFrame(w, f.kind, f.payload); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(&buf)
	var scratch []byte
	for i, f := range frames {
		kind, payload, next, err := readFrame(r, scratch)
		scratch = next
		if err != nil || kind != f.kind || !bytes.Equal(payload, f.payload) {
			t.Fatalf("frame %d: kind %d, %d bytes, err %v", i, kind, len(payload), err)
		}
	}
	if _, _, _, err := readFrame(r, scratch); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
	if req, err := decodeJoin(frames[2].payload); err != nil || req != (JoinRequest{NodeID: 4, Addr: "h:1", Forwarded: true}) {
		t.Fatalf("join decoded as %+v, %v", req, err)
	}

	bad := []struct {
		name  string
		input []byte
	}{
		{"zero length", []byte{0, 0, 0, 0, 1}},
		{"oversized length", []byte{0xff, 0xff, 0xff, 0xff, 1}},
		{"truncated payload", []byte{0, 0, 0, 10, 1, 'a'}},
		{"truncated header", []byte{0, 0}},
	}
	for _, tc := range bad {
		if _, _, _, err := readFrame(bufio.NewReader(bytes.NewReader(tc.input)), nil); err == nil {
			t.Errorf("%s: read without error", tc.name)
		}
	}
	for _, b := range [][]byte{{1, 2}, {0, 0, 0, 0, 0, 0, 0, 1, 7}} {
		if _, err := decodeJoin(b); err == nil {
			t.Errorf("malformed join %v decoded", b)
		}
	}
}

func TestHandshakeRoundTripAndRejects(t *testing.T) {
	var buf bytes.Buffer
	in := handshake{ClusterName: "demo", NodeID: 12, Addr: "127.0.0.1:7001"}
	if err := writeHandshake(&buf, in); err != nil {
		t.Fatal(err)
	}
	out, err := readHandshake(&buf)
	if err != nil || out != in {
		t.Fatalf("got %+v, %v", out, err)
	}
	if err := writeHandshake(io.Discard, handshake{ClusterName: strings.Repeat("x", maxFieldSize+1)}); err == nil {
		t.Error("oversized cluster name written")
	}
	bad := []struct {
		name  string
		input []byte
	}{
		{"bad magic", []byte("HTTP/1.1 200 OK\r\n\r\n")},
		{"bad version", append([]byte(protocolMagic), 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0)},
		{"field too long", append([]byte(protocolMagic), protocolVersion, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff)},
		{"truncated", []byte(protocolMagic)},
	}
	for _, tc := range bad {
		if _, err := readHandshake(bytes.NewReader(tc.input)); err == nil {
			t.Errorf("%s: read without error", tc.name)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	valid := func() Config {
		return Config{
			ClusterName:  "c",
			NodeID:       1,
			DataDir:      "/tmp/x",
			Voter:        true,
			Peers:        []Peer{{ID: 1, Addr: "a:1"}, {ID: 2, Addr: "b:2"}},
			StateMachine: &kvMachine{},
		}
	}
	cases := []struct {
		name   string
		change func(*Config)
		want   string // "" = valid
	}{
		{"valid voter", func(*Config) {}, ""},
		{"valid learner", func(c *Config) { c.NodeID = 3; c.Voter = false }, ""},
		{"single-node cluster", func(c *Config) { c.Peers = c.Peers[:1] }, ""},
		{"no cluster name", func(c *Config) { c.ClusterName = "" }, "cluster name"},
		{"zero node id", func(c *Config) { c.NodeID = 0 }, "node id"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data dir"},
		{"no state machine", func(c *Config) { c.StateMachine = nil }, "state machine"},
		{"voter not in peers", func(c *Config) { c.NodeID = 3 }, "must be listed"},
		{"learner in peers", func(c *Config) { c.Voter = false }, "must not be listed"},
		{"learner without peers", func(c *Config) { c.NodeID = 3; c.Voter = false; c.Peers = nil }, "at least one peer"},
		{"duplicate peer", func(c *Config) { c.Peers = append(c.Peers, Peer{ID: 2, Addr: "c:3"}) }, "twice"},
		{"peer without address", func(c *Config) { c.Peers[1].Addr = "" }, "no address"},
		{"zero peer id", func(c *Config) { c.Peers[1].ID = 0 }, "non-zero"},
		{"lease shorter than its renewal", func(c *Config) { c.TickInterval = 100 * time.Millisecond; c.LeaseDuration = 150 * time.Millisecond }, "lease duration"},
		{"election ticks too small", func(c *Config) { c.ElectionTicks = 1 }, "election ticks"},
	}
	for _, tc := range cases {
		cfg := valid()
		cfg.Peers = slices.Clone(cfg.Peers)
		tc.change(&cfg)
		err := cfg.withDefaults().validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
