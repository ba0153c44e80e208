package proxy

import (
	"encoding/binary"
	"fmt"
)

// Framing: the one place that finds message boundaries in the wire stream
//
// Every protocol message after startup is a type byte, a 4-byte big-endian length (which counts
// itself) and a body. A relay reads whatever the socket has into a pooled buffer and walks the
// messages in it with a framer:
//
//	bytes read:  [rest of a streamed message][msg][msg][msg][start of the next msg]
//	              continuation                next → frameWhole ...   next → frameNone: kept
//
// A message is handed over whole when all of it is in the buffer. A message larger than
// streamThreshold is not collected: once its first bytes (its header, and for client messages
// the names at its start) are there, next returns it as frameStreamStart and the framer counts
// the rest, which the following reads pass through unparsed (continuation). The start of a
// smaller message that is not complete yet is kept (keep) and put in front of the next read
// (fill). So a relay never buffers more than one small message per direction between reads,
// and an idle session keeps no buffer at all (pending is dropped once empty if it grew).
//
// The framer checks every length before trusting it: negative, below 4 or above the limit of
// the direction (PostgreSQL's own limits for client messages) is a protocol error.
//
// Owner: the relay goroutine of its direction.
type framer struct {
	fromBackend bool

	// pending holds the start of an incomplete message (at most streamThreshold bytes) until
	// the rest arrives. It is never part of bytes already forwarded.
	pending []byte
	// streamLeft counts the bytes of a large message that were announced by a header already
	// handed over and still pass through unparsed.
	streamLeft int64
	// lastType is the type of the last message header handed over.
	lastType byte
}

// frameKind is what next found at an offset of the bytes read.
type frameKind uint8

const (
	frameNone        frameKind = iota // less than a header, or an incomplete small message: keep the rest
	frameWhole                        // a complete message
	frameStreamStart                  // the first piece of a large message (all the bytes that are left)
)

// continuation returns how many bytes at the start of data belong to a message being streamed
// (they pass through unparsed), and counts them off.
func (f *framer) continuation(data []byte) int {
	if f.streamLeft == 0 {
		return 0
	}
	k := int(min(f.streamLeft, int64(len(data))))
	f.streamLeft -= int64(k)
	return k
}

// next frames the message at data[i:]. For frameWhole, size is the message's size (type byte
// included); for frameStreamStart it is len(data)-i, and the framer now counts the rest of the
// message as a continuation. prefix is how much of a large message must be there before it is
// streamed (at least the header). A length out of bounds is a protocol error.
func (f *framer) next(data []byte, i, prefix int) (kind frameKind, typ byte, size int, err *clientError) {
	// The common case, small enough to be inlined into the relay loops: a complete message of
	// a valid length (any length for the backend; within the small-message bound for the
	// client, whose large message types are checked by nextSlow).
	if available := len(data) - i; available >= 5 {
		length := int(binary.BigEndian.Uint32(data[i+1 : i+5]))
		if length >= 4 && length < available && (f.fromBackend || length-4 <= maxSmallMessageBody) {
			f.lastType = data[i]
			return frameWhole, data[i], 1 + length, nil
		}
	}
	return f.nextSlow(data, i, prefix)
}

// nextSlow is next for everything but a complete message of a common size.
func (f *framer) nextSlow(data []byte, i, prefix int) (kind frameKind, typ byte, size int, err *clientError) {
	available := int64(len(data) - i)
	if available < 5 {
		return frameNone, 0, 0, nil
	}
	typ, total, err := f.peek(data, i)
	if err != nil {
		return frameNone, typ, 0, err
	}
	switch {
	case available >= total:
		f.lastType = typ
		return frameWhole, typ, int(total), nil
	case total > streamThreshold && available >= min(total, int64(max(prefix, 5))):
		f.lastType = typ
		f.streamLeft = total - available
		return frameStreamStart, typ, int(available), nil
	}
	return frameNone, typ, 0, nil
}

// peek reads and checks the header at data[i:] (at least 5 bytes) without changing the
// framer's state. total is the message's size, type byte included.
func (f *framer) peek(data []byte, i int) (typ byte, total int64, err *clientError) {
	typ = data[i]
	length := int64(int32(binary.BigEndian.Uint32(data[i+1 : i+5])))
	if length < 4 || length-4 > f.maxBody(typ) {
		return typ, 0, f.lengthError(typ, length)
	}
	return typ, 1 + length, nil
}

// skipRest counts the rest of the message whose first bytes (its header at least) are start as
// a continuation: those bytes will pass without being framed. The header was checked by next.
func (f *framer) skipRest(start []byte) {
	total := 1 + int64(binary.BigEndian.Uint32(start[1:5]))
	f.lastType = start[0]
	f.streamLeft = max(total-int64(len(start)), 0)
}

// atBoundary reports whether the bytes handed over so far end at a message boundary, so the
// proxy may add a message of its own (an ErrorResponse) to the stream.
func (f *framer) atBoundary() bool {
	return f.streamLeft == 0
}

// fill copies the kept bytes to the start of buf (a fresh read buffer) and returns their count;
// the bytes read next go after them.
func (f *framer) fill(buf []byte) int {
	n := copy(buf, f.pending)
	f.pending = f.pending[:0]
	return n
}

// keep stores an incomplete message tail for the next read, reusing the pending buffer when it
// is big enough and dropping big buffers once they are empty.
func (f *framer) keep(tail []byte) {
	if len(tail) == 0 {
		if cap(f.pending) > keepPendingCapacity {
			f.pending = nil
		} else {
			f.pending = f.pending[:0]
		}
		return
	}
	if cap(f.pending) < len(tail) {
		f.pending = make([]byte, len(tail))
	}
	f.pending = f.pending[:len(tail)]
	copy(f.pending, tail)
}

// reset starts framing a new stream (a new backend after a move) whose first bytes, already
// read, are leftover.
func (f *framer) reset(leftover []byte) {
	f.pending, f.streamLeft, f.lastType = leftover, 0, 0
}

// maxBody returns the largest body accepted for a message of type typ in this direction.
func (f *framer) maxBody(typ byte) int64 {
	if f.fromBackend {
		return maxBackendMessageBody
	}
	return clientMessageMaxBody(typ)
}

func (f *framer) lengthError(typ byte, length int64) *clientError {
	if f.fromBackend {
		return fatalf(codeProtocolViolation, "invalid message from the PostgreSQL server").
			withDetail(fmt.Sprintf("Message type %q has invalid length %d.", typ, length))
	}
	return invalidLength(typ, length)
}

// invalidLength is the protocol error for a message whose length word is out of bounds.
func invalidLength(typ byte, length int64) *clientError {
	return fatalf(codeProtocolViolation, "invalid message length").
		withDetail(fmt.Sprintf("Message type %q has invalid length %d.", typ, length))
}

// messageBodyLength reads the length word of a message header and returns the body length, or
// a protocol error when it is below 4 or the body would exceed maxBody. It is the header check
// of the startup phase's reader (readMessage), which reads whole messages.
func messageBodyLength(header [5]byte, maxBody int64) (int64, *clientError) {
	length := int64(int32(binary.BigEndian.Uint32(header[1:])))
	if length < 4 || length-4 > maxBody {
		return 0, invalidLength(header[0], length)
	}
	return length - 4, nil
}
