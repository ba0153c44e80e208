package proxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// The relay benchmarks measure one query round trip (a pgbench -S sized Query and its
// RowDescription, DataRow, CommandComplete, ReadyForQuery answer) through the relay over loopback
// TCP against a tiny fake server, next to the same round trip without the proxy (the baseline).
//
//	go test ./proxy -run XXX -bench Relay -benchmem

var (
	benchQuery  = msg('Q', []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;\x00"))
	benchAnswer = bytes.Join([][]byte{
		msg('T', append([]byte{0, 1}, []byte("abalance\x00\x00\x00\x40\x01\x00\x04\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00")...)),
		msg('D', []byte{0, 1, 0, 0, 0, 1, '0'}),
		msg('C', []byte("SELECT 1\x00")),
		msg('Z', []byte{'I'}),
	}, nil)
)

// fakeQueryServer answers every complete message it reads with answer (for the large-result
// benchmark, answer is big). It stops when conn is closed.
func fakeQueryServer(conn net.Conn, answer []byte) {
	buf := make([]byte, 64<<10)
	have := 0
	for {
		n, err := conn.Read(buf[have:])
		if err != nil {
			return
		}
		have += n
		for have >= 5 {
			size := 1 + int(binary.BigEndian.Uint32(buf[1:5]))
			if have < size {
				break
			}
			if _, err := conn.Write(answer); err != nil {
				return
			}
			copy(buf, buf[size:have])
			have -= size
		}
	}
}

func benchmarkRoundTrips(b *testing.B, client net.Conn, answerLength int) {
	reply := make([]byte, 64<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchQuery) + answerLength))
	b.ResetTimer()
	for b.Loop() {
		if _, err := client.Write(benchQuery); err != nil {
			b.Fatal(err)
		}
		for left := answerLength; left > 0; {
			n, err := client.Read(reply[:min(left, len(reply))])
			if err != nil {
				b.Fatal(err)
			}
			left -= n
		}
	}
}

func BenchmarkRelay(b *testing.B) {
	large := bytes.Repeat(msg('D', append([]byte{0, 1, 0, 0, 0x0f, 0xf9}, bytes.Repeat([]byte{'x'}, 4089)...)), 256) // 1 MiB
	large = append(large, msg('Z', []byte{'I'})...)
	for _, tc := range []struct {
		name   string
		answer []byte
	}{
		{"select", benchAnswer},
		{"1MiB-result", large},
	} {
		b.Run(tc.name+"/direct", func(b *testing.B) {
			client, server := tcpPair(b)
			go fakeQueryServer(server, tc.answer)
			benchmarkRoundTrips(b, client, len(tc.answer))
		})
		b.Run(tc.name+"/proxied", func(b *testing.B) {
			srv := newTestServer(b, &fakeRouter{})
			client, backend, _ := relayedSession(b, srv)
			go fakeQueryServer(backend, tc.answer)
			benchmarkRoundTrips(b, client, len(tc.answer))
		})
	}
}

// BenchmarkRelayForward measures the framing step alone (no sockets): a batch of small
// messages parsed and written to a discarding connection.
func BenchmarkRelayForward(b *testing.B) {
	srv := newTestServer(b, &fakeRouter{})
	s := newSession(srv, nil, nil)
	s.phase = phaseRouted
	r := newRelay(s, nil, discardConn{}, true, nil)
	batch := bytes.Repeat(benchAnswer, 8)
	b.ReportAllocs()
	b.SetBytes(int64(len(batch)))
	for b.Loop() {
		if err := r.forward(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// discardConn is a net.Conn whose writes succeed and go nowhere.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }
func (discardConn) Read(p []byte) (int, error)  { return 0, io.EOF }

// BenchmarkRelayForwardClient measures the client→backend framing and inspection step alone
// (no sockets): a pgbench -S Query at a safe point, on the production routing path (which
// keeps a retry copy of each autocommit request), written to a discarding connection.
func BenchmarkRelayForwardClient(b *testing.B) {
	srv := newTestServer(b, &fakeRouter{})
	s := newSession(srv, nil, nil)
	s.phase, s.txStatus = phaseRouted, 'I'
	r := newRelay(s, nil, discardConn{}, false, nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchQuery)))
	for b.Loop() {
		if err := r.forward(benchQuery); err != nil {
			b.Fatal(err)
		}
		s.mu.Lock()
		s.publishReadiesLocked(1, 1, 1, 'I') // the answer's ReadyForQuery
		s.mu.Unlock()
	}
}
