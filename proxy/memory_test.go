package proxy

import (
	"bytes"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/pgquorum/pgquorum/testenv"
)

// maxIdleSessionBytes is SPEC §7's memory target per idle client connection.
const maxIdleSessionBytes = 16 << 10

// TestIdleSessionMemory measures what an idle relayed session costs the proxy's process:
// session, relays, two goroutine stacks and the proxy's two connections. The peer ends of the
// test connections live in the same process, so their cost, measured on connections without a
// session, is subtracted.
func TestIdleSessionMemory(t *testing.T) {
	if testing.Short() && !testenv.CI() { // under CI it always runs
		t.Skip("opens 4000 sockets")
	}
	const sessions = 1000
	query := msg('Q', []byte("SELECT 1\x00"))
	answer := append(msg('C', []byte("SELECT 1\x00")), msg('Z', []byte{'I'})...)

	// Baseline: the four connection ends of each session without a session.
	before := memoryInUse()
	var pairs []net.Conn
	for range sessions {
		a, b := tcpPair(t)
		c, d := tcpPair(t)
		pairs = append(pairs, a, b, c, d)
	}
	perConn := float64(memoryInUse()-before) / float64(len(pairs))
	for _, c := range pairs {
		c.Close()
	}
	pairs = nil

	srv := newTestServer(t, &fakeRouter{})
	before = memoryInUse()
	rssBefore := residentBytes(t)
	clients := make([]net.Conn, 0, sessions)
	backends := make([]net.Conn, 0, sessions)
	for range sessions {
		client, backend, _ := relayedSession(t, srv)
		clients = append(clients, client)
		backends = append(backends, backend)
	}
	// One round trip per session, so each relay has used (and given back) its buffers.
	reply := make([]byte, len(answer))
	for i := range sessions {
		clients[i].Write(query)
		readN(t, backends[i], len(query))
		backends[i].Write(answer)
		copy(reply, readN(t, clients[i], len(answer)))
		if !bytes.Equal(reply, answer) {
			t.Fatal("round trip failed")
		}
	}
	total := float64(memoryInUse() - before)
	rss := residentBytes(t) - rssBefore
	perSession := total/sessions - 2*perConn // the peer ends are not the proxy's
	t.Logf("idle session: %.0f bytes (Go heap+stacks, peer ends excluded; %.0f bytes per connection end); process RSS grew %d bytes per session including peer ends",
		perSession, perConn, rss/sessions)
	if raceEnabled {
		return // the race detector's shadow memory makes the figure meaningless
	}
	if perSession > maxIdleSessionBytes {
		t.Fatalf("an idle session costs %.0f bytes, target %d", perSession, maxIdleSessionBytes)
	}
}

// memoryInUse returns the Go heap and stack bytes in use after a full collection.
func memoryInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// residentBytes returns the process's resident set size (Linux), or 0.
func residentBytes(t *testing.T) int64 {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	pages, _ := strconv.ParseInt(fields[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
