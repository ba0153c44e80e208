package proxy

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// FuzzRelaySplits checks the framing of both relays against the way bytes arrive: a stream
// forwarded in pieces, split at arbitrary byte boundaries, gives the same bytes on the other
// side, the same error (a protocol violation) and the same session facts as the stream
// forwarded in one piece. The seeds run in every `go test`; `go test -fuzz FuzzRelaySplits
// ./proxy` explores further.
func FuzzRelaySplits(f *testing.F) {
	q := func(sql string) []byte { return msg('Q', append([]byte(sql), 0)) }
	large := bytes.Repeat([]byte("x"), 3*streamThreshold)
	seeds := [][]byte{
		q("SELECT 1"),
		bytes.Join([][]byte{q("BEGIN"), q("SET search_path TO a"), q("COMMIT")}, nil),
		bytes.Join([][]byte{msg('P', []byte("s1\x00SELECT $1\x00\x00\x00")), msg('B', []byte("\x00s1\x00\x00\x00\x00\x00\x00\x00")),
			msg('E', []byte("\x00\x00\x00\x00\x00")), msg('S', nil)}, nil),
		q("SELECT '" + string(large) + "'"),
		append(msg('d', large), q("SELECT 2")...),
		bytes.Join([][]byte{msg('T', []byte{0, 0}), msg('D', []byte{0, 0}), msg('C', []byte("SELECT 1\x00")), msg('Z', []byte{'I'})}, nil),
		bytes.Join([][]byte{msg('S', []byte("TimeZone\x00UTC\x00")), msg('D', large), msg('Z', []byte{'T'})}, nil),
		append(q("SELECT 1"), 'Q', 0xff, 0xff, 0xff, 0xf0), // an invalid length after a valid message
	}
	for i, s := range seeds {
		f.Add(s, uint64(i))
	}
	f.Fuzz(func(t *testing.T, stream []byte, seed uint64) {
		for _, fromBackend := range []bool{false, true} {
			whole := relayStream(t, fromBackend, [][]byte{stream})
			rng := rand.New(rand.NewPCG(seed, uint64(len(stream))))
			var pieces [][]byte
			for rest := stream; len(rest) > 0; {
				n := 1 + rng.IntN(min(len(rest), 1+rng.IntN(64<<10)))
				pieces = append(pieces, rest[:n])
				rest = rest[n:]
			}
			split := relayStream(t, fromBackend, pieces)
			if !bytes.Equal(whole.out, split.out) {
				t.Fatalf("fromBackend=%v: %d bytes out in one piece, %d in %d pieces (differ)", fromBackend, len(whole.out), len(split.out), len(pieces))
			}
			if whole.facts != split.facts {
				t.Fatalf("fromBackend=%v: facts differ:\n whole %s\n split %s", fromBackend, whole.facts, split.facts)
			}
		}
	})
}

type relayOutcome struct {
	out   []byte
	facts string
}

// relayStream forwards pieces through a fresh relay of one direction the way the read loop
// does (kept bytes first, then what was read) and returns what it wrote and the session facts.
func relayStream(t *testing.T, fromBackend bool, pieces [][]byte) relayOutcome {
	srv := newTestServer(t, &fakeRouter{})
	s := newSession(srv, nil, nil)
	s.phase, s.txStatus = phaseRouted, 'I'
	dst := &captureConn{}
	r := newRelay(s, nil, dst, fromBackend, nil)
	var err error
	buf := make([]byte, relayBufferSize+streamThreshold)
	for _, piece := range pieces {
		for len(piece) > 0 && err == nil {
			p := r.f.fill(buf)
			n := copy(buf[p:relayBufferSize], piece)
			piece = piece[n:]
			err = r.forward(buf[:p+n])
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	facts := fmt.Sprintf("err=%v sent=%d ready=%d tx=%c ext=%v last=%q inflight=%+v boundary=%v params=%v",
		err, s.syncsSent, s.readyReceived, s.txStatus, s.extendedOpen, s.lastClientType, s.inflight, r.f.atBoundary(), s.serverParams)
	if s.state != nil {
		facts += fmt.Sprintf(" unmovable=%q replay=%q", s.state.unmovable, s.state.replaySQL())
	}
	return relayOutcome{out: dst.out.Bytes(), facts: facts}
}

// captureConn is a net.Conn whose writes are kept.
type captureConn struct {
	net.Conn
	out bytes.Buffer
}

func (c *captureConn) Write(p []byte) (int, error) { return c.out.Write(p) }

func TestRelayFuzzHelperSeesProtocolErrors(t *testing.T) {
	bad := []byte{'Q', 0, 0, 0, 3}
	got := relayStream(t, false, [][]byte{bad})
	if !bytes.Contains([]byte(got.facts), []byte("invalid message length")) {
		t.Fatalf("facts %s: want the protocol error", got.facts)
	}
	if got := relayStream(t, false, [][]byte{msg('S', nil)}); got.facts == "" || len(got.out) != 5 {
		t.Fatalf("a Sync was not forwarded: %q %s", got.out, got.facts)
	}
}

// TestRelayForwardingDoesNotAllocate: the common path of both directions — a pgbench-sized
// Query at a safe point (production routing, with its retry copy) and its answer — makes no
// allocation per message.
func TestRelayForwardingDoesNotAllocate(t *testing.T) {
	srv := newTestServer(t, &fakeRouter{})
	s := newSession(srv, nil, nil)
	s.phase, s.txStatus = phaseRouted, 'I'
	toBackend := newRelay(s, nil, discardConn{}, false, nil)
	toClient := newRelay(s, nil, discardConn{}, true, nil)
	answer := make([]byte, len(benchAnswer))
	allocs := testing.AllocsPerRun(1000, func() {
		if err := toBackend.forward(benchQuery); err != nil {
			t.Fatal(err)
		}
		copy(answer, benchAnswer) // the backend relay moves messages within its buffer
		if err := toClient.forward(answer); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 && !raceEnabled { // the race detector's instrumentation allocates
		t.Fatalf("%.1f allocations per round trip, want 0", allocs)
	}
}
