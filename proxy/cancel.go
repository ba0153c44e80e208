package proxy

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Cancel keys
//
// A client gets, in BackendKeyData, the process id of its session's first backend — the real
// PostgreSQL pid, so that pg_stat_activity, pg_terminate_backend and NOTIFY's sender pid
// (libpq's "is this notification mine" check, be_pid == PQbackendPID) agree with what the
// client was told — and a secret key made by the proxy, which routes a CancelRequest to the
// proxy node that owns the session and, there, to the session:
//
//	secret key, protocol 3.0 (4 bytes, as PostgreSQL's):
//	  bits 31..21  node id modulo 2048 (11 bits)
//	  bits 20..0   21 random bits
//
//	secret key, protocol 3.2 (32 bytes, like PostgreSQL 18):
//	  byte  0     layout version, 1
//	  bytes 1..8  full node id, big endian (the 11 bits above are ambiguous beyond 2047 nodes)
//	  bytes 9..31 23 random bytes
//
// The node id is public; the random part and the pid protect against forged cancels (21
// random bits in 3.0, against PostgreSQL's 32: the price of routing across proxies without a
// shared table; 184 bits in 3.2). A cancel whose key names another proxy node is forwarded to
// that node over the authenticated peer transport (CancelForwarder).
//
// After a move the session runs on a new backend with another pid. The client keeps the key
// it was given (a protocol connection's key never changes), so cancel requests keep working —
// the proxy finds the session by the client's key and sends the cancel with the new backend's
// key — but the pid the client holds is the first backend's: pg_backend_pid() and the sender
// pid of the session's own notifications now differ from it. A client that compares them
// (libpq's documented check) then treats its own notifications as another session's.

const (
	nodeIDBits        = 11
	nodeIDMask        = 1<<nodeIDBits - 1
	secretLength30    = 4
	secretLength32    = 32
	secretLayout32    = 1
	cancelDialTimeout = 5 * time.Second
)

// newSecretKey returns a fresh secret key for the given protocol minor version.
func newSecretKey(nodeID uint64, protocolMinor uint16) ([]byte, error) {
	if protocolMinor < latestProtocolMinor {
		key := make([]byte, secretLength30)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("random cancel key: %w", err)
		}
		random := binary.BigEndian.Uint32(key) & (1<<(32-nodeIDBits) - 1)
		binary.BigEndian.PutUint32(key, uint32(nodeID&nodeIDMask)<<(32-nodeIDBits)|random)
		return key, nil
	}
	key := make([]byte, secretLength32)
	key[0] = secretLayout32
	binary.BigEndian.PutUint64(key[1:9], nodeID)
	if _, err := rand.Read(key[9:]); err != nil {
		return nil, fmt.Errorf("random cancel key: %w", err)
	}
	return key, nil
}

// ownerNodeID returns the node id a cancel key names: the full id from a 3.2 key, else the 11
// bits of a 3.0 key. exact is false when only the 11 bits are known; ok is false for a key of
// a layout the proxy never hands out.
func ownerNodeID(secret []byte) (nodeID uint64, exact, ok bool) {
	switch {
	case len(secret) == secretLength32 && secret[0] == secretLayout32:
		return binary.BigEndian.Uint64(secret[1:9]), true, true
	case len(secret) == secretLength30:
		return uint64(binary.BigEndian.Uint32(secret) >> (32 - nodeIDBits)), false, true
	}
	return 0, false, false
}

// backendCancelKey is what a session needs to cancel the query running on its backend.
type backendCancelKey struct {
	address   string
	processID uint32
	secret    []byte
}

// appendCancelRequest appends a CancelRequest packet for key to dst.
func appendCancelRequest(dst []byte, processID uint32, secret []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(12+len(secret)))
	dst = binary.BigEndian.AppendUint32(dst, cancelRequestCode)
	dst = binary.BigEndian.AppendUint32(dst, processID)
	return append(dst, secret...)
}

// handleCancel serves a client's CancelRequest: find our session by the key we handed out and
// send a CancelRequest with the backend's real key to that session's backend, unless that
// would cut a commit's wait for synchronous replication (see cancelDecision). Like PostgreSQL
// it never answers the client; unknown keys are counted, not logged.
func (s *Server) handleCancel(ctx context.Context, pkt startupPacket) {
	owner, exact, ok := ownerNodeID(pkt.CancelSecret)
	if !ok {
		s.counters.cancelUnknown.Add(1)
		return
	}
	if owner != s.cfg.NodeID && (exact || owner != s.cfg.NodeID&nodeIDMask) {
		s.forwardCancel(ctx, owner, exact, pkt)
		return
	}
	s.cancelLocal(ctx, pkt)
}

// cancelLocal serves a cancel request for a session of this node.
func (s *Server) cancelLocal(ctx context.Context, pkt startupPacket) {
	sess, key, ok := s.sessions.cancelTarget(pkt.CancelProcessID, pkt.CancelSecret)
	if !ok {
		s.counters.cancelUnknown.Add(1)
		return
	}
	decision, target := sess.cancelDecision()
	if decision == cancelNothing {
		return
	}
	if s.backendWaitsForSyncRep(ctx, key) {
		s.counters.cancelRefused.Add(1)
		sess.log.Info("cancel request not forwarded: the backend waits for synchronous replication of its commit")
		return
	}
	if !sess.cancelStillAimed(target) {
		// Every request in flight when the cancel arrived has been answered meanwhile (the check
		// above takes a round trip): sent now, the cancel would hit the client's next request.
		return
	}
	if err := s.sendCancel(ctx, key); err != nil {
		s.log.Warn("cannot forward cancel request to the backend", "pid", pkt.CancelProcessID, "backend", key.address, "err", err)
	}
}

// cancelDecision says what a cancel request may do.
type cancelDecision uint8

const (
	cancelNothing cancelDecision = iota // nothing to cancel (or a held request, cancelled here)
	cancelCheck                         // forward it unless the backend waits for synchronous replication
)

// Cancel requests and synchronous replication (SPEC §4)
//
// A cancel that reaches a backend waiting for synchronous replication of its commit ends the
// wait: PostgreSQL then reports success (with a WARNING) for a commit the standbys may not
// have, which a failover could lose. Every other cancel is harmless to durability: a statement
// cancelled before its commit rolls its transaction back. So the proxy forwards every cancel,
// whatever the request in flight is (a long CREATE TABLE AS, a COPY TO, a COMMIT that has not
// reached its wait yet), except when PostgreSQL says the backend is in that wait right now
// (pg_stat_activity.wait_event = 'SyncRep' for its pid, read as the query user just before
// the cancel is sent; when the check fails, the cancel is not sent).
//
// The check and the cancel are two steps: a backend can finish its statement and enter the
// wait in between. That window is closed on the other side: when a commit's wait was cut
// anyway, the backend sends a WARNING from SyncRepWaitForLSN before the commit's answer, and
// the backend→client relay then holds the answer until the commit is replicated (syncrep.go).
// A request that is held (not sent) is cancelled by the proxy itself (57014).

// cancelDecision decides what a cancel request for this session may do, and returns the
// number of answers after which every request in flight now is answered (cancelStillAimed).
func (s *session) cancelDecision() (cancelDecision, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.holdCancel != nil:
		close(s.holdCancel)
		s.holdCancel = nil
		return cancelNothing, 0
	case !s.phase.linked(), s.syncsSent == s.readyReceived && !s.extendedOpen:
		return cancelNothing, 0
	}
	target := s.syncsSent
	if s.extendedOpen {
		target++ // the request whose Sync has not been sent yet
	}
	return cancelCheck, target
}

// cancelStillAimed reports whether a request that was in flight when the cancel arrived (target
// from cancelDecision) is still unanswered, on the same backend link.
func (s *session) cancelStillAimed(target uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phase.linked() && s.readyReceived < target
}

// backendWaitsForSyncRep reports whether the backend behind key waits for synchronous
// replication now (or cannot be checked), asked as the query user. Without a query user it
// cannot ask and answers false: a wait cut by the cancel then costs the client an 08007, since
// the relay cannot confirm replication either (syncrep.go), never an unreplicated success.
func (s *Server) backendWaitsForSyncRep(ctx context.Context, key backendCancelKey) bool {
	if s.cfg.QueryUser == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, cancelDialTimeout)
	defer cancel()
	target := Target{Name: key.address, Address: key.address}
	waits := true
	err := s.authConns.with(ctx, target, func(conn *pgconn.PgConn) error {
		res := conn.ExecParams(ctx, "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'",
			[][]byte{[]byte(strconv.FormatUint(uint64(key.processID), 10))}, nil, nil, nil).Read()
		if res.Err != nil {
			return res.Err
		}
		waits = len(res.Rows) != 1 || len(res.Rows[0]) != 1 || string(res.Rows[0][0]) != "0"
		return nil
	})
	if err != nil {
		s.log.Warn("cannot check the backend before forwarding a cancel request", "backend", key.address, "err", err)
		return true
	}
	return waits
}

// CancelForwarder carries a cancel request to the proxy node that owns the session (SPEC §6),
// over the cluster's authenticated peer transport (node.go wires consensus peer calls). owner
// is the node id the key names; when exact is false only its 11 low bits are known (a
// protocol 3.0 key) and the forwarder tries every member whose id has them. key is the
// CancelRequest's process id (4 bytes, big endian) and secret, as the client sent them.
type CancelForwarder interface {
	ForwardCancel(ctx context.Context, owner uint64, exact bool, key []byte) error
}

// maxForwardingCancels bounds the cancel requests being forwarded to other nodes at once; more
// are dropped and counted (a flood of bogus keys cannot tie up the proxy or its peers).
const maxForwardingCancels = 32

// forwardCancel sends a cancel request whose key belongs to another proxy node to that node.
func (s *Server) forwardCancel(ctx context.Context, owner uint64, exact bool, pkt startupPacket) {
	if s.cfg.CancelForwarder == nil {
		s.counters.cancelUnknown.Add(1)
		return
	}
	select {
	case s.forwarding <- struct{}{}:
		defer func() { <-s.forwarding }()
	default:
		s.counters.cancelUnknown.Add(1)
		return
	}
	key := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(pkt.CancelSecret)), pkt.CancelProcessID)
	key = append(key, pkt.CancelSecret...)
	ctx, cancel := context.WithTimeout(ctx, cancelDialTimeout)
	defer cancel()
	if err := s.cfg.CancelForwarder.ForwardCancel(ctx, owner, exact, key); err != nil {
		s.counters.cancelUnknown.Add(1)
		s.log.Debug("cannot forward a cancel request to its proxy node", "owner", owner, "err", err)
		return
	}
	s.counters.cancelForwarded.Add(1)
}

// CancelFromPeer serves a cancel request another proxy node forwarded (CancelForwarder): key
// is the process id and secret the client sent. A key of no session of this node is counted,
// never forwarded again. It returns once the cancel was sent to the backend (or dropped).
func (s *Server) CancelFromPeer(ctx context.Context, key []byte) {
	if len(key) < 4+minCancelKeyLength || len(key) > 4+maxCancelKeyLength {
		s.counters.cancelUnknown.Add(1)
		return
	}
	s.counters.cancelRequests.Add(1)
	s.cancelLocal(ctx, startupPacket{Kind: kindCancelRequest, CancelProcessID: binary.BigEndian.Uint32(key), CancelSecret: key[4:]})
}

// sendCancel opens a connection to the backend (with TLS as configured: the cancel key travels
// in it) and sends it a CancelRequest.
func (s *Server) sendCancel(ctx context.Context, key backendCancelKey) error {
	ctx, cancel := context.WithTimeout(ctx, cancelDialTimeout)
	defer cancel()
	conn, _, err := s.dialBackend(ctx, key.address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", key.address, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write(appendCancelRequest(nil, key.processID, key.secret)); err != nil {
		return fmt.Errorf("write cancel request: %w", err)
	}
	// PostgreSQL closes the connection after reading the request; wait for that so the cancel
	// has been delivered when we return.
	var one [1]byte
	_, _ = conn.Read(one[:])
	return nil
}

// secretsEqual compares two cancel secrets in constant time.
func secretsEqual(a, b []byte) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1
}
