package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// fake32Backend stands for a PostgreSQL 18 primary (none is installed on the test machines):
// it accepts protocol 3.2, hands out a 32-byte cancel key, holds every Query until a
// CancelRequest with that key arrives, then answers it with 57014.
type fake32Backend struct {
	addr    string
	pid     uint32
	secret  []byte
	queries chan struct{} // one per Query received, before it is held
	cancels chan []byte   // the key of every CancelRequest received (pid + secret)
}

func startFake32Backend(t *testing.T) *fake32Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fake32Backend{addr: ln.Addr().String(), pid: 4242, secret: bytes.Repeat([]byte{0xAB}, 32),
		queries: make(chan struct{}, 4), cancels: make(chan []byte, 4)}
	cancelled := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go f.serve(c, cancelled)
		}
	}()
	return f
}

func (f *fake32Backend) serve(c net.Conn, cancelled chan struct{}) {
	var header [4]byte
	if _, err := io.ReadFull(c, header[:]); err != nil {
		return
	}
	body := make([]byte, binary.BigEndian.Uint32(header[:])-4)
	if _, err := io.ReadFull(c, body); err != nil {
		return
	}
	if binary.BigEndian.Uint32(body) == cancelRequestCode {
		f.cancels <- body[4:]
		if binary.BigEndian.Uint32(body[4:]) == f.pid && bytes.Equal(body[8:], f.secret) {
			cancelled <- struct{}{}
		}
		c.Close()
		return
	}
	if binary.BigEndian.Uint32(body) != 3<<16|2 {
		return // only 3.2 here
	}
	reply := appendMessage(nil, 'R', []byte{0, 0, 0, 0})
	reply = appendMessage(reply, 'S', []byte("server_version\x0018.0\x00"))
	reply = appendMessage(reply, 'K', append(binary.BigEndian.AppendUint32(nil, f.pid), f.secret...))
	reply = appendMessage(reply, 'Z', []byte{'I'})
	if _, err := c.Write(reply); err != nil {
		return
	}
	for {
		var h [5]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(h[1:]))-4); err != nil || h[0] == 'X' {
			return
		}
		if h[0] != 'Q' {
			continue
		}
		f.queries <- struct{}{}
		<-cancelled
		e := (&clientError{Severity: severityError, Code: codeQueryCanceled, Message: "canceling statement due to user request"}).appendErrorResponse(nil)
		if _, err := c.Write(appendMessage(e, 'Z', []byte{'I'})); err != nil {
			return
		}
	}
}

// forwardInProcess stands for the peer transport between two proxy nodes (node/cancel.go
// carries the same call over consensus peer calls; integration tests run that one).
type forwardInProcess struct{ owner *Server }

func (f forwardInProcess) ForwardCancel(ctx context.Context, owner uint64, exact bool, key []byte) error {
	if owner != f.owner.cfg.NodeID || !exact {
		return errors.New("not the owner")
	}
	f.owner.CancelFromPeer(ctx, key)
	return nil
}

// TestProtocol32CancelKeyEndToEnd: a protocol 3.2 client on a 3.2 primary gets the backend's
// pid and the proxy's 32-byte key, and a cancel sent with that key to another proxy node is
// forwarded to the owner and reaches the backend with the backend's own key.
func TestProtocol32CancelKeyEndToEnd(t *testing.T) {
	backend := startFake32Backend(t)
	router := staticRoute(Route{Routing: true, Target: Target{Name: "pg18", Address: backend.addr}})
	owner := serveForTest(t, router, time.Second)
	other, err := NewServer(Config{NodeID: 2, ListenAddr: "127.0.0.1:0", Router: router, AuthMethod: AuthTrust,
		CancelForwarder: forwardInProcess{owner: owner}})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Listen(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = other.Serve(t.Context()) }()

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	config, err := pgconn.ParseConfig("host=127.0.0.1 port=" + strconv.Itoa(owner.Addr().(*net.TCPAddr).Port) + " user=app sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	config.MaxProtocolVersion = "3.2"
	conn, err := pgconn.ConnectConfig(ctx, config)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if conn.PID() != backend.pid || len(conn.SecretKey()) != 32 || bytes.Equal(conn.SecretKey(), backend.secret) {
		t.Fatalf("BackendKeyData pid %d key %x: want the backend's pid and the proxy's own 32-byte key", conn.PID(), conn.SecretKey())
	}
	var queryErr error
	queryDone := make(chan struct{})
	go func() {
		defer close(queryDone)
		_, queryErr = conn.Exec(ctx, "SELECT pg_sleep(60)").ReadAll()
	}()
	// On every exit the query goroutine ends before conn.Close: a pgconn is not for two
	// goroutines at once.
	defer func() { cancel(); <-queryDone }()
	// Cancel only once the query runs on the backend: a cancel that arrives earlier finds
	// nothing to cancel and is dropped, by the proxy as by PostgreSQL.
	select {
	case <-backend.queries:
	case <-ctx.Done():
		t.Fatal("the query never reached the backend")
	}
	// The cancel goes to the other proxy node, which forwards it to the owner.
	c, err := net.Dial("tcp", other.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(appendCancelRequest(nil, conn.PID(), conn.SecretKey())); err != nil {
		t.Fatal(err)
	}
	// Like libpq, wait for the proxy to close the connection: it has then handled the cancel
	// (forwarded it and counted it).
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(deadline)
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("waiting for the proxy to close the cancel connection: %v", err)
	}
	var got []byte
	select {
	case got = <-backend.cancels:
	case <-ctx.Done():
		t.Fatal("no cancel reached the backend")
	}
	if binary.BigEndian.Uint32(got) != backend.pid || !bytes.Equal(got[4:], backend.secret) {
		t.Fatalf("the backend got cancel key %x, want its own", got)
	}
	var pgErr *pgconn.PgError
	<-queryDone // bounded by ctx
	if !errors.As(queryErr, &pgErr) || pgErr.Code != codeQueryCanceled {
		t.Fatalf("query ended with %v, want 57014", queryErr)
	}
	if other.Stats().CancelForwarded != 1 {
		t.Fatalf("forwarded %d cancels, want 1", other.Stats().CancelForwarded)
	}
	// A bogus key is counted, never logged or forwarded blindly.
	before := owner.Stats().CancelUnknown
	owner.CancelFromPeer(ctx, append(binary.BigEndian.AppendUint32(nil, 1), bytes.Repeat([]byte{1}, 32)...))
	if owner.Stats().CancelUnknown != before+1 {
		t.Fatal("unknown forwarded key not counted")
	}
}
