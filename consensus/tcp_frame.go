package consensus

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// The peer protocol. A connection carries frames in one direction only, from
// the dialer to the acceptor. With peer TLS (the default) it starts with a
// TLS 1.3 handshake in which both sides present a certificate of the cluster
// CA; the dialer checks that the acceptor's certificate is the peer it meant
// to dial, the acceptor takes the dialer's identity from its certificate.
// Then, inside TLS (or in plaintext with security.insecure), the dialer sends
// its handshake:
//
//	"PGQR"           4 bytes magic
//	version          1 byte (protocolVersion)
//	sender node id   8 bytes, big endian: must be covered by its certificate
//	cluster name     2-byte big-endian length + bytes: must match the certificate's
//	sender address   2-byte big-endian length + bytes (where to dial it back)
//
// The acceptor answers with one byte (handshakeAccepted, or why not) and
// closes the connection unless it accepted. The TLS handshake and this
// handshake together must finish within handshakeTimeout; until then nothing
// larger than maxFieldSize is read. Then the dialer sends frames:
//
//	length           4 bytes, big endian: 1 + len(payload), at most maxFrameSize
//	kind             1 byte (frameRaft, frameJoin, frameRemoved, frameKeepalive,
//	                 frameCall)
//	payload          a raftpb.Message (frameRaft), a join request (frameJoin:
//	                 8-byte node id, 1 flag byte (1 = forwarded), address),
//	                 a peer call or reply (frameCall: 8-byte call id, 1 flag
//	                 byte (1 = reply), 1-byte service length + service,
//	                 2-byte error length + error, payload), or nothing
//	                 (frameRemoved, frameKeepalive)
//
// An idle dialer sends a keepalive every keepaliveInterval; the acceptor
// closes a connection that sent nothing for idleTimeout. A large frame is
// read as its bytes arrive, so announcing one allocates nothing up front.
const (
	protocolMagic   = "PGQR"
	protocolVersion = 2 // 2: TLS and keepalives

	handshakeAccepted     byte = 0
	handshakeWrongCluster byte = 1
	handshakeBad          byte = 2

	frameRaft      byte = 1
	frameJoin      byte = 2
	frameRemoved   byte = 3
	frameKeepalive byte = 4
	frameCall      byte = 5

	// maxFrameSize bounds one frame. A snapshot travels in one frame: the
	// state machine's snapshot is at most 64 MiB (clusterstate.MaxSnapshotBytes),
	// base64 in the snapshot's JSON makes that 86 MiB, plus the address book.
	maxFrameSize = 96 << 20
	maxFieldSize = 1024 // cluster name and address
	// keptBufferSize is the largest read buffer a connection keeps.
	keptBufferSize = maxSizePerMsg + 64<<10
	// largeFrameChunk is how far ahead of the bytes received a large frame's
	// buffer grows.
	largeFrameChunk = 1 << 20
)

// handshake is the first thing a dialer sends.
type handshake struct {
	ClusterName string
	NodeID      uint64
	Addr        string
}

func writeHandshake(w io.Writer, h handshake) error {
	if len(h.ClusterName) > maxFieldSize || len(h.Addr) > maxFieldSize {
		return errors.New("handshake field too long")
	}
	buf := make([]byte, 0, 4+1+8+2+len(h.ClusterName)+2+len(h.Addr))
	buf = append(buf, protocolMagic...)
	buf = append(buf, protocolVersion)
	buf = binary.BigEndian.AppendUint64(buf, h.NodeID)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(h.ClusterName)))
	buf = append(buf, h.ClusterName...)
	buf = binary.BigEndian.AppendUint16(buf, uint16(len(h.Addr)))
	buf = append(buf, h.Addr...)
	_, err := w.Write(buf)
	return err
}

// errBadHandshake marks a connection that does not speak this protocol.
var errBadHandshake = errors.New("not a pgquorum raft handshake")

func readHandshake(r io.Reader) (handshake, error) {
	var head [4 + 1 + 8]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return handshake{}, fmt.Errorf("read handshake: %w", err)
	}
	if string(head[:4]) != protocolMagic {
		return handshake{}, errBadHandshake
	}
	if head[4] != protocolVersion {
		return handshake{}, fmt.Errorf("%w: protocol version %d, want %d", errBadHandshake, head[4], protocolVersion)
	}
	h := handshake{NodeID: binary.BigEndian.Uint64(head[5:13])}
	var err error
	if h.ClusterName, err = readField(r); err != nil {
		return handshake{}, err
	}
	if h.Addr, err = readField(r); err != nil {
		return handshake{}, err
	}
	return h, nil
}

func readField(r io.Reader) (string, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return "", fmt.Errorf("read handshake: %w", err)
	}
	n := int(binary.BigEndian.Uint16(l[:]))
	if n > maxFieldSize {
		return "", fmt.Errorf("%w: field of %d bytes", errBadHandshake, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("read handshake: %w", err)
	}
	return string(b), nil
}

// writeFrame writes one frame to w (buffered; the caller flushes).
func writeFrame(w *bufio.Writer, kind byte, payload []byte) error {
	if len(payload)+1 > maxFrameSize {
		return fmt.Errorf("frame of %d bytes exceeds the %d-byte limit", len(payload)+1, maxFrameSize)
	}
	var head [5]byte
	binary.BigEndian.PutUint32(head[:4], uint32(len(payload)+1))
	head[4] = kind
	if _, err := w.Write(head[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// errFrameLength marks a frame whose announced length is out of bounds.
var errFrameLength = errors.New("bad frame length")

// readFrame reads one frame. The payload is read into buf (grown when too
// small, up to keptBufferSize; larger frames get a buffer of their own) and
// aliases it: it is valid until the next call.
func readFrame(r *bufio.Reader, buf []byte) (kind byte, payload, newBuf []byte, err error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, buf, err
	}
	size := binary.BigEndian.Uint32(head[:4])
	if size == 0 || size > maxFrameSize {
		return 0, nil, buf, fmt.Errorf("%w: frame length %d out of range [1, %d]", errFrameLength, size, maxFrameSize)
	}
	n := int(size) - 1
	if n > keptBufferSize {
		payload, err = readLarge(r, n)
		return head[4], payload, buf, err
	}
	switch {
	case cap(buf) < n:
		buf = make([]byte, n, min(keptBufferSize, max(2*n, 4096)))
		payload = buf[:n]
	default:
		payload = buf[:n]
	}
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, buf, fmt.Errorf("read frame: %w", err)
	}
	return head[4], payload, buf, nil
}

// readLarge reads an n-byte payload into a buffer that grows (doubling, from
// largeFrameChunk) only as the bytes arrive: a peer that announces a huge
// frame and sends nothing costs largeFrameChunk, not the announced size.
func readLarge(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, largeFrameChunk)
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), cap(buf)))
		}
		next := min(n, cap(buf))
		if _, err := io.ReadFull(r, buf[len(buf):next]); err != nil {
			return nil, fmt.Errorf("read frame: %w", err)
		}
		buf = buf[:next]
	}
	return buf, nil
}

func encodeJoin(req JoinRequest) []byte {
	b := binary.BigEndian.AppendUint64(nil, req.NodeID)
	var flags byte
	if req.Forwarded {
		flags = 1
	}
	b = append(b, flags)
	return append(b, req.Addr...)
}

func decodeJoin(b []byte) (JoinRequest, error) {
	if len(b) < 9 || len(b)-9 > maxFieldSize || b[8] > 1 {
		return JoinRequest{}, fmt.Errorf("malformed join request of %d bytes", len(b))
	}
	return JoinRequest{NodeID: binary.BigEndian.Uint64(b[:8]), Forwarded: b[8] == 1, Addr: string(b[9:])}, nil
}

// encodeCall encodes a peer call or reply (calls.go) as a frameCall payload.
func encodeCall(c PeerCall) ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 8+1+1+len(c.Service)+2+len(c.Err)+len(c.Payload))
	b = binary.BigEndian.AppendUint64(b, c.ID)
	var flags byte
	if c.Reply {
		flags = 1
	}
	b = append(b, flags, byte(len(c.Service)))
	b = append(b, c.Service...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.Err)))
	b = append(b, c.Err...)
	return append(b, c.Payload...), nil
}

// decodeCall reads a frameCall payload. The result does not alias p (frame
// buffers are reused).
func decodeCall(p []byte) (PeerCall, error) {
	var c PeerCall
	if len(p) < 8+1+1 {
		return c, errors.New("peer call shorter than its header")
	}
	c.ID = binary.BigEndian.Uint64(p[:8])
	if p[8]&^1 != 0 {
		return c, fmt.Errorf("unknown peer call flags %#x", p[8])
	}
	c.Reply = p[8] == 1
	n := int(p[9])
	p = p[10:]
	if len(p) < n+2 {
		return c, errors.New("peer call service name truncated")
	}
	c.Service = string(p[:n])
	p = p[n:]
	n = int(binary.BigEndian.Uint16(p[:2]))
	p = p[2:]
	if len(p) < n {
		return c, errors.New("peer call error text truncated")
	}
	c.Err = string(p[:n])
	c.Payload = slices.Clone(p[n:])
	if err := c.validate(); err != nil {
		return PeerCall{}, err
	}
	return c, nil
}
