package proxy

import (
	"errors"
	"net"
	"sync"
	"syscall"
)

const (
	// relayBufferSize is the size of the pooled read buffers. A buffer is held only while bytes
	// are being forwarded, never while a session waits for input on plain TCP.
	relayBufferSize = 32 << 10
	// streamThreshold: an incomplete message whose total size is larger than this is forwarded
	// in pieces as its bytes arrive; smaller incomplete messages are kept until complete.
	streamThreshold = relayBufferSize / 2
	// streamPrefix: a client message forwarded in pieces is held until this much of it (or all
	// of it) is there, so that the names at its start (a Bind's statement) can be read first.
	streamPrefix = 5 + 2*64 + 2
	// keepPendingCapacity: a pending buffer up to this capacity is kept for reuse once empty;
	// larger ones are dropped so an idle session does not pin them.
	keepPendingCapacity = 512

	// Message body bounds, like PostgreSQL's PQ_LARGE_MESSAGE_LIMIT and PQ_SMALL_MESSAGE_LIMIT.
	maxLargeMessageBody = 1<<30 - 2
	maxSmallMessageBody = 10000
	// maxBackendMessageBody bounds a backend message (PostgreSQL cannot build a larger one).
	maxBackendMessageBody = 1 << 30
)

// relayBuffers holds *[]byte of relayBufferSize (pointers, so Get and Put do not allocate).
var relayBuffers = sync.Pool{New: func() any {
	b := make([]byte, relayBufferSize)
	return &b
}}

// clientMessageMaxBody returns the largest body PostgreSQL accepts for a frontend message type.
func clientMessageMaxBody(typ byte) int64 {
	switch typ {
	case 'Q', 'P', 'B', 'F', 'd', 'c', 'f':
		return maxLargeMessageBody
	}
	return maxSmallMessageBody
}

var (
	// errSessionClosing stops the client→backend relay when the session is being closed
	// (Shutdown or a failure seen by the other direction); the session's reason says what the
	// client hears.
	errSessionClosing = errors.New("session is closing")
	// errHold: a new request arrived while routing does not allow the session's backend; the
	// request is held (clientSide.held) and the client is not read meanwhile.
	errHold = errors.New("request held: no primary to send it to")
	// errDetached: the backend link is down; the bytes read are held for the local answers
	// or the move.
	errDetached = errors.New("backend link is down")
	// errNeedMove: the client sent a request while the session has no backend.
	errNeedMove = errors.New("request needs a backend")
	// errClientTerminated: the client sent Terminate while the session had no backend.
	errClientTerminated = errors.New("client terminated the session")
)

// relayReadError wraps a failure to read from the relay's source connection (including EOF).
type relayReadError struct{ err error }

func (e *relayReadError) Error() string { return "read: " + e.err.Error() }
func (e *relayReadError) Unwrap() error { return e.err }

// relayWriteError wraps a failure to write to the relay's destination connection.
type relayWriteError struct{ err error }

func (e *relayWriteError) Error() string { return "write: " + e.err.Error() }
func (e *relayWriteError) Unwrap() error { return e.err }

// relay copies protocol messages from src to dst for one direction of a session. It is owned by
// the one goroutine that calls run; the session state it publishes goes through session.mu.
type relay struct {
	s           *session
	src, dst    net.Conn
	rawSrc      syscall.RawConn // non-nil: wait for readability without holding a buffer
	rawDst      syscall.RawConn // non-nil: write with raw system calls (see relay_unix.go)
	fromBackend bool
	c           *clientSide  // client→backend direction
	b           *backendSide // backend→client direction

	f framer // message boundaries of src (frame.go)

	// forwardFunc is forwardClient or forwardBackend, called directly by the read loops (one
	// frame less on the relay goroutine's stack).
	forwardFunc func(data []byte) error

	// State of readReady and writeReady, the RawConn callbacks; the func values are built once
	// so that reads and writes do not allocate closures.
	runErr         error // why readReady ended the relay
	readReadyFunc  func(fd uintptr) bool
	writeBuf       []byte // bytes still to write
	writeErr       error
	writeReadyFunc func(fd uintptr) bool
}

func newRelay(s *session, src, dst net.Conn, fromBackend bool, leftover []byte) *relay {
	r := &relay{s: s, fromBackend: fromBackend, f: framer{fromBackend: fromBackend}}
	r.readReadyFunc = r.readReady
	r.writeReadyFunc = r.writeReady
	r.setSource(src, leftover)
	r.setDestination(dst)
	if fromBackend {
		r.b = &backendSide{lastStatus: 'I'}
		r.forwardFunc = r.forwardBackend
	} else {
		r.c = &clientSide{}
		r.forwardFunc = r.forwardClient
	}
	return r
}

// setSource makes the relay read from src (a new backend after a move).
func (r *relay) setSource(src net.Conn, leftover []byte) {
	r.src, r.rawSrc = src, rawConnOf(src)
	r.f.reset(leftover)
	r.runErr = nil
	if r.b != nil {
		r.b.reset()
	}
}

// setDestination makes the relay write to dst (a new backend after a move).
func (r *relay) setDestination(dst net.Conn) {
	r.dst, r.rawDst = dst, rawConnOf(dst)
}

// rawConnOf returns the syscall.RawConn of a plain TCP connection, else nil.
func rawConnOf(c net.Conn) syscall.RawConn {
	tcp, ok := c.(*net.TCPConn)
	if !ok || !rawIOSupported {
		return nil
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// run forwards messages until reading or writing fails, the session closes, or (client
// direction) a request must wait. It returns a *relayReadError, *relayWriteError, *clientError
// (protocol violation), errSessionClosing, errHold, errDetached or errNeedMove.
func (r *relay) run() error {
	if r.c != nil && len(r.c.held) > 0 {
		data := r.c.held
		r.c.held = nil
		if err := r.forward(data); err != nil {
			return err
		}
	}
	if len(r.f.pending) > 0 {
		// Bytes that arrived with the last startup message: forward what is complete now, since
		// the peer may be waiting for an answer to them.
		data := r.f.pending
		r.f.pending = nil
		if !r.fromBackend {
			r.s.srv.counters.bytesFromClients.Add(uint64(len(data)))
		}
		if err := r.forward(data); err != nil {
			return err
		}
	}
	if r.rawSrc != nil {
		return r.runRaw()
	}
	return r.runBlocking()
}

// runRaw is the relay loop for a plain TCP source. The work happens in readReady, called by
// RawConn.Read whenever the socket may have bytes; RawConn.Read returns when readReady asks to
// leave it (an error, or a full buffer: see relay_unix.go) or when the connection is closed.
func (r *relay) runRaw() error {
	for {
		if err := r.rawSrc.Read(r.readReadyFunc); err != nil {
			return &relayReadError{err}
		}
		if r.runErr != nil {
			err := r.runErr
			r.runErr = nil
			return err
		}
	}
}

// runBlocking is the relay loop for other sources (TLS): a blocking Read into a pooled buffer.
func (r *relay) runBlocking() error {
	for {
		bufp := relayBuffers.Get().(*[]byte)
		buf := *bufp
		p := r.f.fill(buf)
		n, readErr := r.src.Read(buf[p:])
		var err error
		if n > 0 || p > 0 {
			if !r.fromBackend {
				r.s.srv.counters.bytesFromClients.Add(uint64(n))
			}
			err = r.forwardFunc(buf[:p+n])
		}
		relayBuffers.Put(bufp)
		if err != nil {
			return err
		}
		if readErr != nil {
			return &relayReadError{readErr}
		}
	}
}

// forward sends every complete message in data (plus any part of a large message) to dst in
// one Write, records what the session needs to know, and keeps an incomplete tail in pending.
func (r *relay) forward(data []byte) error {
	return r.forwardFunc(data)
}

// forwardClient forwards client messages to the backend. Under session.mu it first checks that
// the request may go (the backend link is up and, for a new request, routing still names this
// backend), inspects the messages (inspect.go) and publishes what they do; then it writes.
func (r *relay) forwardClient(data []byte) error {
	s, c := r.s, r.c
	if c.linkDown {
		return r.respondLocally(data)
	}
	s.mu.Lock()
	switch {
	case s.phase == phaseClosed:
		s.mu.Unlock()
		return errSessionClosing
	case !s.phase.linked():
		s.mu.Unlock()
		c.hold(data)
		return errDetached
	}
	safe := s.atSafePointLocked() && r.f.atBoundary()
	if safe {
		c.txEffects, c.txWrites = false, false
		if s.phase == phaseDraining {
			// A new request while Shutdown waits for this session: it is not sent.
			s.transitionLocked(evHold)
			backend := s.backend
			s.mu.Unlock()
			s.closeNow(backend)
			return errSessionClosing
		}
		if !s.srv.routeAllows(s.target) && data[0] != 'X' { // a Terminate needs no primary
			s.transitionLocked(evHold)
			s.mu.Unlock()
			c.hold(data)
			return errHold
		}
	}
	if s.hasRecords.Load() {
		c.applyResolved(s)
	}
	if s.reprepare.answered {
		c.applyReprepared(s)
	}

	i := r.f.continuation(data)
	if i > 0 {
		c.streamPiece(s, data[:i])
	}
	var f batchFacts
	var protocolErr *clientError
	injected, copied := false, 0
	for {
		kind, typ, size, lengthErr := r.f.next(data, i, streamPrefix)
		if kind == frameNone {
			protocolErr = lengthErr
			break
		}
		// A large message is forwarded in pieces, once what leads it (a Bind's names) is read.
		var ahead []byte
		if kind == frameWhole || typ == 'B' {
			ahead = c.inspectClient(s, typ, data[i:i+size], &f)
		} else {
			c.inspectStreamStart(s, typ, data[i:], &f)
		}
		if ahead != nil {
			c.out, copied, injected = c.insertAhead(data, copied, i, ahead, injected)
		}
		if c.replace != nil {
			c.out, _, injected = c.insertAhead(data, copied, i, c.replace, injected)
			copied, c.replace = i+size, nil // the inspected message is not sent
		}
		s.noteClientMessage(typ)
		i += size
	}
	c.publishOpen(s, &f, false)
	if i > 0 {
		s.lastClientType = r.f.lastType
	}
	s.noteSentLocked(s.syncsSent, f.syncs)
	s.syncsSent += f.syncs
	if safe && f.syncs > 0 {
		s.armRetryLocked(data[:i], f.syncs, injected || protocolErr != nil || len(data) > i)
	} else if f.syncs > 0 || s.extendedOpen {
		s.disarmRetryLocked()
	}
	s.mu.Unlock()

	if i > 0 {
		out := data[:i]
		if injected {
			c.out = append(c.out, data[copied:i]...)
			out = c.out
		}
		if err := r.write(out); err != nil {
			return &relayWriteError{err}
		}
		if injected {
			c.out = c.out[:0]
		}
	}
	if protocolErr != nil {
		return protocolErr
	}
	r.f.keep(data[i:])
	return nil
}

// noteClientMessage records whether a client message opens or closes an extended-protocol
// batch. s.mu is held.
func (s *session) noteClientMessage(typ byte) {
	switch typ {
	case 'S':
		s.extendedOpen = false
	case 'P', 'B', 'D', 'E', 'C', 'H':
		s.extendedOpen = true
	}
}

// insertAhead adds ahead to the output before the message at data[at:]: the output is then
// built in out (data[copied:at] first).
func (c *clientSide) insertAhead(data []byte, copied, at int, ahead []byte, injected bool) ([]byte, int, bool) {
	out := c.out
	if !injected {
		out = out[:0]
	}
	out = append(out, data[copied:at]...)
	out = append(out, ahead...)
	return out, at, true
}

// hold keeps bytes read from the client that cannot be forwarded now.
func (c *clientSide) hold(data []byte) {
	c.held = append(c.held[:0:0], data...)
}

// write writes all of data to dst.
func (r *relay) write(data []byte) error {
	if r.rawDst == nil {
		_, err := r.dst.Write(data)
		return err
	}
	r.writeBuf, r.writeErr = data, nil
	err := r.rawDst.Write(r.writeReadyFunc)
	r.writeBuf = nil
	if err != nil {
		return err
	}
	return r.writeErr
}
