package consensus

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
)

// peerSender writes one peer's queued frames over an outbound connection,
// dialing (with backoff) when there is something to send. Owner: its own
// goroutine (run); the mutex only guards conn so Close can interrupt a
// blocked write.
type peerSender struct {
	t     *tcpTransport
	id    uint64
	queue chan outgoing

	mu   sync.Mutex
	conn net.Conn

	// Owned by run.
	failing bool // the last attempt failed; log the next success
	scratch []byte
}

func (s *peerSender) run() {
	defer s.t.wg.Done()
	ctx := s.t.ctx
	backoff := minRedialBackoff
	for {
		var first outgoing
		select {
		case <-ctx.Done():
			return
		case first = <-s.queue:
		}
		conn, err := s.dial()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.failed(err)
			s.t.dropped(s.id, append([]outgoing{first}, s.drain()...))
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, maxRedialBackoff)
			continue
		}
		backoff = minRedialBackoff
		if s.failing {
			s.t.log.Info("raft peer reachable again", "peer", s.id)
			s.failing = false
		}
		err = s.writeLoop(conn, first)
		s.closeConn()
		if ctx.Err() != nil {
			return
		}
		s.failed(err)
	}
}

// failed logs the first failure of a streak as a warning, the rest at debug.
func (s *peerSender) failed(err error) {
	if s.failing {
		s.t.log.Debug("raft peer still unreachable", "peer", s.id, "err", err)
		return
	}
	s.failing = true
	s.t.log.Warn("raft peer unreachable", "peer", s.id, "addr", s.t.peerAddr(s.id), "err", err)
}

// drain empties the queue without blocking.
func (s *peerSender) drain() []outgoing {
	var frames []outgoing
	for {
		select {
		case o := <-s.queue:
			frames = append(frames, o)
		default:
			return frames
		}
	}
}

// dial connects and performs the TLS and protocol handshakes; it returns the
// connection to write frames to. The TCP connection is visible to closeConn
// from the start, so Close interrupts a stalled handshake.
func (s *peerSender) dial() (net.Conn, error) {
	addr := s.t.peerAddr(s.id)
	if addr == "" {
		return nil, errors.New("no address known")
	}
	d := net.Dialer{Timeout: dialTimeout}
	conn, err := d.DialContext(s.t.ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if err := s.t.ctx.Err(); err != nil {
		s.mu.Unlock()
		_ = conn.Close()
		return nil, err
	}
	s.conn = conn
	s.mu.Unlock()
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	stream := conn
	if s.t.cfg.TLS != nil {
		if stream, err = s.tlsHandshake(conn, addr); err != nil {
			s.closeConn()
			return nil, err
		}
	}
	if err := s.handshake(stream); err != nil {
		s.closeConn()
		return nil, err
	}
	return stream, nil
}

// tlsHandshake runs TLS over conn and checks that the other side's
// certificate is the peer this sender serves: the log is only ever streamed
// to the node whose id is in the certificate, whatever address it was given.
func (s *peerSender) tlsHandshake(conn net.Conn, addr string) (net.Conn, error) {
	tc := tls.Client(conn, s.t.cfg.TLS.PeerClientConfig())
	if err := tc.HandshakeContext(s.t.ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	id, err := s.t.cfg.TLS.PeerIdentity(tc.ConnectionState(), x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, fmt.Errorf("peer at %s: %w", addr, err)
	}
	if id.Cluster != s.t.cfg.ClusterName || !id.Covers(s.id) {
		return nil, fmt.Errorf("the peer at %s is not node %d of cluster %q: its certificate is %s", addr, s.id, s.t.cfg.ClusterName, id)
	}
	return tc, nil
}

func (s *peerSender) handshake(conn net.Conn) error {
	h := handshake{ClusterName: s.t.cfg.ClusterName, NodeID: s.t.cfg.NodeID, Addr: s.t.advertise}
	if err := writeHandshake(conn, h); err != nil {
		return fmt.Errorf("send handshake: %w", err)
	}
	var reply [1]byte
	if _, err := io.ReadFull(conn, reply[:]); err != nil {
		return fmt.Errorf("read handshake reply: %w", err)
	}
	switch reply[0] {
	case handshakeAccepted:
	case handshakeWrongCluster:
		return fmt.Errorf("peer rejected us: it belongs to another cluster than %q", s.t.cfg.ClusterName)
	default:
		return fmt.Errorf("peer rejected our handshake (code %d)", reply[0])
	}
	return conn.SetDeadline(time.Time{})
}

// closeConn closes the current connection, if any (also from Close).
func (s *peerSender) closeConn() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
}

// writeLoop writes batches of queued frames until a write fails or the
// transport closes. After each flushed batch it reports the snapshots in it
// as sent; on failure it reports the batch as dropped.
func (s *peerSender) writeLoop(conn net.Conn, first outgoing) error {
	w := bufio.NewWriterSize(conn, writeBufferSize)
	batch := []outgoing{first}
	keepalive := time.NewTimer(keepaliveInterval)
	defer keepalive.Stop()
	for {
	fill:
		for len(batch) < maxBatchFrames {
			select {
			case o := <-s.queue:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		if err := s.writeBatch(conn, w, batch); err != nil {
			s.t.dropped(s.id, batch)
			return err
		}
		for _, o := range batch {
			if o.isSnapshot() {
				s.t.inbox.ReportSnapshot(s.id, true)
			}
		}
		clear(batch)
		batch = batch[:0]
		keepalive.Reset(keepaliveInterval)
		select {
		case <-s.t.ctx.Done():
			return nil
		case o := <-s.queue:
			batch = append(batch, o)
		case <-keepalive.C:
			batch = append(batch, outgoing{kind: frameKeepalive})
		}
	}
}

func (s *peerSender) writeBatch(conn net.Conn, w *bufio.Writer, batch []outgoing) error {
	if err := conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	for _, o := range batch {
		payload := o.payload
		if o.kind == frameRaft {
			var err error
			s.scratch, err = proto.MarshalOptions{}.MarshalAppend(s.scratch[:0], o.msg)
			if err != nil {
				return fmt.Errorf("encode raft message: %w", err)
			}
			payload = s.scratch
		}
		if err := writeFrame(w, o.kind, payload); err != nil {
			return fmt.Errorf("write to peer: %w", err)
		}
	}
	if cap(s.scratch) > keptBufferSize {
		s.scratch = nil // do not keep a snapshot-sized buffer around
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write to peer: %w", err)
	}
	return nil
}
