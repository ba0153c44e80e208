package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// fakeRouter is a Router whose route always names the same target (it never changes), and
// counts BackendFailed calls.
type fakeRouter struct {
	target Target
	mu     sync.Mutex
	failed int
}

func (r *fakeRouter) Route() (Route, <-chan struct{}) {
	return Route{Routing: true, Target: r.target}, nil
}
func (r *fakeRouter) BackendFailed(t Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed++
}
func (r *fakeRouter) failures() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

func newTestServer(t testing.TB, router Router) *Server {
	t.Helper()
	return newTestServerWith(t, Config{Router: router})
}

// newTestServerWith returns a trust-auth server with cfg's fields (Router at least).
func newTestServerWith(t testing.TB, cfg Config) *Server {
	t.Helper()
	cfg.NodeID, cfg.ListenAddr, cfg.AuthMethod = 1, "127.0.0.1:0", AuthTrust
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// relayedSession wires a session between two fresh TCP pairs and starts its relay. It returns
// the client's end and the fake backend's end.
func relayedSession(t testing.TB, srv *Server) (client, backend net.Conn, sess *session) {
	t.Helper()
	client, proxyClientSide := tcpPair(t)
	proxyBackendSide, backend := tcpPair(t)
	sess = newSession(srv, proxyClientSide, nil)
	sess.client = proxyClientSide
	sess.target = srv.route.Load().Target // the session's backend is the routed primary
	srv.sessions.add(sess)
	srv.counters.clientConnections.Add(1)
	sess.backend = proxyBackendSide
	if err := sess.startRelay(nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		backend.Close()
		deadline := time.Now().Add(5 * time.Second)
		for sess.running.Load() != 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	})
	return client, backend, sess
}

func msg(typ byte, body []byte) []byte { return appendMessage(nil, typ, body) }

func readN(t testing.TB, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return buf
}

// readErrorResponse reads one message and requires it to be an ErrorResponse.
func readErrorResponse(t testing.TB, c net.Conn) *pgproto3.ErrorResponse {
	t.Helper()
	header := readN(t, c, 5)
	if header[0] != 'E' {
		t.Fatalf("got message type %q, want ErrorResponse", header[0])
	}
	body := readN(t, c, int(binary.BigEndian.Uint32(header[1:]))-4)
	var e pgproto3.ErrorResponse
	if err := e.Decode(body); err != nil {
		t.Fatal(err)
	}
	return &e
}

// requireClosed waits for the peer to close c.
func requireClosed(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
		t.Fatalf("connection not closed: read %d bytes then %v", n, err)
	}
}

func isConnReset(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && !opErr.Timeout()
}

func TestRelayForwardsMessagesUnchanged(t *testing.T) {
	srv := newTestServer(t, &fakeRouter{})
	client, backend, _ := relayedSession(t, srv)

	var stream []byte
	for i, size := range []int{0, 1, 4, 100, streamThreshold - 5, streamThreshold, streamThreshold + 1, relayBufferSize * 3, 1 << 20} {
		body := bytes.Repeat([]byte{byte('a' + i)}, size)
		stream = append(stream, msg('d', body)...)
	}
	stream = append(stream, msg('S', nil)...)

	// Client to backend, written in odd-sized pieces so that headers and bodies are split.
	go func() {
		rest := stream
		for piece := 1; len(rest) > 0; piece = piece*3 + 1 {
			n := min(piece, len(rest))
			if _, err := client.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
	}()
	if got := readN(t, backend, len(stream)); !bytes.Equal(got, stream) {
		t.Fatal("backend received different bytes than the client sent")
	}

	// Backend to client in one write.
	reply := append(bytes.Clone(stream[:len(stream)-5]), msg('Z', []byte{'I'})...)
	go backend.Write(reply)
	if got := readN(t, client, len(reply)); !bytes.Equal(got, reply) {
		t.Fatal("client received different bytes than the backend sent")
	}
	stats := srv.Stats()
	if stats.BytesFromClients != uint64(len(stream)) || stats.BytesToClients != uint64(len(reply)) {
		t.Fatalf("stats bytes from/to clients = %d/%d, want %d/%d", stats.BytesFromClients, stats.BytesToClients, len(stream), len(reply))
	}
}

func TestRelayRejectsInvalidClientLengths(t *testing.T) {
	tests := []struct {
		name   string
		header []byte
	}{
		{"negative", []byte{'Q', 0xff, 0xff, 0xff, 0xf0}},
		{"below four", []byte{'Q', 0, 0, 0, 3}},
		{"over 1 GiB", []byte{'Q', 0x40, 0, 0, 0x10}},
		{"small message type too long", []byte{'S', 0, 0, 0x40, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			router := &fakeRouter{}
			srv := newTestServer(t, router)
			client, backend, _ := relayedSession(t, srv)
			good := msg('Q', []byte("SELECT 1\x00"))
			if _, err := client.Write(append(bytes.Clone(good), tt.header...)); err != nil {
				t.Fatal(err)
			}
			if got := readN(t, backend, len(good)); !bytes.Equal(got, good) {
				t.Fatal("message before the bad one was not forwarded")
			}
			requireClosed(t, backend)
			e := readErrorResponse(t, client)
			if e.Severity != severityFatal || e.Code != codeProtocolViolation {
				t.Fatalf("got %s %s %q, want FATAL 08P01", e.Severity, e.Code, e.Message)
			}
			requireClosed(t, client)
			if router.failures() != 0 {
				t.Fatal("a client's protocol violation was reported as a backend failure")
			}
		})
	}
}

func TestIdleSessionLosingItsBackendStaysOpen(t *testing.T) {
	// The backend of an idle session goes away: the client sees nothing; its next request
	// waits for a primary (here: none is reachable within the hold timeout) and gets 57P03,
	// and the session is still usable after that.
	router := &fakeRouter{target: Target{Name: "gone", Address: unreachableAddr(t)}}
	srv := newTestServerWith(t, Config{Router: router, HoldTimeout: 300 * time.Millisecond})
	client, backend, sess := relayedSession(t, srv)
	backend.Close()
	waitLinkDown(t, sess)
	_ = client.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := client.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
		t.Fatalf("the client was told something (%d bytes, %v) about the backend of its idle session", n, err)
	}
	for range 2 {
		client.Write(msg('Q', []byte("SELECT 1\x00")))
		e := readErrorResponse(t, client)
		if e.Severity != severityError || e.Code != codeCannotConnectNow {
			t.Fatalf("got %s %s %q, want ERROR 57P03", e.Severity, e.Code, e.Message)
		}
		if z := readN(t, client, 6); !bytes.Equal(z, msg('Z', []byte{'I'})) {
			t.Fatalf("got %q, want ReadyForQuery(I)", z)
		}
	}
}

func TestRelayBackendFatal(t *testing.T) {
	t.Run("relayed and not doubled", func(t *testing.T) {
		router := &fakeRouter{}
		srv := newTestServer(t, router)
		client, backend, _ := relayedSession(t, srv)
		fatal := (&clientError{Severity: severityFatal, Code: "57P05", Message: "terminating connection due to idle-session timeout"}).appendErrorResponse(nil)
		backend.Write(fatal)
		backend.Close()
		if got := readN(t, client, len(fatal)); !bytes.Equal(got, fatal) {
			t.Fatal("backend's FATAL not relayed")
		}
		requireClosed(t, client)
		if router.failures() != 0 {
			t.Fatal("an orderly FATAL from the backend was reported as a backend failure")
		}
	})
	t.Run("shutdown of an idle session is not relayed", func(t *testing.T) {
		router := &fakeRouter{target: Target{Name: "gone", Address: unreachableAddr(t)}}
		srv := newTestServerWith(t, Config{Router: router, HoldTimeout: 300 * time.Millisecond})
		client, backend, sess := relayedSession(t, srv)
		backend.Write((&clientError{Severity: severityFatal, Code: codeAdminShutdown, Message: "terminating connection due to administrator command"}).appendErrorResponse(nil))
		backend.Close()
		waitLinkDown(t, sess)
		client.Write(msg('Q', []byte("SELECT 1\x00")))
		if e := readErrorResponse(t, client); e.Code != codeCannotConnectNow {
			t.Fatalf("got %s %q, want the held request refused with 57P03", e.Code, e.Message)
		}
	})
}

// waitLinkDown waits until the session has processed the loss of its backend.
func waitLinkDown(t testing.TB, sess *session) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sess.mu.Lock()
		down := !sess.phase.linked()
		sess.mu.Unlock()
		if down {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the session did not notice the loss of its backend")
		}
		time.Sleep(time.Millisecond)
	}
}

// unreachableAddr returns a loopback address nobody listens on.
func unreachableAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestRelayClientTerminate(t *testing.T) {
	router := &fakeRouter{}
	srv := newTestServer(t, router)
	client, backend, _ := relayedSession(t, srv)
	client.Write(msg('X', nil))
	readN(t, backend, 5)
	backend.Close()
	requireClosed(t, client)
	if router.failures() != 0 {
		t.Fatal("backend closing after Terminate was reported as a failure")
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().ClientConnections != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("session not finished: %+v", srv.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestShutdownWaitsForSafePoint(t *testing.T) {
	srv := newTestServer(t, &fakeRouter{})
	busyClient, busyBackend, _ := relayedSession(t, srv)
	idleClient, _, _ := relayedSession(t, srv)

	// The busy session has a query in flight.
	query := msg('Q', []byte("SELECT pg_sleep(1)\x00"))
	busyClient.Write(query)
	readN(t, busyBackend, len(query))

	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- srv.Shutdown(context.Background()) }()

	// The idle one is closed with 57P01.
	e := readErrorResponse(t, idleClient)
	if e.Code != codeAdminShutdown {
		t.Fatalf("idle session got %s %q, want 57P01", e.Code, e.Message)
	}
	requireClosed(t, idleClient)

	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned (%v) while a query was running", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The answer arrives intact, then the session is closed.
	answer := append(msg('C', []byte("SELECT 1\x00")), msg('Z', []byte{'I'})...)
	busyBackend.Write(answer)
	if got := readN(t, busyClient, len(answer)); !bytes.Equal(got, answer) {
		t.Fatal("answer not relayed during shutdown")
	}
	if e := readErrorResponse(t, busyClient); e.Code != codeAdminShutdown {
		t.Fatalf("busy session got %s %q after its answer, want 57P01", e.Code, e.Message)
	}
	select {
	case err := <-shutdownDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

func TestShutdownForcesAtDeadline(t *testing.T) {
	srv := newTestServer(t, &fakeRouter{})
	client, backend, _ := relayedSession(t, srv)
	begin := msg('Q', []byte("BEGIN\x00"))
	client.Write(begin)
	readN(t, backend, len(begin))
	backend.Write(append(msg('C', []byte("BEGIN\x00")), msg('Z', []byte{'T'})...))
	readN(t, client, 17)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded (session in a transaction)", err)
	}
	if e := readErrorResponse(t, client); e.Code != codeAdminShutdown {
		t.Fatalf("got %s %q, want 57P01", e.Code, e.Message)
	}
	requireClosed(t, client)
}

func TestServeContextEndClosesSessions(t *testing.T) {
	srv := newTestServer(t, &fakeRouter{})
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	client, _, _ := relayedSession(t, srv)
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve returned %v after its context ended, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if e := readErrorResponse(t, client); e.Code != codeAdminShutdown {
		t.Fatalf("got %s %q, want 57P01", e.Code, e.Message)
	}
	requireClosed(t, client)
	if _, err := net.Dial("tcp", srv.Addr().String()); err == nil {
		t.Fatal("still accepting after Serve returned")
	}
}

func TestClientHalfCloseStillGetsAnswers(t *testing.T) {
	router := &fakeRouter{}
	srv := newTestServer(t, router)
	client, backend, _ := relayedSession(t, srv)
	query := msg('Q', []byte("SELECT 1\x00"))
	client.Write(query)
	client.(*net.TCPConn).CloseWrite()
	readN(t, backend, len(query))
	// The backend sees the end of input after the query, like on a direct connection...
	requireClosedForReading(t, backend)
	// ...and its answer still reaches the client.
	answer := append(msg('C', []byte("SELECT 1\x00")), msg('Z', []byte{'I'})...)
	backend.Write(answer)
	backend.Close()
	if got := readN(t, client, len(answer)); !bytes.Equal(got, answer) {
		t.Fatal("answer lost after the client half-closed")
	}
	requireClosed(t, client)
	if router.failures() != 0 {
		t.Fatal("backend closing after the client's EOF was reported as a failure")
	}
}

// requireClosedForReading waits until reading c returns EOF.
func requireClosedForReading(t testing.TB, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var one [1]byte
	if n, err := c.Read(one[:]); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes, %v; want EOF", n, err)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// fakeLoginServer accepts one connection, answers its startup message as a trust-auth
// PostgreSQL would (AuthenticationOk, BackendKeyData, ReadyForQuery) and returns the
// connection, positioned after the startup message, on the channel.
func fakeLoginServer(t testing.TB) (addr string, conns <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	out := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		var header [4]byte
		if _, err := io.ReadFull(c, header[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(header[:]))-4); err != nil {
			return
		}
		var reply []byte
		reply = appendMessage(reply, 'R', []byte{0, 0, 0, 0})
		reply = appendMessage(reply, 'K', []byte{0, 0, 0, 7, 1, 2, 3, 4})
		reply = appendMessage(reply, 'Z', []byte{'I'})
		if _, err := c.Write(reply); err != nil {
			return
		}
		out <- c
	}()
	return ln.Addr().String(), out
}

func TestLargeRequestAfterLossReachesTheNewBackendWhole(t *testing.T) {
	// The backend of an idle session goes away and its next request is refused (no primary
	// within the hold timeout). The request after that is larger than the framer streams and
	// arrives in pieces: the session moves and the new backend gets it byte for byte, counted
	// as one request (its start was only peeked while the session had no backend).
	addr, newBackends := fakeLoginServer(t)
	router := newSwitchRouter(Route{Routing: true, Target: Target{Name: "first", Address: "127.0.0.1:1"}})
	srv := newTestServerWith(t, Config{Router: router, HoldTimeout: 200 * time.Millisecond})
	setRoute := func(r Route) { // as the route watcher of a serving Server does
		router.set(r)
		srv.route.Store(&r)
	}
	client, backend, sess := relayedSession(t, srv)
	setRoute(Route{})
	backend.Close()
	waitLinkDown(t, sess)
	client.Write(msg('Q', []byte("SELECT 1\x00")))
	if e := readErrorResponse(t, client); e.Code != codeCannotConnectNow {
		t.Fatalf("got %s %q, want 57P03", e.Code, e.Message)
	}
	readN(t, client, 6) // ReadyForQuery
	setRoute(Route{Routing: true, Target: Target{Name: "next", Address: addr}})

	query := msg('Q', append(bytes.Repeat([]byte("-"), 3*streamThreshold), 0))
	go func() {
		for rest := query; len(rest) > 0; {
			n := min(len(rest), 1000)
			if _, err := client.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
	}()
	var next net.Conn
	select {
	case next = <-newBackends:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not move")
	}
	if got := readN(t, next, len(query)); !bytes.Equal(got, query) {
		t.Fatal("the new backend received different bytes than the client sent")
	}
	ready := msg('Z', []byte{'I'})
	next.Write(ready)
	readN(t, client, len(ready))
	sess.mu.Lock()
	sent, answered, safe := sess.syncsSent, sess.readyReceived, sess.atSafePointLocked()
	sess.mu.Unlock()
	if sent != answered || !safe {
		t.Fatalf("requests sent %d, answered %d, safe point %v; want them equal, at a safe point", sent, answered, safe)
	}
}

func TestShutdownLetsAnOpenTransactionFinish(t *testing.T) {
	// A session idle in a transaction is not at a safe point: while Shutdown drains, its
	// requests are still forwarded, and it closes right after the answer that ends the
	// transaction.
	srv := newTestServer(t, &fakeRouter{})
	client, backend, sess := relayedSession(t, srv)
	roundTrip := func(sql string, status byte) {
		t.Helper()
		query := msg('Q', append([]byte(sql), 0))
		client.Write(query)
		want := query
		var probeAnswer []byte
		if sql == "COMMIT" {
			// The transaction id probe goes ahead of it; its answer is the proxy's.
			want = append(bytes.Clone(xactIDProbe), query...)
			probeAnswer = msg('D', []byte{0, 1, 0xff, 0xff, 0xff, 0xff})
			probeAnswer = append(probeAnswer, msg('C', []byte("SELECT 1\x00"))...)
			probeAnswer = append(probeAnswer, msg('Z', []byte{'T'})...)
		}
		if got := readN(t, backend, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("backend got %q, want %q", got, want)
		}
		answer := append(msg('C', []byte(sql+"\x00")), msg('Z', []byte{status})...)
		backend.Write(append(probeAnswer, answer...))
		if got := readN(t, client, len(answer)); !bytes.Equal(got, answer) {
			t.Fatalf("client got %q, want %q", got, answer)
		}
	}
	roundTrip("BEGIN", 'T')
	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- srv.Shutdown(context.Background()) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		sess.mu.Lock()
		phase := sess.phase
		sess.mu.Unlock()
		if phase == phaseDraining {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session is %v, want draining", phase)
		}
	}
	roundTrip("UPDATE t SET a = 1", 'T') // a write: the COMMIT is probed (resolve.go)
	roundTrip("COMMIT", 'I')
	if e := readErrorResponse(t, client); e.Code != codeAdminShutdown {
		t.Fatalf("got %s %q after the COMMIT's answer, want 57P01", e.Code, e.Message)
	}
	requireClosed(t, client)
	select {
	case err := <-shutdownDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}
