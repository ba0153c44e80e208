package consensus

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/pgquorum/pgquorum/pki"
)

// TCP transport tuning.
const (
	peerQueueSize    = 1024 // frames waiting per peer before drops
	maxBatchFrames   = 128  // frames written per flush
	dialTimeout      = 2 * time.Second
	handshakeTimeout = 5 * time.Second // TLS and protocol handshake together
	writeTimeout     = 5 * time.Second
	minRedialBackoff = 50 * time.Millisecond
	maxRedialBackoff = time.Second
	writeBufferSize  = 64 << 10
	// keepaliveInterval: an idle dialer sends a keepalive this often, so that
	// idleTimeout only closes connections whose dialer is gone or silent.
	keepaliveInterval = 10 * time.Second
	idleTimeout       = 3 * keepaliveInterval
)

// tcpTransport sends frames to each peer over its own outbound TCP
// connection (one sender goroutine per peer, with a bounded queue) and
// accepts inbound connections from peers (one reader goroutine each), over
// mutual TLS unless Plaintext. Owner: its mutex guards the peer table and the
// connection sets; each sender goroutine owns its connection and write buffer.
type tcpTransport struct {
	cfg       TransportConfig
	inbox     Inbox
	log       *slog.Logger
	ln        net.Listener
	advertise string
	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	limiter   *logLimiter

	mu      sync.Mutex
	addrs   map[uint64]peerAddr
	senders map[uint64]*peerSender
	inbound map[net.Conn]struct{}
	byNode  map[uint64]net.Conn // the authenticated inbound connection of each node
	sources sourceCounts
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
	if err := checkTransportSecurity(cfg); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for raft peers: %w", err)
	}
	return newTCPTransport(cfg, inbox, ln), nil
}

// checkTransportSecurity refuses a TCP transport that is neither TLS nor
// explicitly plaintext.
func checkTransportSecurity(cfg TransportConfig) error {
	if cfg.TLS == nil && !cfg.Plaintext {
		return errors.New("the raft transport needs peer TLS (or Plaintext, for security.insecure on loopback)")
	}
	return nil
}

// TCPTransportOn returns a factory for a TCP transport that serves on ln (for
// example a listener on 127.0.0.1:0 opened before the node starts, so its
// address can go into the peers' configuration). Once the transport is built
// it owns ln and closes it; if Start fails earlier, the caller still owns it.
func TCPTransportOn(ln net.Listener) TransportFactory {
	return func(cfg TransportConfig, inbox Inbox) (Transport, error) {
		if err := checkTransportSecurity(cfg); err != nil {
			return nil, err
		}
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
		byNode:    make(map[uint64]net.Conn),
		sources:   make(sourceCounts),
		limiter:   newLogLimiter(10 * time.Second),
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

func (t *tcpTransport) SendCall(to uint64, c PeerCall) error {
	payload, err := encodeCall(c)
	if err != nil {
		return err
	}
	s := t.sender(to)
	if s == nil {
		return fmt.Errorf("no address known for node %d", to)
	}
	select {
	case s.queue <- outgoing{kind: frameCall, payload: payload}:
		return nil
	default:
		return fmt.Errorf("queue to node %d is full", to)
	}
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
		source := sourceOf(conn)
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			_ = conn.Close()
			return
		}
		if reason := t.sources.admit(source); reason != "" {
			t.mu.Unlock()
			t.cfg.Refusals.add(RefusedConnectionLimit)
			if t.limiter.allow("cap " + source) {
				t.log.Warn("refusing raft connection", "remote", conn.RemoteAddr().String(), "reason", reason)
			}
			_ = conn.Close()
			continue
		}
		t.inbound[conn] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serveInbound(conn, source)
	}
}

// serveInbound authenticates the dialer (TLS handshake, then the protocol
// handshake), then reads frames into the inbox.
func (t *tcpTransport) serveInbound(conn net.Conn, source string) {
	defer t.wg.Done()
	handshaking := true
	defer func() {
		_ = conn.Close()
		t.mu.Lock()
		delete(t.inbound, conn)
		t.sources.release(source, handshaking)
		t.mu.Unlock()
	}()
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	body := &idleReader{conn: conn}
	from, in, err := t.acceptHandshake(conn, body)
	t.mu.Lock()
	t.sources.handshakeDone(source)
	handshaking = false
	t.mu.Unlock()
	if err != nil {
		// At most one line per source and kind of failure every 10 s: a TLS
		// failure is an unauthenticated stranger, the others a known peer.
		kind, reason := "protocol", RefusedHandshake
		if errors.Is(err, errTLSHandshake) {
			kind, reason = "tls", RefusedTLSHandshake
		}
		if t.ctx.Err() == nil {
			t.cfg.Refusals.add(reason)
		}
		if t.ctx.Err() == nil && t.limiter.allow("handshake "+kind+" "+source) {
			t.log.Warn("rejecting raft connection", "remote", conn.RemoteAddr().String(), "err", err)
		}
		return
	}
	t.claim(from.ID, conn)
	defer t.unclaim(from.ID, conn)
	_ = conn.SetDeadline(time.Time{})
	body.idle = idleTimeout // from now on, every read must come within idleTimeout
	var buf []byte
	for {
		var (
			kind    byte
			payload []byte
		)
		kind, payload, buf, err = readFrame(in, buf)
		if errors.Is(err, errFrameLength) {
			t.cfg.Refusals.add(RefusedMalformedFrame)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && t.ctx.Err() == nil {
				t.log.Debug("raft connection ended", "remote_node", from.ID, "err", err)
			}
			return
		}
		if !t.dispatch(from, kind, payload) {
			return
		}
	}
}

// errTLSHandshake marks a connection refused in the TLS handshake: no
// certificate of the cluster CA.
var errTLSHandshake = errors.New("TLS handshake")

// acceptHandshake runs the acceptor's side of the TLS and protocol
// handshakes and returns the authenticated sender and the reader for its
// frames. body reads the (TLS-decrypted) connection.
func (t *tcpTransport) acceptHandshake(conn net.Conn, body *idleReader) (Sender, *bufio.Reader, error) {
	var identity *pki.Identity
	if t.cfg.TLS != nil {
		tc := tls.Server(conn, t.cfg.TLS.PeerServerConfig())
		if err := tc.HandshakeContext(t.ctx); err != nil {
			return Sender{}, nil, fmt.Errorf("%w: %w", errTLSHandshake, err)
		}
		id, err := t.cfg.TLS.PeerIdentity(tc.ConnectionState(), x509.ExtKeyUsageClientAuth)
		if err != nil {
			return Sender{}, nil, fmt.Errorf("%w: %w", errTLSHandshake, err)
		}
		identity = &id
		body.conn = tc
	}
	in := bufio.NewReader(body)
	reply := func(code byte) { _, _ = body.conn.Write([]byte{code}) }
	h, err := readHandshake(in)
	if err != nil {
		if errors.Is(err, errBadHandshake) {
			reply(handshakeBad)
		}
		return Sender{}, nil, fmt.Errorf("bad handshake: %w", err)
	}
	if h.ClusterName != t.cfg.ClusterName || (identity != nil && identity.Cluster != t.cfg.ClusterName) {
		reply(handshakeWrongCluster)
		return Sender{}, nil, fmt.Errorf("node %d of another cluster %q (this is %q)", h.NodeID, h.ClusterName, t.cfg.ClusterName)
	}
	if h.NodeID == 0 || h.NodeID == t.cfg.NodeID {
		reply(handshakeBad)
		return Sender{}, nil, fmt.Errorf("bad sender id %d", h.NodeID)
	}
	from := Sender{ID: h.NodeID, Role: PeerUnverified}
	if identity != nil {
		if !identity.Covers(h.NodeID) {
			reply(handshakeBad)
			return Sender{}, nil, fmt.Errorf("claims node id %d but its certificate is %s", h.NodeID, identity)
		}
		from.Role = PeerVoter
		if identity.Role == pki.RoleLearner {
			from.Role = PeerLearner
		}
	}
	if _, err := body.conn.Write([]byte{handshakeAccepted}); err != nil {
		return Sender{}, nil, err
	}
	t.learn(h.NodeID, h.Addr)
	return from, in, nil
}

// claim makes conn the one inbound connection of node id, closing an older
// one: a node keeps one connection to each peer, so an older one is stale.
func (t *tcpTransport) claim(id uint64, conn net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if old, ok := t.byNode[id]; ok && old != conn {
		_ = old.Close()
	}
	t.byNode[id] = conn
}

func (t *tcpTransport) unclaim(id uint64, conn net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byNode[id] == conn {
		delete(t.byNode, id)
	}
}

// dispatch hands one inbound frame to the inbox; false means the stream is
// corrupt or forged and the connection must close.
func (t *tcpTransport) dispatch(from Sender, kind byte, payload []byte) bool {
	switch kind {
	case frameRaft:
		m := &raftpb.Message{}
		if err := proto.Unmarshal(payload, m); err != nil {
			t.cfg.Refusals.add(RefusedMalformedFrame)
			t.log.Warn("closing raft connection: undecodable message", "remote_node", from.ID, "err", err)
			return false
		}
		if m.GetFrom() != from.ID {
			t.cfg.Refusals.add(RefusedForgedSender)
			t.log.Warn("closing raft connection: message with a forged sender", "remote_node", from.ID,
				"claimed", m.GetFrom(), "type", m.GetType().String())
			return false
		}
		t.inbox.Deliver(from, m)
	case frameJoin:
		req, err := decodeJoin(payload)
		if err != nil {
			t.cfg.Refusals.add(RefusedMalformedFrame)
			t.log.Warn("closing raft connection: bad join request", "remote_node", from.ID, "err", err)
			return false
		}
		t.inbox.DeliverJoin(from, req)
	case frameRemoved:
		t.inbox.DeliverRemoved(from)
	case frameCall:
		c, err := decodeCall(payload)
		if err != nil {
			t.cfg.Refusals.add(RefusedMalformedFrame)
			t.log.Warn("closing raft connection: bad peer call", "remote_node", from.ID, "err", err)
			return false
		}
		t.inbox.DeliverCall(from, c)
	case frameKeepalive:
	default:
		t.cfg.Refusals.add(RefusedMalformedFrame)
		t.log.Warn("closing raft connection: unknown frame kind", "remote_node", from.ID, "kind", kind)
		return false
	}
	return true
}

// idleReader reads a connection; once idle is set, every read must return
// within idle.
type idleReader struct {
	conn net.Conn
	idle time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	if r.idle > 0 {
		if err := r.conn.SetReadDeadline(time.Now().Add(r.idle)); err != nil {
			return 0, err
		}
	}
	return r.conn.Read(p)
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
