package consensus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// TCP transport tuning.
const (
	peerQueueSize    = 1024 // frames waiting per peer before drops
	maxBatchFrames   = 128  // frames written per flush
	dialTimeout      = 2 * time.Second
	handshakeTimeout = 5 * time.Second
	writeTimeout     = 5 * time.Second
	minRedialBackoff = 50 * time.Millisecond
	maxRedialBackoff = time.Second
	writeBufferSize  = 64 << 10
)

// tcpTransport sends frames to each peer over its own outbound TCP
// connection (one sender goroutine per peer, with a bounded queue) and
// accepts inbound connections from peers (one reader goroutine each).
// Owner: its mutex guards the peer table and the connection sets; each sender
// goroutine owns its connection and write buffer.
type tcpTransport struct {
	cfg       TransportConfig
	inbox     Inbox
	log       *slog.Logger
	ln        net.Listener
	advertise string
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup

	mu      sync.Mutex
	addrs   map[uint64]peerAddr
	senders map[uint64]*peerSender
	inbound map[net.Conn]struct{}
	closed  bool
}

// peerAddr is where a peer is dialed. explicit addresses come from the Node
// (config and conf changes); the others were learned from a handshake and
// only fill gaps.
type peerAddr struct {
	addr     string
	explicit bool
}

// NewTCPTransport listens on cfg.ListenAddr. It is the default
// TransportFactory.
func NewTCPTransport(cfg TransportConfig, inbox Inbox) (Transport, error) {
	if cfg.ListenAddr == "" {
		return nil, errors.New("raft listen address is required")
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for raft peers: %w", err)
	}
	return newTCPTransport(cfg, inbox, ln), nil
}

// TCPTransportOn returns a factory for a TCP transport that serves on ln (for
// example a listener on 127.0.0.1:0 opened before the node starts, so its
// address can go into the peers' configuration). Once the transport is built
// it owns ln and closes it; if Start fails earlier, the caller still owns it.
func TCPTransportOn(ln net.Listener) TransportFactory {
	return func(cfg TransportConfig, inbox Inbox) (Transport, error) {
		return newTCPTransport(cfg, inbox, ln), nil
	}
}

func newTCPTransport(cfg TransportConfig, inbox Inbox, ln net.Listener) *tcpTransport {
	ctx, cancel := context.WithCancel(context.Background())
	t := &tcpTransport{
		cfg:       cfg,
		inbox:     inbox,
		log:       cfg.Logger.With("component", "raft-transport"),
		ln:        ln,
		advertise: cfg.AdvertiseAddr,
		ctx:       ctx,
		cancel:    cancel,
		addrs:     make(map[uint64]peerAddr),
		senders:   make(map[uint64]*peerSender),
		inbound:   make(map[net.Conn]struct{}),
	}
	if t.advertise == "" {
		t.advertise = ln.Addr().String()
	}
	t.wg.Add(1)
	go t.acceptLoop()
	return t
}

func (t *tcpTransport) Addr() string { return t.advertise }

func (t *tcpTransport) SetPeer(id uint64, addr string) {
	if addr == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addrs[id] = peerAddr{addr: addr, explicit: true}
}

// learn records an address from a handshake unless an explicit one is known.
func (t *tcpTransport) learn(id uint64, addr string) {
	if addr == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.addrs[id]; !ok || !cur.explicit {
		t.addrs[id] = peerAddr{addr: addr}
	}
}

func (t *tcpTransport) peerAddr(id uint64) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addrs[id].addr
}

func (t *tcpTransport) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		t.enqueue(m.GetTo(), outgoing{kind: frameRaft, msg: m})
	}
}

func (t *tcpTransport) SendJoin(to uint64, req JoinRequest) {
	t.enqueue(to, outgoing{kind: frameJoin, payload: encodeJoin(req)})
}

func (t *tcpTransport) SendRemoved(to uint64) {
	t.enqueue(to, outgoing{kind: frameRemoved})
}

// outgoing is one frame waiting in a peer queue.
type outgoing struct {
	kind    byte
	msg     *raftpb.Message // frameRaft
	payload []byte          // other kinds
}

func (o outgoing) isSnapshot() bool {
	return o.kind == frameRaft && o.msg.GetType() == raftpb.MsgSnap
}

// enqueue hands a frame to the peer's sender without blocking.
func (t *tcpTransport) enqueue(to uint64, o outgoing) {
	s := t.sender(to)
	if s == nil {
		t.dropped(to, []outgoing{o})
		return
	}
	select {
	case s.queue <- o:
	default:
		t.dropped(to, []outgoing{o})
	}
}

// sender returns the peer's sender, starting it on first use; nil when the
// address is unknown or the transport is closed.
func (t *tcpTransport) sender(id uint64) *peerSender {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	if s, ok := t.senders[id]; ok {
		return s
	}
	if t.addrs[id].addr == "" {
		return nil
	}
	s := &peerSender{t: t, id: id, queue: make(chan outgoing, peerQueueSize)}
	t.senders[id] = s
	t.wg.Add(1)
	go s.run()
	return s
}

// dropped reports frames that were not sent: the peer is unreachable, and a
// snapshot among them failed.
func (t *tcpTransport) dropped(to uint64, frames []outgoing) {
	raftFrames := false
	for _, o := range frames {
		if o.kind == frameRaft {
			raftFrames = true
		}
		if o.isSnapshot() {
			t.inbox.ReportSnapshot(to, false)
		}
	}
	if raftFrames {
		t.inbox.ReportUnreachable(to)
	}
}

// Close stops the listener, every connection and every goroutine.
func (t *tcpTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.cancel()
	err := t.ln.Close()
	for c := range t.inbound {
		_ = c.Close()
	}
	for _, s := range t.senders {
		s.closeConn()
	}
	t.mu.Unlock()
	t.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close raft listener: %w", err)
	}
	return nil
}

// acceptLoop accepts peer connections until Close.
func (t *tcpTransport) acceptLoop() {
	defer t.wg.Done()
	backoff := minRedialBackoff
	for {
		conn, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("accepting raft connection failed", "err", err)
			if !sleepCtx(t.ctx, backoff) {
				return
			}
			backoff = min(2*backoff, maxRedialBackoff)
			continue
		}
		backoff = minRedialBackoff
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			_ = conn.Close()
			return
		}
		t.inbound[conn] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serveInbound(conn)
	}
}

// serveInbound checks the handshake, then reads frames into the inbox.
func (t *tcpTransport) serveInbound(conn net.Conn) {
	defer t.wg.Done()
	defer func() {
		_ = conn.Close()
		t.mu.Lock()
		delete(t.inbound, conn)
		t.mu.Unlock()
	}()
	remote := conn.RemoteAddr().String()
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	r := bufio.NewReader(conn)
	h, err := readHandshake(r)
	if err != nil {
		t.log.Warn("rejecting raft connection: bad handshake", "remote", remote, "err", err)
		if errors.Is(err, errBadHandshake) {
			_, _ = conn.Write([]byte{handshakeBad})
		}
		return
	}
	if h.ClusterName != t.cfg.ClusterName {
		t.log.Warn("rejecting raft connection from another cluster", "remote", remote,
			"remote_cluster", h.ClusterName, "remote_node", h.NodeID, "cluster", t.cfg.ClusterName)
		_, _ = conn.Write([]byte{handshakeWrongCluster})
		return
	}
	if h.NodeID == 0 || h.NodeID == t.cfg.NodeID {
		t.log.Warn("rejecting raft connection: bad sender id", "remote", remote, "remote_node", h.NodeID)
		_, _ = conn.Write([]byte{handshakeBad})
		return
	}
	if _, err := conn.Write([]byte{handshakeAccepted}); err != nil {
		return
	}
	_ = conn.SetDeadline(time.Time{})
	t.learn(h.NodeID, h.Addr)
	var buf []byte
	for {
		var (
			kind    byte
			payload []byte
		)
		kind, payload, buf, err = readFrame(r, buf)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && t.ctx.Err() == nil {
				t.log.Debug("raft connection ended", "remote_node", h.NodeID, "err", err)
			}
			return
		}
		if !t.dispatch(h.NodeID, kind, payload) {
			return
		}
	}
}

// dispatch hands one inbound frame to the inbox; false means the stream is
// corrupt and the connection must close.
func (t *tcpTransport) dispatch(from uint64, kind byte, payload []byte) bool {
	switch kind {
	case frameRaft:
		m := &raftpb.Message{}
		if err := proto.Unmarshal(payload, m); err != nil {
			t.log.Warn("closing raft connection: undecodable message", "remote_node", from, "err", err)
			return false
		}
		if m.GetFrom() != from {
			t.log.Warn("dropping raft message with a forged sender", "remote_node", from, "claimed", m.GetFrom())
			return true
		}
		t.inbox.Deliver(m)
	case frameJoin:
		req, err := decodeJoin(payload)
		if err != nil {
			t.log.Warn("closing raft connection: bad join request", "remote_node", from, "err", err)
			return false
		}
		if req.NodeID != from && !req.Forwarded {
			t.log.Warn("dropping join request for another node", "remote_node", from, "claimed", req.NodeID)
			return true
		}
		t.inbox.DeliverJoin(req)
	case frameRemoved:
		t.inbox.DeliverRemoved(from)
	default:
		t.log.Warn("closing raft connection: unknown frame kind", "remote_node", from, "kind", kind)
		return false
	}
	return true
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
