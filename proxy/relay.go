package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
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

// errSessionClosing stops the client→backend relay when the session is being closed (Shutdown
// or a failure seen by the other direction); the session's reason says what the client hears.
var errSessionClosing = errors.New("session is closing")

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

	// pending holds the start of an incomplete message (at most streamThreshold bytes) until
	// the rest arrives. It is never part of bytes already forwarded.
	pending []byte
	// streamLeft counts the bytes of a large message that were announced by a header already
	// forwarded and still pass through unparsed.
	streamLeft int64
	// lastType is the type of the last message header seen.
	lastType byte

	// Client direction: what the messages seen so far say, published to the session.
	syncsSent    uint64
	extendedOpen bool

	// State of readReady and writeReady, the RawConn callbacks; the func values are built once
	// so that reads and writes do not allocate closures.
	runErr         error // why readReady ended the relay
	readReadyFunc  func(fd uintptr) bool
	writeBuf       []byte // bytes still to write
	writeErr       error
	writeReadyFunc func(fd uintptr) bool
}

func newRelay(s *session, src, dst net.Conn, fromBackend bool, leftover []byte) *relay {
	r := &relay{s: s, src: src, dst: dst, fromBackend: fromBackend, pending: leftover}
	r.rawSrc = rawConnOf(src)
	if r.rawSrc != nil {
		r.readReadyFunc = r.readReady
	}
	r.rawDst = rawConnOf(dst)
	if r.rawDst != nil {
		r.writeReadyFunc = r.writeReady
	}
	return r
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

// run forwards messages until reading or writing fails or the session closes. It returns a
// *relayReadError, *relayWriteError, *clientError (protocol violation) or errSessionClosing.
func (r *relay) run() error {
	if len(r.pending) > 0 {
		// Bytes that arrived with the last startup message: forward what is complete now, since
		// the peer may be waiting for an answer to them.
		data := r.pending
		r.pending = nil
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
			return r.runErr
		}
	}
}

// runBlocking is the relay loop for other sources (TLS): a blocking Read into a pooled buffer.
func (r *relay) runBlocking() error {
	for {
		bufp := relayBuffers.Get().(*[]byte)
		buf := *bufp
		p := copy(buf, r.pending)
		n, readErr := r.src.Read(buf[p:])
		var err error
		if n > 0 {
			r.pending = r.pending[:0]
			if !r.fromBackend {
				r.s.srv.counters.bytesFromClients.Add(uint64(n))
			}
			err = r.forward(buf[:p+n])
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
	i := 0
	if r.streamLeft > 0 {
		k := int(min(r.streamLeft, int64(len(data))))
		i = k
		r.streamLeft -= int64(k)
	}
	var protocolErr *clientError
	var readies uint64
	var status byte
	for len(data)-i >= 5 {
		typ := data[i]
		length := int64(int32(binary.BigEndian.Uint32(data[i+1 : i+5])))
		if length < 4 || length-4 > r.maxBody(typ) {
			protocolErr = r.lengthError(typ, length)
			break
		}
		total := 1 + length
		available := int64(len(data) - i)
		if available < total {
			if total > streamThreshold {
				r.observe(typ)
				r.streamLeft = total - available
				i = len(data)
			}
			break
		}
		r.observe(typ)
		if r.fromBackend && typ == 'Z' && length == 5 {
			readies++
			status = data[i+5]
		}
		i += int(total)
	}

	if i > 0 {
		if err := r.publish(readies, status); err != nil {
			return err
		}
		if err := r.write(data[:i]); err != nil {
			return &relayWriteError{err}
		}
		if r.fromBackend {
			r.s.srv.counters.bytesToClients.Add(uint64(i))
		}
	}
	if protocolErr != nil {
		return protocolErr
	}
	r.keepPending(data[i:])
	return nil
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

// maxBody returns the largest body accepted for a message of type typ in this direction.
func (r *relay) maxBody(typ byte) int64 {
	if r.fromBackend {
		return maxBackendMessageBody
	}
	return clientMessageMaxBody(typ)
}

func (r *relay) lengthError(typ byte, length int64) *clientError {
	if r.fromBackend {
		return fatalf(codeProtocolViolation, "invalid message from the PostgreSQL server").
			withDetail(fmt.Sprintf("Message type %q has invalid length %d.", typ, length))
	}
	return fatalf(codeProtocolViolation, "invalid message length").
		withDetail(fmt.Sprintf("Message type %q has invalid length %d.", typ, length))
}

// observe records a message header: the last type seen and, from the client, whether the
// message opens an extended-protocol batch or asks for a ReadyForQuery (Query, FunctionCall,
// Sync each produce exactly one).
func (r *relay) observe(typ byte) {
	r.lastType = typ
	if r.fromBackend {
		return
	}
	switch typ {
	case 'Q', 'F':
		r.syncsSent++
	case 'S':
		r.syncsSent++
		r.extendedOpen = false
	case 'P', 'B', 'D', 'E', 'C', 'H':
		r.extendedOpen = true
	}
}

// publish hands the state seen in one batch to the session. The client direction also checks,
// under the same lock, that the session is not closing: once Shutdown has decided the session
// is at a safe point, nothing more is forwarded to the backend.
func (r *relay) publish(readies uint64, status byte) error {
	s := r.s
	if r.fromBackend {
		if readies > 0 {
			s.mu.Lock()
			s.readyReceived += readies
			s.txStatus = status
			s.mu.Unlock()
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errSessionClosing
	}
	s.lastClientType = r.lastType
	s.syncsSent = r.syncsSent
	s.extendedOpen = r.extendedOpen
	return nil
}

// keepPending stores an incomplete message tail for the next read, reusing the pending buffer
// when it is big enough and dropping big buffers once they are empty.
func (r *relay) keepPending(tail []byte) {
	if len(tail) == 0 {
		if cap(r.pending) > keepPendingCapacity {
			r.pending = nil
		} else {
			r.pending = r.pending[:0]
		}
		return
	}
	if cap(r.pending) < len(tail) {
		r.pending = make([]byte, len(tail))
	}
	r.pending = r.pending[:len(tail)]
	copy(r.pending, tail)
}

// atMessageBoundary reports whether the bytes forwarded so far end at a message boundary, so
// the proxy may add a message of its own (an ErrorResponse) to the stream.
func (r *relay) atMessageBoundary() bool {
	return r.streamLeft == 0
}
