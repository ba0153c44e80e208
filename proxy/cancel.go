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
// The proxy hands every client its own BackendKeyData (process id + secret key) instead of the
// backend's, because the backend behind a session may change (failover) and because a cancel
// request may reach any proxy of the cluster. The key layout lets a proxy tell which proxy node
// owns a session without asking anyone:
//
//	process id (both protocol versions), 32 bits:
//	  bit 31      always 0 (the id stays positive for clients that print it as a signed int)
//	  bits 30..20 node id modulo 2048 (11 bits)
//	  bits 19..0  session counter of that node (20 bits, never 0, skips ids in use)
//
//	secret key, protocol 3.0 (4 bytes): 32 random bits.
//
//	secret key, protocol 3.2 (32 bytes, like PostgreSQL 18):
//	  byte  0     layout version, 1
//	  bytes 1..8  full node id, big endian (the 11 bits above are ambiguous beyond 2047 nodes)
//	  bytes 9..31 23 random bytes
//
// Only the random part protects against forged cancels; the node id is public. A cancel whose
// node id is another proxy's is to be forwarded to that proxy (SPEC §6); that forwarding is a
// later change and such cancels are dropped and logged for now (see Server.forwardCancel).

const (
	nodeIDBits        = 11
	sessionIDBits     = 20
	sessionIDMask     = 1<<sessionIDBits - 1
	nodeIDMask        = 1<<nodeIDBits - 1
	secretLength30    = 4
	secretLength32    = 32
	secretLayout32    = 1
	cancelDialTimeout = 5 * time.Second
)

// makeProcessID builds a process id from the node id and a session counter value.
func makeProcessID(nodeID uint64, counter uint32) uint32 {
	return uint32(nodeID&nodeIDMask)<<sessionIDBits | counter&sessionIDMask
}

// nodeBitsOfProcessID returns the node id bits (node id modulo 2048) of a process id.
func nodeBitsOfProcessID(pid uint32) uint64 {
	return uint64(pid>>sessionIDBits) & nodeIDMask
}

// newSecretKey returns a fresh secret key for the given protocol minor version.
func newSecretKey(nodeID uint64, protocolMinor uint16) ([]byte, error) {
	if protocolMinor < latestProtocolMinor {
		key := make([]byte, secretLength30)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("random cancel key: %w", err)
		}
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
// bits of the process id. exact is false when only the 11 bits are known.
func ownerNodeID(pid uint32, secret []byte) (nodeID uint64, exact bool) {
	if len(secret) == secretLength32 && secret[0] == secretLayout32 {
		return binary.BigEndian.Uint64(secret[1:9]), true
	}
	return nodeBitsOfProcessID(pid), false
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

// handleCancel serves a client's CancelRequest: find our session by the proxy's key and send a
// CancelRequest with the backend's real key to that session's backend, when that is safe (see
// cancelDecision). Like PostgreSQL it never answers the client; unknown keys are ignored.
func (s *Server) handleCancel(ctx context.Context, pkt startupPacket) {
	owner, exact := ownerNodeID(pkt.CancelProcessID, pkt.CancelSecret)
	if owner != s.cfg.NodeID && (exact || owner != s.cfg.NodeID&nodeIDMask) {
		s.forwardCancel(owner, pkt)
		return
	}
	sess, key, ok := s.sessions.cancelTarget(pkt.CancelProcessID, pkt.CancelSecret)
	if !ok {
		s.log.Debug("cancel request for an unknown session ignored", "pid", pkt.CancelProcessID)
		return
	}
	switch sess.cancelDecision() {
	case cancelNothing:
		return
	case cancelRefused:
		sess.log.Info("cancel request not forwarded: the request in flight may be a commit waiting for synchronous replication")
		return
	case cancelIfNoTransactionID:
		if !s.backendHasNoTransactionID(ctx, key) {
			sess.log.Info("cancel request not forwarded: the autocommit request in flight has written, so its commit may wait for synchronous replication")
			return
		}
	}
	if err := s.sendCancel(ctx, key); err != nil {
		s.log.Warn("cannot forward cancel request to the backend", "pid", pkt.CancelProcessID, "backend", key.address, "err", err)
	}
}

// cancelDecision says what a cancel request may do.
type cancelDecision uint8

const (
	cancelNothing           cancelDecision = iota // nothing to cancel (or a held request, cancelled here)
	cancelAllowed                                 // forward it
	cancelRefused                                 // the request in flight may be committing
	cancelIfNoTransactionID                       // forward it if the backend has not written
)

// Cancel requests and synchronous replication (SPEC §4)
//
// A cancel that reaches a backend waiting for synchronous replication of its commit ends the
// wait: PostgreSQL then reports success for a commit the standbys may not have, which a
// failover could lose. So the proxy forwards a cancel only when the request in flight cannot
// be in that wait:
//
//   - inside an explicit transaction, for requests that do not commit (COMMIT, END,
//     PREPARE TRANSACTION, COMMIT PREPARED, ROLLBACK PREPARED or anything unreadable):
//     statements before COMMIT never wait for synchronous replication;
//   - for an autocommit request made only of reads (SELECT without FOR UPDATE or INTO, VALUES,
//     SHOW, EXPLAIN without ANALYZE, ...), when PostgreSQL says its backend has no transaction
//     id (pg_stat_activity.backend_xid IS NULL): a transaction without one does not wait for
//     synchronous replication at commit. This catches a SELECT that calls a function that
//     writes. The check runs as the query user just before the cancel is sent; a function
//     that writes for the first time within that instant is the remaining window.
//
// Autocommit writes, COMMIT and the like are never cancelled by the proxy: they run to their
// end. A request that is held (not sent) is cancelled by the proxy itself (57014).

// cancelDecision decides what a cancel request for this session may do.
func (s *session) cancelDecision() cancelDecision {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.holdCancel != nil:
		close(s.holdCancel)
		s.holdCancel = nil
		return cancelNothing
	case !s.phase.linked(), s.syncsSent == s.readyReceived && !s.extendedOpen:
		return cancelNothing
	case s.inflight.mayCommit:
		return cancelRefused
	case s.txStatus == 'T' || s.txStatus == 'E':
		return cancelAllowed
	case s.inflight.writes:
		return cancelRefused
	}
	return cancelIfNoTransactionID
}

// backendHasNoTransactionID reports whether the backend behind key has no transaction id now
// (pg_stat_activity.backend_xid IS NULL), asked as the query user. Any failure answers false.
func (s *Server) backendHasNoTransactionID(ctx context.Context, key backendCancelKey) bool {
	if s.cfg.QueryUser == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, cancelDialTimeout)
	defer cancel()
	target := Target{Name: key.address, Address: key.address}
	var noXID bool
	err := s.authConns.with(ctx, target, func(conn *pgconn.PgConn) error {
		res := conn.ExecParams(ctx, "SELECT backend_xid IS NULL FROM pg_catalog.pg_stat_activity WHERE pid = $1",
			[][]byte{[]byte(strconv.FormatUint(uint64(key.processID), 10))}, nil, nil, nil).Read()
		if res.Err != nil {
			return res.Err
		}
		noXID = len(res.Rows) == 1 && len(res.Rows[0]) == 1 && string(res.Rows[0][0]) == "t"
		return nil
	})
	if err != nil {
		s.log.Warn("cannot check the backend before forwarding a cancel request", "backend", key.address, "err", err)
		return false
	}
	return noXID
}

// forwardCancel is the hook for cancel requests whose key belongs to another proxy node. Cancel
// forwarding between proxies is not implemented yet; the request is dropped (a client whose
// cancel is dropped sees its query run to completion, never a wrong cancel).
func (s *Server) forwardCancel(owner uint64, pkt startupPacket) {
	s.log.Info("cancel request for a session of another proxy node dropped (forwarding not implemented)",
		"owner_node", owner, "pid", pkt.CancelProcessID)
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
